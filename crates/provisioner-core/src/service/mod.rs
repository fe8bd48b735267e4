//! The functions of the spec, as orchestration over the ports. The cluster side ([`Provisioner`]):
//! `deploy.rs`, `schedule_destroy.rs`, `destroy.rs`, each one function's decision table in the
//! spec's order, sharing `wait.rs` and `lock.rs`. The run side (TEST, BUILD, RUNNER_IMAGE): `run/`,
//! cut by stage (ask, start, launch, progress, conclude, image).
//! Keeping watch, over both sides: `survey.rs`, `sweeper.rs` (and its daily `recount.rs` of the
//! books), `status.rs`. Each side is put together in one place: `Provisioner::new`,
//! `Runner::new`, `Operations::new`.

pub mod budget;
mod deploy;
mod destroy;
mod lock;
pub mod plan;
pub mod recount;
pub mod run;
mod schedule_destroy;
pub mod status;
pub mod survey;
pub mod sweeper;
mod wait;

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

pub use deploy::DeployResponse;
pub use destroy::DestroyResponse;
pub use run::{EventAction, InstanceEventResponse};
pub use schedule_destroy::ScheduleDestroyResponse;

use crate::catalog::Catalog;
use crate::domain::resource_names::schedule_name;
use crate::domain::{ClusterName, HistoryEntry, RequestedBy};
use crate::error::{Error, Result};
use crate::ports::{ClusterPorts, Notices};
use crate::settings::ClusterSettings;
use budget::Ledger;

/// The spec's limit on waiting for a stack to be created or deleted.
pub const STACK_WAIT_LIMIT: Duration = Duration::from_secs(10 * 60);
/// How often a wait describes the stack: notices completion within 4 s, 15 calls a minute.
pub const STACK_POLL_INTERVAL: Duration = Duration::from_secs(4);
/// How often a contender checks whether a cluster's lock is free.
pub const LOCK_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Time kept back from the invocation's deadline to release the lock and answer.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(15);
/// How long a lock's lease lasts unless its holder renews it: how long a crashed holder blocks
/// its cluster at most.
pub const LOCK_LEASE: Duration = Duration::from_secs(60);
/// How often a holder renews its lease: two renewals can fail before it ends.
pub const LOCK_RENEW_INTERVAL: Duration = Duration::from_secs(20);

/// How often a waiting TEST or BUILD reads the run record and the instance.
pub const RUN_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Named timeouts of both sides, clusters and runs; tests and benchmarks shorten them.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub stack_wait: Duration,
    pub stack_poll: Duration,
    pub lock_poll: Duration,
    pub deadline_margin: Duration,
    pub lock_lease: Duration,
    pub lock_renew: Duration,
    pub run_poll: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            stack_wait: STACK_WAIT_LIMIT,
            stack_poll: STACK_POLL_INTERVAL,
            lock_poll: LOCK_POLL_INTERVAL,
            deadline_margin: DEADLINE_MARGIN,
            lock_lease: LOCK_LEASE,
            lock_renew: LOCK_RENEW_INTERVAL,
            run_poll: RUN_POLL_INTERVAL,
        }
    }
}

/// One Lambda invocation: who is asking and when it must have answered.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    pub deadline: Timestamp,
}

/// Everything the functions need, built once per process.
#[derive(Clone)]
pub struct Provisioner {
    pub catalog: Arc<Catalog>,
    /// What it asks of the cloud and of time: `images` only in `deploy`, `logs` only in `destroy`,
    /// `runs` only for the budget.
    pub ports: ClusterPorts,
    /// A deploy that would create is checked against the profile's budget.
    pub ledger: Ledger,
    pub timeouts: Timeouts,
    /// The account's settings that cluster stacks take as parameters.
    pub settings: ClusterSettings,
}

impl Provisioner {
    /// The cluster side over `ports`: the one place it is put together (mains, tests, the storm).
    pub fn new(catalog: Arc<Catalog>, ports: ClusterPorts, settings: ClusterSettings) -> Provisioner {
        let ledger = Ledger::new(catalog.clone(), ports.spend.clone(), ports.clock.clone());
        Provisioner { catalog, ports, ledger, timeouts: Timeouts::default(), settings }
    }

    /// Its ports, to build another side or a variant over the same ones.
    pub fn ports(&self) -> ClusterPorts {
        self.ports.clone()
    }

    /// The history entry of `operation`, asked by `requested_by`, that ended as `outcome`, now.
    fn history_entry<T>(
        &self,
        operation: &str,
        requested_by: Option<&RequestedBy>,
        outcome: &Result<T>,
    ) -> HistoryEntry {
        HistoryEntry {
            operation: operation.to_owned(),
            // To the millisecond: two operations in one second keep their order.
            at: self.ports.clock.now().round(jiff::Unit::Millisecond).unwrap_or_else(|_| self.ports.clock.now()),
            requested_by: requested_by.map(|who| who.as_str().to_owned()),
            outcome: outcome.as_ref().map_or_else(|error| error.code().to_owned(), |_| "success".to_owned()),
            version: None,
            detail: None,
            stack_created_at: None,
        }
    }

    /// Adds `entry` to `cluster`'s history, when some profile matches it (only such a cluster
    /// has one). Best effort: a history that cannot be written never fails the operation.
    async fn record_history(&self, cluster: &ClusterName, entry: HistoryEntry) {
        if self.catalog.profile_for(cluster).is_err() {
            return;
        }
        if let Err(error) = self.ports.history.record(cluster, &entry).await {
            tracing::warn!(cluster = %cluster, operation = entry.operation, %error, "could not add the operation to the cluster's history");
        }
    }

    /// The last moment work may go on in this invocation.
    fn work_deadline(&self, invocation: &Invocation) -> Timestamp {
        invocation.deadline - signed(self.timeouts.deadline_margin)
    }

    /// When a stack wait that starts now must stop: 10 minutes, or the invocation's deadline
    /// less the margin, whichever comes first.
    fn stack_wait_until(&self, invocation: &Invocation, started: Timestamp) -> Timestamp {
        (started + signed(self.timeouts.stack_wait)).min(self.work_deadline(invocation))
    }
}

/// Sends an alert, logging (not answering) a failure to send it: an alert never changes an outcome.
pub async fn alert(notices: &dyn Notices, subject: &str, message: &str) {
    if let Err(error) = notices.publish(subject, message).await {
        tracing::warn!(subject, %error, "could not send the alert");
    }
}

/// Alerts about `outcome` of `operation` on `cluster` when it failed in a way someone must look at:
/// the stack failed or hung, or (for a destroy, whose cluster keeps billing) AWS refused.
async fn alert_if_failed<T>(notices: &dyn Notices, operation: &str, cluster: &ClusterName, outcome: &Result<T>) {
    let Err(error) = outcome else { return };
    let alerting = match operation {
        "destroy" => matches!(error, Error::DestroyFailed(_) | Error::DestroyTimedOut(_) | Error::Aws(_)),
        _ => matches!(error, Error::DeployFailed(_) | Error::DeployTimedOut(_)),
    };
    if alerting {
        let subject = format!("SlideRule provisioner: {operation} of {cluster} failed ({})", error.code());
        alert(notices, &subject, &error.to_string()).await;
    }
}

impl Provisioner {
    /// Creates the one-time schedule that fires `cluster`'s destroy event at `at`, recording who
    /// asked; returns its name.
    async fn create_destroy_schedule(
        &self,
        cluster: &ClusterName,
        at: Timestamp,
        requested_by: Option<&RequestedBy>,
    ) -> Result<String> {
        let name = schedule_name(cluster, at);
        let input = crate::domain::ClusterRequest::new(cluster.clone()).to_event();
        self.ports.schedules.create(&name, at, &input, requested_by).await?;
        Ok(name)
    }
}

fn signed(duration: Duration) -> SignedDuration {
    SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
}

fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64().max(0.0)
}

#[cfg(test)]
mod budget_tests;
#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod day_tests;
#[cfg(test)]
mod limits_tests;
#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod sweeper_tests;
