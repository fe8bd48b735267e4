//! Per-cluster locks: one operation on a cluster at a time. A contender waits for the holder
//! while its own deadline allows, then answers `Busy`. Leases end shortly after the holder's
//! deadline, so a crashed invocation cannot hold a cluster for long.

use super::{lock_key, signed, Invocation, Provisioner};
use crate::domain::ClusterName;
use crate::error::{Error, Result};
use crate::ports::Lease;

/// A lock this invocation holds. Release it with [`Held::release`] on every path.
#[must_use = "a held lock must be released"]
pub(super) struct Held {
    key: String,
    owner: String,
}

pub(super) async fn acquire(provisioner: &Provisioner, invocation: &Invocation, cluster: &ClusterName, operation: &str) -> Result<Held> {
    let key = lock_key(cluster);
    let give_up_at = provisioner.work_deadline(invocation);
    let mut waiting_logged = false;
    loop {
        let now = provisioner.clock.now();
        let lease = Lease {
            owner: invocation.request_id.clone(),
            operation: operation.to_owned(),
            acquired_at: now,
            expires_at: invocation.deadline + signed(provisioner.timeouts.lease_slack),
        };
        let holder = match provisioner.locks.try_acquire(&key, &lease, now).await? {
            None => {
                tracing::info!(cluster = %cluster, operation, "lock acquired");
                return Ok(Held { key, owner: lease.owner });
            }
            Some(holder) => holder,
        };
        if !waiting_logged {
            tracing::info!(cluster = %cluster, operation, holder = %holder.operation, holder_since = %holder.acquired_at, "waiting for lock");
            waiting_logged = true;
        }
        if now + signed(provisioner.timeouts.lock_poll) > give_up_at {
            return Err(Error::Busy {
                cluster: cluster.to_string(),
                operation: holder.operation,
                since: crate::domain::time::whole_seconds(holder.acquired_at).to_string(),
            });
        }
        provisioner.clock.sleep(provisioner.timeouts.lock_poll).await;
    }
}

impl Held {
    /// Releases the lock. A failure is logged, not returned: the lease ends on its own soon.
    pub(super) async fn release(self, provisioner: &Provisioner) {
        if let Err(error) = provisioner.locks.release(&self.key, &self.owner).await {
            tracing::warn!(key = %self.key, %error, "could not release lock; its lease will end on its own");
        }
    }
}

/// Runs `work` under the cluster's lock and releases the lock whatever the outcome.
pub(super) async fn with_lock<T, F>(
    provisioner: &Provisioner,
    invocation: &Invocation,
    cluster: &ClusterName,
    operation: &str,
    work: F,
) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
{
    let held = acquire(provisioner, invocation, cluster, operation).await?;
    let outcome = work.await;
    held.release(provisioner).await;
    outcome
}
