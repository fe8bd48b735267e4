//! [`Locks`] in DynamoDB: one item per lock, taken with a conditional put so only one holder
//! wins, and a lease so a crashed holder does not keep it.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use jiff::Timestamp;

use super::aws_error;
use crate::error::Result;
use crate::ports::{Lease, Locks};

const SERVICE: &str = "DynamoDB";
/// Partition key of every item in the table.
pub const KEY: &str = "pk";
/// Epoch seconds after which DynamoDB's TTL may remove an item.
pub const TTL_ATTRIBUTE: &str = "expires_ttl";
/// How long an expired lock item is kept for inspection before TTL removes it.
const KEEP_EXPIRED_SECONDS: i64 = 24 * 60 * 60;

pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore { client, table: table.into() }
    }
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn lease_from(item: &HashMap<String, AttributeValue>) -> Option<Lease> {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let time = |k: &str| text(k).and_then(|t| t.parse::<Timestamp>().ok());
    Some(Lease { owner: text("owner")?, operation: text("operation")?, acquired_at: time("acquired_at")?, expires_at: time("expires_at")? })
}

#[async_trait]
impl Locks for DynamoStore {
    async fn try_acquire(&self, key: &str, lease: &Lease, now: Timestamp) -> Result<Option<Lease>> {
        let outcome = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(KEY, s(key))
            .item("owner", s(&lease.owner))
            .item("operation", s(&lease.operation))
            .item("acquired_at", s(&lease.acquired_at.to_string()))
            .item("expires_at", s(&lease.expires_at.to_string()))
            .item("expires_epoch", n(lease.expires_at.as_second()))
            .item(TTL_ATTRIBUTE, n(lease.expires_at.as_second() + KEEP_EXPIRED_SECONDS))
            .condition_expression("attribute_not_exists(#pk) OR expires_epoch < :now OR #owner = :owner")
            .expression_attribute_names("#pk", KEY)
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":now", n(now.as_second()))
            .expression_attribute_values(":owner", s(&lease.owner))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let error = match outcome {
            Ok(_) => return Ok(None),
            Err(error) => error,
        };
        let Some(held) = error.as_service_error().and_then(|e| match e {
            aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(failed) => Some(failed.item.clone()),
            _ => None,
        }) else {
            return Err(aws_error(SERVICE, "PutItem", error));
        };
        if let Some(holder) = held.as_ref().and_then(lease_from) {
            return Ok(Some(holder));
        }
        // Not every endpoint returns the old item: read it.
        let current = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY, s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| aws_error(SERVICE, "GetItem", error))?;
        match current.item().and_then(lease_from) {
            Some(holder) => Ok(Some(holder)),
            // Released in between: try again on the next poll.
            None => Ok(Some(Lease { owner: "unknown".into(), operation: "unknown operation".into(), acquired_at: now, expires_at: now })),
        }
    }

    async fn release(&self, key: &str, owner: &str) -> Result<()> {
        let outcome = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(KEY, s(key))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        match outcome {
            Ok(_) => Ok(()),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(()),
            Err(error) => Err(aws_error(SERVICE, "DeleteItem", error)),
        }
    }
}
