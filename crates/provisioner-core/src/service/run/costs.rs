//! A run's costs in its profile's books: each attempt begun before its instance is launched (at
//! the price of the type tried) and settled when it ends, free when it never got an instance
//! (the recount counts only attempts with one); a failed run's held instance begun when the run
//! ended and settled when its hold does.

use jiff::Timestamp;

use super::Runner;
use crate::domain::books::{attempt_entry_id, hold_entry_id};
use crate::domain::{Attempt, RunRecord};
use crate::error::Result;
use crate::service::budget::{attempt_entry, hold_entry};

impl Runner {
    fn price(&self, instance_type: &str) -> f64 {
        self.catalog.prices().hourly(instance_type).unwrap_or(0.0)
    }

    fn profile_name(&self, record: &RunRecord) -> Option<String> {
        self.catalog.profile_for(&record.cluster).ok().map(|profile| profile.name.clone())
    }

    /// Begins the current attempt on `instance_type` in the books: before the launch, so a run
    /// the books cannot count launches nothing.
    pub(super) async fn count_attempt(&self, record: &RunRecord, instance_type: &str) -> Result<()> {
        let (Some(profile), Some(attempt)) = (self.profile_name(record), record.current_attempt()) else {
            return Ok(());
        };
        let entry = attempt_entry(record, attempt.number, instance_type, self.price(instance_type), attempt.started_at);
        self.ledger.begin(&profile, entry).await
    }

    /// Settles `attempt`, which ended.
    pub(super) async fn settle_attempt(&self, record: &RunRecord, attempt: &Attempt) {
        let Some(profile) = self.profile_name(record) else { return };
        let end = attempt.ended_at.or(record.ended_at).unwrap_or_else(|| self.ports.clock.now());
        let id = attempt_entry_id(record.run_id.as_str(), attempt.number);
        self.ledger.settle(&profile, &id, end, attempt.instance_type.is_none()).await;
    }

    /// Settles the current attempt of a run that ended, and begins its held instance.
    pub(super) async fn settle_run(&self, record: &RunRecord) {
        if let Some(attempt) = record.current_attempt() {
            self.settle_attempt(record, attempt).await;
        }
        let (Some(profile), Some(ended), Some(until)) = (self.profile_name(record), record.ended_at, record.held_until)
        else {
            return;
        };
        let instance_type = record.current_attempt().and_then(|attempt| attempt.instance_type.as_deref());
        let entry = hold_entry(record, instance_type.map_or(0.0, |t| self.price(t)), ended, until);
        if let Err(error) = self.ledger.begin(&profile, entry).await {
            tracing::warn!(run_id = %record.run_id, %error, "could not count the held instance; the recount will");
        }
    }

    /// Settles a hold ended early at `at`.
    pub(super) async fn settle_hold(&self, record: &RunRecord, at: Timestamp) {
        let Some(profile) = self.profile_name(record) else { return };
        self.ledger.settle(&profile, &hold_entry_id(record.run_id.as_str()), at, false).await;
    }
}
