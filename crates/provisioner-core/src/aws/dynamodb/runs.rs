//! [`Runs`] over the table: run records, active-run pointers, slots and the instances' reports.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use jiff::Timestamp;

use super::*;
use crate::aws::aws_error;
use crate::domain::attempt::RunnerRoles;
use crate::domain::run::step_results;
use crate::domain::runner_image::ImageHolds;
use crate::domain::{ClusterName, GitRef};
use crate::domain::{RequestedBy, RunId, RunKind, RunRecord, RunState, StepStatus};
use crate::error::{AwsErrorKind, AwsFailure, Error, Result};
use crate::ports::{EndedRuns, Runs, Slots};
use crate::table::{active, ended_runs, last_run, live_runs, report, run, slots};

/// Reads and conditional writes of a slots item before a take gives up (another start won each).
const SLOT_ATTEMPTS: u32 = 8;

/// The key of the report `instance_id`, launched for a run of `kind`, writes.
pub(super) fn report_key(roles: &RunnerRoles, kind: RunKind, instance_id: &str) -> Option<String> {
    Some(format!("{}{}", report::PREFIX, roles.caller(kind, instance_id)?))
}

fn run_key(id: &RunId) -> AttributeValue {
    s(&format!("{}{id}", run::PREFIX))
}

fn active_key(record: &RunRecord) -> AttributeValue {
    s(&format!("{}{}#{}#{}", active::PREFIX, record.kind, record.cluster, record.version))
}

/// Each step of an item's `steps` map, by name, with its fields as text.
fn reported_steps(item: &HashMap<String, AttributeValue>) -> BTreeMap<String, BTreeMap<String, String>> {
    item.get(run::STEPS)
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
        .unwrap_or_default()
}

/// The record stored under `run#<id>`, read back; `None` when the item is not a valid run.
fn run_from(item: &HashMap<String, AttributeValue>) -> Option<RunRecord> {
    let time = |key: &str| text_of(item, key).and_then(|t| t.parse::<Timestamp>().ok());
    let order: Vec<String> =
        item.get(run::STEP_ORDER)?.as_l().ok()?.iter().filter_map(|v| v.as_s().ok().cloned()).collect();
    let reported = reported_steps(item);
    Some(RunRecord {
        run_id: RunId::parse(text_of(item, KEY)?.strip_prefix(run::PREFIX)?).ok()?,
        kind: RunKind::parse(&text_of(item, run::KIND)?)?,
        cluster: ClusterName::parse(&text_of(item, run::CLUSTER)?).ok()?,
        version: GitRef::parse(&text_of(item, run::VERSION)?).ok()?,
        commit: text_of(item, run::COMMIT).filter(|c| c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit())),
        layout: text_of(item, run::LAYOUT),
        instance_id: text_of(item, run::INSTANCE_ID),
        state: RunState::parse(&text_of(item, run::STATE)?)?,
        steps: step_results(&order, &reported),
        started_at: time(run::STARTED_AT)?,
        ended_at: time(run::ENDED_AT),
        deadline: time(run::DEADLINE)?,
        expires_at: time(run::EXPIRES_AT)?,
        log_location: text_of(item, run::LOG_LOCATION).unwrap_or_default(),
        images: item
            .get(run::IMAGES)
            .and_then(|v| v.as_l().ok())
            .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
            .unwrap_or_default(),
        outcome: text_of(item, run::OUTCOME),
        failure: text_of(item, run::FAILURE),
        attempts: text_of(item, run::ATTEMPTS).and_then(|json| serde_json::from_str(&json).ok()).unwrap_or_default(),
        hold_minutes: item.get(run::HOLD_MINUTES).and_then(|v| v.as_n().ok()?.parse().ok()).unwrap_or(0),
        held_until: time(run::HELD_UNTIL),
        instance_state: text_of(item, run::INSTANCE_STATE),
        reported_at: time(run::REPORTED_AT),
        requested_by: text_of(item, run::REQUESTED_BY).and_then(|who| RequestedBy::parse(&who).ok()),
        runner_image: text_of(item, run::RUNNER_IMAGE),
        holds: item.get(run::HOLDS).and_then(|v| v.as_m().ok()).map(|holds| {
            let field = |name: &str| holds.get(name).and_then(|v| v.as_s().ok()).cloned();
            ImageHolds::checked(field(run::HOLDS_BUILD_IMAGE_DIGEST), field(run::HOLDS_TOOLS))
        }),
        tests: text_of(item, run::TESTS).and_then(|json| serde_json::from_str(&json).ok()),
    })
}

/// What a run's instance reported (its `report#` item) over the record: only a report of this
/// run and of its current attempt counts.
pub(super) fn overlay_report(record: &mut RunRecord, report: &HashMap<String, AttributeValue>) {
    let of_this_run = text_of(report, report::RUN_ID).as_deref() == Some(record.run_id.as_str());
    let attempt = report.get(report::ATTEMPT).and_then(|v| v.as_n().ok()).and_then(|n| n.parse::<u32>().ok());
    if !of_this_run || attempt != Some(record.attempt_number()) {
        return;
    }
    let order: Vec<String> = record.steps.iter().map(|step| step.name.clone()).collect();
    record.steps = step_results(&order, &reported_steps(report));
    record.commit = text_of(report, run::COMMIT).filter(|c| c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit()));
    record.layout = text_of(report, run::LAYOUT);
    record.images = report
        .get(run::IMAGES)
        .and_then(|v| v.as_l().ok())
        .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
        .unwrap_or_default();
    record.outcome = text_of(report, run::OUTCOME);
    record.instance_state = text_of(report, run::INSTANCE_STATE);
    record.reported_at = text_of(report, run::REPORTED_AT).and_then(|t| t.parse().ok());
    record.holds = report.get(run::HOLDS).and_then(|v| v.as_m().ok()).map(|holds| {
        let field = |name: &str| holds.get(name).and_then(|v| v.as_s().ok()).cloned();
        ImageHolds::checked(field(run::HOLDS_BUILD_IMAGE_DIGEST), field(run::HOLDS_TOOLS))
    });
}

/// The pending steps of a run's plan, as a new attempt starts them.
fn pending_steps(record: &RunRecord) -> AttributeValue {
    AttributeValue::M(
        record
            .steps
            .iter()
            .map(|step| {
                let status = HashMap::from([(run::STEP_STATUS.to_owned(), s(StepStatus::Pending.as_str()))]);
                (step.name.clone(), AttributeValue::M(status))
            })
            .collect(),
    )
}

fn attempts_json(record: &RunRecord) -> AttributeValue {
    s(&serde_json::to_string(&record.attempts).unwrap_or_else(|_| "[]".into()))
}

/// The condition that the stored run has not ended and its current attempt is `number`.
fn active_at_attempt(request: UpdateItemFluentBuilder, number: u32) -> UpdateItemFluentBuilder {
    let attempt = if number == 0 { "attribute_not_exists(#attempt)" } else { "#attempt = :attempt_read" };
    let request = request
        .condition_expression(format!(
            "attribute_exists(#pk) AND (#state = :launching OR #state = :running) AND {attempt}"
        ))
        .expression_attribute_names("#pk", KEY)
        .expression_attribute_names("#attempt", run::ATTEMPT)
        .expression_attribute_values(":launching", s(RunState::Launching.as_str()))
        .expression_attribute_values(":running", s(RunState::Running.as_str()));
    if number == 0 {
        request
    } else {
        request.expression_attribute_values(":attempt_read", n(i64::from(number)))
    }
}

/// A slots item's version and its holders, each with the epoch second its hold lapses.
fn slots_of(item: Option<&HashMap<String, AttributeValue>>) -> (Option<i64>, Vec<(String, i64)>) {
    let version = item.and_then(|i| i.get(slots::VERSION)).and_then(|v| v.as_n().ok()?.parse::<i64>().ok());
    let held = item
        .and_then(|i| i.get(slots::RUNS))
        .and_then(|runs| runs.as_m().ok())
        .into_iter()
        .flatten()
        .filter_map(|(id, until)| Some((id.clone(), until.as_n().ok()?.parse().ok()?)))
        .collect();
    (version, held)
}

impl DynamoStore {
    /// The write that takes a slot for `run_id` until `deadline`, removing the `past` holders:
    /// conditioned on the `version` read, so a take another made first is read again.
    fn slot_take(
        &self,
        key: AttributeValue,
        version: Option<i64>,
        past: &[(String, i64)],
        run_id: &RunId,
        deadline: Timestamp,
    ) -> UpdateItemFluentBuilder {
        let Some(version) = version else {
            return self
                .update_item(key)
                .update_expression("SET #runs = :runs, #version = :one")
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", KEY)
                .expression_attribute_values(
                    ":runs",
                    AttributeValue::M(HashMap::from([(run_id.to_string(), n(deadline.as_second()))])),
                )
                .expression_attribute_values(":one", n(1));
        };
        let mut update = self
            .update_item(key)
            .condition_expression("#version = :read")
            .expression_attribute_names("#me", run_id.as_str())
            .expression_attribute_values(":until", n(deadline.as_second()))
            .expression_attribute_values(":read", n(version))
            .expression_attribute_values(":next", n(version + 1));
        let mut removed = Vec::new();
        for (index, (id, _)) in past.iter().enumerate() {
            update = update.expression_attribute_names(format!("#past{index}"), id);
            removed.push(format!("#runs.#past{index}"));
        }
        let remove = if removed.is_empty() { String::new() } else { format!(" REMOVE {}", removed.join(", ")) };
        update.update_expression(format!("SET #runs.#me = :until, #version = :next{remove}"))
    }
}

/// Live and ended runs: the items status and the sweeper read instead of every record.
impl DynamoStore {
    fn live_key() -> AttributeValue {
        s(live_runs::KEY_VALUE)
    }

    /// Adds `record` to the live runs.
    async fn note_live(&self, record: &RunRecord) -> Result<()> {
        self.update_item(Self::live_key())
            .update_expression("SET #run = :started")
            .expression_attribute_names("#run", record.run_id.as_str())
            .expression_attribute_values(":started", s(&record.started_at.to_string()))
            .send()
            .await
            .map_err(|error| aws_error(SERVICE, "UpdateItem", error))?;
        Ok(())
    }

    /// Takes `run_id` out of the live runs.
    async fn drop_live(&self, run_id: &RunId) -> Result<()> {
        self.update_item(Self::live_key())
            .update_expression("REMOVE #run")
            .expression_attribute_names("#run", run_id.as_str())
            .send()
            .await
            .map_err(|error| aws_error(SERVICE, "UpdateItem", error))?;
        Ok(())
    }

    /// Notes an ended run on its end's day, and takes it out of the live runs unless it holds
    /// its instance.
    async fn note_ended(&self, record: &RunRecord) -> Result<()> {
        let ended = record.ended_at.unwrap_or(record.started_at);
        let day = ended.strftime("%Y-%m-%d").to_string();
        let kept_until = ended + jiff::SignedDuration::from_hours(24 * ended_runs::KEPT_DAYS);
        self.update_item(s(&ended_runs::key(&day)))
            .update_expression("SET #run = :ended, #ttl = :ttl")
            .expression_attribute_names("#run", record.run_id.as_str())
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":ended", s(&format!("{ended} {} {}", record.kind, record.cluster)))
            .expression_attribute_values(":ttl", n(kept_until.as_second()))
            .send()
            .await
            .map_err(|error| aws_error(SERVICE, "UpdateItem", error))?;
        // Only a later end moves the pointer (the sweeper forgets runs that ended long ago too).
        let pointed = self
            .update_item(s(&last_run::key(record.kind)))
            .update_expression("SET #run = :run, #ended = :at")
            .condition_expression("attribute_not_exists(#ended) OR #ended < :at")
            .expression_attribute_names("#run", last_run::RUN_ID)
            .expression_attribute_names("#ended", last_run::ENDED_EPOCH_MS)
            .expression_attribute_values(":run", s(record.run_id.as_str()))
            .expression_attribute_values(":at", n(ended.as_millisecond()))
            .send()
            .await;
        written(pointed, "UpdateItem")?;
        if record.held_until.is_none() {
            self.drop_live(&record.run_id).await?;
        }
        Ok(())
    }

    /// The runs of the item under `key`, one attribute each (not the key or TTL).
    async fn runs_of_item(&self, key: AttributeValue) -> Result<Vec<(RunId, String)>> {
        let item = self.read(key).await?.unwrap_or_default();
        Ok(item
            .into_iter()
            .filter(|(name, _)| name != KEY && name != TTL_ATTRIBUTE)
            .filter_map(|(name, value)| Some((RunId::parse(&name).ok()?, value.as_s().ok()?.clone())))
            .collect())
    }

    /// The records of `ids` (with their reports), read together; one that is gone is left out.
    async fn records_of(&self, ids: impl Iterator<Item = RunId>) -> Result<Vec<RunRecord>> {
        let ids: Vec<RunId> = ids.collect();
        let reads = ids.iter().map(|id| self.get(id));
        Ok(futures::future::try_join_all(reads).await?.into_iter().flatten().collect())
    }

    /// The ended runs `wanted` keeps of the `days` items, read together: (end, id), in no order.
    async fn ended_on(&self, days: &[String], wanted: &EndedRuns, now: Timestamp) -> Result<Vec<(Timestamp, RunId)>> {
        let reads = days.iter().map(|day| self.runs_of_item(s(&ended_runs::key(day))));
        let mut found = Vec::new();
        for (id, entry) in futures::future::try_join_all(reads).await?.into_iter().flatten() {
            let mut fields = entry.split(' ');
            let ended = fields.next().and_then(|t| t.parse::<Timestamp>().ok());
            let kind = fields.next().and_then(RunKind::parse);
            let cluster = fields.next().and_then(|c| ClusterName::parse(c).ok());
            let (Some(ended), Some(kind), Some(cluster)) = (ended, kind, cluster) else { continue };
            if ended <= now && wanted.keeps(kind, &cluster) {
                found.push((ended, id));
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl Runs for DynamoStore {
    async fn take_slot(
        &self,
        pool: &Slots,
        run_id: &RunId,
        deadline: Timestamp,
        now: Timestamp,
    ) -> Result<Option<Vec<RunId>>> {
        let key = s(&slots::key(&pool.profile, pool.kind));
        for _ in 0..SLOT_ATTEMPTS {
            let item = self.read(key.clone()).await?;
            let (version, held) = slots_of(item.as_ref());
            if held.iter().any(|(id, _)| id == run_id.as_str()) {
                return Ok(None);
            }
            let (live, past): (Vec<_>, Vec<_>) = held.into_iter().partition(|(_, until)| *until >= now.as_second());
            if live.len() >= pool.cap as usize {
                let mut holders: Vec<RunId> = live.iter().filter_map(|(id, _)| RunId::parse(id).ok()).collect();
                holders.sort_by_key(ToString::to_string);
                return Ok(Some(holders));
            }
            let request = self.slot_take(key.clone(), version, &past, run_id, deadline);
            let outcome = request
                .expression_attribute_names("#runs", slots::RUNS)
                .expression_attribute_names("#version", slots::VERSION)
                .send()
                .await;
            if written(outcome, "UpdateItem")? {
                return Ok(None);
            }
        }
        Err(Error::Aws(AwsFailure {
            service: SERVICE,
            operation: "UpdateItem",
            code: "ConditionalCheckFailedException".into(),
            message: format!("other starts took the slots of profile '{}' first {SLOT_ATTEMPTS} times", pool.profile),
            kind: AwsErrorKind::Throttled,
        }))
    }

    async fn active(&self, record: &RunRecord, now: Timestamp) -> Result<Option<RunId>> {
        let Some(item) = self.read(active_key(record)).await? else { return Ok(None) };
        let deadline = item.get(active::DEADLINE_EPOCH).and_then(|v| v.as_n().ok()?.parse::<i64>().ok()).unwrap_or(0);
        if deadline < now.as_second() {
            return Ok(None);
        }
        Ok(text_of(&item, active::RUN_ID).and_then(|id| RunId::parse(&id).ok()))
    }

    async fn slots_held(&self, pool: &Slots, now: Timestamp) -> Result<Vec<RunId>> {
        let item = self.read(s(&slots::key(&pool.profile, pool.kind))).await?;
        let mut held: Vec<RunId> = item
            .as_ref()
            .and_then(|i| i.get(slots::RUNS))
            .and_then(|runs| runs.as_m().ok())
            .into_iter()
            .flatten()
            .filter(|(_, until)| {
                until.as_n().ok().and_then(|n| n.parse::<i64>().ok()).is_some_and(|u| u >= now.as_second())
            })
            .filter_map(|(id, _)| RunId::parse(id).ok())
            .collect();
        held.sort_by_key(ToString::to_string);
        Ok(held)
    }

    async fn free_slot(&self, profile: &str, kind: RunKind, run_id: &RunId) -> Result<()> {
        let outcome = self
            .update_item(s(&slots::key(profile, kind)))
            .update_expression("REMOVE #runs.#me")
            .condition_expression("attribute_exists(#runs)")
            .expression_attribute_names("#runs", slots::RUNS)
            .expression_attribute_names("#me", run_id.as_str())
            .send()
            .await;
        // Nothing to free when there is no slots item.
        written(outcome, "UpdateItem").map(|_| ())
    }

    async fn start(&self, record: &RunRecord, now: Timestamp) -> Result<Option<RunId>> {
        // Live first, so no run is missed; then the record: a crash before the pointer leaves only
        // an orphan record, which TTL removes.
        self.note_live(record).await?;
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(KEY, run_key(&record.run_id))
            .item(run::KIND, s(record.kind.as_str()))
            .item(run::CLUSTER, s(record.cluster.as_str()))
            .item(run::VERSION, s(record.version.as_str()))
            .item(run::STATE, s(record.state.as_str()))
            .item(run::STARTED_AT, s(&record.started_at.to_string()))
            .item(run::DEADLINE, s(&record.deadline.to_string()))
            .item(run::EXPIRES_AT, s(&record.expires_at.to_string()))
            .item(TTL_ATTRIBUTE, n(record.expires_at.as_second()))
            .item(run::STEP_ORDER, AttributeValue::L(record.steps.iter().map(|step| s(&step.name)).collect()))
            .item(run::STEPS, pending_steps(record))
            .item(run::ATTEMPT, n(i64::from(record.attempt_number())))
            .item(run::ATTEMPTS, attempts_json(record))
            .item(run::HOLD_MINUTES, n(i64::from(record.hold_minutes)));
        if let Some(who) = &record.requested_by {
            put = put.item(run::REQUESTED_BY, s(who.as_str()));
        }
        if let Some(image) = &record.runner_image {
            put = put.item(run::RUNNER_IMAGE, s(image));
        }
        put.send().await.map_err(|error| aws_error(SERVICE, "PutItem", error))?;
        let pointer = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(KEY, active_key(record))
            .item(active::RUN_ID, s(record.run_id.as_str()))
            .item(active::DEADLINE_EPOCH, n(record.deadline.as_second()))
            .item(TTL_ATTRIBUTE, n(record.deadline.as_second() + KEEP_EXPIRED_SECONDS))
            .condition_expression(format!("attribute_not_exists(#pk) OR {} < :now", active::DEADLINE_EPOCH))
            .expression_attribute_names("#pk", KEY)
            .expression_attribute_values(":now", n(now.as_second()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let Some(active) = self.refused_by(pointer, active_key(record)).await? else { return Ok(None) };
        let active = text_of(&active, active::RUN_ID).and_then(|id| RunId::parse(&id).ok());
        // This run itself, started by an earlier call whose answer was lost: its record stays.
        if active.as_ref() == Some(&record.run_id) {
            return Ok(active);
        }
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(KEY, run_key(&record.run_id))
            .send()
            .await
            .map_err(|error| aws_error(SERVICE, "DeleteItem", error))?;
        self.drop_live(&record.run_id).await?;
        Ok(active)
    }

    async fn get(&self, id: &RunId) -> Result<Option<RunRecord>> {
        match self.read(run_key(id)).await?.as_ref().and_then(run_from) {
            Some(record) => Ok(Some(self.with_report(record).await?)),
            None => Ok(None),
        }
    }

    async fn update(&self, record: &RunRecord) -> Result<()> {
        let mut sets = vec!["#state = :state".to_owned(), "#attempts = :attempts".to_owned()];
        let mut request = self
            .update_item(run_key(&record.run_id))
            .expression_attribute_names("#attempts", run::ATTEMPTS)
            .expression_attribute_names("#state", run::STATE)
            .expression_attribute_values(":state", s(record.state.as_str()))
            .expression_attribute_values(":attempts", attempts_json(record));
        let optional = [
            (run::INSTANCE_ID, ":instance_id", record.instance_id.clone()),
            (run::ENDED_AT, ":ended_at", record.ended_at.map(|t| t.to_string())),
            (run::FAILURE, ":failure", record.failure.clone()),
            (run::HELD_UNTIL, ":held_until", record.held_until.map(|t| t.to_string())),
            (run::RUNNER_IMAGE, ":runner_image", record.runner_image.clone()),
            (run::LOG_LOCATION, ":log_location", Some(record.log_location.clone()).filter(|l| !l.is_empty())),
            (run::TESTS, ":tests", record.tests.as_ref().and_then(|tests| serde_json::to_string(tests).ok())),
        ];
        for (name, value, text) in optional {
            if let Some(text) = text {
                sets.push(format!("{name} = {value}"));
                request = request.expression_attribute_values(value, s(&text));
            }
        }
        // An ended run is final, and a writer that missed a new attempt must not touch it.
        active_at_attempt(request.update_expression(format!("SET {}", sets.join(", "))), record.attempt_number())
            .send()
            .await
            .map_err(|error| aws_error(SERVICE, "UpdateItem", error))?;
        if record.state.ended() {
            self.note_ended(record).await?;
        }
        Ok(())
    }

    async fn begin_attempt(&self, record: &RunRecord) -> Result<()> {
        let number = record.attempt_number();
        let cleared = [
            run::INSTANCE_ID,
            run::COMMIT,
            run::LAYOUT,
            run::IMAGES,
            run::OUTCOME,
            run::INSTANCE_STATE,
            run::REPORTED_AT,
            run::FAILURE,
            run::HOLDS,
            run::LOG_LOCATION,
        ];
        // Every name by a placeholder: some (commit) are DynamoDB reserved words.
        let mut request = self.update_item(run_key(&record.run_id));
        let mut removed = Vec::new();
        for (index, name) in cleared.iter().enumerate() {
            request = request.expression_attribute_names(format!("#clear{index}"), *name);
            removed.push(format!("#clear{index}"));
        }
        let request = request
            .update_expression(format!(
                "SET #state = :state, #attempt = :attempt, #attempts = :attempts, #steps = :steps REMOVE {}",
                removed.join(", ")
            ))
            .expression_attribute_names("#attempts", run::ATTEMPTS)
            .expression_attribute_names("#steps", run::STEPS)
            .expression_attribute_names("#state", run::STATE)
            .expression_attribute_values(":state", s(record.state.as_str()))
            .expression_attribute_values(":attempt", n(i64::from(number)))
            .expression_attribute_values(":attempts", attempts_json(record))
            .expression_attribute_values(":steps", pending_steps(record));
        // Exactly one caller moves a run from its attempt to the next, and never one whose
        // instance reported its outcome (a failed step is not retried).
        let request = active_at_attempt(request, number.saturating_sub(1));
        let condition = request.get_condition_expression().clone().unwrap_or_default();
        request
            .condition_expression(format!("{condition} AND attribute_not_exists(#outcome)"))
            .expression_attribute_names("#outcome", run::OUTCOME)
            .send()
            .await
            .map_err(|error| aws_error(SERVICE, "UpdateItem", error))?;
        Ok(())
    }

    async fn end_hold(&self, run_id: &RunId, at: Timestamp) -> Result<()> {
        let outcome = self
            .update_item(run_key(run_id))
            .update_expression("SET #held = :at")
            .condition_expression("attribute_exists(#held)")
            .expression_attribute_names("#held", run::HELD_UNTIL)
            .expression_attribute_values(":at", s(&at.to_string()))
            .send()
            .await;
        // Nothing held: nothing to end.
        if written(outcome, "UpdateItem")? {
            self.drop_live(run_id).await?;
        }
        Ok(())
    }

    async fn release(&self, record: &RunRecord) -> Result<()> {
        let outcome = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(KEY, active_key(record))
            .condition_expression(format!("{} = :id", active::RUN_ID))
            .expression_attribute_values(":id", s(record.run_id.as_str()))
            .send()
            .await;
        // Another run is active there already: nothing to end.
        written(outcome, "DeleteItem")?;
        Ok(())
    }

    async fn live(&self) -> Result<Vec<RunRecord>> {
        let ids = self.runs_of_item(Self::live_key()).await?;
        self.records_of(ids.into_iter().map(|(id, _)| id)).await
    }

    async fn forget(&self, records: &[RunRecord]) -> Result<()> {
        for record in records.iter().filter(|record| record.state.ended()) {
            self.note_ended(&RunRecord { held_until: None, ..record.clone() }).await?;
        }
        Ok(())
    }

    async fn forget_unrecorded(&self, noted_before: Timestamp) -> Result<Vec<RunId>> {
        let noted = self.runs_of_item(Self::live_key()).await?;
        let old: Vec<(RunId, String)> =
            noted.into_iter().filter(|(_, at)| at.parse::<Timestamp>().is_ok_and(|at| at < noted_before)).collect();
        let records = futures::future::try_join_all(old.iter().map(|(id, _)| self.read(run_key(id)))).await?;
        let mut forgotten = Vec::new();
        for ((id, at), record) in old.into_iter().zip(records) {
            if record.is_some() {
                continue;
            }
            // Unless a start asked again noted it anew meanwhile.
            let removed = self
                .update_item(Self::live_key())
                .update_expression("REMOVE #run")
                .condition_expression("#run = :noted")
                .expression_attribute_names("#run", id.as_str())
                .expression_attribute_values(":noted", s(&at))
                .send()
                .await;
            if written(removed, "UpdateItem")? {
                forgotten.push(id);
            }
        }
        Ok(forgotten)
    }

    async fn ended(&self, count: usize, wanted: &EndedRuns, now: Timestamp) -> Result<Vec<RunRecord>> {
        let today = jiff::tz::TimeZone::UTC.to_datetime(now).date();
        let days: Vec<String> = (0..ended_runs::KEPT_DAYS)
            .filter_map(|back| today.checked_sub(jiff::Span::new().days(back)).ok())
            .map(|day| day.strftime("%Y-%m-%d").to_string())
            .collect();
        let mut found = Vec::new();
        // Newest days first: once enough are found, an older day holds none that ended later.
        // Today alone first (a busy day has them all), then the week, then the rest, each read
        // together.
        let mut read = 0;
        for upto in [1, 7, days.len()] {
            let upto = upto.min(days.len());
            if read >= upto {
                continue;
            }
            found.extend(self.ended_on(&days[read..upto], wanted, now).await?);
            read = upto;
            if found.len() >= count {
                break;
            }
        }
        found.sort_by(|a, b| b.cmp(a));
        self.records_of(found.into_iter().take(count).map(|(_, id)| id)).await
    }

    async fn last_ended(&self, kind: RunKind) -> Result<Option<RunRecord>> {
        let item = self.read(s(&last_run::key(kind))).await?;
        let Some(id) = item.and_then(|item| text_of(&item, last_run::RUN_ID)).and_then(|id| RunId::parse(&id).ok())
        else {
            return Ok(None);
        };
        self.get(&id).await
    }

    async fn list(&self) -> Result<Vec<RunRecord>> {
        let filter = "begins_with(#pk, :runs) OR begins_with(#pk, :reports)";
        let items = self.scan(filter, vec![(":runs", s(run::PREFIX)), (":reports", s(report::PREFIX))]).await?;
        let reports: HashMap<&str, &HashMap<String, AttributeValue>> = items
            .iter()
            .filter_map(|item| Some((item.get(KEY)?.as_s().ok()?.as_str(), item)))
            .filter(|(key, _)| key.starts_with(report::PREFIX))
            .collect();
        let mut records: Vec<RunRecord> = items.iter().filter_map(run_from).collect();
        for record in &mut records {
            let key = record.instance_id.as_deref().and_then(|id| report_key(&self.runner_roles, record.kind, id));
            if let Some(report) = key.and_then(|key| reports.get(key.as_str())) {
                overlay_report(record, report);
            }
        }
        Ok(records)
    }
}
