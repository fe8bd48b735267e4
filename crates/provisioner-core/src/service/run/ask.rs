//! The ask: a TEST, BUILD or RUNNER_IMAGE call starts its run (`start.rs`) or resumes one, waits
//! for it while the invocation allows, and answers success, `running`, or the contract's error.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::*;
use crate::domain::attempt::describe_all;
use crate::domain::run::RunView;
use crate::domain::{RunId, RunKind, RunRecord, RunRequest, RunState};
use crate::error::{Error, Result};
use crate::service::{seconds_between, signed, Invocation};

/// How long an ask may take when its `wait_seconds` is shorter: a start to record and launch
/// its run (a run is not answered `running` before it exists), a resume to read it once.
pub const LEAST_ANSWER_TIME: SignedDuration = SignedDuration::from_secs(10);

/// The run as last read or written by an invocation: what it answers when its time is up.
pub(super) type Known = tokio::sync::watch::Sender<Option<RunRecord>>;

#[derive(Debug, Clone, Serialize)]
pub struct RunResponse {
    /// `success` or `running`.
    pub status: &'static str,
    #[serde(flatten)]
    pub run: RunView,
    pub commit: Option<String>,
    /// The repository layout found in the checkout.
    pub layout: Option<String>,
    pub state: RunState,
    pub images: Vec<String>,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub elapsed_seconds: f64,
    pub hold_minutes: u32,
    /// The runner image a TEST run's instances launch from (null: the plain Amazon Linux AMI).
    pub runner_image: Option<String>,
    /// The image a runner image run made, once it is available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Until when its failed instance is kept up for debugging, and how to reach it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<String>,
}

// Both answers read as the run they are about.
impl std::ops::Deref for RunResponse {
    type Target = RunView;
    fn deref(&self) -> &RunView {
        &self.run
    }
}

impl Runner {
    /// Starts or resumes a run and waits for it. The answer comes by `wait_seconds` whatever AWS
    /// does, or by [`LEAST_ANSWER_TIME`] when that is later: what was
    /// cut off is picked up by the next ask or sweep, as after a crash. Cut off before its run was
    /// recorded or read, it answers `Busy`, nothing started.
    pub async fn run(&self, kind: RunKind, request: RunRequest, invocation: &Invocation) -> Result<RunResponse> {
        let started = self.ports.clock.now();
        let by_deadline = invocation.deadline - signed(self.timeouts.deadline_margin);
        let wait_until = match request.wait_seconds() {
            Some(seconds) => by_deadline.min(started + SignedDuration::from_secs(seconds as i64)),
            None => by_deadline,
        };
        let answer_by = by_deadline.min(wait_until.max(started + LEAST_ANSWER_TIME));
        let (known, _) = tokio::sync::watch::channel(None::<RunRecord>);
        let run_id = match &request {
            RunRequest::Start { cluster, version, hold_minutes, requested_by, .. } => {
                let start =
                    self.start(kind, cluster.clone(), version.clone(), *hold_minutes, requested_by.clone(), &known);
                match self.by(answer_by, start).await {
                    Some(run_id) => run_id?,
                    None => return self.cut_off(kind, &request, &known, started),
                }
            }
            RunRequest::Resume { run_id, .. } => {
                if run_id.kind() != kind {
                    return Err(Error::invalid(format!(
                        "run {run_id} is a {} run; resume it with the {} function",
                        run_id.kind(),
                        run_id.kind()
                    )));
                }
                run_id.clone()
            }
        };
        match self.by(answer_by, self.wait(&run_id, wait_until, &known)).await {
            Some(answer) => answer,
            None => self.cut_off(kind, &request, &known, started),
        }
    }

    /// `work`'s result, or `None` when `until` came first (the work is dropped where it stood).
    pub(super) async fn by<T>(&self, until: Timestamp, work: impl std::future::Future<Output = T>) -> Option<T> {
        let left = until.duration_since(self.ports.clock.now());
        tokio::select! {
            biased;
            done = work => Some(done),
            () = self.ports.clock.sleep(left.try_into().unwrap_or(Duration::ZERO)) => None,
        }
    }

    /// The answer of a start or wait whose time ran out: `running` with the run as last known.
    fn cut_off(&self, kind: RunKind, request: &RunRequest, known: &Known, started: Timestamp) -> Result<RunResponse> {
        let seconds = self.ports.clock.now().duration_since(started).as_secs();
        let last_known = known.borrow().clone();
        let Some(record) = last_known else {
            let what = match request {
                RunRequest::Start { cluster, version, .. } => format!(
                    "a {kind} run of {version} on {cluster} could not be recorded within {seconds} s; nothing runs \
                     for it"
                ),
                RunRequest::Resume { run_id, .. } => {
                    format!("{kind} run {run_id} could not be read within {seconds} s")
                }
            };
            return Err(Error::StartTooSlow(format!(
                "{what}: AWS answered too slowly (throttled?); try again in a minute"
            )));
        };
        if record.state.ended() {
            return self.answer(record);
        }
        tracing::warn!(run_id = %record.run_id, seconds, "answering as the time to wait ran out; the next ask or sweep \
            goes on");
        Ok(self.response("running", record))
    }

    /// Waits for the run to end, until `wait_until`.
    pub(super) async fn wait(&self, run_id: &RunId, wait_until: Timestamp, known: &Known) -> Result<RunResponse> {
        let mut last_reported = String::new();
        loop {
            let mut record = self.ports.runs.get(run_id).await?.ok_or_else(|| {
                Error::invalid(format!("there is no run {run_id}; start one with a cluster and a version"))
            })?;
            let progress =
                record.steps.iter().map(|s| format!("{}={}", s.name, s.status.as_str())).collect::<Vec<_>>().join(",");
            if progress != last_reported {
                tracing::info!(run_id = %run_id, steps = %progress, "run progress");
                last_reported = progress;
            }
            known.send_replace(Some(record.clone()));
            if !record.state.ended() {
                self.check_progress(&mut record).await?;
                known.send_replace(Some(record.clone()));
            }
            if record.state.ended() {
                return self.answer(record);
            }
            let now = self.ports.clock.now();
            if now >= wait_until {
                return Ok(self.response("running", record));
            }
            let left = wait_until.duration_since(now).unsigned_abs();
            self.ports.clock.sleep(self.timeouts.run_poll.min(left)).await;
        }
    }

    pub(super) fn answer(&self, record: RunRecord) -> Result<RunResponse> {
        let run = format!("{} run {} of {} on {}", record.kind, record.run_id, record.version, record.cluster);
        match record.state {
            RunState::Succeeded => Ok(self.response("success", record)),
            RunState::Failed => {
                let failed = record.failed_steps();
                let skipped = record.skipped_steps();
                let mut what = if failed.is_empty() {
                    "it did not complete".to_owned()
                } else {
                    format!("steps failed: {}", failed.join(", "))
                };
                if !skipped.is_empty() {
                    what.push_str(&format!(" (skipped: {})", skipped.join(", ")));
                }
                if let Some(failure) = &record.failure {
                    what.push_str(&format!("; {failure}"));
                }
                // New test failures first: what changed is what a reader looks for.
                if let Some(tests) = record.tests.as_ref().filter(|tests| !tests.failed.is_empty()) {
                    what = format!("{}; {what}", super::describe_failures(tests));
                }
                let mut message = format!("{run} failed: {what}; read the logs at {}", record.log_location);
                if let (Some(instance), Some(until)) = (&record.instance_id, record.held_until) {
                    if record.held_at(self.ports.clock.now()) {
                        message.push_str(&format!(
                            "; its instance {instance} is held until {until}: {} (cancel the run to end the hold)",
                            self.connect_command(instance)
                        ));
                    }
                }
                Err(match record.kind {
                    RunKind::Test => Error::TestsFailed(message),
                    RunKind::Build | RunKind::RunnerImage => Error::BuildFailed(message),
                })
            }
            RunState::Lost => Err(Error::RunLost(format!(
                "{run} was lost: {} (attempts: {}); start it again",
                record.failure.as_deref().unwrap_or("its instance vanished before it reported"),
                describe_all(&record.attempts)
            ))),
            RunState::CapacityUnavailable => Err(Error::CapacityUnavailable(
                record.failure.unwrap_or_else(|| format!("no spot capacity for {run}; try again later")),
            )),
            RunState::TimedOut => Err(Error::RunTimedOut(format!(
                "{run} timed out: {}; read the logs at {}, and raise the profile's time_limit_minutes if it needs \
                 longer",
                record.failure.as_deref().unwrap_or("it reached its time limit"),
                record.log_location
            ))),
            RunState::Cancelled => Err(Error::RunCancelled(format!(
                "{run} was {}; start it again to run it",
                record.failure.as_deref().unwrap_or("cancelled")
            ))),
            RunState::Launching | RunState::Running => Ok(self.response("running", record)),
        }
    }

    pub(super) fn response(&self, status: &'static str, record: RunRecord) -> RunResponse {
        let now = self.ports.clock.now();
        let end = record.ended_at.unwrap_or(now);
        let held = record.held_at(now);
        let connect = record.instance_id.as_deref().filter(|_| held).map(|id| self.connect_command(id));
        RunResponse {
            status,
            elapsed_seconds: seconds_between(record.started_at, end),
            run: record.view(),
            commit: record.commit,
            layout: record.layout,
            state: record.state,
            images: record.images,
            started_at: record.started_at.to_string(),
            ended_at: record.ended_at.map(|t| t.to_string()),
            connect,
            held_until: record.held_until.filter(|_| held).map(|t| t.to_string()),
            hold_minutes: record.hold_minutes,
            image_id: record
                .runner_image
                .clone()
                .filter(|_| record.kind == RunKind::RunnerImage && record.state == RunState::Succeeded),
            runner_image: record.runner_image.filter(|_| record.kind == RunKind::Test),
        }
    }
}
