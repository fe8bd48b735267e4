//! The DynamoDB table, one adapter of the ports over it: [`Locks`] (`locks.rs`: one item per
//! lock, taken with a conditional put so only one holder wins, with a lease so a crashed holder
//! does not keep it), [`Runs`] (`runs.rs`: a record per run under `run#<id>`, a pointer per kind,
//! cluster and version to its active run, the slots of capped profiles, the instances' reports),
//! [`History`] (`history.rs`: an item per cluster and month), the test history, the launch log and
//! [`Spend`] (`spend.rs`: each profile's books), these three JSON values changed by version
//! (`lists.rs`). Here: the store and the reads and conditional writes they share.

mod history;
mod launch_log;
mod lists;
mod locks;
mod runs;
mod spend;
mod test_history;

use locks::KEEP_EXPIRED_SECONDS;
use runs::{overlay_report, report_key};

use std::collections::HashMap;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;

use super::{aws_error, Aws};
use crate::domain::attempt::RunnerRoles;
use crate::domain::RunRecord;
use crate::error::Result;
pub use crate::table::{KEY, TTL as TTL_ATTRIBUTE};

const SERVICE: &str = "DynamoDB";

pub struct DynamoStore {
    client: Client,
    table: String,
    /// The runner roles' ids, which name their instances' reports (`report#ROLE-ID:INSTANCE-ID`).
    runner_roles: RunnerRoles,
}
impl DynamoStore {
    /// Every item whose key passes `filter` (over `#pk`, with `values`), page after page: the
    /// whole table is read.
    async fn scan(
        &self,
        filter: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Vec<HashMap<String, AttributeValue>>> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let mut request = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression(filter)
                .expression_attribute_names("#pk", KEY)
                .set_exclusive_start_key(start);
            for (name, value) in &values {
                request = request.expression_attribute_values(*name, value.clone());
            }
            let output = request.send().await.map_err(|error| aws_error(SERVICE, "Scan", error))?;
            items.extend(output.items().iter().cloned());
            start = output.last_evaluated_key().filter(|key| !key.is_empty()).cloned();
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    pub fn new(aws: &Aws, table: impl Into<String>) -> Self {
        DynamoStore {
            client: crate::aws_client!(aws_sdk_dynamodb, aws),
            table: table.into(),
            runner_roles: RunnerRoles::default(),
        }
    }

    /// Runs read with their instances' reports, named by these roles.
    pub fn with_runner_roles(self, runner_roles: RunnerRoles) -> Self {
        DynamoStore { runner_roles, ..self }
    }

    /// The record with what its current attempt's instance reported over it, if it did.
    async fn with_report(&self, mut record: RunRecord) -> Result<RunRecord> {
        let Some(key) = record.instance_id.as_deref().and_then(|id| report_key(&self.runner_roles, record.kind, id))
        else {
            return Ok(record);
        };
        if let Some(report) = self.read(s(&key)).await? {
            overlay_report(&mut record, &report);
        }
        Ok(record)
    }
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

type PutOutcome = std::result::Result<PutItemOutput, SdkError<PutItemError, HttpResponse>>;

impl DynamoStore {
    /// For a conditional put: `None` when it was written, else the item that stood in its way
    /// (read back when the endpoint did not return it; empty when it is gone since).
    async fn refused_by(
        &self,
        outcome: PutOutcome,
        key: AttributeValue,
    ) -> Result<Option<HashMap<String, AttributeValue>>> {
        let error = match outcome {
            Ok(_) => return Ok(None),
            Err(error) => error,
        };
        let Some(returned) = error.as_service_error().and_then(|e| match e {
            PutItemError::ConditionalCheckFailedException(failed) => Some(failed.item.clone()),
            _ => None,
        }) else {
            return Err(aws_error(SERVICE, "PutItem", error));
        };
        if let Some(item) = returned {
            return Ok(Some(item));
        }
        Ok(Some(self.read(key).await?.unwrap_or_default()))
    }

    /// An UpdateItem of the item under `key`.
    fn update_item(&self, key: AttributeValue) -> UpdateItemFluentBuilder {
        self.client.update_item().table_name(&self.table).key(KEY, key)
    }

    /// The item under `key`, read consistently; `None` when there is none.
    async fn read(&self, key: AttributeValue) -> Result<Option<HashMap<String, AttributeValue>>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY, key)
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| aws_error(SERVICE, "GetItem", error))?;
        Ok(output.item)
    }
}

/// Whether a conditional write went through: `false` when its condition failed.
fn written<O, E>(outcome: std::result::Result<O, SdkError<E, HttpResponse>>, operation: &'static str) -> Result<bool>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match outcome {
        Ok(_) => Ok(true),
        Err(error) if is_condition_failure(&error) => Ok(false),
        Err(error) => Err(aws_error(SERVICE, operation, error)),
    }
}

fn is_condition_failure<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    error.as_service_error().and_then(ProvideErrorMetadata::code) == Some("ConditionalCheckFailedException")
}

fn text_of(item: &HashMap<String, AttributeValue>, key: &str) -> Option<String> {
    item.get(key).and_then(|v| v.as_s().ok()).cloned()
}
