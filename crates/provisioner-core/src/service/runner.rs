//! TEST(cluster, version) and BUILD(cluster, version): launch a unique time-limited spot
//! instance that runs the plan and reports each step, wait for it while the invocation allows,
//! terminate it when the run ends, and answer success, `running`, or the contract's error. What
//! follows an attempt the cloud ended (retries, `instance_event`, holds) is in `attempts.rs`.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::budget::Ledger;
use super::plan::{Plan, PlannedWrite};
use super::{seconds_between, signed, Invocation, Timeouts};
use crate::catalog::{Catalog, Profile};
use crate::domain::attempt::{describe_all, instance_log_location};
use crate::domain::run::RunView;
use crate::domain::tags;
use crate::domain::UserData;
use crate::domain::{AttemptOutcome, Market};
use crate::domain::{CancelRequest, RequestedBy, RunId, RunKind, RunRecord, RunRequest, RunState, StepResult};
use crate::domain::{ClusterName, GitRef, ImageTag};
use crate::error::{AwsErrorKind, Error, Result};
use crate::instance::{render, RunValues};
use crate::ports::{InstanceState, LaunchSpec, RunPorts, Slots};
use crate::settings::RunSettings;

/// How long after a run started a wait keeps looking for an instance it has no record of, before
/// it ends the run as lost: longer than any launch (with its retries) takes.
pub const LAUNCH_GRACE: SignedDuration = SignedDuration::from_mins(3);
/// Launch calls per choice of instance type and subnet while the outcome is unclear.
const LAUNCH_ATTEMPTS: u32 = 3;
const LAUNCH_RETRY_PAUSE: Duration = Duration::from_secs(2);
/// Writes of a launched instance's id before leaving it to the wait.
const RECORD_ATTEMPTS: u32 = 3;
/// How long an ask may take when its `wait_seconds` is shorter: a start to record and launch
/// its run (a run is not answered `running` before it exists), a resume to read it once.
pub const LEAST_ANSWER_TIME: SignedDuration = SignedDuration::from_secs(10);
/// Writes of a new run before answering an error.
const START_ATTEMPTS: u32 = 3;
/// Endings a cancel tries while other callers keep beginning the run's next attempt.
const CANCEL_ATTEMPTS: u32 = 10;

/// The run as last read or written by an invocation: what it answers when its time is up.
type Known = tokio::sync::watch::Sender<Option<RunRecord>>;

/// Where a launch refused for capacity goes on, and why it was refused.
enum Refusal {
    NextType(String),
    NextSubnet(String),
}

/// The tags of the instance and volume of a run's current attempt. It expires at the attempt's
/// time limit, plus the hold a failed run may keep it for.
fn instance_tags(record: &RunRecord) -> Vec<(String, String)> {
    let limit = record.current_attempt().map_or(record.deadline, |attempt| attempt.deadline);
    let expires = limit + SignedDuration::from_mins(i64::from(record.hold_minutes));
    vec![
        ("Name".into(), format!("sliderule-{}", record.run_id)),
        (tags::RUN_ID.into(), record.run_id.to_string()),
        (tags::ATTEMPT.into(), record.attempt_number().to_string()),
        (tags::KIND.into(), record.kind.to_string()),
        (tags::CLUSTER.into(), record.cluster.to_string()),
        (tags::EXPIRES.into(), expires.to_string()),
        (tags::PROVISIONER.into(), "true".into()),
    ]
    .into_iter()
    .chain(record.requested_by.as_ref().map(|who| (tags::REQUESTED_BY.into(), who.as_str().to_owned())))
    .collect()
}

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

/// How a launch ended that was not refused.
enum Launched {
    Instance(String),
    /// It may or may not have launched, and no instance is seen yet.
    Unknown,
}

/// How an attempt's launch ended.
pub(super) enum AttemptLaunch {
    /// Launched, or perhaps launched: the wait finds it by its tag.
    Started,
    /// No type, subnet or market had capacity: why each was refused.
    NoCapacity(Vec<String>),
}

/// How long a run record is kept after the run's deadline: past the end of the longest month, so
/// the month's budget counts every run that started in it.
pub const RUN_RECORD_RETENTION: SignedDuration = SignedDuration::from_hours(32 * 24);

/// Everything TEST and BUILD need, built once per process.
#[derive(Clone)]
pub struct Runner {
    pub catalog: Arc<Catalog>,
    /// What it asks of the cloud and of time (`stacks` and `history` only for the budget).
    pub ports: RunPorts,
    /// A start is checked against the profile's budget.
    pub ledger: Ledger,
    pub settings: RunSettings,
    pub timeouts: Timeouts,
}

/// What `cancel` answers: the run's outcome (`cancelled`, or how it had ended), and the run.
#[derive(Debug, Clone, Serialize)]
pub struct CancelResponse {
    pub status: &'static str,
    pub outcome: &'static str,
    #[serde(flatten)]
    pub run: RunView,
    /// Why it ended, when the function ended it (for a cancel: when, and by whom when known).
    pub failure: Option<String>,
    pub ended_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunResponse {
    /// `success` or `running`.
    pub status: &'static str,
    #[serde(flatten)]
    pub run: RunView,
    pub commit: Option<String>,
    /// The repository layout found in the checkout.
    pub layout: Option<String>,
    pub state: RunState,
    pub images: Vec<String>,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub elapsed_seconds: f64,
    pub hold_minutes: u32,
    /// The runner image a TEST run's instances launch from (null: the plain Amazon Linux AMI).
    pub runner_image: Option<String>,
    /// The image a runner image run made, once it is available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Until when its failed instance is kept up for debugging, and how to reach it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<String>,
}

// Both answers read as the run they are about.
impl std::ops::Deref for RunResponse {
    type Target = RunView;
    fn deref(&self) -> &RunView {
        &self.run
    }
}

impl std::ops::Deref for CancelResponse {
    type Target = RunView;
    fn deref(&self) -> &RunView {
        &self.run
    }
}

impl Runner {
    /// The run side over `ports`: the one place it is put together (mains, tests, the storm).
    pub fn new(catalog: Arc<Catalog>, ports: RunPorts, settings: RunSettings) -> Runner {
        let ledger = Ledger::new(
            catalog.clone(),
            ports.stacks.clone(),
            ports.history.clone(),
            ports.runs.clone(),
            ports.clock.clone(),
        );
        Runner { catalog, ports, ledger, settings, timeouts: Timeouts::default() }
    }

    /// Starts or resumes a run and waits for it. The answer comes by `wait_seconds` whatever AWS
    /// does, or by [`LEAST_ANSWER_TIME`] when that is later: what was
    /// cut off is picked up by the next ask or sweep, as after a crash. Cut off before its run was
    /// recorded or read, it answers `Busy`, nothing started.
    pub async fn run(&self, kind: RunKind, request: RunRequest, invocation: &Invocation) -> Result<RunResponse> {
        let started = self.ports.clock.now();
        let by_deadline = invocation.deadline - signed(self.timeouts.deadline_margin);
        let wait_until = match request.wait_seconds() {
            Some(seconds) => by_deadline.min(started + SignedDuration::from_secs(seconds as i64)),
            None => by_deadline,
        };
        let answer_by = by_deadline.min(wait_until.max(started + LEAST_ANSWER_TIME));
        let (known, _) = tokio::sync::watch::channel(None::<RunRecord>);
        let run_id = match &request {
            RunRequest::Start { cluster, version, hold_minutes, requested_by, .. } => {
                let start =
                    self.start(kind, cluster.clone(), version.clone(), *hold_minutes, requested_by.clone(), &known);
                match self.by(answer_by, start).await {
                    Some(run_id) => run_id?,
                    None => return self.cut_off(kind, &request, &known, started),
                }
            }
            RunRequest::Resume { run_id, .. } => {
                if run_id.kind() != kind {
                    return Err(Error::invalid(format!(
                        "run {run_id} is a {} run; resume it with the {} function",
                        run_id.kind(),
                        run_id.kind()
                    )));
                }
                run_id.clone()
            }
        };
        match self.by(answer_by, self.wait(&run_id, wait_until, &known)).await {
            Some(answer) => answer,
            None => self.cut_off(kind, &request, &known, started),
        }
    }

    /// `work`'s result, or `None` when `until` came first (the work is dropped where it stood).
    async fn by<T>(&self, until: Timestamp, work: impl std::future::Future<Output = T>) -> Option<T> {
        let left = until.duration_since(self.ports.clock.now());
        tokio::select! {
            biased;
            done = work => Some(done),
            () = self.ports.clock.sleep(left.try_into().unwrap_or(Duration::ZERO)) => None,
        }
    }

    /// The answer of a start or wait whose time ran out: `running` with the run as last known.
    fn cut_off(&self, kind: RunKind, request: &RunRequest, known: &Known, started: Timestamp) -> Result<RunResponse> {
        let seconds = self.ports.clock.now().duration_since(started).as_secs();
        let last_known = known.borrow().clone();
        let Some(record) = last_known else {
            let what = match request {
                RunRequest::Start { cluster, version, .. } => format!(
                    "a {kind} run of {version} on {cluster} could not be recorded within {seconds} s; nothing runs \
                     for it"
                ),
                RunRequest::Resume { run_id, .. } => {
                    format!("{kind} run {run_id} could not be read within {seconds} s")
                }
            };
            return Err(Error::StartTooSlow(format!(
                "{what}: AWS answered too slowly (throttled?); try again in a minute"
            )));
        };
        if record.state.ended() {
            return self.answer(record);
        }
        tracing::warn!(run_id = %record.run_id, seconds, "answering as the time to wait ran out; the next ask or sweep \
            goes on");
        Ok(self.response("running", record))
    }

    /// CANCEL: ends an active run at once, its instances terminated and its outcome `cancelled`;
    /// a run that had ended answers how it ended, unchanged.
    pub async fn cancel(&self, request: CancelRequest) -> Result<CancelResponse> {
        let Some(mut record) = self.ports.runs.get(&request.run_id).await? else {
            return Err(Error::invalid(format!(
                "there is no run {}; cancel a run_id that test or build answered with",
                request.run_id
            )));
        };
        let by = request.requested_by.as_ref().map(|who| format!(" by {}", who.as_str())).unwrap_or_default();
        let why = format!("cancelled at {}{by}", crate::domain::time::whole_seconds(self.ports.clock.now()));
        // Another invocation may end it first (then its ending is the answer), or start its next
        // attempt first (then that attempt is cancelled).
        for _ in 0..CANCEL_ATTEMPTS {
            if record.state.ended() {
                break;
            }
            self.conclude(&mut record, RunState::Cancelled, Some(why.clone())).await?;
        }
        // The contract's outcomes are endings: a run others kept moving is not answered as running.
        if !record.state.ended() {
            return Err(Error::Busy {
                cluster: record.cluster.to_string(),
                operation: format!("{} run {} that kept beginning new attempts", record.kind, record.run_id),
                since: record.started_at.to_string(),
            });
        }
        self.end_hold(&mut record).await?;
        tracing::info!(run_id = %record.run_id, state = record.state.as_str(), "cancel");
        Ok(CancelResponse {
            status: "success",
            outcome: record.state.as_str(),
            run: record.view(),
            failure: record.failure,
            ended_at: record.ended_at.map(|t| t.to_string()),
        })
    }

    /// Starts a run, or finds the active run of the same kind, cluster and version.
    async fn start(
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
    async fn take_slot(&self, profile: &Profile, record: &RunRecord, now: Timestamp) -> Result<Option<RunId>> {
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
    async fn free_slot(&self, record: &RunRecord) {
        let Ok(profile) = self.catalog.profile_for(&record.cluster) else { return };
        if profile.max_concurrent_runs.of(record.kind).is_none() {
            return;
        }
        if let Err(error) = self.ports.runs.free_slot(&profile.name, record.kind, &record.run_id).await {
            tracing::warn!(run_id = %record.run_id, %error, "could not free the run's slot; it frees itself at the \
                run's deadline");
        }
    }

    /// Launches the current attempt's instance: zone by zone (subnet), the profile's instance types
    /// in order, in the attempt's market; a capacity refusal moves on to the next type, a subnet
    /// refusal to the next subnet, a quota ends the run at once. A spot attempt that no type or
    /// subnet has capacity for falls back to on-demand when the profile allows.
    pub(super) async fn launch(
        &self,
        record: &mut RunRecord,
        profile: &Profile,
        user_data: &UserData,
    ) -> Result<AttemptLaunch> {
        let image_id = match self.launch_image(record, profile).await {
            Ok(image) => image,
            Err(error) => return Err(self.abandon(record, RunState::Failed, error).await),
        };
        let subnets: Vec<Option<&String>> = if self.settings.subnets.is_empty() {
            vec![None]
        } else {
            self.settings.subnets.iter().map(Some).collect()
        };
        let first = record.current_attempt().map_or(Market::Spot, |attempt| attempt.market);
        let markets = match first {
            Market::Spot if profile.runner.on_demand_fallback => vec![Market::Spot, Market::OnDemand],
            market => vec![market],
        };
        let mut refused = Vec::new();
        let mut choice = 0;
        for market in markets {
            if let Some(attempt) = record.attempts.last_mut() {
                attempt.market = market;
            }
            for subnet in &subnets {
                for instance_type in &profile.runner.instance_types {
                    let spec = LaunchSpec {
                        image_id: image_id.clone(),
                        instance_type: instance_type.clone(),
                        market,
                        subnet_id: subnet.cloned(),
                        security_group_ids: self.settings.security_groups.clone(),
                        instance_profile: self.settings.instance_profile(record.kind).cloned(),
                        user_data: user_data.clone(),
                        volume_gb: profile.runner.volume_gb,
                        tags: instance_tags(record),
                        client_token: record.run_id.launch_token(record.attempt_number(), choice),
                    };
                    choice += 1;
                    let error = match self.launch_resolved(record, &spec).await {
                        Ok(Launched::Instance(instance_id)) => {
                            tracing::info!(run_id = %record.run_id, %instance_id, %instance_type, %market,
                                attempt = record.attempt_number(), "run instance launched");
                            if let Some(attempt) = record.attempts.last_mut() {
                                attempt.instance_type = Some(instance_type.clone());
                            }
                            self.adopt(record, instance_id).await;
                            return Ok(AttemptLaunch::Started);
                        }
                        Ok(Launched::Unknown) => {
                            // The wait finds the instance by its tag, or ends the attempt when none appears.
                            tracing::warn!(run_id = %record.run_id, "could not tell whether the instance launched; \
                                looking for it by tag");
                            return Ok(AttemptLaunch::Started);
                        }
                        Err(error) => error,
                    };
                    match self.refused(record, &spec, error).await? {
                        Refusal::NextType(why) => refused.push(why),
                        Refusal::NextSubnet(why) => {
                            refused.push(why);
                            break;
                        }
                    }
                }
            }
        }
        Ok(AttemptLaunch::NoCapacity(refused))
    }

    /// What a refused launch means: try the next type or subnet (saying why), or end the run
    /// (an account quota, or a refusal that is not about capacity).
    async fn refused(&self, record: &mut RunRecord, spec: &LaunchSpec, error: Error) -> Result<Refusal> {
        let kind = error.aws_kind();
        if !matches!(kind, Some(AwsErrorKind::Capacity | AwsErrorKind::Subnet | AwsErrorKind::Quota)) {
            return Err(self.abandon(record, RunState::Failed, error).await);
        }
        let code = match &error {
            Error::Aws(failure) => failure.code.clone(),
            other => other.code().to_owned(),
        };
        let (instance_type, subnet) = (&spec.instance_type, &spec.subnet_id);
        tracing::warn!(run_id = %record.run_id, %instance_type, ?subnet, %code, ?kind, "launch refused");
        let place = subnet.as_ref().map(|s| format!(" in {s}")).unwrap_or_default();
        let why = format!("{instance_type} ({}){place}: {code}", spec.market);
        match kind {
            Some(AwsErrorKind::Quota) => {
                let error = Error::CapacityUnavailable(format!(
                    "{} run {} was not started: the account reached a quota ({code}); wait for other instances to \
                     end, or raise the quota",
                    record.kind, record.run_id
                ));
                Err(self.abandon(record, RunState::CapacityUnavailable, error).await)
            }
            Some(AwsErrorKind::Subnet) => Ok(Refusal::NextSubnet(why)),
            _ => Ok(Refusal::NextType(why)),
        }
    }

    /// Launches `spec`. A failure that does not prove nothing was launched (no answer, a 5xx) is
    /// resolved: the same client token launches no second instance, so the launch is asked again;
    /// then the instance is looked for by its run-id tag. An error is a definite refusal.
    async fn launch_resolved(&self, record: &RunRecord, spec: &LaunchSpec) -> Result<Launched> {
        let mut pause = LAUNCH_RETRY_PAUSE;
        for attempt in 1..=LAUNCH_ATTEMPTS {
            match self.ports.instances.launch(spec).await {
                Ok(instance_id) => return Ok(Launched::Instance(instance_id)),
                // Throttled launched nothing but may go through in a moment; the same token keeps
                // an indeterminate one from launching twice.
                Err(error)
                    if matches!(error.aws_kind(), Some(AwsErrorKind::Indeterminate | AwsErrorKind::Throttled)) =>
                {
                    tracing::warn!(run_id = %record.run_id, attempt, %error, "launch answered nothing definite; \
                        asking again with the same token");
                }
                Err(error) => return Err(error),
            }
            // Also after the last attempt: an instance it launched takes a moment to be listed.
            self.ports.clock.sleep(pause).await;
            pause *= 2;
        }
        // Any attempt may have been the indeterminate kind.
        Ok(self.find_instance(record).await.map_or(Launched::Unknown, Launched::Instance))
    }

    /// The current attempt's instance found by tag (its others, if any, are terminated).
    async fn find_instance(&self, record: &RunRecord) -> Option<String> {
        let found = match self.ports.instances.of_run(&record.run_id).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(run_id = %record.run_id, %error, "could not look for the run's instance");
                return None;
            }
        };
        let mut found: Vec<String> = found
            .into_iter()
            .filter(|instance| instance.attempt() == record.attempt_number().max(1))
            .map(|instance| instance.id)
            .collect();
        found.sort();
        let kept = found.first().cloned()?;
        for extra in &found[1..] {
            tracing::warn!(run_id = %record.run_id, instance_id = %extra, "a second instance of the run; terminating \
                it");
            self.terminate_stray(record, extra).await;
        }
        Some(kept)
    }

    /// Terminates an instance the run does not keep, trying again on failure; one that still
    /// cannot be terminated stops at the run's time limit, and ending the run terminates it.
    async fn terminate_stray(&self, record: &RunRecord, instance_id: &str) {
        let mut pause = LAUNCH_RETRY_PAUSE;
        for attempt in 1..=RECORD_ATTEMPTS {
            match self.ports.instances.terminate(instance_id).await {
                Ok(()) => return,
                Err(error) if attempt == RECORD_ATTEMPTS => {
                    tracing::warn!(run_id = %record.run_id, instance_id, %error, "could not terminate it; it stops at \
                        its time limit");
                }
                Err(_) => {
                    self.ports.clock.sleep(pause).await;
                    pause *= 2;
                }
            }
        }
    }

    /// Records `instance_id` as the run's instance. When the record cannot be written, the wait
    /// (this invocation's or the next's) finds the instance by its tag; when the run has ended
    /// meanwhile, the instance is terminated.
    async fn adopt(&self, record: &mut RunRecord, instance_id: String) {
        // Where the instance writes its logs: the prefix named by its caller id, the one its role may write.
        record.log_location = (self.settings.runner_roles.caller(record.kind, &instance_id))
            .map(|caller| instance_log_location(&self.settings.log_bucket, &caller))
            .unwrap_or_default();
        record.instance_id = Some(instance_id.clone());
        if let Some(attempt) = record.attempts.last_mut() {
            attempt.instance_id = Some(instance_id.clone());
            attempt.log_location = record.log_location.clone();
        }
        record.state = RunState::Running;
        let mut pause = LAUNCH_RETRY_PAUSE;
        for attempt in 1..=RECORD_ATTEMPTS {
            match self.ports.runs.update(record).await {
                Ok(()) => return,
                Err(error) if error.aws_kind() == Some(AwsErrorKind::Conflict) => {
                    tracing::warn!(run_id = %record.run_id, %instance_id, "the run ended before its instance was \
                        recorded; terminating it");
                    self.terminate_stray(record, &instance_id).await;
                    return;
                }
                Err(error) if attempt < RECORD_ATTEMPTS => {
                    tracing::warn!(run_id = %record.run_id, %instance_id, %error, "could not record the instance; \
                        trying again");
                    self.ports.clock.sleep(pause).await;
                    pause *= 2;
                }
                Err(error) => {
                    tracing::warn!(run_id = %record.run_id, %instance_id, %error, "could not record the instance; the \
                        wait finds it by its tag");
                }
            }
        }
    }

    /// Marks a run that never got an instance as ended, and returns `error`.
    pub(super) async fn abandon(&self, record: &mut RunRecord, state: RunState, error: Error) -> Error {
        record.state = state;
        record.failure = Some(error.to_string());
        record.ended_at = Some(self.ports.clock.now());
        record.end_attempt(state.attempt_outcome(), record.ended_at);
        if let Err(write) = self.ports.runs.update(record).await {
            tracing::warn!(run_id = %record.run_id, %write, "could not record the failed launch");
        }
        if let Err(write) = self.ports.runs.release(record).await {
            tracing::warn!(run_id = %record.run_id, %write, "could not release the run");
        }
        self.free_slot(record).await;
        error
    }

    /// Waits for the run to end, until `wait_until`.
    async fn wait(&self, run_id: &RunId, wait_until: Timestamp, known: &Known) -> Result<RunResponse> {
        let mut last_reported = String::new();
        loop {
            let mut record = self.ports.runs.get(run_id).await?.ok_or_else(|| {
                Error::invalid(format!("there is no run {run_id}; start one with a cluster and a version"))
            })?;
            let progress =
                record.steps.iter().map(|s| format!("{}={}", s.name, s.status.as_str())).collect::<Vec<_>>().join(",");
            if progress != last_reported {
                tracing::info!(run_id = %run_id, steps = %progress, "run progress");
                last_reported = progress;
            }
            known.send_replace(Some(record.clone()));
            if !record.state.ended() {
                self.check_progress(&mut record).await?;
                known.send_replace(Some(record.clone()));
            }
            if record.state.ended() {
                return self.answer(record);
            }
            let now = self.ports.clock.now();
            if now >= wait_until {
                return Ok(self.response("running", record));
            }
            let left = wait_until.duration_since(now).unsigned_abs();
            self.ports.clock.sleep(self.timeouts.run_poll.min(left)).await;
        }
    }

    /// Ends the run when its instance finished or outlived its time limit; follows an attempt the
    /// cloud ended (interrupted, vanished, never checked in, no instance) with the next; adopts an
    /// instance found by its tag. The sweeper calls it for runs nobody waits on.
    pub(crate) async fn check_progress(&self, record: &mut RunRecord) -> Result<()> {
        if let Some(outcome) = record.outcome.clone() {
            let passed = outcome == "succeeded" && record.failed_steps().is_empty();
            if passed && record.kind == RunKind::RunnerImage {
                return self.make_image(record).await;
            }
            return self.conclude(record, if passed { RunState::Succeeded } else { RunState::Failed }, None).await;
        }
        let now = self.ports.clock.now();
        let Some(attempt) = record.current_attempt().cloned() else {
            let why = "it has no attempt recorded (an older provisioner started it)".to_owned();
            return self.conclude(record, RunState::Lost, Some(why)).await;
        };
        if record.timed_out(now) {
            return self.time_out(record).await;
        }
        let Some(instance_id) = record.instance_id.clone() else {
            // Launching, here or in another invocation, or launched and not recorded: look by tag.
            if let Some(found) = self.find_instance(record).await {
                tracing::info!(run_id = %record.run_id, instance_id = %found, "found the run's instance by its tag");
                self.adopt(record, found).await;
                return Ok(());
            }
            if now >= attempt.started_at + LAUNCH_GRACE {
                return self.retry(record, AttemptOutcome::Lost, "it never got an instance".into()).await.map(drop);
            }
            return Ok(());
        };
        if record.interrupted() {
            let why = format!("its instance {instance_id} received a spot interruption notice");
            return self.retry(record, AttemptOutcome::Interrupted, why).await.map(drop);
        }
        let state = self.ports.instances.state(&instance_id).await?;
        if !state.is_some_and(InstanceState::is_working) {
            // It may have reported just before going: read once more.
            if let Some(fresh) = self.ports.runs.get(&record.run_id).await? {
                if fresh.outcome.is_some() || fresh.attempt_number() != record.attempt_number() {
                    *record = fresh;
                    return Box::pin(self.check_progress(record)).await;
                }
            }
            let why = format!(
                "its instance {instance_id} is {} and never reported an outcome",
                state.map_or("gone", InstanceState::as_str)
            );
            return self.retry(record, AttemptOutcome::Lost, why).await.map(drop);
        }
        if record.missed_check_in(now) {
            let why = format!("its instance {instance_id} did not check in by {}", attempt.check_in_by);
            return self.retry(record, AttemptOutcome::BootTimeout, why).await.map(drop);
        }
        Ok(())
    }

    /// Ends a run that reached its time limit (or whose deadman fired): `RunTimedOut`, naming the
    /// limit and the step it was in, its attempt `timed_out`. Never retried, whatever EC2 then
    /// says of its instance.
    pub(super) async fn time_out(&self, record: &mut RunRecord) -> Result<()> {
        let Some(attempt) = record.current_attempt().cloned() else { return Ok(()) };
        let minutes = attempt.deadline.duration_since(attempt.started_at).as_mins();
        let steps = record.steps_under_way();
        let place =
            if steps.is_empty() { "outside any step".to_owned() } else { format!("in step {}", steps.join(", ")) };
        let instance = record.instance_id.as_deref().unwrap_or("none");
        let why = format!(
            "attempt {} reached the run's time limit of {minutes} minutes at {} {place}; its instance ({instance}) \
             was terminated",
            attempt.number, attempt.deadline
        );
        self.conclude(record, RunState::TimedOut, Some(why)).await
    }

    /// Ends the run as `state`: terminates its instances (but the one a failed run holds for
    /// debugging), ends its attempt, frees its place and slot, and reports it once.
    pub(super) async fn conclude(
        &self,
        record: &mut RunRecord,
        state: RunState,
        failure: Option<String>,
    ) -> Result<()> {
        let now = self.ports.clock.now();
        let held = (state == RunState::Failed && record.hold_minutes > 0).then(|| record.instance_id.clone()).flatten();
        // Every instance of the run goes, also one that was never recorded; not one of a later
        // attempt another invocation began (then this write is refused and the run goes on).
        let current = record.attempt_number().max(1);
        self.terminate_instances(record, |attempt| attempt <= current, held.as_ref()).await?;
        record.state = state;
        record.failure = failure;
        record.ended_at = Some(now);
        record.held_until = held.is_some().then(|| now + SignedDuration::from_mins(i64::from(record.hold_minutes)));
        record.end_attempt(state.attempt_outcome(), Some(now));
        match self.ports.runs.update(record).await {
            Ok(()) => self.report_end(record).await,
            // Another invocation ended it first (its ending stands), or began its next attempt; or
            // the answer to our own write was lost (then the record holds our very ending).
            Err(error) if matches!(error.aws_kind(), Some(AwsErrorKind::Conflict | AwsErrorKind::Indeterminate)) => {
                let fresh = self.ports.runs.get(&record.run_id).await?;
                let ours = fresh
                    .as_ref()
                    .is_some_and(|fresh| fresh.state == record.state && fresh.ended_at == record.ended_at);
                if ours {
                    self.report_end(record).await;
                } else if error.aws_kind() == Some(AwsErrorKind::Indeterminate) {
                    return Err(error);
                } else {
                    if let Some(fresh) = fresh {
                        *record = fresh;
                    }
                    if !record.state.ended() {
                        return Ok(());
                    }
                }
            }
            Err(error) => return Err(error),
        }
        self.ports.runs.release(record).await?;
        self.free_slot(record).await;
        tracing::info!(run_id = %record.run_id, state = record.state.as_str(), "run ended");
        Ok(())
    }

    /// Once per run, by whoever ended it: its steps as metrics, and an alert unless it succeeded.
    async fn report_end(&self, record: &RunRecord) {
        crate::metrics::run_steps(record);
        // A cancelled run was ended by someone who knows.
        if matches!(record.state, RunState::Succeeded | RunState::Cancelled) {
            return;
        }
        let subject = format!(
            "SlideRule provisioner: {} run of {} on {} {}",
            record.kind,
            record.version,
            record.cluster,
            match record.state {
                RunState::Lost => "was lost (RunLost)",
                RunState::TimedOut => "timed out (RunTimedOut)",
                _ => "failed",
            }
        );
        let message = match self.answer(record.clone()) {
            Err(error) => error.to_string(),
            Ok(_) => format!("run {} ended as {}", record.run_id, record.state.as_str()),
        };
        super::alert(&*self.ports.notices, &subject, &message).await;
    }

    fn answer(&self, record: RunRecord) -> Result<RunResponse> {
        let run = format!("{} run {} of {} on {}", record.kind, record.run_id, record.version, record.cluster);
        match record.state {
            RunState::Succeeded => Ok(self.response("success", record)),
            RunState::Failed => {
                let failed = record.failed_steps();
                let skipped = record.skipped_steps();
                let mut what = if failed.is_empty() {
                    "it did not complete".to_owned()
                } else {
                    format!("steps failed: {}", failed.join(", "))
                };
                if !skipped.is_empty() {
                    what.push_str(&format!(" (skipped: {})", skipped.join(", ")));
                }
                if let Some(failure) = &record.failure {
                    what.push_str(&format!("; {failure}"));
                }
                let mut message = format!("{run} failed: {what}; read the logs at {}", record.log_location);
                if let (Some(instance), Some(until)) = (&record.instance_id, record.held_until) {
                    if record.held_at(self.ports.clock.now()) {
                        message.push_str(&format!(
                            "; its instance {instance} is held until {until}: {} (cancel the run to end the hold)",
                            self.connect_command(instance)
                        ));
                    }
                }
                Err(match record.kind {
                    RunKind::Test => Error::TestsFailed(message),
                    RunKind::Build | RunKind::RunnerImage => Error::BuildFailed(message),
                })
            }
            RunState::Lost => Err(Error::RunLost(format!(
                "{run} was lost: {} (attempts: {}); start it again",
                record.failure.as_deref().unwrap_or("its instance vanished before it reported"),
                describe_all(&record.attempts)
            ))),
            RunState::CapacityUnavailable => Err(Error::CapacityUnavailable(
                record.failure.unwrap_or_else(|| format!("no spot capacity for {run}; try again later")),
            )),
            RunState::TimedOut => Err(Error::RunTimedOut(format!(
                "{run} timed out: {}; read the logs at {}, and raise the profile's time_limit_minutes if it needs \
                 longer",
                record.failure.as_deref().unwrap_or("it reached its time limit"),
                record.log_location
            ))),
            RunState::Cancelled => Err(Error::RunCancelled(format!(
                "{run} was {}; start it again to run it",
                record.failure.as_deref().unwrap_or("cancelled")
            ))),
            RunState::Launching | RunState::Running => Ok(self.response("running", record)),
        }
    }

    fn response(&self, status: &'static str, record: RunRecord) -> RunResponse {
        let now = self.ports.clock.now();
        let end = record.ended_at.unwrap_or(now);
        let held = record.held_at(now);
        let connect = record.instance_id.as_deref().filter(|_| held).map(|id| self.connect_command(id));
        RunResponse {
            status,
            elapsed_seconds: seconds_between(record.started_at, end),
            run: record.view(),
            commit: record.commit,
            layout: record.layout,
            state: record.state,
            images: record.images,
            started_at: record.started_at.to_string(),
            ended_at: record.ended_at.map(|t| t.to_string()),
            connect,
            held_until: record.held_until.filter(|_| held).map(|t| t.to_string()),
            hold_minutes: record.hold_minutes,
            image_id: record
                .runner_image
                .clone()
                .filter(|_| record.kind == RunKind::RunnerImage && record.state == RunState::Succeeded),
            runner_image: record.runner_image.filter(|_| record.kind == RunKind::Test),
        }
    }
}

impl Runner {
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
        let mut plan = Vec::new();
        if let Some(cap) = profile.max_concurrent_runs.of(kind) {
            let slots = Slots { profile: profile.name.clone(), kind, cap };
            let mut active = Vec::new();
            for holder in self.ports.runs.slots_held(&slots, now).await? {
                active.extend(self.ports.runs.get(&holder).await?.filter(|run| !run.state.ended()));
            }
            if active.len() >= cap as usize {
                return Err(runs_capped(&slots, active));
            }
            plan.push(PlannedWrite::new(
                "DynamoDB.UpdateItem",
                serde_json::json!({"item": crate::table::slots::key(&profile.name, kind), "takes": "one of its slots", "cap": cap}),
            ));
        }
        plan.push(PlannedWrite::new(
            "DynamoDB.PutItem",
            serde_json::json!({
                "item": format!("{}{}", crate::table::run::PREFIX, record.run_id),
                "run_id": record.run_id,
                "then": "the active-run pointer of its kind, cluster and version",
                "requested_by": record.requested_by,
            }),
        ));
        let runner = &profile.runner;
        let market = record.current_attempt().map_or(Market::Spot, |attempt| attempt.market);
        plan.push(PlannedWrite::new(
            "EC2.RunInstances",
            serde_json::json!({
                "image": self.launch_image(&record, profile).await?,
                "runner_image": record.runner_image,
                "architecture": runner.architecture,
                "instance_types": runner.instance_types,
                "subnets": self.settings.subnets,
                "market": market,
                "on_demand_fallback": runner.on_demand_fallback,
                "max_attempts": runner.max_attempts,
                "instance_profile": self.settings.instance_profile(kind),
                "volume_gb": runner.volume_gb,
                "time_limit_minutes": runner.time_limit_minutes,
                "hold_minutes": record.hold_minutes,
                "user_data_bytes": user_data.len(),
                "script_bytes": user_data.script_len(),
            }),
        ));
        let branch =
            format!("start a {kind} run of {version} on {cluster}, on the '{}' profile's runner", profile.name);
        Ok(Plan::new(kind.as_str(), branch, plan))
    }
}

/// `the test run of v5.5.0 on ci-1`: what a start would have started, for `BudgetExceeded`.
fn describe_start(record: &RunRecord) -> String {
    format!("the {} run of {} on {}", record.kind, record.version, record.cluster)
}
