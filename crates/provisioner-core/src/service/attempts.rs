//! A run's attempts: what follows an attempt the cloud ended (a spot interruption, a vanished
//! instance, one that never checked in, no capacity), the EC2 events that say so
//! (`instance_event`), and the hold of a failed run's instance.
//!
//! - An attempt the cloud ended is followed at once by the next, from a clean start, up to the
//!   profile's `max_attempts`; the last runs on demand when the profile says so. The old
//!   instance goes before the next is launched: a run never has two live instances.
//! - Exactly one caller moves a run to its next attempt ([`crate::ports::Runs::begin_attempt`]), so
//!   a redelivered event, the waiting function and the sweeper can all see the same ending.
//! - A run out of attempts ends `RunLost` (or `CapacityUnavailable` when the last could not be
//!   launched), naming every attempt. A failed step is never retried.
//! - A failed run started with `hold_minutes` keeps its instance that long; `cancel` and the
//!   sweeper end the hold.

use std::time::Duration;

use serde::Serialize;

use super::runner::{AttemptLaunch, Runner};
use crate::catalog::Profile;
use crate::domain::attempt::describe_all;
use crate::domain::{Attempt, AttemptOutcome, InstanceChange, InstanceEvent, RunId, RunRecord, RunState};
use crate::domain::{StepResult, UserData};
use crate::error::{AwsErrorKind, Error, Result};

/// Between launches of attempts that found no capacity: long enough for the market to move.
const CAPACITY_RETRY_PAUSE: Duration = Duration::from_secs(20);

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
        let Some(user_data) = self.begin_next_attempt(record, &profile, outcome, &why).await? else {
            return Ok(EventAction::Ignored);
        };
        self.launch_attempts(record, &profile, user_data).await?;
        Ok(if record.state.ended() { EventAction::Recorded } else { EventAction::Retried })
    }

    /// Ends the current attempt as `outcome` and makes the next one current, from a clean start;
    /// answers its user-data, or `None` when another caller moved the run first.
    async fn begin_next_attempt(
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
        match self.user_data(profile, record) {
            Ok(user_data) => Ok(Some(user_data)),
            Err(error) => Err(self.abandon(record, RunState::Failed, error).await),
        }
    }

    /// Launches the current attempt; an attempt no market had capacity for ends as `capacity` and
    /// the next follows after a pause, until none is left: then the run ends `CapacityUnavailable`
    /// naming every attempt.
    pub(super) async fn launch_attempts(
        &self,
        record: &mut RunRecord,
        profile: &Profile,
        mut user_data: UserData,
    ) -> Result<()> {
        loop {
            let refused = match self.launch(record, profile, &user_data).await? {
                AttemptLaunch::Started => return Ok(()),
                AttemptLaunch::NoCapacity(refused) => refused,
            };
            let why = format!("no capacity ({})", refused.join(", "));
            if record.attempt_number() >= profile.runner.max_attempts {
                record.end_attempt(AttemptOutcome::Capacity, Some(self.ports.clock.now()));
                let error = Error::CapacityUnavailable(format!(
                    "{} run {} was not started: {why} in each of its {} attempt(s) ({}); try again later or add \
                     instance types to the profile",
                    record.kind,
                    record.run_id,
                    record.attempts.len(),
                    describe_all(&record.attempts)
                ));
                return Err(self.abandon(record, RunState::CapacityUnavailable, error).await);
            }
            self.ports.clock.sleep(CAPACITY_RETRY_PAUSE).await;
            match self.begin_next_attempt(record, profile, AttemptOutcome::Capacity, &why).await? {
                Some(next) => user_data = next,
                None => return Ok(()),
            }
        }
    }

    /// Terminates the current attempt's instances (recorded, and found by tag).
    async fn terminate_attempt(&self, record: &RunRecord) -> Result<()> {
        let number = record.attempt_number().max(1);
        self.terminate_instances(record, |attempt| attempt == number, None).await
    }

    /// Terminates the run's instances of the attempts `of_attempt` takes, the recorded one and
    /// those found by tag (one never recorded too), but `kept`: the one clean-up of instances.
    pub(super) async fn terminate_instances(
        &self,
        record: &RunRecord,
        of_attempt: impl Fn(u32) -> bool,
        kept: Option<&String>,
    ) -> Result<()> {
        let mut instances: Vec<String> = (self.ports.instances.of_run(&record.run_id).await?.into_iter())
            .filter(|instance| of_attempt(instance.attempt()))
            .map(|instance| instance.id)
            .collect();
        instances.extend(record.instance_id.clone());
        instances.sort();
        instances.dedup();
        for instance_id in instances.iter().filter(|id| Some(*id) != kept) {
            self.ports.instances.terminate(instance_id).await?;
        }
        Ok(())
    }

    /// Ends the hold of an ended run's instance: terminates it now.
    pub(super) async fn end_hold(&self, record: &mut RunRecord) -> Result<()> {
        let now = self.ports.clock.now();
        if !record.held_at(now) {
            return Ok(());
        }
        if let Some(instance_id) = record.instance_id.clone() {
            self.ports.instances.terminate(&instance_id).await?;
        }
        self.ports.runs.end_hold(&record.run_id, now).await?;
        record.held_until = Some(now);
        tracing::info!(run_id = %record.run_id, "hold ended");
        Ok(())
    }

    /// How to reach a held instance: Session Manager, so no inbound port opens.
    pub fn connect_command(&self, instance_id: &str) -> String {
        format!("aws ssm start-session --target {instance_id} --region {}", self.settings.region)
    }
}
