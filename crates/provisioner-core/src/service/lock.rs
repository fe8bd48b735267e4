//! Per-cluster locks: one operation on a cluster at a time.
//! - A lease lasts [`super::LOCK_LEASE`] and the holder renews it while it works, so the lock of a
//!   crashed invocation ends within a minute. A holder that cannot renew in time stops its work:
//!   someone else may hold the cluster by then.
//! - A contender waits while its own deadline allows, then answers `Busy`; the one that has waited
//!   longest goes next. While it waits, it may find its answer without the lock (`meanwhile`).
//! - A release that fails is tried again until the lease would have ended anyway.

use std::future::Future;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::{signed, Invocation, Provisioner};
use crate::domain::time::whole_seconds;
use crate::domain::ClusterName;
use crate::error::{Error, Result};
use crate::ports::Lease;

/// First pause between release attempts; it doubles up to [`RELEASE_PAUSE_MAX`].
const RELEASE_PAUSE: Duration = Duration::from_millis(250);
const RELEASE_PAUSE_MAX: Duration = Duration::from_secs(4);
/// A release stops trying this long before the invocation's deadline, to answer in time.
const RELEASE_DEADLINE_MARGIN: SignedDuration = SignedDuration::from_secs(2);

/// A lock this invocation holds. Release it with [`Held::release`] on every path.
#[must_use = "a held lock must be released"]
pub(super) struct Held {
    cluster: ClusterName,
    lease: Lease,
}

/// How waiting for a lock ended.
pub(super) enum Turn<T> {
    Held(Held),
    /// `meanwhile` found the answer; the lock was not taken.
    Answered(T),
}

impl Provisioner {
    fn lease(&self, invocation: &Invocation, operation: &str, now: Timestamp) -> Lease {
        Lease {
            owner: invocation.request_id.clone(),
            operation: operation.to_owned(),
            acquired_at: now,
            expires_at: now + signed(self.timeouts.lock_lease),
        }
    }
}

async fn acquire<T, C, F>(
    provisioner: &Provisioner,
    invocation: &Invocation,
    cluster: &ClusterName,
    operation: &str,
    mut meanwhile: C,
) -> Result<Turn<T>>
where
    C: FnMut() -> F,
    F: Future<Output = Option<T>>,
{
    let (clock, timeouts) = (&provisioner.ports.clock, &provisioner.timeouts);
    let give_up_at = provisioner.work_deadline(invocation);
    let waiting_since = clock.now();
    let mut last_looked = waiting_since;
    let mut holder: Option<Lease> = None;
    let mut failure: Option<Error> = None;
    loop {
        let now = clock.now();
        let lease = provisioner.lease(invocation, operation, now);
        match provisioner.ports.locks.try_acquire(cluster, &lease, waiting_since, now).await {
            Ok(None) => {
                tracing::info!(cluster = %cluster, operation, waited_seconds = (now - waiting_since).as_secs(), "lock \
                    acquired");
                return Ok(Turn::Held(Held { cluster: cluster.clone(), lease }));
            }
            Ok(Some(current)) => {
                if holder.as_ref().is_none_or(|h| h.owner != current.owner) {
                    let (holder, holder_since) = (&current.operation, current.acquired_at);
                    tracing::info!(cluster = %cluster, operation, %holder, %holder_since, "waiting for lock");
                }
                holder = Some(current);
            }
            Err(error) => {
                tracing::warn!(cluster = %cluster, operation, %error, "could not ask for the lock; asking again");
                failure = Some(error);
            }
        }
        if now + signed(timeouts.lock_poll) > give_up_at {
            // Leave the line; and an attempt whose answer was lost may have taken the lock.
            let _ = provisioner.ports.locks.release(cluster, &lease.owner).await;
            return Err(match (holder, failure) {
                (None, Some(error)) => error,
                (holder, _) => busy(cluster, holder, now),
            });
        }
        clock.sleep(timeouts.lock_poll).await;
        if clock.now() >= last_looked + signed(timeouts.stack_poll) {
            last_looked = clock.now();
            if let Some(answer) = meanwhile().await {
                let _ = provisioner.ports.locks.release(cluster, &lease.owner).await;
                tracing::info!(cluster = %cluster, operation, "answered while waiting for the lock");
                return Ok(Turn::Answered(answer));
            }
        }
    }
}

/// `Busy`, naming the operation that holds the cluster, or "another operation" when no holder is
/// known (`None`, or a lease without an owner).
fn busy(cluster: &ClusterName, holder: Option<Lease>, now: Timestamp) -> Error {
    let (operation, since) = match holder.filter(|h| !h.owner.is_empty()) {
        Some(holder) => (holder.operation, holder.acquired_at),
        None => ("another operation".to_owned(), now),
    };
    Error::Busy { cluster: cluster.to_string(), operation, since: whole_seconds(since).to_string() }
}

impl Held {
    /// Renews the lease while the holder works. Returns only when the lock is lost: someone else
    /// holds it, or it could not be renewed before its lease would end.
    async fn keep(&self, provisioner: &Provisioner, cluster: &ClusterName) -> Error {
        let (clock, timeouts) = (&provisioner.ports.clock, &provisioner.timeouts);
        let mut expires_at = self.lease.expires_at;
        let mut pause = timeouts.lock_renew;
        loop {
            clock.sleep(pause).await;
            let now = clock.now();
            let lease = Lease { expires_at: now + signed(timeouts.lock_lease), ..self.lease.clone() };
            match provisioner.ports.locks.renew(&self.cluster, &lease).await {
                Ok(None) => {
                    expires_at = lease.expires_at;
                    pause = timeouts.lock_renew;
                }
                Ok(Some(holder)) => {
                    tracing::error!(cluster = %cluster, holder = %holder.owner, "lock lost; stopping");
                    return busy(cluster, Some(holder), now);
                }
                Err(error) => {
                    pause = timeouts.lock_poll;
                    // Stop while the lease still holds: the next attempt would come after it ended.
                    if clock.now() + signed(pause) + SignedDuration::from_secs(1) >= expires_at {
                        tracing::error!(cluster = %cluster, %error, "lock not renewed before its lease ends; stopping");
                        return error;
                    }
                    tracing::warn!(cluster = %cluster, %error, "could not renew the lock; trying again");
                }
            }
        }
    }

    /// Releases the lock, trying again on failure until the lease would have ended anyway or the
    /// answer is due.
    pub(super) async fn release(self, provisioner: &Provisioner, invocation: &Invocation) {
        let clock = &provisioner.ports.clock;
        let until =
            (invocation.deadline - RELEASE_DEADLINE_MARGIN).min(clock.now() + signed(provisioner.timeouts.lock_lease));
        let mut pause = RELEASE_PAUSE;
        loop {
            match provisioner.ports.locks.release(&self.cluster, &self.lease.owner).await {
                Ok(()) => return,
                Err(error) if clock.now() + signed(pause) > until => {
                    tracing::warn!(cluster = %self.cluster, %error, "could not release lock; its lease ends within a minute");
                    return;
                }
                Err(error) => {
                    tracing::warn!(cluster = %self.cluster, %error, "could not release lock; trying again");
                    clock.sleep(pause).await;
                    pause = (pause * 2).min(RELEASE_PAUSE_MAX);
                }
            }
        }
    }
}

/// Runs `work` under the cluster's lock, renewing it meanwhile, and releases the lock whatever the
/// outcome. While waiting for the lock, `meanwhile` may answer instead.
pub(super) async fn with_lock_or<T, C, F, W>(
    provisioner: &Provisioner,
    invocation: &Invocation,
    cluster: &ClusterName,
    operation: &str,
    meanwhile: C,
    work: W,
) -> Result<T>
where
    C: FnMut() -> F,
    F: Future<Output = Option<T>>,
    W: Future<Output = Result<T>>,
{
    let held = match acquire(provisioner, invocation, cluster, operation, meanwhile).await? {
        Turn::Answered(answer) => return Ok(answer),
        Turn::Held(held) => held,
    };
    let outcome = tokio::select! {
        biased;
        outcome = work => outcome,
        lost = held.keep(provisioner, cluster) => Err(lost),
    };
    held.release(provisioner, invocation).await;
    outcome
}

/// Runs `work` under the cluster's lock; see [`with_lock_or`].
pub(super) async fn with_lock<T, W>(
    provisioner: &Provisioner,
    invocation: &Invocation,
    cluster: &ClusterName,
    operation: &str,
    work: W,
) -> Result<T>
where
    W: Future<Output = Result<T>>,
{
    with_lock_or(provisioner, invocation, cluster, operation, || std::future::ready(None), work).await
}
