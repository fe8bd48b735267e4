//! Run records in memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jiff::Timestamp;

use super::faults::fake_failure;
use super::Faults;
use crate::domain::{RunId, RunKind, RunRecord, StepResult, StepStatus};
use crate::error::{AwsErrorKind, Result};
use crate::ports::{EndedRuns, Runs, Slots};

/// Run records in memory, with the DynamoDB adapter's semantics.
#[derive(Default)]
pub struct FakeRuns {
    faults: Arc<Faults>,
    records: Mutex<HashMap<String, RunRecord>>,
    active: Mutex<HashMap<String, (RunId, Timestamp)>>,
    /// `<profile>#<kind>` -> the runs holding a slot, with their deadlines.
    slots: Mutex<HashMap<String, HashMap<RunId, Timestamp>>>,
    /// What [`Runs::live`] finds, and the ended runs by their end, as the adapter's items hold them.
    /// Live runs with when each was noted (its start).
    live: Mutex<BTreeMap<String, Timestamp>>,
    ended: Mutex<BTreeMap<String, Timestamp>>,
}

fn active_key(record: &RunRecord) -> String {
    format!("{}#{}#{}", record.kind, record.cluster, record.version)
}

impl FakeRuns {
    pub fn new(faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(FakeRuns { faults, ..FakeRuns::default() })
    }

    /// Every run record, oldest first.
    pub fn all(&self) -> Vec<RunRecord> {
        let mut all: Vec<RunRecord> = self.records.lock().unwrap().values().cloned().collect();
        all.sort_by_key(|r| (r.started_at, r.run_id.to_string()));
        all
    }

    /// The runs that hold a slot of `profile`'s runs of `kind` at `now`.
    pub fn slot_holders(&self, profile: &str, kind: RunKind, now: Timestamp) -> Vec<RunId> {
        let slots = self.slots.lock().unwrap();
        let held = slots.get(&format!("{profile}#{kind}"));
        let mut holders: Vec<RunId> =
            held.into_iter().flatten().filter(|(_, deadline)| **deadline >= now).map(|(id, _)| id.clone()).collect();
        holders.sort_by_key(ToString::to_string);
        holders
    }

    /// Puts `record` as it is, as if it had run: a run of the past, for what counts them (found
    /// as live, or among the ended, as its state says).
    pub fn put(&self, record: RunRecord) {
        self.index(&record, true);
        self.records.lock().unwrap().insert(record.run_id.to_string(), record);
    }

    /// Notes `record` among the live runs (when `live` and it may have an instance) or the ended.
    fn index(&self, record: &RunRecord, live: bool) {
        let id = record.run_id.to_string();
        if record.state.ended() {
            self.ended.lock().unwrap().insert(id.clone(), record.ended_at.unwrap_or(record.started_at));
        }
        if live && (!record.state.ended() || record.held_until.is_some()) {
            self.live.lock().unwrap().insert(id, record.started_at);
        } else {
            self.live.lock().unwrap().remove(&id);
        }
    }

    /// Notes `id` among the live runs at `noted` with no record, as a start that failed between
    /// its two writes leaves it.
    pub fn plant_unrecorded(&self, id: &RunId, noted: Timestamp) {
        self.live.lock().unwrap().insert(id.to_string(), noted);
    }

    /// The ids the live runs name, recorded or not.
    pub fn live_ids(&self) -> Vec<String> {
        self.live.lock().unwrap().keys().cloned().collect()
    }

    pub fn record(&self, id: &RunId) -> Option<RunRecord> {
        self.records.lock().unwrap().get(id.as_str()).cloned()
    }

    pub fn count(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    /// Plays the instance: reports each step's status, then the outcome.
    pub fn report(&self, id: &RunId, steps: &[(&str, StepStatus)], outcome: Option<&str>) {
        let mut records = self.records.lock().unwrap();
        let record = records.get_mut(id.as_str()).expect("a run");
        for (name, status) in steps {
            let step = record.steps.iter_mut().find(|s| s.name == *name).expect("a step of the plan");
            step.status = *status;
            step.exit_code = Some(if *status == StepStatus::Failed { 2 } else { 0 });
            step.reason = (*status == StepStatus::NotApplicable).then(|| format!("this version has no {name}"));
        }
        record.commit = Some("0123456789abcdef0123456789abcdef01234567".into());
        record.layout = Some("D".into());
        record.instance_state = Some(if outcome.is_some() { "finished" } else { "running" }.into());
        record.reported_at = Some(record.started_at);
        if let Some(outcome) = outcome {
            record.outcome = Some(outcome.to_owned());
        }
    }

    /// Plays a test step's suite report: its counts and failing ids, as the instance reads them.
    pub fn report_tests(&self, id: &RunId, step: &str, tests: crate::domain::test_results::StepTests) {
        let mut records = self.records.lock().unwrap();
        let record = records.get_mut(id.as_str()).expect("a run");
        record.steps.iter_mut().find(|s| s.name == step).expect("a step of the plan").tests = Some(tests);
    }

    /// Plays a runner image run's instance saying what its image holds.
    pub fn report_holds(&self, id: &RunId, holds: crate::domain::runner_image::ImageHolds) {
        self.records.lock().unwrap().get_mut(id.as_str()).expect("a run").holds = Some(holds);
    }

    /// Plays the instance's spot-notice watcher: the running step, if any, reported interrupted.
    pub fn report_interrupted(&self, id: &RunId) {
        self.report_going_away(id, crate::domain::run::INSTANCE_INTERRUPTED);
    }

    /// Plays the instance's exit trap when its deadman fired (the run's time limit).
    pub fn report_timed_out(&self, id: &RunId) {
        self.report_going_away(id, crate::domain::run::INSTANCE_TIMED_OUT);
    }

    fn report_going_away(&self, id: &RunId, state: &str) {
        let mut records = self.records.lock().unwrap();
        let record = records.get_mut(id.as_str()).expect("a run");
        if let Some(step) = record.steps.iter_mut().find(|s| s.status == StepStatus::Running) {
            step.status = StepStatus::Interrupted;
        }
        record.instance_state = Some(state.into());
        record.reported_at = Some(record.started_at);
    }
}

#[async_trait]
impl Runs for FakeRuns {
    async fn take_slot(
        &self,
        slots: &Slots,
        run_id: &RunId,
        deadline: Timestamp,
        now: Timestamp,
    ) -> Result<Option<Vec<RunId>>> {
        // A call takes time: other callers run meanwhile, as on DynamoDB.
        tokio::task::yield_now().await;
        let effect = self.faults.draw("TakeSlot").await?;
        let holders = self.slot_holders(&slots.profile, slots.kind, now);
        let mut all = self.slots.lock().unwrap();
        let pool = all.entry(format!("{}#{}", slots.profile, slots.kind)).or_default();
        if pool.contains_key(run_id) {
            return effect.answer(None);
        }
        if holders.len() >= slots.cap as usize {
            return effect.answer(Some(holders));
        }
        pool.retain(|_, held_until| *held_until >= now);
        pool.insert(run_id.clone(), deadline);
        effect.answer(None)
    }

    async fn active(&self, record: &RunRecord, now: Timestamp) -> Result<Option<RunId>> {
        tokio::task::yield_now().await;
        let effect = self.faults.draw("GetActiveRun").await?;
        let active = self.active.lock().unwrap();
        effect
            .answer(active.get(&active_key(record)).filter(|(_, deadline)| *deadline >= now).map(|(id, _)| id.clone()))
    }

    async fn slots_held(&self, slots: &Slots, now: Timestamp) -> Result<Vec<RunId>> {
        self.faults.draw("GetSlots").await?.answer(self.slot_holders(&slots.profile, slots.kind, now))
    }

    async fn free_slot(&self, profile: &str, kind: RunKind, run_id: &RunId) -> Result<()> {
        tokio::task::yield_now().await;
        let effect = self.faults.draw("FreeSlot").await?;
        if let Some(pool) = self.slots.lock().unwrap().get_mut(&format!("{profile}#{kind}")) {
            pool.remove(run_id);
        }
        effect.answer(())
    }

    /// Two writes, as the adapter makes them, each of which a fault may fail or lose the answer
    /// of: the record, then the pointer; a pointer to another run removes the record again.
    async fn start(&self, record: &RunRecord, now: Timestamp) -> Result<Option<RunId>> {
        tokio::task::yield_now().await;
        let noted = self.faults.draw("NoteLiveRun").await?;
        self.live.lock().unwrap().insert(record.run_id.to_string(), record.started_at);
        noted.answer(())?;
        let written = self.faults.draw("PutRun").await?;
        self.records.lock().unwrap().insert(record.run_id.to_string(), record.clone());
        written.answer(())?;
        let pointed = self.faults.draw("PutActiveRun").await?;
        let mut active = self.active.lock().unwrap();
        let current =
            active.get(&active_key(record)).filter(|(_, deadline)| *deadline >= now).map(|(id, _)| id.clone());
        if let Some(id) = current {
            if id != record.run_id {
                self.records.lock().unwrap().remove(record.run_id.as_str());
                self.live.lock().unwrap().remove(record.run_id.as_str());
            }
            return pointed.answer(Some(id));
        }
        active.insert(active_key(record), (record.run_id.clone(), record.deadline));
        pointed.answer(None)
    }

    async fn get(&self, id: &RunId) -> Result<Option<RunRecord>> {
        tokio::task::yield_now().await;
        self.faults.draw("GetRun").await?.answer(self.record(id))
    }

    async fn update(&self, record: &RunRecord) -> Result<()> {
        // A write that ends the run fails its own condition (active) when retried.
        let effect = if record.state.ended() {
            self.faults.draw_self_falsifying("UpdateRun").await?
        } else {
            self.faults.draw("UpdateRun").await?
        };
        let mut records = self.records.lock().unwrap();
        let stored = records
            .get_mut(record.run_id.as_str())
            .filter(|stored| !stored.state.ended() && stored.attempt_number() == record.attempt_number());
        let Some(stored) = stored else {
            return Err(fake_failure("UpdateRun", "ConditionalCheckFailedException", AwsErrorKind::Conflict));
        };
        stored.state = record.state;
        // Absent fields are left as stored, as the adapter's SET leaves them.
        if record.instance_id.is_some() {
            stored.instance_id = record.instance_id.clone();
        }
        if record.ended_at.is_some() {
            stored.ended_at = record.ended_at;
        }
        if record.failure.is_some() {
            stored.failure = record.failure.clone();
        }
        if record.held_until.is_some() {
            stored.held_until = record.held_until;
        }
        if record.runner_image.is_some() {
            stored.runner_image = record.runner_image.clone();
        }
        if record.tests.is_some() {
            stored.tests = record.tests.clone();
        }
        if !record.log_location.is_empty() {
            stored.log_location = record.log_location.clone();
        }
        stored.attempts = record.attempts.clone();
        let stored = stored.clone();
        drop(records);
        // An ending, as the adapter notes it after its write.
        if stored.state.ended() {
            self.index(&stored, true);
        }
        effect.answer(())
    }

    async fn begin_attempt(&self, record: &RunRecord) -> Result<()> {
        let effect = self.faults.draw_self_falsifying("BeginAttempt").await?;
        let mut records = self.records.lock().unwrap();
        let previous = record.attempt_number().saturating_sub(1);
        let stored = records
            .get_mut(record.run_id.as_str())
            .filter(|stored| !stored.state.ended() && stored.attempt_number() == previous && stored.outcome.is_none());
        let Some(stored) = stored else {
            return Err(fake_failure("BeginAttempt", "ConditionalCheckFailedException", AwsErrorKind::Conflict));
        };
        stored.state = record.state;
        stored.attempts = record.attempts.clone();
        stored.steps = record.steps.iter().map(|step| StepResult::pending(&step.name)).collect();
        stored.instance_id = None;
        stored.commit = None;
        stored.layout = None;
        stored.images = Vec::new();
        stored.outcome = None;
        stored.instance_state = None;
        stored.reported_at = None;
        stored.failure = None;
        stored.log_location = String::new();
        effect.answer(())
    }

    async fn end_hold(&self, run_id: &RunId, at: Timestamp) -> Result<()> {
        let effect = self.faults.draw("EndHold").await?;
        if let Some(stored) = self.records.lock().unwrap().get_mut(run_id.as_str()) {
            if stored.held_until.is_some() {
                stored.held_until = Some(at);
                self.live.lock().unwrap().remove(run_id.as_str());
            }
        }
        effect.answer(())
    }

    async fn list(&self) -> Result<Vec<RunRecord>> {
        tokio::task::yield_now().await;
        self.faults.draw("ListRuns").await?.answer(self.all())
    }

    async fn live(&self) -> Result<Vec<RunRecord>> {
        tokio::task::yield_now().await;
        let effect = self.faults.draw("LiveRuns").await?;
        let ids: Vec<String> = self.live.lock().unwrap().keys().cloned().collect();
        let records = self.records.lock().unwrap();
        effect.answer(ids.iter().filter_map(|id| records.get(id).cloned()).collect())
    }

    async fn forget(&self, forgotten: &[RunRecord]) -> Result<()> {
        let effect = self.faults.draw("ForgetRuns").await?;
        for record in forgotten.iter().filter(|record| record.state.ended()) {
            self.index(record, false);
        }
        effect.answer(())
    }

    async fn forget_unrecorded(&self, noted_before: Timestamp) -> Result<Vec<RunId>> {
        tokio::task::yield_now().await;
        let effect = self.faults.draw("ForgetUnrecordedRuns").await?;
        let records = self.records.lock().unwrap();
        let mut live = self.live.lock().unwrap();
        let unrecorded: Vec<String> = (live.iter())
            .filter(|(id, noted)| **noted < noted_before && !records.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &unrecorded {
            live.remove(id);
        }
        effect.answer(unrecorded.iter().filter_map(|id| RunId::parse(id).ok()).collect())
    }

    async fn ended(&self, count: usize, wanted: &EndedRuns, now: Timestamp) -> Result<Vec<RunRecord>> {
        tokio::task::yield_now().await;
        let effect = self.faults.draw("EndedRuns").await?;
        let mut ended: Vec<(Timestamp, String)> =
            self.ended.lock().unwrap().iter().filter(|(_, at)| **at <= now).map(|(id, at)| (*at, id.clone())).collect();
        ended.sort_by(|a, b| b.cmp(a));
        let records = self.records.lock().unwrap();
        let found = ended
            .iter()
            .filter_map(|(_, id)| records.get(id))
            .filter(|record| wanted.keeps(record.kind, &record.cluster))
            .take(count)
            .cloned()
            .collect();
        effect.answer(found)
    }

    async fn last_ended(&self, kind: RunKind) -> Result<Option<RunRecord>> {
        let effect = self.faults.draw("LastEndedRun").await?;
        let ended = self.ended.lock().unwrap().clone();
        let records = self.records.lock().unwrap();
        let last = (ended.iter().filter_map(|(id, at)| Some((at, records.get(id)?))))
            .filter(|(_, record)| record.kind == kind)
            .max_by_key(|(at, record)| (**at, record.run_id.to_string()))
            .map(|(_, record)| record.clone());
        effect.answer(last)
    }

    async fn release(&self, record: &RunRecord) -> Result<()> {
        let effect = self.faults.draw("ReleaseRun").await?;
        let mut active = self.active.lock().unwrap();
        if active.get(&active_key(record)).is_some_and(|(id, _)| *id == record.run_id) {
            active.remove(&active_key(record));
        }
        effect.answer(())
    }
}
