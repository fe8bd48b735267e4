//! A start: every check (values, budget, the profile's cap), then the run's record and slot,
//! then its first attempt's launch (`launch.rs`); and the dry run of a start (`plan`).

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::catalog::Profile;
use crate::domain::{ClusterName, GitRef, ImageTag};
use crate::domain::{Market, StepResult, UserData};
use crate::domain::{RequestedBy, RunId, RunKind, RunRecord, RunRequest, RunState};
use crate::error::{AwsErrorKind, Error, Result};
use crate::instance::{render, RunValues};
use crate::ports::Slots;
use crate::service::plan::{Plan, PlannedWrite};

/// Writes of a new run before answering an error.
const START_ATTEMPTS: u32 = 3;

/// How long a run record is kept after the run's deadline: past the end of the longest month, so
/// the month's budget counts every run that started in it.
pub const RUN_RECORD_RETENTION: SignedDuration = SignedDuration::from_hours(32 * 24);

/// How long a slot may be held by a run with no record before others may free it: a start takes
/// its slot after every check, right before writing its record.
pub const SLOT_LEASE: SignedDuration = SignedDuration::from_mins(3);

/// Why `holder`'s slot may be freed by someone other than its holder (a start, the sweeper): its
/// run ended, or it got no record within [`SLOT_LEASE`] of its start (the start crashed). `None`
/// while it may still be in use.
pub fn slot_abandoned(holder: &RunId, record: Option<&RunRecord>, now: Timestamp) -> Option<String> {
    match record {
        Some(run) if run.state.ended() => Some(format!("its run ended as {}", run.state.as_str())),
        Some(_) => None,
        None => holder
            .started_at()
            .is_none_or(|started| started + SLOT_LEASE <= now)
            .then(|| format!("its run has no record {} minutes after its start", SLOT_LEASE.as_mins())),
    }
}

/// `RunsCapped`: `slots` are all held by the `active` runs, named oldest first.
fn runs_capped(slots: &Slots, mut active: Vec<RunRecord>) -> Error {
    active.sort_by_key(|run| run.started_at);
    let runs: Vec<String> =
        active.iter().map(|run| format!("{} ({} on {})", run.run_id, run.version, run.cluster)).collect();
    Error::RunsCapped(format!(
        "the '{}' profile allows {} concurrent {} run(s), and these are active: {}; wait for one to end, or resume it \
         with its run_id",
        slots.profile,
        slots.cap,
        slots.kind,
        runs.join(", ")
    ))
}

/// `the test run of v5.5.0 on ci-1`: what a start would have started, for `BudgetExceeded`.
fn describe_start(record: &RunRecord) -> String {
    format!("the {} run of {} on {}", record.kind, record.version, record.cluster)
}

impl Runner {
    /// Starts a run, or finds the active run of the same kind, cluster and version.
    pub(super) async fn start(
        &self,
        kind: RunKind,
        cluster: ClusterName,
        version: GitRef,
        hold_minutes: u32,
        requested_by: Option<RequestedBy>,
        known: &Known,
    ) -> Result<RunId> {
        let profile = self.catalog.profile_for(&cluster)?;
        let now = crate::domain::time::whole_seconds(self.ports.clock.now());
        let run_id = RunId::new(kind, &cluster, now);
        let runner_image = self.runner_image_for(kind, profile, now).await;
        let record = RunRecord {
            requested_by,
            runner_image,
            ..self.new_record(profile, run_id, cluster, version, now, hold_minutes)
        };
        // Rendering checks every value: nothing is written or launched for a bad one.
        let user_data = self.user_data(profile, &record)?;
        // Every check first, the slot last: a slot is held only by a start that will write its
        // record at once, so a competitor never finds a holder still checking.
        if let Err(refused) = self.within_budget(profile, &record, now).await {
            return refused;
        }
        if let Some(active) = self.take_slot(profile, &record, now).await? {
            return Ok(active);
        }
        let started = self.record_and_launch(record.clone(), profile, user_data, now, known).await;
        // The slot is this run's while its record is active: freed when the run did not start
        // (or another answered), kept when it started and its launch failed (the run goes on).
        let keep = match &started {
            Ok(id) => *id == record.run_id,
            Err(_) => self.ports.runs.get(&record.run_id).await.ok().flatten().is_some_and(|run| !run.state.ended()),
        };
        if !keep {
            self.free_slot(&record).await;
        }
        started
    }

    /// `Ok` when the run may start within the profile's budget; `Err(Ok(id))` when the same run
    /// is active already (the answer, at no more cost), `Err(Err(BudgetExceeded))` when the spend
    /// has reached the budget.
    async fn within_budget(&self, profile: &Profile, record: &RunRecord, now: Timestamp) -> Result<(), Result<RunId>> {
        if profile.monthly_budget_usd.is_none() {
            return Ok(());
        }
        match self.ports.runs.active(record, now).await {
            Ok(Some(active)) => return Err(Ok(active)),
            Ok(None) => {}
            Err(error) => return Err(Err(error)),
        }
        self.ledger.allow(profile, &describe_start(record)).await.map_err(Err)
    }

    /// The script of the run's current attempt, compressed as EC2 takes it.
    pub(super) fn user_data(&self, profile: &Profile, record: &RunRecord) -> Result<UserData> {
        let kind = record.kind;
        // BUILD pushes under this tag, so a version that maps to none is refused; TEST only passes it on.
        let image_tag = match (kind, ImageTag::for_version(&record.version)) {
            (_, Ok(tag)) => tag.to_string(),
            (RunKind::Build, Err(error)) => return Err(error),
            (RunKind::Test | RunKind::RunnerImage, Err(_)) => String::new(),
        };
        let values = RunValues {
            run_id: record.run_id.clone(),
            kind,
            cluster: record.cluster.clone(),
            version: record.version.clone(),
            image_tag,
            attempt: record.attempt_number(),
            time_limit_minutes: profile.runner.time_limit_minutes,
            hold_minutes: record.hold_minutes,
            runner_image: record.runner_image.clone().filter(|_| kind == RunKind::Test),
            settings: self.settings.clone(),
        };
        let plans = self.catalog.plans();
        UserData::compress(&render(plans.of(kind), &plans.layouts, &values)?)
    }

    /// The record of a run that starts `now`, every step pending, its first attempt under way.
    /// Its deadline bounds every attempt it may take: past it, another run may take its place.
    fn new_record(
        &self,
        profile: &Profile,
        run_id: RunId,
        cluster: ClusterName,
        version: GitRef,
        now: Timestamp,
        hold_minutes: u32,
    ) -> RunRecord {
        let kind = run_id.kind();
        let runner = &profile.runner;
        let deadline = now + SignedDuration::from_mins(i64::from(runner.time_limit_minutes * runner.max_attempts));
        RunRecord {
            attempts: vec![profile.runner.attempt(1, now)],
            // Its instance's, once it has one.
            log_location: String::new(),
            run_id,
            kind,
            cluster,
            version,
            commit: None,
            layout: None,
            instance_id: None,
            state: RunState::Launching,
            steps: self.catalog.plans().of(kind).step_names().into_iter().map(StepResult::pending).collect(),
            started_at: now,
            ended_at: None,
            deadline,
            expires_at: deadline + RUN_RECORD_RETENTION,
            images: Vec::new(),
            outcome: None,
            failure: None,
            hold_minutes,
            held_until: None,
            instance_state: None,
            reported_at: None,
            requested_by: None,
            runner_image: None,
            holds: None,
            tests: None,
        }
    }

    /// Writes the run as the active one of its kind, cluster and version and launches its
    /// instance; or answers with the same run that is already active.
    async fn record_and_launch(
        &self,
        mut record: RunRecord,
        profile: &Profile,
        user_data: UserData,
        now: Timestamp,
        known: &Known,
    ) -> Result<RunId> {
        let run_id = record.run_id.clone();
        for attempt in 1..=START_ATTEMPTS {
            let active = match self.ports.runs.start(&record, now).await {
                Ok(active) => active,
                // It may have been written: asking again tells, as the pointer then names this run.
                Err(error) if error.aws_kind() == Some(AwsErrorKind::Indeterminate) && attempt < START_ATTEMPTS => {
                    tracing::warn!(run_id = %run_id, %error, "could not tell whether the run was recorded; asking \
                        again");
                    continue;
                }
                Err(error) => return Err(error),
            };
            match active.filter(|active| *active != run_id) {
                // Free, or ours already: an earlier attempt whose answer was lost wrote it.
                None => {
                    known.send_replace(Some(record.clone()));
                    let launched = self.launch_attempts(&mut record, profile, user_data).await;
                    known.send_replace(Some(record));
                    launched?;
                    return Ok(run_id);
                }
                Some(active) => match self.ports.runs.get(&active).await? {
                    // A run that ended but was not released (its invocation crashed): release it and start ours.
                    Some(old) if old.state.ended() => {
                        self.ports.runs.release(&old).await?;
                        self.free_slot(&old).await;
                    }
                    // A pointer to a record that was never written: drop it.
                    None => self.ports.runs.release(&RunRecord { run_id: active, ..record.clone() }).await?,
                    Some(_) => {
                        tracing::info!(run_id = %active, "the same run is active; answering with it");
                        return Ok(active);
                    }
                },
            }
        }
        Err(Error::Busy {
            cluster: record.cluster.to_string(),
            operation: format!("{} run", record.kind),
            since: now.to_string(),
        })
    }

    /// Takes one of the profile's slots for runs of the record's kind (its cap on concurrent runs).
    /// When all are held: the same run, active, answers (starting it again starts nothing); a
    /// holder's slot that [`slot_abandoned`] says nobody holds any more is freed and the take
    /// tried again; else `RunsCapped` naming the holders. Reads the holders' records only when the
    /// slots are full: at most the cap.
    pub(super) async fn take_slot(
        &self,
        profile: &Profile,
        record: &RunRecord,
        now: Timestamp,
    ) -> Result<Option<RunId>> {
        let Some(cap) = profile.max_concurrent_runs.of(record.kind) else { return Ok(None) };
        let slots = Slots { profile: profile.name.clone(), kind: record.kind, cap };
        let mut active = Vec::new();
        for _ in 0..2 {
            let Some(holders) = self.ports.runs.take_slot(&slots, &record.run_id, record.deadline, now).await? else {
                return Ok(None);
            };
            active.clear();
            let mut freed = false;
            for holder in holders {
                match self.ports.runs.get(&holder).await? {
                    Some(run) if !run.state.ended() => {
                        if run.cluster == record.cluster && run.version == record.version {
                            tracing::info!(run_id = %run.run_id, "the same run is active; answering with it");
                            return Ok(Some(run.run_id));
                        }
                        active.push(run);
                    }
                    run => {
                        if let Some(why) = slot_abandoned(&holder, run.as_ref(), now) {
                            tracing::info!(run_id = %holder, %why, "freeing a slot nobody holds");
                            self.ports.runs.free_slot(&slots.profile, slots.kind, &holder).await?;
                            freed = true;
                        }
                    }
                }
            }
            if !freed {
                break;
            }
        }
        Err(runs_capped(&slots, active))
    }

    /// Frees the run's slot, if its profile caps its kind. A slot that cannot be freed now frees
    /// itself at the run's deadline.
    pub(super) async fn free_slot(&self, record: &RunRecord) {
        let Ok(profile) = self.catalog.profile_for(&record.cluster) else { return };
        if profile.max_concurrent_runs.of(record.kind).is_none() {
            return;
        }
        if let Err(error) = self.ports.runs.free_slot(&profile.name, record.kind, &record.run_id).await {
            tracing::warn!(run_id = %record.run_id, %error, "could not free the run's slot; it frees itself at the \
                run's deadline");
        }
    }

    /// DRY_RUN of a TEST or BUILD start: the run it would start (or the active one it would answer
    /// with, or the cap it would hit), and the writes it would make: the run record, the slot, the
    /// launch (instance types in order, market, image, user-data size). Reads only.
    pub async fn plan(&self, kind: RunKind, request: &RunRequest) -> Result<Plan> {
        let RunRequest::Start { cluster, version, hold_minutes, requested_by, .. } = request else {
            return Err(Error::invalid("dry_run plans a start, not the resume of a run_id"));
        };
        let profile = self.catalog.profile_for(cluster)?;
        let now = crate::domain::time::whole_seconds(self.ports.clock.now());
        let run_id = RunId::new(kind, cluster, now);
        let record = RunRecord {
            requested_by: requested_by.clone(),
            runner_image: self.runner_image_for(kind, profile, now).await,
            ..self.new_record(profile, run_id, cluster.clone(), version.clone(), now, *hold_minutes)
        };
        // The same checks of every value as a start: a bad one is the same error.
        let user_data = self.user_data(profile, &record)?;
        if let Some(active) = self.ports.runs.active(&record, now).await? {
            let branch = format!("the same {kind} run of {version} on {cluster} is active: it answers with {active}");
            return Ok(Plan::new(kind.as_str(), branch, Vec::new()));
        }
        // As a start: the budget first, then the cap.
        self.ledger.allow(profile, &describe_start(&record)).await?;
        let mut plan: Vec<PlannedWrite> = self.planned_slot(profile, kind, now).await?.into_iter().collect();
        plan.push(PlannedWrite::new(
            "DynamoDB.PutItem",
            serde_json::json!({
                "item": format!("{}{}", crate::table::run::PREFIX, record.run_id),
                "run_id": record.run_id,
                "then": "the active-run pointer of its kind, cluster and version",
                "requested_by": record.requested_by,
            }),
        ));
        plan.push(self.planned_launch(profile, &record, &user_data).await?);
        let branch =
            format!("start a {kind} run of {version} on {cluster}, on the '{}' profile's runner", profile.name);
        Ok(Plan::new(kind.as_str(), branch, plan))
    }
    /// The slot a start would take, when the profile caps its kind; `RunsCapped` when all are held.
    async fn planned_slot(&self, profile: &Profile, kind: RunKind, now: Timestamp) -> Result<Option<PlannedWrite>> {
        let Some(cap) = profile.max_concurrent_runs.of(kind) else { return Ok(None) };
        let slots = Slots { profile: profile.name.clone(), kind, cap };
        let mut active = Vec::new();
        for holder in self.ports.runs.slots_held(&slots, now).await? {
            active.extend(self.ports.runs.get(&holder).await?.filter(|run| !run.state.ended()));
        }
        if active.len() >= cap as usize {
            return Err(runs_capped(&slots, active));
        }
        let item = crate::table::slots::key(&profile.name, kind);
        let write = serde_json::json!({"item": item, "takes": "one of its slots", "cap": cap});
        Ok(Some(PlannedWrite::new("DynamoDB.UpdateItem", write)))
    }

    /// The launch a start would make: image, types, subnets, market, sizes.
    async fn planned_launch(
        &self,
        profile: &Profile,
        record: &RunRecord,
        user_data: &UserData,
    ) -> Result<PlannedWrite> {
        let runner = &profile.runner;
        let market = record.current_attempt().map_or(Market::Spot, |attempt| attempt.market);
        Ok(PlannedWrite::new(
            "EC2.RunInstances",
            serde_json::json!({
                "image": self.launch_image(record, profile).await?,
                "runner_image": record.runner_image,
                "architecture": runner.architecture,
                "instance_types": runner.instance_types,
                "subnets": self.settings.subnets,
                "market": market,
                "on_demand_fallback": runner.on_demand_fallback,
                "max_attempts": runner.max_attempts,
                "instance_profile": self.settings.instance_profile(record.kind),
                "volume_gb": runner.volume_gb,
                "time_limit_minutes": runner.time_limit_minutes,
                "hold_minutes": record.hold_minutes,
                "user_data_bytes": user_data.len(),
                "script_bytes": user_data.script_len(),
            }),
        ))
    }
}
