//! A run under way: its reports and its instance checked (by the wait, the sweeper and EC2's
//! events), and what follows an attempt the cloud ended.
//!
//! - An attempt the cloud ended (a spot interruption, a vanished instance, one that never checked
//!   in, no instance) is followed at once by the next, from a clean start, up to the profile's
//!   `max_attempts`; the last runs on demand when the profile says so. The old instance goes
//!   before the next is launched: a run never has two live instances.
//! - Exactly one caller moves a run to its next attempt ([`crate::ports::Runs::begin_attempt`]), so
//!   a redelivered event, the waiting function and the sweeper can all see the same ending.
//! - A run out of attempts ends `RunLost` (or `CapacityUnavailable` when the last could not be
//!   launched), naming every attempt. A failed step is never retried.

use jiff::SignedDuration;
use serde::Serialize;

use super::*;
use crate::catalog::Profile;
use crate::domain::{Attempt, AttemptOutcome, InstanceChange, InstanceEvent, StepResult, UserData};
use crate::domain::{RunId, RunKind, RunRecord, RunState};
use crate::error::{AwsErrorKind, Result};
use crate::ports::InstanceState;

/// How long after a run started a wait keeps looking for an instance it has no record of, before
/// it ends the run as lost: longer than any launch (with its retries) takes.
pub const LAUNCH_GRACE: SignedDuration = SignedDuration::from_mins(3);

/// What `instance_event` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventAction {
    /// The attempt ended and the next began.
    Retried,
    /// The attempt ended and so did the run: no attempt was left.
    Recorded,
    /// Not the current attempt of an active run, or nothing that ends one.
    Ignored,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceEventResponse {
    pub status: &'static str,
    pub action: EventAction,
    pub instance_id: String,
    pub run_id: Option<RunId>,
    /// Why it did what it did.
    pub reason: String,
    /// The run's attempts after it, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
}

impl Runner {
    /// Ends the run when its instance finished or outlived its time limit; follows an attempt the
    /// cloud ended (interrupted, vanished, never checked in, no instance) with the next; adopts an
    /// instance found by its tag. The sweeper calls it for runs nobody waits on.
    pub(crate) async fn check_progress(&self, record: &mut RunRecord) -> Result<()> {
        if let Some(outcome) = record.outcome.clone() {
            let passed = outcome == "succeeded" && record.failed_steps().is_empty();
            if passed && record.kind == RunKind::RunnerImage {
                return self.make_image(record).await;
            }
            return self.conclude(record, if passed { RunState::Succeeded } else { RunState::Failed }, None).await;
        }
        let now = self.ports.clock.now();
        let Some(attempt) = record.current_attempt().cloned() else {
            let why = "it has no attempt recorded (an older provisioner started it)".to_owned();
            return self.conclude(record, RunState::Lost, Some(why)).await;
        };
        if record.timed_out(now) {
            return self.time_out(record).await;
        }
        let Some(instance_id) = record.instance_id.clone() else {
            // Launching, here or in another invocation, or launched and not recorded: look by tag.
            if let Some(found) = self.find_instance(record).await {
                tracing::info!(run_id = %record.run_id, instance_id = %found, "found the run's instance by its tag");
                self.adopt(record, found).await;
                return Ok(());
            }
            if now >= attempt.started_at + LAUNCH_GRACE {
                return self.retry(record, AttemptOutcome::Lost, "it never got an instance".into()).await.map(drop);
            }
            return Ok(());
        };
        if record.interrupted() {
            let why = format!("its instance {instance_id} received a spot interruption notice");
            return self.retry(record, AttemptOutcome::Interrupted, why).await.map(drop);
        }
        let state = self.ports.instances.state(&instance_id).await?;
        if !state.is_some_and(InstanceState::is_working) {
            // It may have reported just before going: read once more.
            if let Some(fresh) = self.ports.runs.get(&record.run_id).await? {
                if fresh.outcome.is_some() || fresh.attempt_number() != record.attempt_number() {
                    *record = fresh;
                    return Box::pin(self.check_progress(record)).await;
                }
            }
            let why = format!(
                "its instance {instance_id} is {} and never reported an outcome",
                state.map_or("gone", InstanceState::as_str)
            );
            return self.retry(record, AttemptOutcome::Lost, why).await.map(drop);
        }
        if record.missed_check_in(now) {
            let why = format!("its instance {instance_id} did not check in by {}", attempt.check_in_by);
            return self.retry(record, AttemptOutcome::BootTimeout, why).await.map(drop);
        }
        Ok(())
    }

    /// Ends a run that reached its time limit (or whose deadman fired): `RunTimedOut`, naming the
    /// limit and the step it was in, its attempt `timed_out`. Never retried, whatever EC2 then
    /// says of its instance.
    pub(super) async fn time_out(&self, record: &mut RunRecord) -> Result<()> {
        let Some(attempt) = record.current_attempt().cloned() else { return Ok(()) };
        let minutes = attempt.deadline.duration_since(attempt.started_at).as_mins();
        let steps = record.steps_under_way();
        let place =
            if steps.is_empty() { "outside any step".to_owned() } else { format!("in step {}", steps.join(", ")) };
        let instance = record.instance_id.as_deref().unwrap_or("none");
        let why = format!(
            "attempt {} reached the run's time limit of {minutes} minutes at {} {place}; its instance ({instance}) \
             was terminated",
            attempt.number, attempt.deadline
        );
        self.conclude(record, RunState::TimedOut, Some(why)).await
    }

    /// INSTANCE_EVENT: a spot interruption warning for the current attempt's instance ends the
    /// attempt as `interrupted`, a state change of it to shutting-down, stopping, stopped or
    /// terminated as `lost`; either begins the next attempt at once. Anything else is ignored, and
    /// so is the same event delivered again (its instance is no longer the current attempt's).
    pub async fn instance_event(&self, event: InstanceEvent) -> Result<InstanceEventResponse> {
        let instance_id = event.instance_id.clone();
        let answer = |action, run_id, reason: String, attempts| InstanceEventResponse {
            status: "success",
            action,
            instance_id: instance_id.clone(),
            run_id,
            reason,
            attempts,
        };
        let Some(run_id) = self.ports.instances.run_of(&event.instance_id).await? else {
            return Ok(answer(EventAction::Ignored, None, "it is not an instance of a run".into(), Vec::new()));
        };
        let Some(mut record) = self.ports.runs.get(&run_id).await? else {
            return Ok(answer(EventAction::Ignored, Some(run_id), "its run has no record".into(), Vec::new()));
        };
        let current = record.instance_id.as_deref() == Some(event.instance_id.as_str());
        if record.state.ended() || !current {
            let reason = if record.state.ended() {
                format!("its run ended as {}", record.state.as_str())
            } else {
                "it is not the current attempt's instance".to_owned()
            };
            return Ok(answer(EventAction::Ignored, Some(run_id), reason, record.attempts));
        }
        let (outcome, why) = match &event.change {
            InstanceChange::SpotInterruption { action } => {
                (AttemptOutcome::Interrupted, format!("EC2 will {action} its spot instance {}", event.instance_id))
            }
            InstanceChange::State(state)
                if matches!(state.as_str(), "shutting-down" | "stopping" | "stopped" | "terminated") =>
            {
                (AttemptOutcome::Lost, format!("its instance {} is {state}", event.instance_id))
            }
            InstanceChange::State(state) => {
                let reason = format!("the state {state} ends no attempt");
                return Ok(answer(EventAction::Ignored, Some(run_id), reason, record.attempts));
            }
        };
        // It may have reported its last step just before going: then the run concludes.
        if record.outcome.is_some() {
            self.check_progress(&mut record).await?;
            let reason = format!("its run reported its outcome and ended as {}", record.state.as_str());
            return Ok(answer(EventAction::Recorded, Some(run_id), reason, record.attempts));
        }
        // The deadman's shutdown, or the sweeper's termination, of a run past its limit: no retry.
        if record.timed_out(self.ports.clock.now()) {
            self.time_out(&mut record).await?;
            let reason = format!("{why}: its run reached its time limit and ended as {}", record.state.as_str());
            return Ok(answer(EventAction::Recorded, Some(run_id), reason, record.attempts));
        }
        tracing::info!(run_id = %run_id, instance_id = %event.instance_id, event = %event.id, %why, "instance event");
        let action = self.retry(&mut record, outcome, why.clone()).await?;
        Ok(answer(action, Some(run_id), why, record.attempts))
    }

    /// Ends the current attempt as `outcome` (its instances terminated first) and begins the next,
    /// or ends the run when no attempt is left. `Ignored` when another caller moved the run first.
    pub(super) async fn retry(
        &self,
        record: &mut RunRecord,
        outcome: AttemptOutcome,
        why: String,
    ) -> Result<EventAction> {
        let profile = self.catalog.profile_for(&record.cluster)?.clone();
        self.terminate_attempt(record).await?;
        if record.attempt_number() >= profile.runner.max_attempts {
            record.end_attempt(outcome, Some(self.ports.clock.now()));
            let state =
                if outcome == AttemptOutcome::Capacity { RunState::CapacityUnavailable } else { RunState::Lost };
            let failure = format!("{why}; it used up its {} attempt(s)", record.attempts.len());
            self.conclude(record, state, Some(failure)).await?;
            return Ok(if record.state.ended() { EventAction::Recorded } else { EventAction::Ignored });
        }
        // Before the next attempt's clean start wipes its steps; an ended run notes it once, when
        // it concludes.
        self.note_attempt_end(record, outcome).await;
        let Some(user_data) = self.begin_next_attempt(record, &profile, outcome, &why).await? else {
            return Ok(EventAction::Ignored);
        };
        self.launch_attempts(record, &profile, user_data).await?;
        Ok(if record.state.ended() { EventAction::Recorded } else { EventAction::Retried })
    }

    /// Ends the current attempt as `outcome` and makes the next one current, from a clean start;
    /// answers its user-data, or `None` when another caller moved the run first.
    pub(super) async fn begin_next_attempt(
        &self,
        record: &mut RunRecord,
        profile: &Profile,
        outcome: AttemptOutcome,
        why: &str,
    ) -> Result<Option<UserData>> {
        let now = self.ports.clock.now();
        record.end_attempt(outcome, Some(now));
        tracing::warn!(run_id = %record.run_id, attempt = record.attempt_number(), outcome = outcome.as_str(), %why,
            "attempt ended; beginning the next");
        let next = profile.runner.attempt(record.attempt_number() + 1, now);
        record.attempts.push(next);
        record.state = RunState::Launching;
        record.instance_id = None;
        record.log_location.clear();
        record.steps = record.steps.iter().map(|step| StepResult::pending(&step.name)).collect();
        (record.commit, record.layout, record.outcome, record.instance_state, record.reported_at) =
            (None, None, None, None, None);
        record.images.clear();
        record.holds = None;
        match self.ports.runs.begin_attempt(record).await {
            Ok(()) => {}
            Err(error) if matches!(error.aws_kind(), Some(AwsErrorKind::Conflict | AwsErrorKind::Indeterminate)) => {
                let fresh = self.ports.runs.get(&record.run_id).await?;
                // The answer to our own write may have been lost and the SDK's retry refused: the
                // record then holds the very attempt we began, and it is ours to launch.
                let ours = fresh
                    .as_ref()
                    .is_some_and(|fresh| !fresh.state.ended() && fresh.current_attempt() == record.current_attempt());
                if !ours {
                    // Not taken: the answer says nothing of what happened; another caller moved it.
                    if error.aws_kind() == Some(AwsErrorKind::Indeterminate) {
                        return Err(error);
                    }
                    if let Some(fresh) = fresh {
                        *record = fresh;
                    }
                    return Ok(None);
                }
                tracing::info!(run_id = %record.run_id, attempt = record.attempt_number(), "our write began the \
                    attempt though its answer was lost");
            }
            Err(error) => return Err(error),
        }
        if let Some(ended) = record.attempts.iter().rev().nth(1) {
            self.settle_attempt(record, ended).await;
        }
        match self.user_data(profile, record) {
            Ok(user_data) => Ok(Some(user_data)),
            Err(error) => Err(self.abandon(record, RunState::Failed, error).await),
        }
    }
}
