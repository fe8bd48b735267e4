//! The provisioner's DynamoDB table, item by item: the one place its layout is written down. The
//! adapter (`aws/dynamodb.rs`) reads and writes items by these names, the instance script
//! (`instance/script.rs`) writes its report by them, and the tests read them by them.
//!
//! Every item has the partition key [`KEY`] and may have [`TTL`] (epoch seconds after which
//! DynamoDB removes it). Times are RFC 3339 strings unless named `*_epoch` or `*_ms`.

/// Partition key of every item.
pub const KEY: &str = "pk";
/// Epoch seconds after which DynamoDB's TTL may remove an item.
pub const TTL: &str = "expires_ttl";

/// Who writes an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// The functions, through the adapter.
    Function,
    /// A run's instance, through the AWS CLI in its user-data.
    Instance,
}

/// One attribute of an item.
#[derive(Debug, Clone, Copy)]
pub struct Attribute {
    pub name: &'static str,
    pub writer: Writer,
    pub holds: &'static str,
}

const fn function(name: &'static str, holds: &'static str) -> Attribute {
    Attribute { name, writer: Writer::Function, holds }
}

const fn instance(name: &'static str, holds: &'static str) -> Attribute {
    Attribute { name, writer: Writer::Instance, holds }
}

/// `lock#<cluster>`: one per cluster, held by one operation at a time.
pub mod lock {
    use super::{function, Attribute};

    pub const PREFIX: &str = "lock#";

    /// The item of `cluster`'s lock.
    pub fn key(cluster: &crate::domain::ClusterName) -> String {
        format!("{PREFIX}{cluster}")
    }
    pub const OWNER: &str = "owner";
    pub const OPERATION: &str = "operation";
    pub const ACQUIRED_AT: &str = "acquired_at";
    pub const EXPIRES_AT: &str = "expires_at";
    pub const EXPIRES_EPOCH: &str = "expires_epoch";
    pub const NEXT_OWNER: &str = "next_owner";
    pub const NEXT_OPERATION: &str = "next_operation";
    pub const NEXT_SINCE: &str = "next_since";
    pub const NEXT_SINCE_MS: &str = "next_since_ms";
    pub const NEXT_ASKED: &str = "next_asked";

    pub const ATTRIBUTES: &[Attribute] = &[
        function(OWNER, "the holder (its invocation's request id); absent when free"),
        function(OPERATION, "what the holder does: deploy, schedule_destroy or destroy"),
        function(ACQUIRED_AT, "when the holder took it"),
        function(EXPIRES_AT, "when the lease ends unless renewed"),
        function(EXPIRES_EPOCH, "the same in epoch seconds (0 when released), for conditions"),
        function(NEXT_OWNER, "the contender that has waited longest"),
        function(NEXT_OPERATION, "what that contender does"),
        function(NEXT_SINCE, "when it began to wait"),
        function(NEXT_SINCE_MS, "the same in epoch milliseconds, for conditions"),
        function(NEXT_ASKED, "epoch seconds of its last ask: it loses its place once that lapses"),
    ];
}

/// `run#<run id>`: one TEST or BUILD run.
pub mod run {
    use super::{function, Attribute};

    pub const PREFIX: &str = "run#";
    pub const KIND: &str = "kind";
    pub const CLUSTER: &str = "cluster";
    pub const VERSION: &str = "version";
    pub const STATE: &str = "state";
    pub const STARTED_AT: &str = "started_at";
    pub const ENDED_AT: &str = "ended_at";
    pub const DEADLINE: &str = "deadline";
    pub const EXPIRES_AT: &str = "expires_at";
    pub const LOG_LOCATION: &str = "log_location";
    pub const STEP_ORDER: &str = "step_order";
    pub const STEPS: &str = "steps";
    pub const INSTANCE_ID: &str = "instance_id";
    pub const FAILURE: &str = "failure";
    pub const COMMIT: &str = "commit";
    pub const LAYOUT: &str = "layout";
    pub const IMAGES: &str = "images";
    pub const INSTANCE_STATE: &str = "instance_state";
    pub const REPORTED_AT: &str = "reported_at";
    pub const OUTCOME: &str = "outcome";
    pub const ATTEMPT: &str = "attempt";
    pub const ATTEMPTS: &str = "attempts";
    pub const HOLD_MINUTES: &str = "hold_minutes";
    pub const HELD_UNTIL: &str = "held_until";
    pub const REQUESTED_BY: &str = "requested_by";
    pub const RUNNER_IMAGE: &str = "runner_image";
    pub const HOLDS: &str = "holds";
    pub const TESTS: &str = "tests";
    /// Fields of [`HOLDS`].
    pub const HOLDS_BUILD_IMAGE_DIGEST: &str = "build_image_digest";
    pub const HOLDS_TOOLS: &str = "tools";

    /// Fields of each step in [`STEPS`] (a map by step name), all written by the instance.
    pub const STEP_STATUS: &str = "status";
    pub const STEP_EXIT_CODE: &str = "exit_code";
    pub const STEP_STARTED_AT: &str = "started_at";
    pub const STEP_ENDED_AT: &str = "ended_at";
    pub const STEP_REASON: &str = "reason";
    /// A test step's suite: counts and failing test ids, as compact JSON (`StepTests`).
    pub const STEP_TESTS: &str = "tests";

    pub const ATTRIBUTES: &[Attribute] = &[
        function(KIND, "test, build or runner_image"),
        function(CLUSTER, "the cluster it runs against"),
        function(VERSION, "the git ref asked for"),
        function(STATE, "launching, running, succeeded, failed, lost, capacity_unavailable, cancelled or timed_out"),
        function(STARTED_AT, "when the run started"),
        function(ENDED_AT, "when it ended (the instance writes it too, with its outcome)"),
        function(DEADLINE, "when its instance must be gone: the profile's time limit"),
        function(EXPIRES_AT, "when the record may go (32 days after the deadline: the month's budget counts it)"),
        function(LOG_LOCATION, "the S3 prefix of the current instance's step logs: runs/ROLE-ID:INSTANCE-ID/"),
        function(STEP_ORDER, "the plan's step names, in order"),
        function(INSTANCE_ID, "the run's instance, once launched"),
        function(FAILURE, "why the function ended it (capacity, a lost instance)"),
        function(ATTEMPT, "the current attempt's number: every write of an instance is conditioned on its own"),
        function(ATTEMPTS, "the attempts, oldest first, as a JSON list (instance, market, times, outcome)"),
        function(HOLD_MINUTES, "how long a failed run's instance is kept up after the run ended"),
        function(HELD_UNTIL, "until when its failed instance is kept up; absent when none is held"),
        function(REQUESTED_BY, "who started it (the start's requested_by); absent when nobody said"),
        function(RUNNER_IMAGE, "the AMI a TEST run launches from, or the one a runner image run made"),
        function(STEPS, "each step of the plan by name, pending: the current attempt's report says more"),
        function(TESTS, "a TEST run's per-test results and their comparison, as JSON, set when it ended"),
    ];
}

/// `report#<caller>`: what one run instance reported, under its caller id (`aws:userid`, for an
/// instance role's session `ROLE-ID:INSTANCE-ID`), the only item its role may write: IAM binds
/// the key to the caller, so no instance writes another's report or any run's record. The
/// adapter reads the current attempt's report with the run ([`crate::ports::Runs::get`]).
pub mod report {
    use super::run::{COMMIT, ENDED_AT, HOLDS, IMAGES, INSTANCE_STATE, LAYOUT, OUTCOME, REPORTED_AT, STEPS};
    use super::{instance, Attribute};

    pub const PREFIX: &str = "report#";
    pub const RUN_ID: &str = "run_id";
    pub const ATTEMPT: &str = "attempt";

    pub const ATTRIBUTES: &[Attribute] = &[
        instance(RUN_ID, "the run it carries out: a report of another run is not read"),
        instance(ATTEMPT, "the attempt it carries out: only the current attempt's report is read"),
        instance(STEPS, "each step by name: status, exit_code, started_at, ended_at, reason, tests"),
        instance(COMMIT, "the commit the version resolved to"),
        instance(LAYOUT, "the repository layout found in the checkout"),
        instance(IMAGES, "the images a build pushed"),
        instance(INSTANCE_STATE, "running, then finished, or interrupted on a spot interruption notice"),
        instance(REPORTED_AT, "when the instance last wrote"),
        instance(OUTCOME, "succeeded or failed, written last"),
        instance(ENDED_AT, "when it wrote its outcome"),
        instance(HOLDS, "a runner image run's: build_image_digest and tools, what the image holds"),
    ];
}

/// `active#<kind>#<cluster>#<version>`: the run of that kind, cluster and version in progress.
pub mod active {
    use super::{function, Attribute};

    pub const PREFIX: &str = "active#";
    pub const RUN_ID: &str = "run_id";
    pub const DEADLINE_EPOCH: &str = "deadline_epoch";

    pub const ATTRIBUTES: &[Attribute] = &[
        function(RUN_ID, "the active run"),
        function(DEADLINE_EPOCH, "its deadline in epoch seconds: past it, another run may start"),
    ];
}

/// `runs-live`: every run that may still have an instance (not ended, or ended and holding one),
/// one attribute per run, named by its id (its start, RFC 3339): what status and the sweeper read
/// instead of every record. A run is added before its record is written and removed when it ends
/// without a hold, when its hold ends, or by the sweeper once it finds it ended.
pub mod live_runs {
    /// The item's key: there is one.
    pub const KEY_VALUE: &str = "runs-live";
}

/// `runs-last#<kind>`: the run of that kind that ended last (status shows the last runner image
/// run, however long ago).
pub mod last_run {
    pub const PREFIX: &str = "runs-last#";
    pub const RUN_ID: &str = "run_id";
    pub const ENDED_EPOCH_MS: &str = "ended_ms";

    /// The item of the last ended run of `kind`.
    pub fn key(kind: crate::domain::RunKind) -> String {
        format!("{PREFIX}{kind}")
    }
}

/// `runs-ended#<YYYY-MM-DD>`: the runs that ended that day (UTC), one attribute per run, named by
/// its id: `ENDED-AT KIND CLUSTER`. Status reads the last days' items for the last runs; kept as
/// long as run records.
pub mod ended_runs {
    pub const PREFIX: &str = "runs-ended#";
    /// How many days back a read looks: run records are kept 32 days past their deadline.
    pub const KEPT_DAYS: i64 = 33;

    /// The item of the runs that ended on `day` (`YYYY-MM-DD`).
    pub fn key(day: &str) -> String {
        format!("{PREFIX}{day}")
    }
}

/// `history#<cluster>#<YYYY-MM>`: the cluster's operations of one calendar month (UTC), kept 400
/// days past the month's end. Read newest month first, a bounded number of items.
pub mod history {
    use super::{function, Attribute};

    pub const PREFIX: &str = "history#";
    pub const ENTRIES: &str = "entries";
    /// The most entries one month of one cluster keeps; a destroy that counts the month's spend
    /// (it carries its stack's creation) may use [`SPEND_RESERVE`] more, so a month of failures
    /// never drops it. With each entry within [`crate::domain::history::MAX_ENTRY_BYTES`], the
    /// item stays below DynamoDB's 400 KB.
    pub const MAX_ENTRIES: usize = 1000;
    pub const SPEND_RESERVE: usize = 100;

    /// The item of `cluster`'s history in `month` (`YYYY-MM`).
    pub fn key(cluster: &crate::domain::ClusterName, month: &str) -> String {
        format!("{PREFIX}{cluster}#{month}")
    }

    pub const ATTRIBUTES: &[Attribute] = &[function(
        ENTRIES,
        "entry key (time and a random suffix) -> the entry as JSON: operation, at, requested_by, outcome, version, detail",
    )];
}

/// The claims of notices sent once ([`crate::domain::OnceNotice`]), each kept until the notice no
/// longer matters: `warning#<destroy schedule name>` (a reschedule makes another schedule name, and
/// so another warning) and `budget-alert#<profile>#<YYYY-MM>#<percent>`.
pub mod notice {
    use crate::domain::history::month_of;
    use crate::domain::OnceNotice;

    pub const WARNING_PREFIX: &str = "warning#";
    pub const BUDGET_ALERT_PREFIX: &str = "budget-alert#";
    /// Who claimed it (a sweep's request id), when (epoch seconds), and whether it was sent.
    pub const CLAIMANT: &str = "claimant";
    pub const CLAIMED_AT: &str = "claimed_at";
    pub const SENT: &str = "sent";

    /// The item that claims `notice`.
    pub fn key(notice: &OnceNotice) -> String {
        match notice {
            OnceNotice::DestroyWarning { schedule, .. } => format!("{WARNING_PREFIX}{schedule}"),
            OnceNotice::BudgetAlert { profile, month_start, percent } => {
                format!("{BUDGET_ALERT_PREFIX}{profile}#{}#{percent}", month_of(*month_start))
            }
        }
    }
}

/// `slots#<profile>#<kind>`: the runs of that kind that hold one of the profile's slots, which
/// keep its cap on concurrent runs exact: a start takes a slot with a conditional write on the
/// item's version, so two starts cannot both take the last one.
pub mod slots {
    use super::{function, Attribute};

    pub const PREFIX: &str = "slots#";
    pub const RUNS: &str = "runs";
    pub const VERSION: &str = "version";

    /// The item of `profile`'s slots for runs of `kind`.
    pub fn key(profile: &str, kind: crate::domain::RunKind) -> String {
        format!("{PREFIX}{profile}#{kind}")
    }

    pub const ATTRIBUTES: &[Attribute] = &[
        function(RUNS, "run id -> its deadline in epoch seconds; past it, the slot is free again"),
        function(VERSION, "bumped by every take, which is conditioned on the version it read"),
    ];
}

/// `test-history#<profile>#<version>`: the ended TEST runs of a profile and version that the
/// comparison of per-test results reads (`TestSummary`), one item read and one written per run.
pub mod test_history {
    use super::{function, Attribute};

    pub const PREFIX: &str = "test-history#";
    pub const SUMMARIES: &str = "summaries";
    pub const VERSION: &str = "version";

    /// The item of `profile`'s TEST runs of `version`.
    pub fn key(profile: &str, version: &crate::domain::GitRef) -> String {
        format!("{PREFIX}{profile}#{version}")
    }

    pub const ATTRIBUTES: &[Attribute] = &[
        function(SUMMARIES, "the newest ended runs within 14 days, as a JSON list: run, commit, end, suites, failures"),
        function(VERSION, "bumped by every write, which is conditioned on the version it read"),
    ];
}

/// `spend#<profile>`: the profile's books (`Books`): this month's settled spend and what still
/// costs, read in one call by every budget check, changed with a write conditioned on the version.
pub mod spend {
    use super::{function, Attribute};

    pub const PREFIX: &str = "spend#";
    pub const BOOKS: &str = "books";
    pub const VERSION: &str = "version";

    /// The item of `profile`'s books.
    pub fn key(profile: &str) -> String {
        format!("{PREFIX}{profile}")
    }

    pub const ATTRIBUTES: &[Attribute] = &[
        function(BOOKS, "the month, its settled sums, what still costs and what was settled lately, as JSON"),
        function(VERSION, "bumped by every write, which is conditioned on the version it read"),
    ];
}

/// `launch-log`: every failed launch, spot interruption and boot time of the last 7 days
/// (`LaunchEvent`), which the next launches order their instance types by: one item.
pub mod launch_log {
    use super::{function, Attribute};

    /// The item's key: there is one.
    pub const KEY_VALUE: &str = "launch-log";
    pub const EVENTS: &str = "events";
    pub const VERSION: &str = "version";

    pub const ATTRIBUTES: &[Attribute] = &[
        function(EVENTS, "the last 7 days' events (at most 1,000), oldest first, as a JSON list"),
        function(VERSION, "bumped by every write, which is conditioned on the version it read"),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_item_names_an_attribute_twice() {
        for attributes in [
            lock::ATTRIBUTES,
            run::ATTRIBUTES,
            report::ATTRIBUTES,
            active::ATTRIBUTES,
            slots::ATTRIBUTES,
            history::ATTRIBUTES,
            test_history::ATTRIBUTES,
            launch_log::ATTRIBUTES,
            spend::ATTRIBUTES,
        ] {
            let mut names: Vec<&str> = attributes.iter().map(|a| a.name).collect();
            names.extend([KEY, TTL]);
            let count = names.len();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), count, "{names:?}");
        }
    }
}
