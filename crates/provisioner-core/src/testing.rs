//! In-memory fakes of every port that record what was asked of them, and a clock that follows
//! tokio's (pausable) time. Stacks and locks read the clock, so a test moves time, not sleeps.

pub mod contract;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};

use crate::catalog::{Catalog, ClusterSettings};
use crate::domain::run::PROVISIONER_TAG;
use crate::domain::{ImageTag, StackPhase, StackStatus};
use crate::domain::{RunId, RunRecord, StepStatus};
use crate::error::{AwsErrorKind, AwsFailure, Error, Result};
use crate::ports::{
    Clock, Images, InstanceState, Instances, LaunchSpec, Lease, Locks, Notices, Runs, ScheduleEntry, Schedules,
    StackSnapshot, StackSpec, Stacks, TaggedInstance,
};
use crate::service::operations::Operations;
use crate::service::run::{RunSettings, Runner};
use crate::service::{Invocation, Provisioner, Timeouts};

/// Wall-clock time that moves with `tokio::time`: under `start_paused` it jumps as tasks sleep.
pub struct TestClock {
    base: Timestamp,
    start: tokio::time::Instant,
}

impl TestClock {
    pub fn starting_at(base: Timestamp) -> Arc<Self> {
        Arc::new(TestClock { base, start: tokio::time::Instant::now() })
    }
}

#[async_trait]
impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        let elapsed = SignedDuration::try_from(self.start.elapsed()).unwrap_or(SignedDuration::MAX);
        self.base + elapsed
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

fn fake_failure(operation: &'static str, code: &str, kind: AwsErrorKind) -> Error {
    Error::Aws(AwsFailure { service: "Fake", operation, code: code.into(), message: String::new(), kind })
}

/// How a call to AWS goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Throttled after the SDK's retries: nothing happened.
    Throttled,
    /// A 5xx answer: nothing happened, but the caller cannot know that.
    ServerError,
    /// The connection was reset before the request arrived: nothing happened.
    Reset,
    /// The call took effect and its answer was lost.
    LostAnswer,
}

impl Fault {
    const ALL: [Fault; 4] = [Fault::Throttled, Fault::ServerError, Fault::Reset, Fault::LostAnswer];

    fn error(self, operation: &'static str) -> Error {
        match self {
            Fault::Throttled => fake_failure(operation, "ThrottlingException", AwsErrorKind::Throttled),
            Fault::ServerError => fake_failure(operation, "InternalFailure", AwsErrorKind::Indeterminate),
            Fault::Reset => fake_failure(operation, "ConnectionFailure", AwsErrorKind::Indeterminate),
            Fault::LostAnswer => fake_failure(operation, "Timeout", AwsErrorKind::Indeterminate),
        }
    }
}

#[derive(Default)]
struct FaultState {
    /// Faults at a rate: the generator (seeded, so a run can be replayed) and the rate.
    random: Option<(fastrand::Rng, f64)>,
    /// The next calls of an operation fail with a fault, once per entry.
    scripted: Vec<(&'static str, Fault)>,
    injected: usize,
    /// Faults injected into each task, so a storm can tell which operations they hit.
    by_task: HashMap<tokio::task::Id, usize>,
}

/// Faults the fakes inject into calls, by script or at a rate. One is shared by the fakes of a
/// world; by default it injects nothing.
#[derive(Default)]
pub struct Faults {
    state: Mutex<FaultState>,
}

/// The rest of a call that a fault may still fail after it took effect.
#[must_use]
pub struct Effect(Option<Error>);

impl Effect {
    /// The call's answer: `value`, or the lost-answer error.
    pub fn answer<T>(self, value: T) -> Result<T> {
        match self.0 {
            Some(error) => Err(error),
            None => Ok(value),
        }
    }
}

impl Faults {
    pub fn none() -> Arc<Self> {
        Arc::new(Faults::default())
    }

    /// From now on, each call fails with probability `rate`, with a fault drawn at random.
    pub fn at_rate(&self, seed: u64, rate: f64) {
        self.state.lock().unwrap().random = Some((fastrand::Rng::with_seed(seed), rate));
    }

    /// Stops the faults at a rate.
    pub fn calm(&self) {
        self.state.lock().unwrap().random = None;
    }

    /// The next `times` calls of `operation` (a fake's operation name) fail with `fault`.
    pub fn script(&self, operation: &'static str, fault: Fault, times: usize) {
        self.state.lock().unwrap().scripted.extend(std::iter::repeat_n((operation, fault), times));
    }

    pub fn injected(&self) -> usize {
        self.state.lock().unwrap().injected
    }

    /// Faults injected into the task `task` so far.
    pub fn injected_into(&self, task: tokio::task::Id) -> usize {
        self.state.lock().unwrap().by_task.get(&task).copied().unwrap_or(0)
    }

    /// Decides the fate of one call of `operation`: `Err` when it fails before taking effect;
    /// otherwise what to answer once it has.
    pub fn draw(&self, operation: &'static str) -> Result<Effect> {
        let mut state = self.state.lock().unwrap();
        let fault = match state.scripted.iter().position(|(op, _)| *op == operation) {
            Some(index) => Some(state.scripted.remove(index).1),
            None => state
                .random
                .as_mut()
                .and_then(|(rng, rate)| (rng.f64() < *rate).then(|| Fault::ALL[rng.usize(..Fault::ALL.len())])),
        };
        let Some(fault) = fault else { return Ok(Effect(None)) };
        state.injected += 1;
        if let Some(task) = tokio::task::try_id() {
            *state.by_task.entry(task).or_default() += 1;
        }
        match fault {
            Fault::LostAnswer => Ok(Effect(Some(fault.error(operation)))),
            before => Err(before.error(operation)),
        }
    }
}

/// A call made to a fake, for assertions on what was asked of the cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    DescribeStack(String),
    /// Stacks listed by prefix.
    ListStacks(String),
    CreateStack(String),
    DeleteStack(String),
    StackEvents(String),
    ListSchedules(String),
    CreateSchedule(String),
    DeleteSchedule(String),
    /// Which repositories were asked for which tag.
    MissingImages(Vec<String>, String),
}

/// How the fake CloudFormation behaves when asked to create or delete.
#[derive(Debug, Clone)]
pub struct StackBehaviour {
    pub create_takes: Duration,
    pub create_ends_in: &'static str,
    pub delete_takes: Duration,
    pub delete_ends_in: &'static str,
    pub failure_reasons: Vec<String>,
}

impl Default for StackBehaviour {
    fn default() -> Self {
        StackBehaviour {
            create_takes: Duration::from_secs(90),
            create_ends_in: "CREATE_COMPLETE",
            delete_takes: Duration::from_secs(60),
            delete_ends_in: "DELETE_COMPLETE",
            failure_reasons: Vec::new(),
        }
    }
}

struct FakeStack {
    id: String,
    created_at: Timestamp,
    parameters: BTreeMap<String, String>,
    /// Statuses from the time each takes effect, in order.
    timeline: Vec<(Timestamp, String)>,
}

impl FakeStack {
    fn status_at(&self, now: Timestamp) -> &str {
        self.timeline.iter().rev().find(|(from, _)| *from <= now).map_or("CREATE_IN_PROGRESS", |(_, s)| s.as_str())
    }

    fn snapshot(&self, name: &str, now: Timestamp) -> Option<StackSnapshot> {
        let status = self.status_at(now);
        (status != "DELETE_COMPLETE").then(|| StackSnapshot {
            name: name.to_owned(),
            id: self.id.clone(),
            status: StackStatus::new(status),
            status_reason: None,
            parameters: self.parameters.clone(),
            outputs: BTreeMap::from([("ClusterName".to_owned(), name.to_owned())]),
            created_at: Some(self.created_at),
        })
    }
}

/// CloudFormation in memory. A stack moves through its timeline as the clock passes.
pub struct FakeStacks {
    clock: Arc<dyn Clock>,
    faults: Arc<Faults>,
    stacks: Mutex<HashMap<String, FakeStack>>,
    pub behaviour: Mutex<StackBehaviour>,
    calls: Mutex<Vec<Call>>,
    created: Mutex<Vec<StackSpec>>,
    next_id: Mutex<u32>,
}

impl FakeStacks {
    pub fn new(clock: Arc<dyn Clock>, faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(FakeStacks {
            clock,
            faults,
            stacks: Mutex::default(),
            behaviour: Mutex::default(),
            calls: Mutex::default(),
            created: Mutex::default(),
            next_id: Mutex::new(0),
        })
    }

    fn new_id(&self, name: &str) -> String {
        let mut next = self.next_id.lock().unwrap();
        *next += 1;
        format!("arn:aws:cloudformation:us-east-1:000000000000:stack/{name}/fake-{next}")
    }

    /// Puts a stack of the shipped profiles' default version in `status` now, optionally moving to
    /// `then` after `after`.
    pub fn seed(&self, name: &str, status: &str, then: Option<(Duration, &str)>) {
        self.seed_version(name, SEEDED_VERSION, status, then);
    }

    /// Puts a stack running `version` in `status` now, optionally moving to `then` after `after`.
    pub fn seed_version(&self, name: &str, version: &str, status: &str, then: Option<(Duration, &str)>) {
        let now = self.clock.now();
        let mut timeline = vec![(now, status.to_owned())];
        if let Some((after, next)) = then {
            timeline.push((now + SignedDuration::try_from(after).unwrap(), next.to_owned()));
        }
        let id = self.new_id(name);
        let parameters = BTreeMap::from([("Version".to_owned(), version.to_owned())]);
        self.stacks.lock().unwrap().insert(name.to_owned(), FakeStack { id, created_at: now, parameters, timeline });
    }

    pub fn set_behaviour(&self, behaviour: StackBehaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    pub fn status(&self, name: &str) -> Option<String> {
        let now = self.clock.now();
        self.stacks.lock().unwrap().get(name).map(|s| s.status_at(now).to_owned()).filter(|s| s != "DELETE_COMPLETE")
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn count(&self, wanted: fn(&Call) -> bool) -> usize {
        self.calls.lock().unwrap().iter().filter(|c| wanted(c)).count()
    }

    pub fn created(&self) -> Vec<StackSpec> {
        self.created.lock().unwrap().clone()
    }

    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }
}

#[async_trait]
impl Stacks for FakeStacks {
    async fn describe(&self, name: &str) -> Result<Option<StackSnapshot>> {
        self.record(Call::DescribeStack(name.to_owned()));
        let effect = self.faults.draw("DescribeStacks")?;
        let now = self.clock.now();
        let stacks = self.stacks.lock().unwrap();
        effect.answer(stacks.get(name).and_then(|stack| stack.snapshot(name, now)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<StackSnapshot>> {
        self.record(Call::ListStacks(prefix.to_owned()));
        let effect = self.faults.draw("DescribeStacks")?;
        let now = self.clock.now();
        let stacks = self.stacks.lock().unwrap();
        let listed = stacks.iter().filter(|(name, _)| name.starts_with(prefix));
        effect.answer(listed.filter_map(|(name, stack)| stack.snapshot(name, now)).collect())
    }

    async fn create(&self, spec: &StackSpec) -> Result<String> {
        self.record(Call::CreateStack(spec.name.clone()));
        let effect = self.faults.draw("CreateStack")?;
        let now = self.clock.now();
        let behaviour = self.behaviour.lock().unwrap().clone();
        let mut stacks = self.stacks.lock().unwrap();
        if stacks.get(&spec.name).is_some_and(|s| s.status_at(now) != "DELETE_COMPLETE") {
            return Err(fake_failure("CreateStack", "AlreadyExistsException", AwsErrorKind::Conflict));
        }
        let id = self.new_id(&spec.name);
        let done = now + SignedDuration::try_from(behaviour.create_takes).unwrap();
        let mut timeline = vec![(now, "CREATE_IN_PROGRESS".to_owned())];
        if behaviour.create_ends_in == "ROLLBACK_COMPLETE" {
            timeline.push((done - SignedDuration::from_secs(1), "ROLLBACK_IN_PROGRESS".to_owned()));
        }
        timeline.push((done, behaviour.create_ends_in.to_owned()));
        let parameters = spec.parameters.iter().cloned().collect();
        stacks.insert(spec.name.clone(), FakeStack { id: id.clone(), created_at: now, parameters, timeline });
        self.created.lock().unwrap().push(spec.clone());
        effect.answer(id)
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.record(Call::DeleteStack(name.to_owned()));
        let effect = self.faults.draw("DeleteStack")?;
        let now = self.clock.now();
        let behaviour = self.behaviour.lock().unwrap().clone();
        let mut stacks = self.stacks.lock().unwrap();
        let Some(stack) = stacks.get_mut(name) else { return effect.answer(()) };
        let status = stack.status_at(now).to_owned();
        if status == "DELETE_COMPLETE" || status == "DELETE_IN_PROGRESS" {
            return effect.answer(());
        }
        if StackStatus::new(status.as_str()).phase() == StackPhase::InProgress {
            return Err(fake_failure("DeleteStack", "ValidationError", AwsErrorKind::Other));
        }
        stack.timeline.retain(|(from, _)| *from <= now);
        stack.timeline.push((now, "DELETE_IN_PROGRESS".to_owned()));
        stack.timeline.push((
            now + SignedDuration::try_from(behaviour.delete_takes).unwrap(),
            behaviour.delete_ends_in.to_owned(),
        ));
        effect.answer(())
    }

    async fn failure_reasons(&self, name: &str) -> Result<Vec<String>> {
        self.record(Call::StackEvents(name.to_owned()));
        self.faults.draw("DescribeStackEvents")?.answer(())?;
        Ok(self.behaviour.lock().unwrap().failure_reasons.clone())
    }
}

/// EventBridge Scheduler in memory: name → (time, input).
#[derive(Default)]
pub struct FakeSchedules {
    faults: Arc<Faults>,
    schedules: Mutex<BTreeMap<String, (Timestamp, String)>>,
    calls: Mutex<Vec<Call>>,
    /// When set, every create fails with this AWS error code.
    pub failing_creates: Mutex<Option<&'static str>>,
}

impl FakeSchedules {
    pub fn new(faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(FakeSchedules { faults, ..FakeSchedules::default() })
    }

    pub fn all(&self) -> BTreeMap<String, (Timestamp, String)> {
        self.schedules.lock().unwrap().clone()
    }

    pub fn insert(&self, name: &str, at: Timestamp) {
        self.schedules.lock().unwrap().insert(name.to_owned(), (at, "{}".to_owned()));
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl Schedules for FakeSchedules {
    async fn list(&self, prefix: &str) -> Result<Vec<ScheduleEntry>> {
        self.calls.lock().unwrap().push(Call::ListSchedules(prefix.to_owned()));
        let effect = self.faults.draw("ListSchedules")?;
        let schedules = self.schedules.lock().unwrap();
        effect.answer(
            schedules
                .iter()
                .filter(|(name, _)| name.starts_with(prefix))
                .map(|(name, (at, _))| ScheduleEntry { name: name.clone(), at: *at })
                .collect(),
        )
    }

    async fn create(&self, name: &str, at: Timestamp, input: &str) -> Result<()> {
        self.calls.lock().unwrap().push(Call::CreateSchedule(name.to_owned()));
        let effect = self.faults.draw("CreateSchedule")?;
        if let Some(code) = *self.failing_creates.lock().unwrap() {
            return Err(fake_failure("CreateSchedule", code, AwsErrorKind::Other));
        }
        let mut schedules = self.schedules.lock().unwrap();
        if schedules.contains_key(name) {
            return Err(fake_failure("CreateSchedule", "ConflictException", AwsErrorKind::Conflict));
        }
        schedules.insert(name.to_owned(), (at, input.to_owned()));
        effect.answer(())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.calls.lock().unwrap().push(Call::DeleteSchedule(name.to_owned()));
        let effect = self.faults.draw("DeleteSchedule")?;
        self.schedules.lock().unwrap().remove(name);
        effect.answer(())
    }
}

/// The version the shipped catalog's profiles run by default, as `seed` records it.
pub const SEEDED_VERSION: &str = "latest";

/// A registry in memory: the `repository:tag` pairs it holds.
#[derive(Default)]
pub struct FakeImages {
    faults: Arc<Faults>,
    held: Mutex<std::collections::BTreeSet<String>>,
    calls: Mutex<Vec<Call>>,
}

impl FakeImages {
    pub fn new(faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(FakeImages { faults, ..FakeImages::default() })
    }

    /// Puts `repository:tag` for each repository.
    pub fn push(&self, repositories: &[String], tag: &str) {
        self.held.lock().unwrap().extend(repositories.iter().map(|r| format!("{r}:{tag}")));
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl Images for FakeImages {
    async fn missing(&self, _registry: &str, repositories: &[String], tag: &ImageTag) -> Result<Vec<String>> {
        self.calls.lock().unwrap().push(Call::MissingImages(repositories.to_vec(), tag.to_string()));
        self.faults.draw("DescribeImages")?.answer(())?;
        let held = self.held.lock().unwrap();
        Ok(repositories.iter().filter(|r| !held.contains(&format!("{r}:{tag}"))).cloned().collect())
    }
}

/// One lock: who holds it, and who waits longest for it (with when it last asked).
#[derive(Debug, Clone, Default)]
struct FakeLock {
    holder: Option<Lease>,
    waiting: Option<(Lease, Timestamp)>,
}

/// Leased locks in memory, with the DynamoDB adapter's semantics.
#[derive(Default)]
pub struct FakeLocks {
    faults: Arc<Faults>,
    locks: Mutex<HashMap<String, FakeLock>>,
}

impl FakeLocks {
    pub fn new(faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(FakeLocks { faults, ..FakeLocks::default() })
    }

    /// Who holds `key`, whether or not the lease has ended.
    pub fn holder(&self, key: &str) -> Option<Lease> {
        self.locks.lock().unwrap().get(key).and_then(|l| l.holder.clone())
    }

    /// Who holds `key` at `now`: a lease that ended counts as free.
    pub fn holder_at(&self, key: &str, now: Timestamp) -> Option<Lease> {
        self.holder(key).filter(|lease| lease.expires_at >= now)
    }

    pub fn put(&self, key: &str, lease: Lease) {
        self.locks.lock().unwrap().entry(key.to_owned()).or_default().holder = Some(lease);
    }
}

#[async_trait]
impl Locks for FakeLocks {
    async fn try_acquire(
        &self,
        key: &str,
        lease: &Lease,
        waiting_since: Timestamp,
        now: Timestamp,
    ) -> Result<Option<Lease>> {
        let effect = self.faults.draw("AcquireLock")?;
        let mut locks = self.locks.lock().unwrap();
        let lock = locks.entry(key.to_owned()).or_default();
        let mine = lock.holder.as_ref().is_some_and(|h| h.owner == lease.owner);
        let held = lock.holder.clone().filter(|h| h.owner != lease.owner && h.expires_at >= now);
        let lapse = SignedDuration::try_from(crate::ports::WAITING_LAPSES_AFTER).unwrap();
        let ahead =
            lock.waiting.clone().filter(|(w, asked)| w.owner != lease.owner && *asked + lapse >= now).map(|(w, _)| w);
        if mine || (held.is_none() && ahead.is_none()) {
            // As DynamoDB's put: the item is replaced, and who waited asks again.
            *lock = FakeLock { holder: Some(lease.clone()), waiting: None };
            return effect.answer(None);
        }
        if ahead.as_ref().is_none_or(|w| w.acquired_at > waiting_since) {
            let me = Lease { acquired_at: waiting_since, ..lease.clone() };
            lock.waiting = Some((me, now));
        }
        effect.answer(held.or(ahead))
    }

    async fn renew(&self, key: &str, lease: &Lease) -> Result<Option<Lease>> {
        let effect = self.faults.draw("RenewLock")?;
        let mut locks = self.locks.lock().unwrap();
        let lock = locks.entry(key.to_owned()).or_default();
        match &mut lock.holder {
            Some(holder) if holder.owner == lease.owner => {
                holder.expires_at = lease.expires_at;
                effect.answer(None)
            }
            Some(holder) => effect.answer(Some(holder.clone())),
            None => effect.answer(Some(Lease { owner: String::new(), ..lease.clone() })),
        }
    }

    async fn release(&self, key: &str, owner: &str) -> Result<()> {
        let effect = self.faults.draw("ReleaseLock")?;
        let mut locks = self.locks.lock().unwrap();
        if let Some(lock) = locks.get_mut(key) {
            if lock.holder.as_ref().is_some_and(|l| l.owner == owner) {
                lock.holder = None;
            } else if lock.waiting.as_ref().is_some_and(|(w, _)| w.owner == owner) {
                lock.waiting = None;
            }
        }
        effect.answer(())
    }
}

/// The account settings of the tests: every setting the shipped cluster template takes.
pub fn test_settings() -> ClusterSettings {
    [
        ("Domain", "slideruleearth.io"),
        ("HostedZoneId", "Z0000000000000000TEST"),
        ("ContainerRegistry", "000000000000.dkr.ecr.us-west-2.amazonaws.com"),
        ("ProjectBucket", "sliderule"),
        ("ProjectPublicBucket", "sliderule-public"),
        ("ProjectFolder", "cf"),
        ("JwtIssuer", "https://login.slideruleearth.io"),
        ("PublicDataBuckets", "sliderule-public,prd-tnm"),
        ("EnvironmentVersion", "test"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A provisioner over fresh fakes and the shipped catalog.
pub struct World {
    pub clock: Arc<TestClock>,
    /// Shared by every fake of the world; injects nothing until told to.
    pub faults: Arc<Faults>,
    pub stacks: Arc<FakeStacks>,
    pub schedules: Arc<FakeSchedules>,
    pub locks: Arc<FakeLocks>,
    pub images: Arc<FakeImages>,
    pub notices: Arc<FakeNotices>,
    pub provisioner: Provisioner,
}

impl World {
    pub fn new(now: &str) -> World {
        let clock = TestClock::starting_at(now.parse().expect("a test time"));
        let faults = Faults::none();
        let stacks = FakeStacks::new(clock.clone(), faults.clone());
        let schedules = FakeSchedules::new(faults.clone());
        let locks = FakeLocks::new(faults.clone());
        let notices = FakeNotices::new(faults.clone());
        let catalog = Catalog::shipped().expect("the shipped catalog loads");
        // As in an account after a release: each profile's default version is in the registry.
        let images = FakeImages::new(faults.clone());
        for profile in catalog.profiles() {
            images.push(&profile.images, profile.default_version.as_str());
        }
        let provisioner = Provisioner {
            catalog: Arc::new(catalog),
            stacks: stacks.clone(),
            schedules: schedules.clone(),
            locks: locks.clone(),
            images: images.clone(),
            clock: clock.clone(),
            timeouts: Timeouts::default(),
            settings: test_settings(),
            notices: notices.clone(),
        };
        World { clock, faults, stacks, schedules, locks, images, notices, provisioner }
    }

    /// An invocation with the Lambda maximum of 15 minutes left.
    pub fn invocation(&self, request_id: &str) -> Invocation {
        self.invocation_with(request_id, Duration::from_secs(15 * 60))
    }

    pub fn invocation_with(&self, request_id: &str, left: Duration) -> Invocation {
        Invocation {
            request_id: request_id.to_owned(),
            deadline: self.clock.now() + SignedDuration::try_from(left).unwrap(),
        }
    }
}

/// Run records in memory, with the DynamoDB adapter's semantics.
#[derive(Default)]
pub struct FakeRuns {
    faults: Arc<Faults>,
    records: Mutex<HashMap<String, RunRecord>>,
    active: Mutex<HashMap<String, (RunId, Timestamp)>>,
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
        if let Some(outcome) = outcome {
            record.outcome = Some(outcome.to_owned());
        }
    }
}

#[async_trait]
impl Runs for FakeRuns {
    async fn start(&self, record: &RunRecord, now: Timestamp) -> Result<Option<RunId>> {
        let effect = self.faults.draw("StartRun")?;
        let mut active = self.active.lock().unwrap();
        if let Some((id, deadline)) = active.get(&active_key(record)) {
            if *deadline >= now {
                return effect.answer(Some(id.clone()));
            }
        }
        active.insert(active_key(record), (record.run_id.clone(), record.deadline));
        self.records.lock().unwrap().insert(record.run_id.to_string(), record.clone());
        effect.answer(None)
    }

    async fn get(&self, id: &RunId) -> Result<Option<RunRecord>> {
        self.faults.draw("GetRun")?.answer(self.record(id))
    }

    async fn update(&self, record: &RunRecord) -> Result<()> {
        let effect = self.faults.draw("UpdateRun")?;
        let mut records = self.records.lock().unwrap();
        let Some(stored) = records.get_mut(record.run_id.as_str()).filter(|stored| !stored.state.ended()) else {
            return Err(fake_failure("UpdateRun", "ConditionalCheckFailedException", AwsErrorKind::Conflict));
        };
        stored.state = record.state;
        stored.instance_id = record.instance_id.clone();
        stored.ended_at = record.ended_at;
        stored.failure = record.failure.clone();
        effect.answer(())
    }

    async fn list(&self) -> Result<Vec<RunRecord>> {
        self.faults.draw("ListRuns")?.answer(self.all())
    }

    async fn release(&self, record: &RunRecord) -> Result<()> {
        let effect = self.faults.draw("ReleaseRun")?;
        let mut active = self.active.lock().unwrap();
        if active.get(&active_key(record)).is_some_and(|(id, _)| *id == record.run_id) {
            active.remove(&active_key(record));
        }
        effect.answer(())
    }
}

/// One instance EC2 knows.
#[derive(Debug, Clone)]
pub struct FakeInstance {
    pub state: InstanceState,
    pub instance_type: String,
    pub launched_at: Timestamp,
    pub tags: Vec<(String, String)>,
    pub client_token: String,
}

impl FakeInstance {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Not yet terminating: it costs money.
    pub fn live(&self) -> bool {
        self.state.is_live()
    }
}

/// EC2 in memory: records launches (one instance per client token), refuses instance types listed
/// in `no_capacity`, subnets listed in `full_subnets`, and everything once `quota_reached`.
pub struct FakeInstances {
    clock: Arc<dyn Clock>,
    faults: Arc<Faults>,
    pub no_capacity: Mutex<Vec<String>>,
    pub full_subnets: Mutex<Vec<String>>,
    pub quota_reached: Mutex<bool>,
    launches: Mutex<Vec<LaunchSpec>>,
    instances: Mutex<BTreeMap<String, FakeInstance>>,
    terminated: Mutex<Vec<String>>,
}

impl FakeInstances {
    pub fn new(clock: Arc<dyn Clock>, faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(FakeInstances {
            clock,
            faults,
            no_capacity: Mutex::default(),
            full_subnets: Mutex::default(),
            quota_reached: Mutex::default(),
            launches: Mutex::default(),
            instances: Mutex::default(),
            terminated: Mutex::default(),
        })
    }

    /// An instance started outside the provisioner's launch path (a stray, or one launched by
    /// an earlier version), running since now.
    pub fn put(&self, instance_id: &str, instance_type: &str, tags: &[(&str, &str)]) {
        let instance = FakeInstance {
            state: InstanceState::Running,
            instance_type: instance_type.to_owned(),
            launched_at: self.clock.now(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            client_token: format!("put-{instance_id}"),
        };
        self.instances.lock().unwrap().insert(instance_id.to_owned(), instance);
    }

    /// Every launch asked for, including those refused.
    pub fn launches(&self) -> Vec<LaunchSpec> {
        self.launches.lock().unwrap().clone()
    }

    /// Every instance started, by id.
    pub fn instances(&self) -> BTreeMap<String, FakeInstance> {
        self.instances.lock().unwrap().clone()
    }

    pub fn terminated(&self) -> Vec<String> {
        self.terminated.lock().unwrap().clone()
    }

    /// What happens to an instance outside the provisioner (spot interruption, the deadman).
    pub fn set_state(&self, instance_id: &str, state: Option<InstanceState>) {
        let mut instances = self.instances.lock().unwrap();
        match state {
            Some(state) => {
                if let Some(instance) = instances.get_mut(instance_id) {
                    instance.state = state;
                }
            }
            None => {
                instances.remove(instance_id);
            }
        }
    }
}

#[async_trait]
impl Instances for FakeInstances {
    async fn latest_image(&self, architecture: &str) -> Result<String> {
        self.faults.draw("GetParameter")?.answer(format!("ami-al2023-{architecture}"))
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<String> {
        self.launches.lock().unwrap().push(spec.clone());
        let effect = self.faults.draw("RunInstances")?;
        if *self.quota_reached.lock().unwrap() {
            return Err(fake_failure("RunInstances", "VcpuLimitExceeded", AwsErrorKind::Quota));
        }
        if spec.subnet_id.as_ref().is_some_and(|subnet| self.full_subnets.lock().unwrap().contains(subnet)) {
            return Err(fake_failure("RunInstances", "InsufficientFreeAddressesInSubnet", AwsErrorKind::Subnet));
        }
        if self.no_capacity.lock().unwrap().contains(&spec.instance_type) {
            return Err(fake_failure("RunInstances", "InsufficientInstanceCapacity", AwsErrorKind::Capacity));
        }
        let mut instances = self.instances.lock().unwrap();
        if let Some((id, _)) = instances.iter().find(|(_, i)| i.client_token == spec.client_token) {
            return effect.answer(id.clone());
        }
        let id = format!("i-{:08}", instances.len() + 1);
        let instance = FakeInstance {
            state: InstanceState::Running,
            instance_type: spec.instance_type.clone(),
            launched_at: self.clock.now(),
            tags: spec.tags.clone(),
            client_token: spec.client_token.clone(),
        };
        instances.insert(id.clone(), instance);
        effect.answer(id)
    }

    async fn of_run(&self, run_id: &str) -> Result<Vec<String>> {
        let effect = self.faults.draw("DescribeInstances")?;
        let instances = self.instances.lock().unwrap();
        let of_run = instances.iter().filter(|(_, i)| i.live() && i.tag(crate::domain::RUN_ID_TAG) == Some(run_id));
        effect.answer(of_run.map(|(id, _)| id.clone()).collect())
    }

    async fn tagged(&self) -> Result<Vec<TaggedInstance>> {
        let effect = self.faults.draw("DescribeInstances")?;
        let instances = self.instances.lock().unwrap();
        let tagged = instances.iter().filter(|(_, i)| i.live() && i.tag(PROVISIONER_TAG) == Some("true"));
        effect.answer(
            tagged
                .map(|(id, i)| TaggedInstance {
                    id: id.clone(),
                    state: i.state,
                    instance_type: i.instance_type.clone(),
                    launched_at: Some(i.launched_at),
                    tags: i.tags.iter().cloned().collect(),
                })
                .collect(),
        )
    }

    async fn state(&self, instance_id: &str) -> Result<Option<InstanceState>> {
        self.faults.draw("DescribeInstances")?.answer(self.instances.lock().unwrap().get(instance_id).map(|i| i.state))
    }

    async fn terminate(&self, instance_id: &str) -> Result<()> {
        let effect = self.faults.draw("TerminateInstances")?;
        self.terminated.lock().unwrap().push(instance_id.to_owned());
        if let Some(instance) = self.instances.lock().unwrap().get_mut(instance_id) {
            instance.state = InstanceState::Terminated;
        }
        effect.answer(())
    }
}

/// A runner over fresh fakes and the shipped catalog.
pub struct RunWorld {
    pub clock: Arc<TestClock>,
    pub faults: Arc<Faults>,
    pub runs: Arc<FakeRuns>,
    pub instances: Arc<FakeInstances>,
    pub notices: Arc<FakeNotices>,
    pub runner: Runner,
}

impl RunWorld {
    pub fn new(now: &str) -> RunWorld {
        let clock = TestClock::starting_at(now.parse().expect("a test time"));
        RunWorld::sharing(clock, Faults::none(), None)
    }

    /// A runner on `clock` and `faults`, sending its alerts to `notices` (its own when `None`).
    pub fn sharing(clock: Arc<TestClock>, faults: Arc<Faults>, notices: Option<Arc<FakeNotices>>) -> RunWorld {
        let notices = notices.unwrap_or_else(|| FakeNotices::new(faults.clone()));
        let runs = FakeRuns::new(faults.clone());
        let instances = FakeInstances::new(clock.clone(), faults.clone());
        let runner = Runner {
            catalog: Arc::new(Catalog::shipped().expect("the shipped catalog loads")),
            runs: runs.clone(),
            instances: instances.clone(),
            clock: clock.clone(),
            settings: RunSettings {
                region: "us-west-2".into(),
                table: "sliderule-provisioner".into(),
                log_bucket: "sliderule-provisioner-runs".into(),
                repository: "https://github.com/SlideRuleEarth/sliderule.git".into(),
                build_image: "123456789012.dkr.ecr.us-west-2.amazonaws.com/sliderule-buildenv:latest".into(),
                registry: "123456789012.dkr.ecr.us-west-2.amazonaws.com".into(),
                domain: "slideruleearth.io".into(),
                project_bucket: "sliderule".into(),
                project_folder: "cf".into(),
                github_token_secret: Some("ci/github-token".into()),
                instance_profile: Some("sliderule-provisioner-runner".into()),
                subnets: vec!["subnet-a".into(), "subnet-b".into()],
                security_groups: vec![],
            },
            timeouts: crate::service::Timeouts::default(),
            notices: notices.clone(),
        };
        RunWorld { clock, faults, runs, instances, notices, runner }
    }

    pub fn invocation(&self, request_id: &str) -> Invocation {
        Invocation { request_id: request_id.to_owned(), deadline: self.clock.now() + SignedDuration::from_mins(15) }
    }
}

/// Alerts in memory: (subject, message), oldest first.
#[derive(Default)]
pub struct FakeNotices {
    faults: Arc<Faults>,
    sent: Mutex<Vec<(String, String)>>,
}

impl FakeNotices {
    pub fn new(faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(FakeNotices { faults, sent: Mutex::default() })
    }

    pub fn sent(&self) -> Vec<(String, String)> {
        self.sent.lock().unwrap().clone()
    }
}

#[async_trait]
impl Notices for FakeNotices {
    async fn publish(&self, subject: &str, message: &str) -> Result<()> {
        let effect = self.faults.draw("Publish")?;
        self.sent.lock().unwrap().push((subject.to_owned(), message.to_owned()));
        effect.answer(())
    }
}

/// Both sides over one clock, one set of faults and one alert topic, and the operations over them.
pub struct OpsWorld {
    pub world: World,
    pub runs: RunWorld,
    pub operations: Operations,
}

impl OpsWorld {
    pub fn new(now: &str) -> OpsWorld {
        let world = World::new(now);
        let runs = RunWorld::sharing(world.clock.clone(), world.faults.clone(), Some(world.notices.clone()));
        let operations = Operations { provisioner: world.provisioner.clone(), runner: runs.runner.clone() };
        OpsWorld { world, runs, operations }
    }
}
