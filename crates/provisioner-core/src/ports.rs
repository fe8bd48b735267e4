//! The ports: what the services ask of the cloud and of time. AWS adapters live in `aws/`,
//! in-memory fakes in `testing`. Each method states what "not found" and repeats mean.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

use crate::domain::books::Books;
use crate::domain::launch_log::LaunchEvent;
use crate::domain::names::{GitRef, RequestedBy};
use crate::domain::run::{RunId, RunKind, RunRecord};
use crate::domain::test_results::TestSummary;
use crate::domain::{ClusterName, HistoryEntry, ImageTag, Market, OnceNotice, RunnerImage, StackStatus, UserData};
use crate::error::Result;

/// A stack as last described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackSnapshot {
    pub name: String,
    pub id: String,
    pub status: StackStatus,
    pub status_reason: Option<String>,
    /// The parameters it was created with (a cluster's `Version` among them).
    pub parameters: BTreeMap<String, String>,
    /// Its tags (who asked for it among them).
    pub tags: BTreeMap<String, String>,
    pub outputs: BTreeMap<String, String>,
    pub created_at: Option<Timestamp>,
}

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackSpec {
    pub name: String,
    pub template_body: String,
    pub parameters: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
}

/// CloudFormation stacks.
#[async_trait]
pub trait Stacks: Send + Sync {
    /// The stack named `name`, or `None` when there is none (never created, or deleted).
    async fn describe(&self, name: &str) -> Result<Option<StackSnapshot>>;
    /// Every stack whose name starts with `prefix` that is not deleted, in no order.
    async fn list(&self, prefix: &str) -> Result<Vec<StackSnapshot>>;
    /// Starts creating the stack and returns its id without waiting. A stack of that name that
    /// already exists is an error of kind `Conflict`.
    async fn create(&self, spec: &StackSpec) -> Result<String>;
    /// Starts deleting the stack without waiting. Deleting an absent stack succeeds.
    async fn delete(&self, name: &str) -> Result<()>;
    /// Why resources of the stack failed, newest first, at most a few: the status reasons of
    /// its `*_FAILED` events. Empty for an absent stack.
    async fn failure_reasons(&self, name: &str) -> Result<Vec<String>>;
}

/// The container registry that holds the images clusters run.
#[async_trait]
pub trait Images: Send + Sync {
    /// Those of `repositories` in `registry` (`ACCOUNT.dkr.ecr.REGION.amazonaws.com`) that hold no
    /// image tagged `tag`, in the order given. A repository that does not exist holds none.
    async fn missing(&self, registry: &str, repositories: &[String], tag: &ImageTag) -> Result<Vec<String>>;
}

/// A one-time schedule in the provisioner's schedule group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleEntry {
    pub name: String,
    pub at: Timestamp,
    /// Who scheduled it, when they said.
    pub requested_by: Option<String>,
}

/// EventBridge Scheduler one-time schedules that invoke the destroy function. The adapter knows
/// the group, target, role, retry policy and dead-letter queue.
#[async_trait]
pub trait Schedules: Send + Sync {
    /// Every schedule in the group whose name starts with `prefix`, with the time it fires.
    async fn list(&self, prefix: &str) -> Result<Vec<ScheduleEntry>>;
    /// Creates a schedule that invokes the destroy function once at `at` with `input` as the
    /// event, and deletes itself afterwards; it records `requested_by` as who scheduled it. An
    /// existing schedule of that name is a `Conflict`.
    async fn create(&self, name: &str, at: Timestamp, input: &str, requested_by: Option<&RequestedBy>) -> Result<()>;
    /// Deletes the schedule. Deleting an absent schedule succeeds.
    async fn delete(&self, name: &str) -> Result<()>;
}

/// What a command asked of an instance came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    Running,
    Succeeded,
    Failed(String),
}

/// A cluster's container logs, copied off its instances before a destroy (SSM Run Command).
#[async_trait]
pub trait ClusterLogs: Send + Sync {
    /// The instances of stack `stack_name` that run: its EC2 instances and its Auto Scaling
    /// groups' instances, found by the stack's resources. None for an absent stack.
    async fn instances(&self, stack_name: &str) -> Result<Vec<String>>;
    /// Asks `instance_id` to copy its containers' logs under `destination` (an `s3://` prefix
    /// of its own); returns the command's id.
    async fn copy_logs(&self, instance_id: &str, destination: &str) -> Result<String>;
    /// How `command_id` stands on `instance_id`.
    async fn outcome(&self, command_id: &str, instance_id: &str) -> Result<CommandOutcome>;
}

/// Each profile's books: its spend this month, kept as it happens (`domain::books`).
#[async_trait]
pub trait Spend: Send + Sync {
    /// The books of `profile` as last written (empty when none were): one read.
    async fn books(&self, profile: &str) -> Result<Books>;
    /// Writes what `change` makes of `profile`'s books (`None`: nothing to change), conditioned
    /// on the books it was given: a change another writer made first is read, and `change` asked
    /// again. `false` when `change` made nothing of them.
    async fn change(&self, profile: &str, change: &(dyn Fn(Books) -> Option<Books> + Send + Sync)) -> Result<bool>;
}

/// Each cluster's history of operations, kept 400 days.
#[async_trait]
pub trait History: Send + Sync {
    /// Adds `entry` to `cluster`'s history.
    async fn record(&self, cluster: &ClusterName, entry: &HistoryEntry) -> Result<()>;
    /// `cluster`'s entries kept at `now`, newest first: all of them, or at least the newest
    /// `at_least` when there are more. It reads a bounded number of items, never the table.
    async fn of(&self, cluster: &ClusterName, now: Timestamp, at_least: usize) -> Result<Vec<HistoryEntry>>;
    /// Every cluster's entries of `month` (`YYYY-MM`), in no order: what the month's estimated
    /// spend starts from. It reads the whole table (a Scan), so only the budget asks it.
    async fn month(&self, month: &str) -> Result<Vec<(ClusterName, HistoryEntry)>>;
    /// Claims `notice` for `claimant` at `now`: `true` for the one caller that claims it first, so
    /// it is sent once; `true` again for the same claimant (its own claim, whose answer may have
    /// been lost), and for anyone once a claim never [`History::confirm`]ed is older than
    /// [`crate::domain::history::CLAIM_LEASE`] (its sender failed or crashed). A claim is kept
    /// until [`OnceNotice::kept_until`].
    async fn claim(&self, notice: &OnceNotice, claimant: &str, now: Timestamp) -> Result<bool>;
    /// Says `notice` was sent: its claim is never taken again.
    async fn confirm(&self, notice: &OnceNotice) -> Result<()>;
}

/// The ended TEST runs of each profile and version, which per-test results are compared with.
#[async_trait]
pub trait TestHistory: Send + Sync {
    /// The summaries kept of `profile`'s ended TEST runs of `version`, newest first (see
    /// [`crate::domain::test_results::keep_summaries`]): one item read, whatever the table holds.
    async fn summaries(&self, profile: &str, version: &GitRef) -> Result<Vec<TestSummary>>;
    /// Adds an ended run's summary (again: no change), keeping what `keep_summaries` keeps.
    /// Exact under concurrent adds.
    async fn add(&self, profile: &str, version: &GitRef, summary: &TestSummary) -> Result<()>;
}

/// What launches taught: failed launches, interruptions and boot times of the last 7 days.
#[async_trait]
pub trait LaunchLog: Send + Sync {
    /// Keeps `event` (again: no change), with those of the last 7 days (at most 1,000).
    /// Exact under concurrent records.
    async fn record(&self, event: &LaunchEvent) -> Result<()>;
    /// The events of the 7 days before `now`, oldest first: one item read.
    async fn recent(&self, now: Timestamp) -> Result<Vec<LaunchEvent>>;
}

/// Who holds a lock, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub operation: String,
    pub acquired_at: Timestamp,
    pub expires_at: Timestamp,
}

/// A contender that has not asked for a lock for this long loses its place in line (contenders
/// ask every few seconds; one that gave up or crashed stops asking).
pub const WAITING_LAPSES_AFTER: Duration = Duration::from_secs(10);

/// Per-cluster locks in the DynamoDB table, with short leases the holder renews while it works,
/// so a crashed holder's lock ends within a lease. Contenders take turns: while the one that has
/// waited longest keeps asking, a free lock goes to it, not to a later one.
#[async_trait]
pub trait Locks: Send + Sync {
    /// Takes `cluster`'s lock for `lease` when `lease.owner` holds it already, or when it is free
    /// (never taken, released, or its lease ended before `now`) and no contender that has waited
    /// longer than `lease.owner` (since `waiting_since`) asked within [`WAITING_LAPSES_AFTER`].
    /// Returns `Ok(None)` when taken. Otherwise notes the caller as waiting since `waiting_since`
    /// (unless one that waited longer is noted) and returns `Ok(Some(..))`: the holder, or the
    /// contender ahead (its `acquired_at` is when it began to wait).
    async fn try_acquire(
        &self,
        cluster: &ClusterName,
        lease: &Lease,
        waiting_since: Timestamp,
        now: Timestamp,
    ) -> Result<Option<Lease>>;
    /// Moves the end of the lease `lease.owner` holds to `lease.expires_at`. `Ok(None)` when
    /// renewed; `Ok(Some(holder))` when the owner no longer holds the lock (`holder.owner` is
    /// empty when nobody does).
    async fn renew(&self, cluster: &ClusterName, lease: &Lease) -> Result<Option<Lease>>;
    /// Releases the lock if `owner` still holds it; otherwise does nothing. Who waits keeps its place.
    async fn release(&self, cluster: &ClusterName, owner: &str) -> Result<()>;
}

/// The local stack's clock: the system clock moved forward by the seconds its file holds
/// (`make local-advance` adds to them; none, or an unreadable file, is not moved). Read at every
/// `now`, so each function sees a move at once. A sleep is real time.
pub struct MovedClock {
    offset_file: std::path::PathBuf,
}

impl MovedClock {
    pub fn new(offset_file: std::path::PathBuf) -> MovedClock {
        MovedClock { offset_file }
    }

    /// How far ahead of the system's clock it is.
    pub fn offset(&self) -> jiff::SignedDuration {
        let seconds = std::fs::read_to_string(&self.offset_file).ok().and_then(|text| text.trim().parse::<i64>().ok());
        jiff::SignedDuration::from_secs(seconds.unwrap_or(0).max(0))
    }
}

#[async_trait]
impl Clock for MovedClock {
    fn now(&self) -> Timestamp {
        Timestamp::now() + self.offset()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// Time, so tests can move it.
#[async_trait]
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
    async fn sleep(&self, duration: Duration);
}

/// The real clock.
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// Which ended runs [`Runs::ended`] finds: of a cluster, of a kind, or all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndedRuns {
    pub cluster: Option<ClusterName>,
    pub kind: Option<RunKind>,
}

impl EndedRuns {
    pub fn keeps(&self, kind: RunKind, cluster: &ClusterName) -> bool {
        self.kind.is_none_or(|wanted| wanted == kind) && self.cluster.as_ref().is_none_or(|wanted| wanted == cluster)
    }
}

/// Run records, and the pointer from each kind, cluster and version to its active run.
#[async_trait]
pub trait Runs: Send + Sync {
    /// Writes `record` and makes it the active run of its kind, cluster and version, unless
    /// another run is active there and its deadline has not passed at `now`: then writes nothing
    /// and returns that run's id. Asked again for a record it started (an earlier answer was
    /// lost), it returns the record's own id and keeps the record.
    async fn start(&self, record: &RunRecord, now: Timestamp) -> Result<Option<RunId>>;
    /// The record, with what the instance reported; `None` when there is no such run.
    async fn get(&self, id: &RunId) -> Result<Option<RunRecord>>;
    /// Writes the function's fields (state, instance id, end, failure, attempts, hold); leaves the
    /// instance's. A run that has ended (or does not exist), or whose current attempt is no longer
    /// the record's, is not written: that is an error of kind `Conflict`.
    async fn update(&self, record: &RunRecord) -> Result<()>;
    /// Moves the run from its attempt before the record's current one to that one (whose entry
    /// the record's attempts end with): writes the attempts and state and clears what the last
    /// instance reported (steps back to pending, no commit, outcome or check-in). Exactly one of
    /// concurrent callers succeeds; the others, a run that ended, and one whose instance reported
    /// its outcome (a failed step is never retried) get a `Conflict`.
    async fn begin_attempt(&self, record: &RunRecord) -> Result<()>;
    /// Ends the hold of an ended run's instance at `at`. A run holding none is left as it is.
    async fn end_hold(&self, run_id: &RunId, at: Timestamp) -> Result<()>;
    /// Ends `record` being the active run of its kind, cluster and version, if it still is.
    async fn release(&self, record: &RunRecord) -> Result<()>;
    /// Every run record kept (32 days past each run's deadline), in no order: the whole table,
    /// read only by the sweeper's daily recount of the books.
    async fn list(&self) -> Result<Vec<RunRecord>>;
    /// Every run that may still have an instance (not ended, or ended and holding one), found
    /// through one item only such runs are in, not a scan: it may also name a run that ended
    /// since, until [`Runs::forget`].
    async fn live(&self) -> Result<Vec<RunRecord>>;
    /// Takes ended runs out of what [`Runs::live`] finds (the sweeper's clean-up); each is among
    /// the runs [`Runs::ended`] finds.
    async fn forget(&self, records: &[RunRecord]) -> Result<()>;
    /// Takes out of what [`Runs::live`] finds the runs noted there before `noted_before` that have
    /// no record: a start that failed between its two writes (the sweeper's daily clean-up).
    /// Answers their ids; a run noted again meanwhile stays.
    async fn forget_unrecorded(&self, noted_before: Timestamp) -> Result<Vec<RunId>>;
    /// Up to `count` runs that `wanted` keeps that ended by `now`, the latest end first, within
    /// the retention of run records: read day by day, one item each.
    async fn ended(&self, count: usize, wanted: &EndedRuns, now: Timestamp) -> Result<Vec<RunRecord>>;
    /// The run of `kind` that ended last: one read, whenever it ended.
    async fn last_ended(&self, kind: RunKind) -> Result<Option<RunRecord>>;
    /// Takes one of `slots.cap` slots of `slots.profile`'s runs of `slots.kind` for `run_id` until
    /// `deadline`: `Ok(None)` when taken, or already held by `run_id`; when all are held by runs
    /// whose deadline has not passed at `now`, takes nothing and returns their ids. Exact under
    /// concurrent takes, and it reads and writes one item however many runs were ever recorded.
    async fn take_slot(
        &self,
        slots: &Slots,
        run_id: &RunId,
        deadline: Timestamp,
        now: Timestamp,
    ) -> Result<Option<Vec<RunId>>>;
    /// The run active for `record`'s kind, cluster and version at `now` (its deadline not passed),
    /// if any: a read, for a dry run.
    async fn active(&self, record: &RunRecord, now: Timestamp) -> Result<Option<RunId>>;
    /// The runs holding one of `slots`' slots at `now`: a read, for a dry run.
    async fn slots_held(&self, slots: &Slots, now: Timestamp) -> Result<Vec<RunId>>;
    /// Frees `run_id`'s slot of `profile`'s runs of `kind`, if it holds one.
    async fn free_slot(&self, profile: &str, kind: RunKind, run_id: &RunId) -> Result<()>;
}

/// A profile's cap on concurrent runs of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slots {
    pub profile: String,
    pub kind: RunKind,
    pub cap: u32,
}

/// One instance to launch for a run's attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    pub image_id: String,
    pub instance_type: String,
    /// Spot (one-time, terminated on interruption) or on-demand.
    pub market: Market,
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    pub instance_profile: Option<String>,
    pub user_data: UserData,
    pub volume_gb: i32,
    pub tags: Vec<(String, String)>,
    /// Idempotency token: a retried launch with the same token starts no second instance.
    pub client_token: String,
}

/// An EC2 instance's state, by EC2's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceState {
    Pending,
    Running,
    ShuttingDown,
    Terminated,
    Stopping,
    Stopped,
}

impl InstanceState {
    pub const ALL: [InstanceState; 6] = [
        InstanceState::Pending,
        InstanceState::Running,
        InstanceState::ShuttingDown,
        InstanceState::Terminated,
        InstanceState::Stopping,
        InstanceState::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
        }
    }

    pub fn parse(name: &str) -> Option<InstanceState> {
        InstanceState::ALL.into_iter().find(|state| state.as_str() == name)
    }

    /// Not begun to terminate: it still costs money.
    pub fn is_live(self) -> bool {
        !matches!(self, InstanceState::ShuttingDown | InstanceState::Terminated)
    }

    /// Running or about to: a run's instance in any other state will not report again.
    pub fn is_working(self) -> bool {
        matches!(self, InstanceState::Pending | InstanceState::Running)
    }
}

/// A live instance the provisioner launched, as EC2 lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaggedInstance {
    pub id: String,
    pub state: InstanceState,
    pub instance_type: String,
    pub launched_at: Option<Timestamp>,
    pub tags: BTreeMap<String, String>,
}

impl TaggedInstance {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }

    /// The kind of run it carries out; `None` for anything else (a cluster's instance).
    pub fn run_kind(&self) -> Option<crate::domain::RunKind> {
        self.tag(crate::domain::tags::KIND).and_then(crate::domain::RunKind::parse)
    }

    /// The stack that made it, if CloudFormation did.
    pub fn stack(&self) -> Option<&str> {
        self.tag(crate::domain::tags::CLOUDFORMATION_STACK)
    }

    /// The attempt of its run it carries out (an instance without the tag, the first).
    pub fn attempt(&self) -> u32 {
        self.tag(crate::domain::tags::ATTEMPT).and_then(|n| n.parse().ok()).unwrap_or(1)
    }
}

/// EC2 instances (and the AMI they boot).
#[async_trait]
pub trait Instances: Send + Sync {
    /// The current AWS-provided Amazon Linux 2023 AMI for `architecture` (`arm64`, `x86_64`).
    async fn latest_image(&self, architecture: &str) -> Result<String>;
    /// Launches one instance of `spec.market` (a spot one is one-time and terminates when
    /// interrupted) that terminates when it shuts down, and returns its id. Refusals are errors of kind `Capacity` (the instance type in that zone),
    /// `Subnet` (the subnet) or `Quota` (the account). Launching again
    /// with the same client token starts no second instance and returns the first one's id.
    async fn launch(&self, spec: &LaunchSpec) -> Result<String>;
    /// The instances tagged with run id `run_id` that have not begun to terminate.
    async fn of_run(&self, run_id: &RunId) -> Result<Vec<TaggedInstance>>;
    /// Every instance of a run or an image run (its [`crate::domain::tags::KIND`] a run kind) that
    /// has not begun to terminate; never a cluster's, whose kind its stack gives it.
    async fn of_runs(&self) -> Result<Vec<TaggedInstance>>;
    /// The instance's state, or `None` when EC2 no longer knows it.
    async fn state(&self, instance_id: &str) -> Result<Option<InstanceState>>;
    /// The run id the instance is tagged with, in any state; `None` when EC2 does not know it
    /// or it carries none.
    async fn run_of(&self, instance_id: &str) -> Result<Option<RunId>>;
    /// Terminates the instance. Terminating a gone instance succeeds.
    async fn terminate(&self, instance_id: &str) -> Result<()>;
    /// The account's runner images (AMIs tagged as the provisioner's, of kind `runner_image`), in
    /// any state but deregistered.
    async fn runner_images(&self) -> Result<Vec<RunnerImage>>;
    /// Makes an AMI named `name` of the instance without rebooting it (its script has ended and
    /// synced its disk), the image and its snapshots tagged with `tags`; returns the image's id.
    async fn create_image(&self, instance_id: &str, name: &str, tags: &[(String, String)]) -> Result<String>;
    /// Deregisters the image, then deletes its snapshots. A gone image or snapshot is no error.
    async fn retire_image(&self, image: &RunnerImage) -> Result<()>;
}

/// Where alerts go (an SNS topic): failures someone must look at, and what the sweeper did.
#[async_trait]
pub trait Notices: Send + Sync {
    /// Sends one alert. `subject` is one line of at most 100 characters.
    async fn publish(&self, subject: &str, message: &str) -> Result<()>;
    /// Sends one alert meant also for `requested_by`: the message carries it as the attribute a
    /// person's subscription filters on (the topic's other subscribers get it as any alert).
    async fn publish_for(&self, subject: &str, message: &str, requested_by: &str) -> Result<()>;
}

/// Alerts nowhere: for a provisioner deployed without a topic.
pub struct NoNotices;

#[async_trait]
impl Notices for NoNotices {
    async fn publish(&self, _: &str, _: &str) -> Result<()> {
        Ok(())
    }

    async fn publish_for(&self, _: &str, _: &str, _: &str) -> Result<()> {
        Ok(())
    }
}

/// The registry of the functions that never look at images (all but `deploy`): they link no
/// registry client.
pub struct NoImages;

#[async_trait]
impl Images for NoImages {
    async fn missing(&self, _: &str, _: &[String], _: &ImageTag) -> Result<Vec<String>> {
        Err(crate::Error::DeployFailed("this function links no registry client; only deploy checks images".into()))
    }
}

/// The cluster logs of the functions that never destroy (deploy, schedule_destroy): they link
/// no Run Command client.
pub struct NoLogs;

#[async_trait]
impl ClusterLogs for NoLogs {
    async fn instances(&self, _: &str) -> Result<Vec<String>> {
        Err(crate::Error::DestroyFailed("this function links no Run Command client; only destroy keeps logs".into()))
    }

    async fn copy_logs(&self, _: &str, _: &str) -> Result<String> {
        Err(crate::Error::DestroyFailed("this function links no Run Command client; only destroy keeps logs".into()))
    }

    async fn outcome(&self, _: &str, _: &str) -> Result<CommandOutcome> {
        Ok(CommandOutcome::Failed("no Run Command client".into()))
    }
}

/// What the cluster side (deploy, schedule_destroy, destroy, the sweeper's destroys) asks of the
/// cloud and of time: AWS adapters in the functions (`wiring::cluster_ports`), fakes in tests.
#[derive(Clone)]
pub struct ClusterPorts {
    pub stacks: Arc<dyn Stacks>,
    pub schedules: Arc<dyn Schedules>,
    pub locks: Arc<dyn Locks>,
    /// Only `deploy` asks it anything; the others are given [`NoImages`].
    pub images: Arc<dyn Images>,
    pub history: Arc<dyn History>,
    /// The profiles' books: a deploy that would create reads them, one that creates begins its
    /// cluster in them, a destroy settles it.
    pub spend: Arc<dyn Spend>,
    /// Only a destroy asks it anything: the cluster's logs before its instances go.
    pub logs: Arc<dyn ClusterLogs>,
    pub notices: Arc<dyn Notices>,
    pub clock: Arc<dyn Clock>,
}

impl ClusterPorts {
    /// These ports with the registry `deploy` checks images in.
    pub fn with_images(self, images: Arc<dyn Images>) -> ClusterPorts {
        ClusterPorts { images, ..self }
    }

    /// These ports with what keeps a cluster's logs before it is destroyed.
    pub fn with_logs(self, logs: Arc<dyn ClusterLogs>) -> ClusterPorts {
        ClusterPorts { logs, ..self }
    }
}

/// What the run side (test, build, the sweeper's resumes) asks of the cloud and of time.
#[derive(Clone)]
pub struct RunPorts {
    pub runs: Arc<dyn Runs>,
    pub instances: Arc<dyn Instances>,
    /// What a TEST run's per-test results are compared with.
    pub test_history: Arc<dyn TestHistory>,
    /// Failed launches, interruptions and boot times, which launches learn from.
    pub launch_log: Arc<dyn LaunchLog>,
    /// The profiles' books: a start reads them, a launch begins its attempt in them, its end
    /// settles it.
    pub spend: Arc<dyn Spend>,
    pub notices: Arc<dyn Notices>,
    pub clock: Arc<dyn Clock>,
}
