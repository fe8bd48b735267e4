//! A storm of concurrent operations on a few clusters while every AWS call may fail (throttled,
//! 5xx, connection reset, or its answer lost after it took effect), on fakes with paused time and
//! seeded faults, so a run can be replayed. After every operation it checks that:
//! - every change to a cluster (stack created or deleted, schedule created or deleted) is made by
//!   the holder of the cluster's lock, so a cluster never has two stacks or two writers;
//! - a successful destroy leaves no stack and no schedule;
//! - no lock outlives its operation's answer;
//! - no instance outlives its run (a live instance belongs to a run that has not ended), but a
//!   failed run's held instance, and that one never past its hold once the sweeper has run;
//! - a run never has two live instances;
//! - a run never begins another attempt after its instance reported a failed step;
//! - no profile has more runs with a live instance than its cap;
//! - after it, each profile's books equal a recount from the records when no fault was injected,
//!   are never below it when faults were (a lost settle only counts longer), and equal it after
//!   the sweeper's recount.
//!
//! Among the operations: spot interruptions (EC2's warning, delivered once or twice; the
//! instance's own notice; an instance that vanishes without a word) and cancels.
//!
//! Sweeps run among the operations, as the sweeper runs beside everything in an account.
//!
//! `tools/run-tests` runs it with its figures shown.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

use crate::domain::history::month_of;
use crate::domain::resource_names::{schedule_prefix, stack_name, STACK_NAME_PREFIX};
use crate::domain::tags;
use crate::domain::{ClusterName, ClusterRequest, DeployRequest, GitRef, ScheduleDestroyRequest};
use crate::domain::{HistoryEntry, RunId, RunKind, RunRecord, RunRequest};
use crate::error::Result;
use crate::ports::{Clock, ClusterPorts, History, ScheduleEntry, Schedules, StackSnapshot, StackSpec, Stacks};
use crate::service::budget::{month_spend, ProfileSpend, SpendSources};
use crate::service::run::Runner;
use crate::service::survey::Operations;
use crate::service::{Invocation, Provisioner};
use crate::testing::{Call, FakeLocks, RunWorld, World};

const NOW: &str = "2026-11-23T12:00:00Z";
const CLUSTERS: [&str; 3] = ["ci-1", "ci-2", "ci-3"];
const OPERATIONS: usize = 200;
/// Operations start at random over this time, so many overlap (stacks take 60 to 90 s).
const SPREAD: Duration = Duration::from_secs(20 * 60);

tokio::task_local! {
    /// The request id of the operation a task runs.
    static CALLER: String;
}

/// Each violation once, however many checks see it.
type Violations = Arc<Mutex<BTreeSet<String>>>;

/// Checks that whoever changes a cluster holds its lock.
struct Witness {
    locks: Arc<FakeLocks>,
    clock: Arc<dyn Clock>,
    violations: Violations,
}

impl Witness {
    fn check(&self, cluster: &str, change: &str) {
        let Ok(cluster) = ClusterName::parse(cluster) else { return };
        let caller = CALLER.try_with(Clone::clone).unwrap_or_default();
        let holder = self.locks.holder_at(cluster.as_str(), self.clock.now()).map(|lease| lease.owner);
        if holder.as_deref() != Some(caller.as_str()) {
            self.violations
                .lock()
                .unwrap()
                .insert(format!("{caller} made {change} on {cluster} while {holder:?} held its lock"));
        }
    }
}

struct WitnessedStacks {
    inner: Arc<dyn Stacks>,
    witness: Arc<Witness>,
}

#[async_trait]
impl Stacks for WitnessedStacks {
    async fn describe(&self, name: &str) -> Result<Option<StackSnapshot>> {
        self.inner.describe(name).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<StackSnapshot>> {
        self.inner.list(prefix).await
    }

    async fn create(&self, spec: &StackSpec) -> Result<String> {
        self.witness.check(spec.name.trim_start_matches("sliderule-cluster-"), "CreateStack");
        self.inner.create(spec).await
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.witness.check(name.trim_start_matches("sliderule-cluster-"), "DeleteStack");
        self.inner.delete(name).await
    }

    async fn failure_reasons(&self, name: &str) -> Result<Vec<String>> {
        self.inner.failure_reasons(name).await
    }
}

struct WitnessedSchedules {
    inner: Arc<dyn Schedules>,
    witness: Arc<Witness>,
}

fn cluster_of_schedule(name: &str) -> &str {
    name.split('.').nth(1).unwrap_or_default()
}

#[async_trait]
impl Schedules for WitnessedSchedules {
    async fn list(&self, prefix: &str) -> Result<Vec<ScheduleEntry>> {
        self.inner.list(prefix).await
    }

    async fn create(
        &self,
        name: &str,
        at: Timestamp,
        input: &str,
        requested_by: Option<&crate::domain::RequestedBy>,
    ) -> Result<()> {
        self.witness.check(cluster_of_schedule(name), "CreateSchedule");
        self.inner.create(name, at, input, requested_by).await
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.witness.check(cluster_of_schedule(name), "DeleteSchedule");
        self.inner.delete(name).await
    }
}

#[derive(Debug, Clone)]
enum Operation {
    Deploy(&'static str),
    ScheduleDestroy(&'static str, Duration),
    Destroy(&'static str),
    /// A start, with its hold in minutes.
    Start(RunKind, &'static str, &'static str, u64, u32),
    Resume(usize, u64),
    /// The instance's side: a run's instance reports, notices an interruption, or vanishes.
    Instance(usize, &'static str),
    /// An EC2 event about a run's current instance, delivered this many times.
    Event(usize, &'static str, usize),
    Cancel(usize),
    /// The sweeper's scheduled invocation.
    Sweep,
}

/// What one storm saw.
#[derive(Debug, Default)]
struct Figures {
    operations: usize,
    answers: BTreeMap<String, usize>,
    faults_injected: usize,
    /// Retries of a conditional write that met the write's own effect (also as the runs settle).
    own_writes_met: usize,
    faults_absorbed: usize,
    /// Runs that took more than one attempt, failed runs that held their instance, and cancelled runs.
    retried: usize,
    held: usize,
    cancelled: usize,
    violations: Vec<String>,
}

struct Storm {
    world: World,
    runs: RunWorld,
    provisioner: Provisioner,
    runner: Runner,
    violations: Violations,
    run_ids: Mutex<Vec<RunId>>,
    /// Runs whose instance reported a failed step, and the attempt it reported in.
    failed_in: Mutex<BTreeMap<RunId, u32>>,
}

impl Storm {
    fn new() -> Storm {
        let world = World::new(NOW);
        let runs = RunWorld::new(NOW);
        // The clusters' stacks own instances, beside the runs', as in an account.
        world.stacks.launch_instances_in(runs.instances.clone());
        let violations = Violations::default();
        let witness = Arc::new(Witness {
            locks: world.locks.clone(),
            clock: world.clock.clone(),
            violations: violations.clone(),
        });
        let ports = ClusterPorts {
            stacks: Arc::new(WitnessedStacks { inner: world.stacks.clone(), witness: witness.clone() }),
            schedules: Arc::new(WitnessedSchedules { inner: world.schedules.clone(), witness }),
            // One set of books for clusters and runs, as in the table.
            spend: runs.spend.clone(),
            ..world.provisioner.ports()
        };
        let provisioner =
            Provisioner::new(world.provisioner.catalog.clone(), ports, world.provisioner.settings.clone());
        let runner = runs.runner.clone();
        Storm { world, runs, provisioner, runner, violations, run_ids: Mutex::default(), failed_in: Mutex::default() }
    }

    fn violation(&self, text: String) {
        self.violations.lock().unwrap().insert(text);
    }

    fn invocation(&self, request_id: &str) -> Invocation {
        self.world.invocation(request_id)
    }

    /// Runs one operation as its own request, then checks what must hold once it has answered.
    async fn run(&self, request_id: String, operation: Operation) -> Option<String> {
        let invocation = self.invocation(&request_id);
        let answer = match operation.clone() {
            Operation::Deploy(cluster) => {
                let request =
                    DeployRequest { cluster: ClusterName::parse(cluster).unwrap(), version: None, requested_by: None };
                self.provisioner.deploy(request, &invocation).await.map(|_| ())
            }
            Operation::ScheduleDestroy(cluster, after) => {
                let at = crate::domain::time::whole_seconds(self.world.clock.now())
                    + jiff::SignedDuration::try_from(after).unwrap();
                let request = ScheduleDestroyRequest {
                    cluster: ClusterName::parse(cluster).unwrap(),
                    time_to_destroy: at,
                    requested_by: None,
                };
                self.provisioner.schedule_destroy(request, &invocation).await.map(|_| ())
            }
            Operation::Destroy(cluster) => {
                let created_before = self.creations_of(cluster);
                let outcome = self
                    .provisioner
                    .destroy(ClusterRequest::new(ClusterName::parse(cluster).unwrap()), &invocation)
                    .await;
                // A deploy (or a schedule_destroy) may make it again once the lock is released,
                // before the answer.
                if outcome.is_ok() && self.creations_of(cluster) == created_before {
                    self.check_destroyed(cluster, &request_id);
                }
                outcome.map(|_| ())
            }
            Operation::Start(kind, cluster, version, wait, hold_minutes) => {
                let request = RunRequest::Start {
                    cluster: ClusterName::parse(cluster).unwrap(),
                    version: GitRef::parse(version).unwrap(),
                    wait_seconds: Some(wait),
                    hold_minutes,
                    requested_by: None,
                };
                let outcome = self.answered_in_time(wait, self.runner.run(kind, request, &invocation)).await;
                if let Ok(response) = &outcome {
                    let mut ids = self.run_ids.lock().unwrap();
                    if !ids.contains(&response.run_id) {
                        ids.push(response.run_id.clone());
                    }
                }
                outcome.map(|_| ())
            }
            Operation::Resume(index, wait) => {
                let run_id = self.run_id(index)?;
                let request = RunRequest::Resume { run_id: run_id.clone(), wait_seconds: Some(wait) };
                self.answered_in_time(wait, self.runner.run(run_id.kind(), request, &invocation)).await.map(|_| ())
            }
            Operation::Sweep => {
                let operations = Operations::new(self.provisioner.clone(), self.runner.clone());
                let swept = operations.sweep(&invocation).await.map(|_| ());
                if swept.is_ok() {
                    self.check_holds();
                }
                swept
            }
            Operation::Instance(index, what) => {
                let run_id = self.active_run_id(index)?;
                let record = self.runs.runs.record(&run_id)?;
                // Only a live instance says anything.
                let instance = record.instance_id.as_deref()?;
                if !self.runs.instances.instances().get(instance).is_some_and(|i| i.live()) || record.state.ended() {
                    return None;
                }
                match what {
                    "vanished" => {
                        self.runs.instances.set_state(instance, Some(crate::ports::InstanceState::Terminated))
                    }
                    "notice" => self.runs.runs.report_interrupted(&run_id),
                    outcome => {
                        if outcome == "failed" {
                            self.failed_in.lock().unwrap().insert(run_id.clone(), record.attempt_number());
                        }
                        self.runs.runs.report(&run_id, &[], Some(outcome));
                    }
                }
                return None;
            }
            Operation::Event(index, what, deliveries) => {
                let run_id = self.active_run_id(index)?;
                let instance = self.runs.runs.record(&run_id)?.instance_id?;
                let detail_type = if what == "warning" {
                    crate::domain::instance_event::SPOT_WARNING
                } else {
                    self.runs.instances.set_state(&instance, Some(crate::ports::InstanceState::ShuttingDown));
                    crate::domain::instance_event::STATE_CHANGE
                };
                let event = serde_json::json!({
                    "version": "0", "id": format!("event-{request_id}"), "detail-type": detail_type,
                    "source": "aws.ec2", "account": "123456789012", "time": NOW, "region": "us-west-2",
                    "resources": [],
                    "detail": {"instance-id": instance, "instance-action": "terminate", "state": "shutting-down"}
                });
                let event = crate::domain::InstanceEvent::parse(event).unwrap();
                let mut outcome = Ok(());
                for _ in 0..deliveries {
                    outcome = self.runner.instance_event(event.clone()).await.map(|_| ());
                }
                outcome
            }
            Operation::Cancel(index) => {
                let run_id = self.run_id(index)?;
                let request = crate::domain::CancelRequest { run_id, requested_by: None };
                self.runner.cancel(request).await.map(|_| ())
            }
        };
        self.check_lock_released(&request_id);
        self.check_instances();
        self.check_caps();
        self.check_no_retry_after_a_failure();
        Some(answer.err().map_or_else(|| "success".to_owned(), |e| e.code().to_owned()))
    }

    /// A start's or resume's answer, checked to come by its `wait_seconds` (or the least answer
    /// time) however slow the calls it made.
    async fn answered_in_time<T>(&self, wait: u64, ask: impl std::future::Future<Output = T>) -> T {
        let asked = tokio::time::Instant::now();
        let answer = ask.await;
        let took = asked.elapsed();
        let bound = Duration::from_secs(wait).max(crate::service::run::LEAST_ANSWER_TIME.unsigned_abs());
        if took > bound {
            self.violation(format!("an ask with wait_seconds {wait} answered after {took:?}"));
        }
        answer
    }

    fn run_id(&self, index: usize) -> Option<RunId> {
        let ids = self.run_ids.lock().unwrap();
        (!ids.is_empty()).then(|| ids[index % ids.len()].clone())
    }

    /// A run still under way, when there is one: what the cloud's events are about.
    fn active_run_id(&self, index: usize) -> Option<RunId> {
        let active: Vec<RunId> =
            self.runs.runs.all().into_iter().filter(|r| !r.state.ended()).map(|r| r.run_id).collect();
        if active.is_empty() {
            self.run_id(index)
        } else {
            Some(active[index % active.len()].clone())
        }
    }

    /// Without faults every attempt begun gets its instance: one that never did was stalled by
    /// a write it took for another's.
    fn check_calm_attempts_launched(&self, calm_from: Timestamp) {
        for run in self.runs.runs.all() {
            for attempt in run.attempts.iter().filter(|a| a.started_at >= calm_from && a.instance_id.is_none()) {
                if attempt.outcome != crate::domain::AttemptOutcome::Cancelled {
                    self.violation(format!(
                        "{}: attempt {} began after the faults calmed and never launched ({})",
                        run.run_id,
                        attempt.number,
                        attempt.outcome.as_str()
                    ));
                }
            }
        }
    }

    /// How many times the cluster's stack was created so far.
    /// The stacks and schedules made for `cluster` so far.
    fn creations_of(&self, cluster: &str) -> usize {
        let name = ClusterName::parse(cluster).unwrap();
        let (stack, schedules) = (stack_name(&name), schedule_prefix(&name));
        let stacks = self.world.stacks.calls();
        let made = self.world.schedules.calls();
        let stacks = stacks.iter().filter(|call| matches!(call, Call::CreateStack(made) if *made == stack)).count();
        stacks
            + made
                .iter()
                .filter(|call| matches!(call, Call::CreateSchedule(made) if made.starts_with(&schedules)))
                .count()
    }

    fn check_destroyed(&self, cluster: &str, request_id: &str) {
        let name = ClusterName::parse(cluster).unwrap();
        if let Some(status) = self.world.stacks.status(&stack_name(&name)) {
            self.violation(format!("{request_id}: destroy of {cluster} answered success with its stack {status}"));
        }
        let prefix = schedule_prefix(&name);
        let left: Vec<String> = self.world.schedules.all().into_keys().filter(|s| s.starts_with(&prefix)).collect();
        if !left.is_empty() {
            self.violation(format!("{request_id}: destroy of {cluster} answered success leaving schedules {left:?}"));
        }
    }

    fn check_lock_released(&self, request_id: &str) {
        for cluster in CLUSTERS {
            if self
                .world
                .locks
                .holder_at(cluster, self.world.clock.now())
                .is_some_and(|lease| lease.owner == request_id)
            {
                self.violation(format!("{request_id} answered and still holds the lock of {cluster}"));
            }
        }
    }

    fn check_instances(&self) {
        let mut per_run: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (instance_id, instance) in self.runs.instances.instances() {
            // A cluster's instance: alive while its stack stands, never ended by anyone else.
            if let Some(stack) = instance.tag(tags::CLOUDFORMATION_STACK) {
                let stands = self.world.stacks.status(stack).is_some_and(|status| !status.starts_with("DELETE"));
                if stands && !instance.live() && self.runs.instances.stack_instances_ended(stack).contains(&instance_id)
                {
                    self.violation(format!("instance {instance_id} of the standing cluster stack {stack} was ended"));
                }
                continue;
            }
            if !instance.live() {
                continue;
            }
            let run = instance
                .tag(tags::RUN_ID)
                .and_then(|id| RunId::parse(id).ok())
                .and_then(|id| self.runs.runs.record(&id));
            if let Some(run) = &run {
                per_run.entry(run.run_id.to_string()).or_default().push(instance_id.clone());
            }
            match run {
                Some(run) if !run.state.ended() => {}
                // Held for debugging; the sweeper ends it once the hold ends (checked after sweeps).
                Some(run) if run.held_until.is_some() && run.instance_id.as_deref() == Some(instance_id.as_str()) => {}
                Some(run) => self.violation(format!(
                    "instance {instance_id} is live after its run {} ended {}",
                    run.run_id,
                    run.state.as_str()
                )),
                None => self.violation(format!("instance {instance_id} is live and belongs to no run")),
            }
        }
        for (run_id, instances) in per_run {
            if instances.len() > 1 {
                self.violation(format!("run {run_id} has two live instances: {instances:?}"));
            }
        }
    }

    /// After a sweep: no held instance is live past its hold.
    fn check_holds(&self) {
        let now = self.world.clock.now();
        for run in self.runs.runs.all() {
            let Some(instance) = run.instance_id.as_deref() else { continue };
            let live = self.runs.instances.instances().get(instance).is_some_and(|i| i.live());
            if live && run.held_until.is_some_and(|until| until <= now) {
                self.violation(format!("instance {instance} of run {} is live past its hold", run.run_id));
            }
        }
    }

    /// A run whose instance reported a failed step never begins another attempt.
    fn check_no_retry_after_a_failure(&self) {
        for (run_id, attempt) in self.failed_in.lock().unwrap().iter() {
            let Some(run) = self.runs.runs.record(run_id) else { continue };
            if run.attempt_number() > *attempt {
                self.violation(format!("run {run_id} began attempt {} after a failed step", run.attempt_number()));
            }
        }
    }

    /// No profile has more runs of a kind with a live instance than its cap allows.
    /// The books against a recount from the records: equal when no fault hit them (`exact`), and
    /// never below it (a lost settle only counts longer); equal after the sweeper's recount.
    async fn check_books(&self, operations: &Operations, exact: bool) {
        let catalog = &self.provisioner.catalog;
        let profiles: Vec<String> = catalog.profiles().iter().map(|profile| profile.name.clone()).collect();
        let now = self.world.clock.now();
        let (stacks, history, runs) = self.spend_sources(now).await;
        let records = month_spend(catalog, &SpendSources { now, stacks: &stacks, history: &history, runs: &runs });
        // Rounded as status rounds it, as the records' spend is.
        let kept = |name: &str| {
            let profile = catalog.profiles().iter().find(|profile| profile.name == name).expect("a profile");
            ProfileSpend::of_books(profile, &self.runs.spend.kept(name), now).spent_usd
        };
        for spend in &records {
            let books = kept(&spend.profile);
            if books < spend.spent_usd - 0.01 || (exact && (books - spend.spent_usd).abs() >= 0.01) {
                self.violation(format!(
                    "the books of {} say {books:.2} USD, the records {:.2} USD",
                    spend.profile, spend.spent_usd
                ));
            }
        }
        for recount in operations.recount_books(&profiles).await {
            let records = records.iter().find(|spend| spend.profile == recount.profile).map_or(0.0, |s| s.spent_usd);
            if !recount.ok || (kept(&recount.profile) - records).abs() >= 0.01 {
                self.violation(format!(
                    "the recount left the books of {} unequal to the records: {recount:?}",
                    recount.profile
                ));
            }
        }
        if records.iter().all(|spend| spend.spent_usd == 0.0) {
            self.violation("nothing cost anything: the storm checked no books".into());
        }
    }

    /// What the recount reads, from the fakes as they are.
    async fn spend_sources(
        &self,
        now: Timestamp,
    ) -> (Vec<StackSnapshot>, Vec<(ClusterName, HistoryEntry)>, Vec<RunRecord>) {
        let stacks = self.world.stacks.list(STACK_NAME_PREFIX).await.unwrap_or_default();
        let history = self.world.history.month(&month_of(now)).await.unwrap_or_default();
        (stacks, history, self.runs.runs.all())
    }

    fn check_caps(&self) {
        // (profile, kind) -> its cap and the runs of that kind with a live instance.
        let mut running: BTreeMap<(String, &str), (u32, BTreeSet<String>)> = BTreeMap::new();
        for instance in self.runs.instances.instances().values().filter(|i| i.live()) {
            // A held instance's run has ended and freed its slot.
            let Some(run) = instance
                .tag(tags::RUN_ID)
                .and_then(|id| RunId::parse(id).ok())
                .and_then(|id| self.runs.runs.record(&id))
                .filter(|run| !run.state.ended())
            else {
                continue;
            };
            let Ok(profile) = self.runner.catalog.profile_for(&run.cluster) else { continue };
            let Some(cap) = profile.max_concurrent_runs.of(run.kind) else { continue };
            let key = (profile.name.clone(), run.kind.as_str());
            running.entry(key).or_insert_with(|| (cap, BTreeSet::new())).1.insert(run.run_id.to_string());
        }
        for ((profile, kind), (cap, runs)) in running {
            if runs.len() > cap as usize {
                self.violation(format!(
                    "profile {profile} has {} {kind} runs with a live instance, over its cap",
                    runs.len()
                ));
            }
        }
    }

    /// Draws the storm: operations and the time each starts. Asks wait briefly as often as long,
    /// so that slow calls meet their bound.
    fn plan(seed: u64) -> Vec<(Duration, Operation)> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut plan: Vec<(Duration, Operation)> = (0..OPERATIONS)
            .map(|_| {
                let cluster = CLUSTERS[rng.usize(..CLUSTERS.len())];
                let run = rng.usize(..1000);
                let operation = match rng.u32(..100) {
                    0..26 => Operation::Deploy(cluster),
                    26..36 => Operation::ScheduleDestroy(cluster, Duration::from_secs(rng.u64(60..4 * 3600))),
                    36..50 => Operation::Destroy(cluster),
                    50..64 => {
                        let kind = if rng.bool() { RunKind::Test } else { RunKind::Build };
                        let hold = [0, 30][rng.usize(..2)];
                        Operation::Start(kind, cluster, ["main", "v4.5.1"][rng.usize(..2)], wait(&mut rng), hold)
                    }
                    64..72 => Operation::Resume(run, wait(&mut rng)),
                    72..77 => Operation::Sweep,
                    77..84 => Operation::Event(run, ["warning", "stopped"][rng.usize(..2)], rng.usize(1..3)),
                    84..87 => Operation::Cancel(run),
                    _ => Operation::Instance(run, ["succeeded", "failed", "notice", "vanished"][rng.usize(..4)]),
                };
                (Duration::from_millis(rng.u64(..SPREAD.as_millis() as u64)), operation)
            })
            .collect();
        plan.sort_by_key(|(at, _)| *at);
        plan
    }

    async fn blow(self: Arc<Self>, seed: u64, rate: f64) -> Figures {
        self.world.faults.at_rate(seed, rate);
        self.runs.faults.at_rate(seed.wrapping_add(1), rate);
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for (index, (at, operation)) in Storm::plan(seed).into_iter().enumerate() {
            tokio::time::sleep_until(start + at).await;
            let storm = self.clone();
            let request_id = format!("op-{index:03}");
            tasks.push(tokio::spawn(CALLER.scope(request_id.clone(), async move {
                let answer = storm.run(request_id, operation).await;
                let task = tokio::task::id();
                (answer, storm.world.faults.injected_into(task) + storm.runs.faults.injected_into(task))
            })));
        }
        let mut figures = Figures::default();
        for task in tasks {
            let (answer, faults) = task.await.expect("no operation panics");
            let Some(answer) = answer else { continue };
            figures.operations += 1;
            if answer != "AwsError" {
                figures.faults_absorbed += faults;
            }
            *figures.answers.entry(answer).or_default() += 1;
        }
        figures.faults_injected = self.world.faults.injected() + self.runs.faults.injected();
        self.settle(rate == 0.0).await;
        figures.own_writes_met = self.world.faults.own_writes_met() + self.runs.faults.own_writes_met();
        let runs = self.runs.runs.all();
        figures.retried = runs.iter().filter(|run| run.attempts.len() > 1).count();
        figures.held = runs.iter().filter(|run| run.held_until.is_some()).count();
        figures.cancelled = runs.iter().filter(|run| run.state == crate::domain::RunState::Cancelled).count();
        figures.violations = self.violations.lock().unwrap().iter().cloned().collect();
        figures
    }

    /// After the storm, without faults: every run ends, every cluster is destroyed, and nothing is
    /// left running, held or scheduled.
    async fn settle(&self, exact: bool) {
        self.world.faults.calm();
        self.runs.faults.calm();
        // Runs end now, and an ending or a new attempt whose answer is lost must still count.
        self.runs.faults.meet_own_writes(7, 0.5);
        let calm_from = self.world.clock.now();
        tokio::time::sleep(Duration::from_secs(4 * 3600)).await;
        // Every run recorded, also those whose start answered an error: as a later ask would.
        for run_id in self.runs.runs.all().into_iter().map(|run| run.run_id) {
            let request = RunRequest::Resume { run_id: run_id.clone(), wait_seconds: Some(0) };
            let _ = self.runner.run(run_id.kind(), request, &self.invocation("settle")).await;
        }
        for cluster in CLUSTERS {
            let request = ClusterRequest::new(ClusterName::parse(cluster).unwrap());
            match CALLER.scope("settle".into(), self.provisioner.destroy(request, &self.invocation("settle"))).await {
                Ok(_) => self.check_destroyed(cluster, "settle"),
                Err(error) => self.violation(format!("destroying {cluster} after the storm failed: {error}")),
            }
        }
        self.check_lock_released("settle");
        // Holds end by now: the sweeper ends the instances they kept.
        let operations = Operations::new(self.provisioner.clone(), self.runner.clone());
        if let Err(error) = CALLER.scope("settle".into(), operations.sweep(&self.invocation("settle"))).await {
            self.violation(format!("the sweep after the storm failed: {error}"));
        }
        self.check_holds();
        self.check_calm_attempts_launched(calm_from);
        self.check_books(&operations, exact).await;
        let live: BTreeSet<String> =
            self.runs.instances.instances().into_iter().filter(|(_, i)| i.live()).map(|(id, _)| id).collect();
        if !live.is_empty() {
            self.violation(format!("instances live after every run ended: {live:?}"));
        }
    }
}

/// A `wait_seconds`: as often 0 to 4 (a caller printing progress) as up to 5 minutes.
fn wait(rng: &mut fastrand::Rng) -> u64 {
    if rng.bool() {
        rng.u64(0..5)
    } else {
        rng.u64(0..300)
    }
}

#[tokio::test(start_paused = true)]
async fn a_fault_storm_breaks_no_invariant() {
    println!(
        "fault storm: {OPERATIONS} operations on {} clusters over {} min of simulated time",
        CLUSTERS.len(),
        SPREAD.as_secs() / 60
    );
    println!(
        "| seed | fault rate | operations | answers | faults injected (own write met) | faults absorbed | runs \
         retried | held | cancelled | violations |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut violations = Vec::new();
    for (seed, rate) in [(11, 0.0), (23, 0.1), (37, 0.3)] {
        let figures = Arc::new(Storm::new()).blow(seed, rate).await;
        let answers: Vec<String> = figures.answers.iter().map(|(code, count)| format!("{code} {count}")).collect();
        println!(
            "| {seed} | {:.0} % | {} | {} | {} ({}) | {} | {} | {} | {} | {} |",
            rate * 100.0,
            figures.operations,
            answers.join(", "),
            figures.faults_injected,
            figures.own_writes_met,
            figures.faults_absorbed,
            figures.retried,
            figures.held,
            figures.cancelled,
            figures.violations.len()
        );
        violations.extend(figures.violations.into_iter().map(|v| format!("seed {seed}: {v}")));
    }
    assert!(violations.is_empty(), "{} violations:\n{}", violations.len(), violations.join("\n"));
}
