//! What launches teach the next ones ([`crate::domain::launch_log`]): every refused launch, spot
//! interruption and boot time is noted in the launch log; a launch reads it to try the types that
//! failed lately last, and to go on demand after repeated interruptions. A log that cannot be
//! read or written changes nothing of the run (it is logged).

use jiff::Timestamp;

use super::*;
use crate::catalog::Profile;
use crate::domain::launch_log::{on_demand_until, order_types, LaunchEvent, LaunchOutcome};
use crate::domain::{AttemptOutcome, Market, RunRecord};
use crate::instance::CHECKOUT_STEP;

impl Runner {
    /// The instance types in the order this attempt tries them, and its markets in order.
    pub(super) async fn launch_choices(&self, record: &RunRecord, profile: &Profile) -> (Vec<String>, Vec<Market>) {
        let now = self.ports.clock.now();
        let runner = &profile.runner;
        let events = match self.ports.launch_log.recent(now).await {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(run_id = %record.run_id, %error, "could not read the launch log; the profile's order");
                Vec::new()
            }
        };
        let types = order_types(&runner.instance_types, &events, &profile.name, &runner.launch_memory, now);
        let first = record.current_attempt().map_or(Market::Spot, |attempt| attempt.market);
        let until = on_demand_until(&events, &profile.name, &runner.launch_memory, now);
        let markets = match (first, until) {
            (Market::Spot, Some(until)) => {
                tracing::info!(run_id = %record.run_id, %until, "runs of the profile were interrupted repeatedly: on demand");
                vec![Market::OnDemand]
            }
            (Market::Spot, None) if runner.on_demand_fallback => vec![Market::Spot, Market::OnDemand],
            (market, _) => vec![market],
        };
        (types, markets)
    }

    /// Notes what happened to a launch of the run's current attempt.
    pub(super) async fn note_launch(
        &self,
        record: &RunRecord,
        instance_type: &str,
        market: Market,
        subnet: Option<String>,
        outcome: LaunchOutcome,
    ) {
        let Ok(profile) = self.catalog.profile_for(&record.cluster) else { return };
        let event = LaunchEvent {
            at: self.ports.clock.now(),
            run_id: record.run_id.clone(),
            attempt: record.attempt_number(),
            profile: profile.name.clone(),
            instance_type: instance_type.to_owned(),
            market,
            subnet,
            outcome,
        };
        if let Err(error) = self.ports.launch_log.record(&event).await {
            tracing::warn!(run_id = %record.run_id, %error, "could not note the launch in the launch log");
        }
    }

    /// Notes how the current attempt ends: its boot time, once its first step began, and a spot
    /// interruption; and emits the boot time as a metric.
    pub(super) async fn note_attempt_end(&self, record: &RunRecord, outcome: AttemptOutcome) {
        let Some(attempt) = record.current_attempt() else { return };
        let Some(instance_type) = attempt.instance_type.clone() else { return };
        let checkout = record.steps.iter().find(|step| step.name == CHECKOUT_STEP);
        let began = checkout.and_then(|step| step.started_at.as_deref()?.parse::<Timestamp>().ok());
        if let Some(began) = began.filter(|began| *began >= attempt.started_at) {
            let seconds = u32::try_from(began.duration_since(attempt.started_at).as_secs()).unwrap_or(u32::MAX);
            crate::metrics::boot_time(&instance_type, seconds);
            let booted = LaunchOutcome::Booted { seconds };
            self.note_launch(record, &instance_type, attempt.market, None, booted).await;
        }
        if outcome == AttemptOutcome::Interrupted {
            self.note_launch(record, &instance_type, attempt.market, None, LaunchOutcome::Interrupted).await;
        }
    }
}
