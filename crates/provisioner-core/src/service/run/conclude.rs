//! A run's end: its instances terminated (but one a failed run holds for debugging), its record,
//! place and slot released, reported once; `cancel`, and the end of a hold.
//!
//! A failed run started with `hold_minutes` keeps its instance that long; `cancel` and the
//! sweeper end the hold.

use jiff::SignedDuration;
use serde::Serialize;

use super::*;
use crate::catalog::KnownFailuresAlert;
use crate::domain::run::RunView;
use crate::domain::{AttemptOutcome, CancelRequest, RunRecord, RunState};
use crate::error::{AwsErrorKind, Error, Result};

/// Endings a cancel tries while other callers keep beginning the run's next attempt.
const CANCEL_ATTEMPTS: u32 = 10;

/// What `cancel` answers: the run's outcome (`cancelled`, or how it had ended), and the run.
#[derive(Debug, Clone, Serialize)]
pub struct CancelResponse {
    pub status: &'static str,
    pub outcome: &'static str,
    #[serde(flatten)]
    pub run: RunView,
    /// Why it ended, when the function ended it (for a cancel: when, and by whom when known).
    pub failure: Option<String>,
    pub ended_at: Option<String>,
}

impl std::ops::Deref for CancelResponse {
    type Target = RunView;
    fn deref(&self) -> &RunView {
        &self.run
    }
}

impl Runner {
    /// CANCEL: ends an active run at once, its instances terminated and its outcome `cancelled`;
    /// a run that had ended answers how it ended, unchanged.
    pub async fn cancel(&self, request: CancelRequest) -> Result<CancelResponse> {
        let Some(mut record) = self.ports.runs.get(&request.run_id).await? else {
            return Err(Error::invalid(format!(
                "there is no run {}; cancel a run_id that test or build answered with",
                request.run_id
            )));
        };
        let by = request.requested_by.as_ref().map(|who| format!(" by {}", who.as_str())).unwrap_or_default();
        let why = format!("cancelled at {}{by}", crate::domain::time::whole_seconds(self.ports.clock.now()));
        // Another invocation may end it first (then its ending is the answer), or start its next
        // attempt first (then that attempt is cancelled).
        for _ in 0..CANCEL_ATTEMPTS {
            if record.state.ended() {
                break;
            }
            self.conclude(&mut record, RunState::Cancelled, Some(why.clone())).await?;
        }
        // The contract's outcomes are endings: a run others kept moving is not answered as running.
        if !record.state.ended() {
            return Err(Error::Busy {
                cluster: record.cluster.to_string(),
                operation: format!("{} run {} that kept beginning new attempts", record.kind, record.run_id),
                since: record.started_at.to_string(),
            });
        }
        self.end_hold(&mut record).await?;
        tracing::info!(run_id = %record.run_id, state = record.state.as_str(), "cancel");
        Ok(CancelResponse {
            status: "success",
            outcome: record.state.as_str(),
            run: record.view(),
            failure: record.failure,
            ended_at: record.ended_at.map(|t| t.to_string()),
        })
    }

    /// Ends the run as `state`: terminates its instances (but the one a failed run holds for
    /// debugging), ends its attempt, frees its place and slot, and reports it once.
    pub(super) async fn conclude(
        &self,
        record: &mut RunRecord,
        state: RunState,
        failure: Option<String>,
    ) -> Result<()> {
        let now = self.ports.clock.now();
        let held = (state == RunState::Failed && record.hold_minutes > 0).then(|| record.instance_id.clone()).flatten();
        // Every instance of the run goes, also one that was never recorded; not one of a later
        // attempt another invocation began (then this write is refused and the run goes on).
        let current = record.attempt_number().max(1);
        self.terminate_instances(record, |attempt| attempt <= current, held.as_ref()).await?;
        record.state = state;
        record.failure = failure;
        record.ended_at = Some(now);
        record.held_until = held.is_some().then(|| now + SignedDuration::from_mins(i64::from(record.hold_minutes)));
        record.end_attempt(state.attempt_outcome(), Some(now));
        self.compare_tests(record).await;
        match self.ports.runs.update(record).await {
            Ok(()) => self.report_end(record).await,
            // Another invocation ended it first (its ending stands), or began its next attempt; or
            // the answer to our own write was lost (then the record holds our very ending).
            Err(error) if matches!(error.aws_kind(), Some(AwsErrorKind::Conflict | AwsErrorKind::Indeterminate)) => {
                let fresh = self.ports.runs.get(&record.run_id).await?;
                let ours = fresh
                    .as_ref()
                    .is_some_and(|fresh| fresh.state == record.state && fresh.ended_at == record.ended_at);
                if ours {
                    self.report_end(record).await;
                } else if error.aws_kind() == Some(AwsErrorKind::Indeterminate) {
                    return Err(error);
                } else {
                    if let Some(fresh) = fresh {
                        *record = fresh;
                    }
                    if !record.state.ended() {
                        return Ok(());
                    }
                }
            }
            Err(error) => return Err(error),
        }
        self.ports.runs.release(record).await?;
        self.free_slot(record).await;
        tracing::info!(run_id = %record.run_id, state = record.state.as_str(), "run ended");
        Ok(())
    }

    /// Once per run, by whoever ended it: its steps as metrics, its test summary kept, and an
    /// alert unless it succeeded (one line, or none, when all its failures are known ones).
    async fn report_end(&self, record: &RunRecord) {
        self.settle_run(record).await;
        crate::metrics::run_steps(record);
        let ended = record.current_attempt().map_or(AttemptOutcome::Running, |attempt| attempt.outcome);
        self.note_attempt_end(record, ended).await;
        self.keep_test_summary(record).await;
        // A cancelled run was ended by someone who knows.
        if matches!(record.state, RunState::Succeeded | RunState::Cancelled) {
            return;
        }
        let run = format!("{} run of {} on {}", record.kind, record.version, record.cluster);
        let new = record.tests.as_ref().filter(|tests| !tests.failed.is_empty()).map(|tests| tests.new.len());
        let ending = match (record.state, new) {
            (RunState::Lost, _) => "was lost (RunLost)".to_owned(),
            (RunState::TimedOut, _) => "timed out (RunTimedOut)".to_owned(),
            (_, Some(new)) => format!("failed: {new} new test failure(s)"),
            _ => "failed".to_owned(),
        };
        let subject = format!("SlideRule provisioner: {run} {ending}");
        let message = match (self.known_failures_only(record), self.answer(record.clone())) {
            (Some(KnownFailuresAlert::None), _) => return,
            (Some(KnownFailuresAlert::OneLine), _) => {
                let tests = record.tests.as_ref().map(|tests| tests.describe()).unwrap_or_default();
                format!("{} failed with no new test failure ({tests})", record.run_id)
            }
            (None, Err(error)) => error.to_string(),
            (None, Ok(_)) => format!("run {} ended as {}", record.run_id, record.state.as_str()),
        };
        crate::service::alert(&*self.ports.notices, &subject, &message).await;
    }

    /// Marks a run that never got an instance as ended, and returns `error`.
    pub(super) async fn abandon(&self, record: &mut RunRecord, state: RunState, error: Error) -> Error {
        record.state = state;
        record.failure = Some(error.to_string());
        record.ended_at = Some(self.ports.clock.now());
        record.end_attempt(state.attempt_outcome(), record.ended_at);
        match self.ports.runs.update(record).await {
            Ok(()) => self.settle_run(record).await,
            Err(write) => tracing::warn!(run_id = %record.run_id, %write, "could not record the failed launch"),
        }
        if let Err(write) = self.ports.runs.release(record).await {
            tracing::warn!(run_id = %record.run_id, %write, "could not release the run");
        }
        self.free_slot(record).await;
        error
    }

    /// Terminates the current attempt's instances (recorded, and found by tag).
    pub(super) async fn terminate_attempt(&self, record: &RunRecord) -> Result<()> {
        let number = record.attempt_number().max(1);
        self.terminate_instances(record, |attempt| attempt == number, None).await
    }

    /// Terminates the run's instances of the attempts `of_attempt` takes, the recorded one and
    /// those found by tag (one never recorded too), but `kept`: the one clean-up of instances.
    async fn terminate_instances(
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
        self.settle_hold(record, now).await;
        record.held_until = Some(now);
        tracing::info!(run_id = %record.run_id, "hold ended");
        Ok(())
    }

    /// How to reach a held instance: Session Manager, so no inbound port opens.
    pub fn connect_command(&self, instance_id: &str) -> String {
        format!("aws ssm start-session --target {instance_id} --region {}", self.settings.region)
    }
}
