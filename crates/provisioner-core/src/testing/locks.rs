//! Leased locks in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};

use super::Faults;
use crate::domain::ClusterName;
use crate::error::Result;
use crate::ports::{Lease, Locks};

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

    /// Who holds `cluster`'s lock, whether or not the lease has ended.
    pub fn holder(&self, cluster: &str) -> Option<Lease> {
        self.locks.lock().unwrap().get(cluster).and_then(|l| l.holder.clone())
    }

    /// Who holds `cluster`'s lock at `now`: a lease that ended counts as free.
    pub fn holder_at(&self, cluster: &str, now: Timestamp) -> Option<Lease> {
        self.holder(cluster).filter(|lease| lease.expires_at >= now)
    }

    pub fn put(&self, cluster: &str, lease: Lease) {
        self.locks.lock().unwrap().entry(cluster.to_owned()).or_default().holder = Some(lease);
    }
}

#[async_trait]
impl Locks for FakeLocks {
    async fn try_acquire(
        &self,
        cluster: &ClusterName,
        lease: &Lease,
        waiting_since: Timestamp,
        now: Timestamp,
    ) -> Result<Option<Lease>> {
        let effect = self.faults.draw("AcquireLock").await?;
        let mut locks = self.locks.lock().unwrap();
        let lock = locks.entry(cluster.to_string()).or_default();
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

    async fn renew(&self, cluster: &ClusterName, lease: &Lease) -> Result<Option<Lease>> {
        let effect = self.faults.draw("RenewLock").await?;
        let mut locks = self.locks.lock().unwrap();
        let lock = locks.entry(cluster.to_string()).or_default();
        match &mut lock.holder {
            Some(holder) if holder.owner == lease.owner => {
                holder.expires_at = lease.expires_at;
                effect.answer(None)
            }
            Some(holder) => effect.answer(Some(holder.clone())),
            None => effect.answer(Some(Lease { owner: String::new(), ..lease.clone() })),
        }
    }

    async fn release(&self, cluster: &ClusterName, owner: &str) -> Result<()> {
        let effect = self.faults.draw("ReleaseLock").await?;
        let mut locks = self.locks.lock().unwrap();
        if let Some(lock) = locks.get_mut(cluster.as_str()) {
            if lock.holder.as_ref().is_some_and(|l| l.owner == owner) {
                lock.holder = None;
            } else if lock.waiting.as_ref().is_some_and(|(w, _)| w.owner == owner) {
                lock.waiting = None;
            }
        }
        effect.answer(())
    }
}
