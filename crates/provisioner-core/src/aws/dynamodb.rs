//! The DynamoDB table: [`Locks`] (one item per lock, taken with a conditional put so only one
//! holder wins, with a lease so a crashed holder does not keep it) and [`Runs`] (a record per run
//! under `run#<id>`, and a pointer per kind, cluster and version to its active run).

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use jiff::Timestamp;

use super::aws_error;
use crate::domain::{ClusterName, GitRef};
use crate::error::Result;
use crate::ports::{Lease, Locks, Runs};
use crate::runner::{RunId, RunKind, RunRecord, RunState};
use crate::service::run::step_results;

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

type PutOutcome = std::result::Result<PutItemOutput, SdkError<PutItemError, HttpResponse>>;

impl DynamoStore {
    /// For a conditional put: `None` when it was written, else the item that stood in its way
    /// (read back when the endpoint did not return it; empty when it is gone since).
    async fn refused_by(&self, outcome: PutOutcome, key: AttributeValue) -> Result<Option<HashMap<String, AttributeValue>>> {
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
        let current = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY, key)
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| aws_error(SERVICE, "GetItem", error))?;
        Ok(Some(current.item().cloned().unwrap_or_default()))
    }
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
        match self.refused_by(outcome, s(key)).await? {
            None => Ok(None),
            Some(held) => Ok(Some(lease_from(&held).unwrap_or_else(|| {
                // Released in between: try again on the next poll.
                Lease { owner: "unknown".into(), operation: "unknown operation".into(), acquired_at: now, expires_at: now }
            }))),
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

fn run_key(id: &RunId) -> AttributeValue {
    s(&format!("run#{id}"))
}

fn active_key(record: &RunRecord) -> AttributeValue {
    s(&format!("active#{}#{}#{}", record.kind, record.cluster, record.version))
}

fn text_of(item: &HashMap<String, AttributeValue>, key: &str) -> Option<String> {
    item.get(key).and_then(|v| v.as_s().ok()).cloned()
}

/// The record stored under `run#<id>`, read back; `None` when the item is not a valid run.
fn run_from(item: &HashMap<String, AttributeValue>) -> Option<RunRecord> {
    let time = |key: &str| text_of(item, key).and_then(|t| t.parse::<Timestamp>().ok());
    let order: Vec<String> = item.get("step_order")?.as_l().ok()?.iter().filter_map(|v| v.as_s().ok().cloned()).collect();
    let reported: BTreeMap<String, BTreeMap<String, String>> = item
        .get("steps")
        .and_then(|v| v.as_m().ok())
        .map(|steps| {
            steps
                .iter()
                .filter_map(|(name, fields)| {
                    let fields = fields.as_m().ok()?;
                    let flat = fields
                        .iter()
                        .filter_map(|(k, v)| v.as_s().or_else(|_| v.as_n()).ok().map(|text| (k.clone(), text.clone())))
                        .collect();
                    Some((name.clone(), flat))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(RunRecord {
        run_id: RunId::parse(text_of(item, KEY)?.strip_prefix("run#")?).ok()?,
        kind: RunKind::parse(&text_of(item, "kind")?)?,
        cluster: ClusterName::parse(&text_of(item, "cluster")?).ok()?,
        version: GitRef::parse(&text_of(item, "version")?).ok()?,
        commit: text_of(item, "commit").filter(|c| c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit())),
        layout: text_of(item, "layout"),
        instance_id: text_of(item, "instance_id"),
        state: RunState::parse(&text_of(item, "state")?)?,
        steps: step_results(&order, &reported),
        started_at: time("started_at")?,
        ended_at: time("ended_at"),
        deadline: time("deadline")?,
        expires_at: time("expires_at")?,
        log_location: text_of(item, "log_location").unwrap_or_default(),
        images: item
            .get("images")
            .and_then(|v| v.as_l().ok())
            .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
            .unwrap_or_default(),
        instance_state: text_of(item, "instance_state"),
        outcome: text_of(item, "outcome"),
        failure: text_of(item, "failure"),
    })
}

#[async_trait]
impl Runs for DynamoStore {
    async fn start(&self, record: &RunRecord, now: Timestamp) -> Result<Option<RunId>> {
        let pending: HashMap<String, AttributeValue> = record
            .steps
            .iter()
            .map(|step| (step.name.clone(), AttributeValue::M(HashMap::from([("status".to_owned(), s(&step.status))]))))
            .collect();
        // The record first: a crash before the pointer leaves only an orphan record, which TTL removes.
        self.client
            .put_item()
            .table_name(&self.table)
            .item(KEY, run_key(&record.run_id))
            .item("kind", s(record.kind.as_str()))
            .item("cluster", s(record.cluster.as_str()))
            .item("version", s(record.version.as_str()))
            .item("state", s(record.state.as_str()))
            .item("started_at", s(&record.started_at.to_string()))
            .item("deadline", s(&record.deadline.to_string()))
            .item("expires_at", s(&record.expires_at.to_string()))
            .item(TTL_ATTRIBUTE, n(record.expires_at.as_second()))
            .item("log_location", s(&record.log_location))
            .item("step_order", AttributeValue::L(record.steps.iter().map(|step| s(&step.name)).collect()))
            .item("steps", AttributeValue::M(pending))
            .send()
            .await
            .map_err(|error| aws_error(SERVICE, "PutItem", error))?;
        let pointer = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(KEY, active_key(record))
            .item("run_id", s(record.run_id.as_str()))
            .item("deadline_epoch", n(record.deadline.as_second()))
            .item(TTL_ATTRIBUTE, n(record.deadline.as_second() + KEEP_EXPIRED_SECONDS))
            .condition_expression("attribute_not_exists(#pk) OR deadline_epoch < :now")
            .expression_attribute_names("#pk", KEY)
            .expression_attribute_values(":now", n(now.as_second()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let Some(active) = self.refused_by(pointer, active_key(record)).await? else { return Ok(None) };
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(KEY, run_key(&record.run_id))
            .send()
            .await
            .map_err(|error| aws_error(SERVICE, "DeleteItem", error))?;
        Ok(text_of(&active, "run_id").and_then(|id| RunId::parse(&id).ok()))
    }

    async fn get(&self, id: &RunId) -> Result<Option<RunRecord>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY, run_key(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| aws_error(SERVICE, "GetItem", error))?;
        Ok(output.item().and_then(run_from))
    }

    async fn update(&self, record: &RunRecord) -> Result<()> {
        let mut sets = vec!["#state = :state"];
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY, run_key(&record.run_id))
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":state", s(record.state.as_str()));
        if let Some(instance_id) = &record.instance_id {
            sets.push("instance_id = :instance_id");
            request = request.expression_attribute_values(":instance_id", s(instance_id));
        }
        if let Some(ended_at) = record.ended_at {
            sets.push("ended_at = :ended_at");
            request = request.expression_attribute_values(":ended_at", s(&ended_at.to_string()));
        }
        if let Some(failure) = &record.failure {
            sets.push("failure = :failure");
            request = request.expression_attribute_values(":failure", s(failure));
        }
        request
            .update_expression(format!("SET {}", sets.join(", ")))
            .send()
            .await
            .map_err(|error| aws_error(SERVICE, "UpdateItem", error))?;
        Ok(())
    }

    async fn release(&self, record: &RunRecord) -> Result<()> {
        let outcome = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(KEY, active_key(record))
            .condition_expression("run_id = :id")
            .expression_attribute_values(":id", s(record.run_id.as_str()))
            .send()
            .await;
        match outcome {
            Ok(_) => Ok(()),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(()),
            Err(error) => Err(aws_error(SERVICE, "DeleteItem", error)),
        }
    }
}
