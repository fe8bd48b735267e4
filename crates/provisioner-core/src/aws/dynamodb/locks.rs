//! [`Locks`] over the table: one item per lock.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use jiff::Timestamp;

use super::*;
use crate::domain::ClusterName;
use crate::error::Result;
use crate::ports::{Lease, Locks, WAITING_LAPSES_AFTER};
use crate::table::lock;
use crate::table::lock::{
    ACQUIRED_AT, EXPIRES_EPOCH, NEXT_ASKED, NEXT_OPERATION, NEXT_OWNER, NEXT_SINCE, NEXT_SINCE_MS, OPERATION,
};

/// How long an expired lock item is kept for inspection before TTL removes it.
pub(super) const KEEP_EXPIRED_SECONDS: i64 = 24 * 60 * 60;

fn lease_from(item: &HashMap<String, AttributeValue>) -> Option<Lease> {
    let text = |key: &str| text_of(item, key);
    let time = |k: &str| text(k).and_then(|t| t.parse::<Timestamp>().ok());
    Some(Lease {
        owner: text(lock::OWNER)?,
        operation: text(lock::OPERATION)?,
        acquired_at: time(lock::ACQUIRED_AT)?,
        expires_at: time(lock::EXPIRES_AT)?,
    })
}

/// The contender noted as waiting longest for a lock (its `acquired_at` is when it began to wait),
/// unless it stopped asking.
fn waiting_from(item: &HashMap<String, AttributeValue>, now: Timestamp) -> Option<Lease> {
    let text = |key: &str| text_of(item, key);
    let asked: i64 = item.get(lock::NEXT_ASKED)?.as_n().ok()?.parse().ok()?;
    if asked < lapsed_before(now) {
        return None;
    }
    Some(Lease {
        owner: text(lock::NEXT_OWNER)?,
        operation: text(lock::NEXT_OPERATION)?,
        acquired_at: text(lock::NEXT_SINCE)?.parse().ok()?,
        expires_at: now,
    })
}

/// Epoch seconds before which a waiting contender's last ask has lapsed.
fn lapsed_before(now: Timestamp) -> i64 {
    now.as_second() - WAITING_LAPSES_AFTER.as_secs() as i64
}

impl DynamoStore {
    /// Notes `lease.owner` as the contender waiting longest, unless one that waited longer still asks.
    async fn wait_in_line(&self, key: &str, lease: &Lease, waiting_since: Timestamp, now: Timestamp) {
        let since_ms = waiting_since.as_millisecond();
        let outcome = self
            .update_item(s(key))
            .update_expression(format!(
                "SET {NEXT_OWNER} = :owner, {NEXT_OPERATION} = :operation, {NEXT_SINCE} = :since, \
                 {NEXT_SINCE_MS} = :since_ms, {NEXT_ASKED} = :now"
            ))
            .condition_expression(format!(
                "attribute_exists(#pk) AND (attribute_not_exists({NEXT_OWNER}) OR {NEXT_OWNER} = :owner \
                 OR {NEXT_ASKED} < :lapsed OR {NEXT_SINCE_MS} > :since_ms)"
            ))
            .expression_attribute_names("#pk", KEY)
            .expression_attribute_values(":owner", s(&lease.owner))
            .expression_attribute_values(":operation", s(&lease.operation))
            .expression_attribute_values(":since", s(&waiting_since.to_string()))
            .expression_attribute_values(":since_ms", n(since_ms))
            .expression_attribute_values(":now", n(now.as_second()))
            .expression_attribute_values(":lapsed", n(lapsed_before(now)))
            .send()
            .await;
        // Only the turn is at stake; the next ask notes it again.
        if let Err(error) = written(outcome, "UpdateItem") {
            tracing::warn!(key, %error, "could not wait in line");
        }
    }
}

#[async_trait]
impl Locks for DynamoStore {
    async fn try_acquire(
        &self,
        cluster: &ClusterName,
        lease: &Lease,
        waiting_since: Timestamp,
        now: Timestamp,
    ) -> Result<Option<Lease>> {
        let key = &lock::key(cluster);
        let outcome = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(KEY, s(key))
            .item(lock::OWNER, s(&lease.owner))
            .item(lock::OPERATION, s(&lease.operation))
            .item(lock::ACQUIRED_AT, s(&lease.acquired_at.to_string()))
            .item(lock::EXPIRES_AT, s(&lease.expires_at.to_string()))
            .item(lock::EXPIRES_EPOCH, n(lease.expires_at.as_second()))
            .item(TTL_ATTRIBUTE, n(lease.expires_at.as_second() + KEEP_EXPIRED_SECONDS))
            .condition_expression(format!(
                "#owner = :owner OR ((attribute_not_exists(#pk) OR {EXPIRES_EPOCH} < :now) \
                 AND (attribute_not_exists({NEXT_OWNER}) OR {NEXT_OWNER} = :owner OR {NEXT_ASKED} < :lapsed))"
            ))
            .expression_attribute_names("#pk", KEY)
            .expression_attribute_names("#owner", lock::OWNER)
            .expression_attribute_values(":now", n(now.as_second()))
            .expression_attribute_values(":owner", s(&lease.owner))
            .expression_attribute_values(":lapsed", n(lapsed_before(now)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let Some(item) = self.refused_by(outcome, s(key)).await? else { return Ok(None) };
        let holder = lease_from(&item).filter(|h| h.owner != lease.owner && h.expires_at >= now);
        let ahead = waiting_from(&item, now).filter(|w| w.owner != lease.owner);
        if ahead.as_ref().is_none_or(|w| w.acquired_at > waiting_since) {
            self.wait_in_line(key, lease, waiting_since, now).await;
        }
        Ok(Some(holder.or(ahead).unwrap_or_else(|| {
            // Released in between: try again on the next ask.
            Lease { owner: "unknown".into(), operation: "unknown operation".into(), acquired_at: now, expires_at: now }
        })))
    }

    async fn renew(&self, cluster: &ClusterName, lease: &Lease) -> Result<Option<Lease>> {
        let key = &lock::key(cluster);
        let outcome = self
            .update_item(s(key))
            .update_expression(format!(
                "SET {} = :expires_at, {EXPIRES_EPOCH} = :expires_epoch, #ttl = :ttl",
                lock::EXPIRES_AT
            ))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", lock::OWNER)
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":owner", s(&lease.owner))
            .expression_attribute_values(":expires_at", s(&lease.expires_at.to_string()))
            .expression_attribute_values(":expires_epoch", n(lease.expires_at.as_second()))
            .expression_attribute_values(":ttl", n(lease.expires_at.as_second() + KEEP_EXPIRED_SECONDS))
            .send()
            .await;
        if written(outcome, "UpdateItem")? {
            return Ok(None);
        }
        let item = self.read(s(key)).await?.unwrap_or_default();
        Ok(Some(lease_from(&item).unwrap_or_else(|| Lease { owner: String::new(), ..lease.clone() })))
    }

    async fn release(&self, cluster: &ClusterName, owner: &str) -> Result<()> {
        let key = &lock::key(cluster);
        // The item stays, free, so that who waits in line keeps its place.
        let released = self
            .update_item(s(key))
            .update_expression(format!(
                "SET {EXPIRES_EPOCH} = :zero REMOVE #owner, {OPERATION}, {ACQUIRED_AT}, {}",
                lock::EXPIRES_AT
            ))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", lock::OWNER)
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        if written(released, "UpdateItem")? {
            return Ok(());
        }
        // Not the holder: leave the line if it waits in it.
        let left = self
            .update_item(s(key))
            .update_expression(format!(
                "REMOVE {NEXT_OWNER}, {NEXT_OPERATION}, {NEXT_SINCE}, {NEXT_SINCE_MS}, {NEXT_ASKED}"
            ))
            .condition_expression(format!("{NEXT_OWNER} = :owner"))
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        // Not waiting either: nothing to do.
        written(left, "UpdateItem")?;
        Ok(())
    }
}
