//! [`History`] over the table: an item per cluster and month.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::aws::aws_error;
use crate::domain::history::{month_of, months_kept, HISTORY_RETENTION};
use crate::domain::ClusterName;
use crate::domain::{HistoryEntry, OnceNotice};
use crate::error::Result;
use crate::ports::History;
use crate::table::{self, history as history_item};

/// The entries of one month's history item, in no order.
fn history_entries(item: &HashMap<String, AttributeValue>) -> impl Iterator<Item = HistoryEntry> + '_ {
    let stored = item.get(history_item::ENTRIES).and_then(|v| v.as_m().ok());
    stored.into_iter().flatten().filter_map(|(_, v)| serde_json::from_str::<HistoryEntry>(v.as_s().ok()?).ok())
}

#[async_trait]
impl History for DynamoStore {
    async fn record(&self, cluster: &ClusterName, entry: &HistoryEntry) -> Result<()> {
        let key = s(&history_item::key(cluster, &month_of(entry.at)));
        // Kept 400 days past the last entry of its month.
        let expires = (entry.at + HISTORY_RETENTION + SignedDuration::from_hours(31 * 24)).as_second();
        self.update_item(key.clone())
            .update_expression("SET #entries = if_not_exists(#entries, :empty), #ttl = :ttl")
            .expression_attribute_names("#entries", history_item::ENTRIES)
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":empty", AttributeValue::M(HashMap::new()))
            .expression_attribute_values(":ttl", n(expires))
            .send()
            .await
            .map_err(|error| aws_error(SERVICE, "UpdateItem", error))?;
        let id = format!("{}#{}", entry.at, &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let json = entry.stored_json();
        let max =
            history_item::MAX_ENTRIES + if entry.stack_created_at.is_some() { history_item::SPEND_RESERVE } else { 0 };
        let outcome = self
            .update_item(key)
            .update_expression("SET #entries.#id = :entry")
            .condition_expression("size(#entries) < :max")
            .expression_attribute_names("#entries", history_item::ENTRIES)
            .expression_attribute_names("#id", id)
            .expression_attribute_values(":entry", s(&json))
            .expression_attribute_values(":max", n(max as i64))
            .send()
            .await;
        if !written(outcome, "UpdateItem")? {
            tracing::warn!(cluster = %cluster, "this month's history of the cluster is full; the entry is dropped");
        }
        Ok(())
    }

    async fn claim(&self, notice: &OnceNotice, claimant: &str, now: Timestamp) -> Result<bool> {
        let stale = now - crate::domain::history::CLAIM_LEASE;
        let outcome = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(KEY, s(&table::notice::key(notice)))
            .item(TTL_ATTRIBUTE, n(notice.kept_until().as_second()))
            .item(table::notice::CLAIMANT, s(claimant))
            .item(table::notice::CLAIMED_AT, n(now.as_second()))
            .condition_expression(
                "attribute_not_exists(#pk) OR #claimant = :me OR (attribute_not_exists(#sent) AND #at < :stale)",
            )
            .expression_attribute_names("#pk", KEY)
            .expression_attribute_names("#claimant", table::notice::CLAIMANT)
            .expression_attribute_names("#sent", table::notice::SENT)
            .expression_attribute_names("#at", table::notice::CLAIMED_AT)
            .expression_attribute_values(":me", s(claimant))
            .expression_attribute_values(":stale", n(stale.as_second()))
            .send()
            .await;
        written(outcome, "PutItem")
    }

    async fn confirm(&self, notice: &OnceNotice) -> Result<()> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(KEY, s(&table::notice::key(notice)))
            .update_expression("SET #sent = :true")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", KEY)
            .expression_attribute_names("#sent", table::notice::SENT)
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .send()
            .await
            .map(drop)
            .map_err(|error| aws_error(SERVICE, "UpdateItem", error))
    }

    async fn month(&self, month: &str) -> Result<Vec<(ClusterName, HistoryEntry)>> {
        // A cluster name has no `#`: `#<month>` at the end of the key is the month.
        let suffix = format!("#{month}");
        let items = self
            .scan(
                "begins_with(#pk, :prefix) AND contains(#pk, :month)",
                vec![(":prefix", s(history_item::PREFIX)), (":month", s(&suffix))],
            )
            .await?;
        let mut found = Vec::new();
        for item in &items {
            let cluster = item
                .get(KEY)
                .and_then(|key| key.as_s().ok())
                .and_then(|key| key.strip_prefix(history_item::PREFIX)?.strip_suffix(&suffix))
                .and_then(|cluster| ClusterName::parse(cluster).ok());
            if let Some(cluster) = cluster {
                found.extend(history_entries(item).map(|entry| (cluster.clone(), entry)));
            }
        }
        Ok(found)
    }

    async fn of(&self, cluster: &ClusterName, now: Timestamp, at_least: usize) -> Result<Vec<HistoryEntry>> {
        let mut entries = Vec::new();
        for month in months_kept(now) {
            if entries.len() >= at_least {
                break;
            }
            let Some(item) = self.read(s(&history_item::key(cluster, &month))).await? else { continue };
            entries.extend(history_entries(&item).filter(|entry| entry.kept_at(now)));
        }
        entries.sort_by_key(|entry| std::cmp::Reverse(entry.at));
        Ok(entries)
    }
}
