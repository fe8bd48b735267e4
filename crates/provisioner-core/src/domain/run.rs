//! A run: one TEST or BUILD of a version against a cluster, on one spot instance. Its record
//! lives in the table under `run#<id>`; the instance reports steps into it, the function the rest.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize};

use crate::domain::attempt::{Attempt, AttemptOutcome};
use crate::domain::names::shown;
use crate::domain::requests::from_event;
use crate::domain::test_results::{StepTests, TestResults};
use crate::domain::{ClusterName, GitRef, RequestedBy};
use crate::error::Error;

/// What the instance writes as its state when it received a spot interruption notice.
pub const INSTANCE_INTERRUPTED: &str = "interrupted";
/// What the instance writes as its state when its deadman (the run's time limit) shut it down.
pub const INSTANCE_TIMED_OUT: &str = "timed_out";

/// The longest a caller may ask one invocation to wait (the contract's 840 s: 14 minutes).
pub const MAX_WAIT_SECONDS: u64 = 840;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    Test,
    Build,
    /// Makes the runner image TEST runs launch from (`runner_image`).
    RunnerImage,
}

impl RunKind {
    /// Every kind of run: what holds for each plan is checked over these.
    pub const ALL: [RunKind; 3] = [RunKind::Test, RunKind::Build, RunKind::RunnerImage];

    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Test => "test",
            RunKind::Build => "build",
            RunKind::RunnerImage => "runner_image",
        }
    }

    pub fn parse(raw: &str) -> Option<RunKind> {
        RunKind::ALL.into_iter().find(|kind| kind.as_str() == raw)
    }

    /// How its run ids start: a run id is safe in a shell, a tag and an S3 key.
    pub fn id_prefix(self) -> &'static str {
        match self {
            RunKind::Test => "test-",
            RunKind::Build => "build-",
            RunKind::RunnerImage => "image-",
        }
    }
}

impl fmt::Display for RunKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `<test|build|image>-<cluster>-<yyyymmddthhmmss>-<4 hex>`: unique, and safe in a shell, a tag and an S3 key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    pub fn new(kind: RunKind, cluster: &ClusterName, now: Timestamp) -> RunId {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..4];
        RunId(format!("{}{cluster}-{}-{suffix}", kind.id_prefix(), now.strftime("%Y%m%dt%H%M%S")))
    }

    pub fn parse(raw: &str) -> Result<RunId, Error> {
        let valid = raw.len() <= 100
            && RunKind::ALL.iter().any(|kind| raw.starts_with(kind.id_prefix()))
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(RunId(raw.to_owned()))
        } else {
            Err(Error::invalid(format!(
                "the run_id {} is not a run id; use the run_id a test, build or runner_image answered with",
                shown(raw)
            )))
        }
    }

    /// When the run was started, as its id says (to the second).
    pub fn started_at(&self) -> Option<Timestamp> {
        let stamp = self.0.rsplit('-').nth(1)?;
        let civil = jiff::civil::DateTime::strptime("%Y%m%dt%H%M%S", stamp).ok()?;
        jiff::tz::TimeZone::UTC.to_timestamp(civil).ok()
    }

    pub fn kind(&self) -> RunKind {
        RunKind::ALL.into_iter().find(|kind| self.0.starts_with(kind.id_prefix())).unwrap_or(RunKind::Build)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `ClientToken` of the launch request for the run's attempt `attempt`, its `choice`-th
    /// instance type, subnet and market: 32 hex digits of a SHA-256 of the run id, then both
    /// numbers. The same on a retry of that launch (EC2 then starts no second instance), different
    /// for every other launch, attempt and run, and at most 64 ASCII characters (EC2's limit) for
    /// any run id, which itself may be longer.
    pub fn launch_token(&self, attempt: u32, choice: u32) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.0.as_bytes());
        let hex: String = digest.iter().take(16).map(|byte| format!("{byte:02x}")).collect();
        format!("{hex}-{attempt}-{choice}")
    }
}

/// EC2 API reference, "Ensure idempotency": a client token is up to 64 ASCII characters.
pub const EC2_CLIENT_TOKEN_LIMIT: usize = 64;

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        RunId::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// The longest a failed run's instance may be held for debugging (the contract's 240 minutes).
pub const MAX_HOLD_MINUTES: u32 = 240;

/// What a `test` or `build` event asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunRequest {
    /// `hold_minutes`: keep a failed run's instance up this long after the run ended (0: none).
    Start {
        cluster: ClusterName,
        version: GitRef,
        wait_seconds: Option<u64>,
        hold_minutes: u32,
        requested_by: Option<RequestedBy>,
    },
    Resume {
        run_id: RunId,
        wait_seconds: Option<u64>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStart {
    cluster: ClusterName,
    version: GitRef,
    wait_seconds: Option<u64>,
    #[serde(default)]
    hold_minutes: u32,
    requested_by: Option<RequestedBy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResume {
    run_id: RunId,
    wait_seconds: Option<u64>,
    /// Accepted, as in every event; a resume creates and ends nothing to record it on.
    #[allow(dead_code)]
    requested_by: Option<RequestedBy>,
}

impl RunRequest {
    pub fn parse(event: serde_json::Value) -> Result<RunRequest, Error> {
        let request = if event.get("run_id").is_some() {
            let raw: RawResume = from_event(event, r#"{"run_id": "ID"}"#)?;
            RunRequest::Resume { run_id: raw.run_id, wait_seconds: raw.wait_seconds }
        } else {
            let raw: RawStart = from_event(event, r#"{"cluster": "NAME", "version": "GIT_REF"}"#)?;
            if raw.hold_minutes > MAX_HOLD_MINUTES {
                return Err(Error::invalid(format!("hold_minutes must be between 0 and {MAX_HOLD_MINUTES}")));
            }
            RunRequest::Start {
                cluster: raw.cluster,
                version: raw.version,
                wait_seconds: raw.wait_seconds,
                hold_minutes: raw.hold_minutes,
                requested_by: raw.requested_by,
            }
        };
        check_wait(request.wait_seconds())?;
        Ok(request)
    }

    pub fn wait_seconds(&self) -> Option<u64> {
        match self {
            RunRequest::Start { wait_seconds, .. } | RunRequest::Resume { wait_seconds, .. } => *wait_seconds,
        }
    }
}

/// `wait_seconds` within the contract's bound, when given.
fn check_wait(wait_seconds: Option<u64>) -> Result<(), Error> {
    if wait_seconds.is_some_and(|w| w > MAX_WAIT_SECONDS) {
        return Err(Error::invalid(format!("wait_seconds must be between 0 and {MAX_WAIT_SECONDS}")));
    }
    Ok(())
}

/// What a `runner_image` event asks: make the image (of the catalog's TEST architecture, or the
/// one named), or wait again for the run that makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerImageRequest {
    Start { architecture: Option<String>, wait_seconds: Option<u64>, requested_by: Option<RequestedBy> },
    Resume { run_id: RunId, wait_seconds: Option<u64> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImageStart {
    architecture: Option<String>,
    wait_seconds: Option<u64>,
    requested_by: Option<RequestedBy>,
}

impl RunnerImageRequest {
    pub fn parse(event: serde_json::Value) -> Result<RunnerImageRequest, Error> {
        let request = if event.get("run_id").is_some() {
            let raw: RawResume = from_event(event, r#"{"run_id": "ID"}"#)?;
            if raw.run_id.kind() != RunKind::RunnerImage {
                return Err(Error::invalid(format!(
                    "run {} is a {} run; resume it with the {} function",
                    raw.run_id,
                    raw.run_id.kind(),
                    raw.run_id.kind()
                )));
            }
            RunnerImageRequest::Resume { run_id: raw.run_id, wait_seconds: raw.wait_seconds }
        } else {
            let raw: RawImageStart = from_event(event, r#"{} or {"architecture": "arm64" | "x86_64"}"#)?;
            if let Some(architecture) = raw.architecture.as_deref().filter(|a| !matches!(*a, "arm64" | "x86_64")) {
                return Err(Error::invalid(format!("the architecture {} is not arm64 or x86_64", shown(architecture))));
            }
            RunnerImageRequest::Start {
                architecture: raw.architecture,
                wait_seconds: raw.wait_seconds,
                requested_by: raw.requested_by,
            }
        };
        let (RunnerImageRequest::Start { wait_seconds, .. } | RunnerImageRequest::Resume { wait_seconds, .. }) =
            &request;
        check_wait(*wait_seconds)?;
        Ok(request)
    }
}

/// What a `cancel` event asks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    pub run_id: RunId,
    pub requested_by: Option<RequestedBy>,
}

impl CancelRequest {
    pub fn parse(event: serde_json::Value) -> Result<CancelRequest, Error> {
        from_event(event, r#"{"run_id": "ID"}"#)
    }
}

/// Where a run is, as the function sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Launching,
    Running,
    Succeeded,
    Failed,
    Lost,
    CapacityUnavailable,
    /// Ended by `cancel`: its instance was terminated.
    Cancelled,
    /// It reached its time limit (`RunTimedOut`): never retried.
    TimedOut,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Launching => "launching",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Lost => "lost",
            RunState::CapacityUnavailable => "capacity_unavailable",
            RunState::Cancelled => "cancelled",
            RunState::TimedOut => "timed_out",
        }
    }

    pub fn parse(raw: &str) -> Option<RunState> {
        [
            RunState::Launching,
            RunState::Running,
            RunState::Succeeded,
            RunState::Failed,
            RunState::Lost,
            RunState::CapacityUnavailable,
            RunState::Cancelled,
            RunState::TimedOut,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }

    pub fn ended(self) -> bool {
        !matches!(self, RunState::Launching | RunState::Running)
    }

    /// How the current attempt ended when the run ends in this state.
    pub fn attempt_outcome(self) -> AttemptOutcome {
        match self {
            RunState::Succeeded | RunState::Failed => AttemptOutcome::Completed,
            RunState::Cancelled => AttemptOutcome::Cancelled,
            RunState::TimedOut => AttemptOutcome::TimedOut,
            RunState::CapacityUnavailable => AttemptOutcome::Capacity,
            RunState::Lost | RunState::Launching | RunState::Running => AttemptOutcome::Lost,
        }
    }
}

/// Where a step is, as the instance reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Passed,
    Failed,
    /// A step it needs did not pass.
    Skipped,
    /// The checked-out version has no such component; the step's `reason` says why.
    NotApplicable,
    /// The cloud took the instance away while it ran (a spot interruption notice).
    Interrupted,
}

impl StepStatus {
    pub const ALL: [StepStatus; 7] = [
        StepStatus::Pending,
        StepStatus::Running,
        StepStatus::Passed,
        StepStatus::Failed,
        StepStatus::Skipped,
        StepStatus::NotApplicable,
        StepStatus::Interrupted,
    ];

    /// The name the instance script writes.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Passed => "passed",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::NotApplicable => "not_applicable",
            StepStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(name: &str) -> Option<StepStatus> {
        StepStatus::ALL.into_iter().find(|status| status.as_str() == name)
    }
}

/// One step as the instance reported it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepResult {
    pub name: String,
    pub status: StepStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub exit_code: Option<i64>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub duration_seconds: Option<f64>,
    /// Where its log is: a running step's too, uploaded while it runs, so a killed instance
    /// loses at most the last minute of it. None for a step that never ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// What its test suite reported: counts and failing test ids (a step with a `results` format).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tests: Option<StepTests>,
}

impl StepResult {
    /// The step with its log's place under the run's `log_location`, once it has one.
    pub fn with_log(self, log_location: &str) -> StepResult {
        let has_log = !matches!(self.status, StepStatus::Pending | StepStatus::Skipped);
        StepResult { log: has_log.then(|| format!("{log_location}{}.log", self.name)), ..self }
    }

    /// A step of the plan that has not started.
    pub fn pending(name: impl Into<String>) -> StepResult {
        StepResult {
            name: name.into(),
            status: StepStatus::Pending,
            reason: None,
            exit_code: None,
            started_at: None,
            ended_at: None,
            duration_seconds: None,
            log: None,
            tests: None,
        }
    }
}

/// What every answer about a run says of it: `test`, `build`, `runner_image` and `cancel` answers
/// and `status`'s active and recent runs flatten it beside what each adds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunView {
    pub run_id: RunId,
    pub kind: RunKind,
    pub cluster: ClusterName,
    pub version: GitRef,
    /// Who started it, when they said.
    pub requested_by: Option<RequestedBy>,
    pub instance_id: Option<String>,
    /// In plan order, each with its log once it has one.
    pub steps: Vec<StepResult>,
    pub log_location: String,
    /// Oldest first, each with its instance, market, times and outcome.
    pub attempts: Vec<Attempt>,
    /// A TEST run's per-test results and what changed since the last run, once it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestResults>,
}

/// A run's record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    pub run_id: RunId,
    pub kind: RunKind,
    pub cluster: ClusterName,
    pub version: GitRef,
    /// The commit the version resolved to, as the instance reported it.
    pub commit: Option<String>,
    /// The repository layout the instance found in the checkout (see the catalog's `layouts`).
    pub layout: Option<String>,
    pub instance_id: Option<String>,
    pub state: RunState,
    /// Step results in plan order.
    pub steps: Vec<StepResult>,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    /// When the run's instance must be gone: its time limit.
    pub deadline: Timestamp,
    /// When the record may be removed (DynamoDB TTL).
    pub expires_at: Timestamp,
    /// Where the current attempt's instance writes its step logs: empty until it has one.
    pub log_location: String,
    /// Images a build pushed.
    pub images: Vec<String>,
    pub outcome: Option<String>,
    /// Why the run failed, for a function-side failure (capacity, lost instance).
    pub failure: Option<String>,
    /// Its attempts, oldest first; the last is the current one.
    pub attempts: Vec<Attempt>,
    /// How long a failed run's instance is kept up after the run ended.
    pub hold_minutes: u32,
    /// Until when its failed instance is kept up for debugging; None when it is not held.
    pub held_until: Option<Timestamp>,
    /// What the current attempt's instance last said of itself: running, finished, interrupted.
    pub instance_state: Option<String>,
    /// When the current attempt's instance last wrote: None until it checked in.
    pub reported_at: Option<Timestamp>,
    /// Who started it, when they said.
    pub requested_by: Option<RequestedBy>,
    /// The runner image: a TEST run's instances launch from it (none: the plain Amazon Linux
    /// AMI); a runner image run made it, once its steps passed.
    pub runner_image: Option<String>,
    /// A runner image run's: what its instance said the image holds.
    pub holds: Option<super::runner_image::ImageHolds>,
    /// A TEST run's per-test results and their comparison, set when it ended.
    pub tests: Option<TestResults>,
}

impl RunRecord {
    /// Ends the current attempt as `outcome` at `at`, if it is still running; one the cloud
    /// ended keeps the step it was in.
    pub fn end_attempt(&mut self, outcome: AttemptOutcome, at: Option<Timestamp>) {
        let step = self
            .steps
            .iter()
            .find(|step| matches!(step.status, StepStatus::Running | StepStatus::Interrupted))
            .map(|step| step.name.clone());
        if let Some(attempt) = self.attempts.last_mut().filter(|attempt| attempt.outcome == AttemptOutcome::Running) {
            attempt.outcome = outcome;
            attempt.ended_at = at;
            if outcome.is_cloud() || outcome == AttemptOutcome::TimedOut {
                attempt.step = step;
            }
        }
    }

    /// Whether its instance received a spot interruption notice (and said so).
    pub fn interrupted(&self) -> bool {
        self.instance_state.as_deref() == Some(INSTANCE_INTERRUPTED)
    }

    /// Whether the current attempt reached its time limit at `now`, or its instance said its
    /// deadman fired: whatever EC2 then says of the instance, the run timed out.
    pub fn timed_out(&self, now: Timestamp) -> bool {
        self.instance_state.as_deref() == Some(INSTANCE_TIMED_OUT)
            || self.current_attempt().is_some_and(|attempt| attempt.deadline <= now)
    }

    /// The steps under way when the instance stopped: what `RunTimedOut` names.
    pub fn steps_under_way(&self) -> Vec<&str> {
        let under_way = |s: &&StepResult| matches!(s.status, StepStatus::Running | StepStatus::Interrupted);
        self.steps.iter().filter(under_way).map(|s| s.name.as_str()).collect()
    }

    /// Whether the current attempt's instance has not checked in and its check-in deadline
    /// passed at `now`.
    pub fn missed_check_in(&self, now: Timestamp) -> bool {
        self.reported_at.is_none() && self.current_attempt().is_some_and(|attempt| attempt.check_in_by <= now)
    }

    /// The attempt under way, or the last one.
    pub fn current_attempt(&self) -> Option<&Attempt> {
        self.attempts.last()
    }

    /// The current attempt's number: 0 before the first.
    pub fn attempt_number(&self) -> u32 {
        self.current_attempt().map_or(0, |attempt| attempt.number)
    }

    /// Whether its instance is kept up for debugging at `now`.
    pub fn held_at(&self, now: Timestamp) -> bool {
        self.held_until.is_some_and(|until| until > now)
    }

    /// What every answer about it says of it.
    pub fn view(&self) -> RunView {
        RunView {
            run_id: self.run_id.clone(),
            kind: self.kind,
            cluster: self.cluster.clone(),
            version: self.version.clone(),
            requested_by: self.requested_by.clone(),
            instance_id: self.instance_id.clone(),
            steps: self.steps_with_logs(),
            log_location: self.log_location.clone(),
            attempts: self.attempts.clone(),
            tests: self.tests.clone(),
        }
    }

    /// Its steps, each with its log's place once it has one.
    pub fn steps_with_logs(&self) -> Vec<StepResult> {
        self.steps.iter().cloned().map(|step| step.with_log(&self.log_location)).collect()
    }

    pub fn failed_steps(&self) -> Vec<&str> {
        self.steps.iter().filter(|s| s.status == StepStatus::Failed).map(|s| s.name.as_str()).collect()
    }

    pub fn skipped_steps(&self) -> Vec<&str> {
        self.steps.iter().filter(|s| s.status == StepStatus::Skipped).map(|s| s.name.as_str()).collect()
    }
}

/// Step results from what the instance wrote: `name -> {status, exit_code, started_at, ended_at}`,
/// in plan order.
pub fn step_results(order: &[String], reported: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<StepResult> {
    order
        .iter()
        .map(|name| {
            let fields = reported.get(name);
            let field = |key: &str| fields.and_then(|f| f.get(key)).cloned();
            let started = field("started_at");
            let ended = field("ended_at");
            let duration = match (&started, &ended) {
                (Some(a), Some(b)) => match (a.parse::<Timestamp>(), b.parse::<Timestamp>()) {
                    (Ok(a), Ok(b)) => Some(b.duration_since(a).as_secs_f64().max(0.0)),
                    _ => None,
                },
                _ => None,
            };
            // A status this version does not know is shown as not yet reported.
            let status = field("status").and_then(|s| StepStatus::parse(&s)).unwrap_or(StepStatus::Pending);
            StepResult {
                name: name.clone(),
                status,
                reason: field("reason"),
                exit_code: field("exit_code").and_then(|c| c.parse().ok()).filter(|c: &i64| *c >= 0),
                duration_seconds: duration
                    .filter(|_| ended.is_some() && !matches!(status, StepStatus::Pending | StepStatus::Running)),
                started_at: started,
                ended_at: ended,
                log: None,
                tests: field("tests").and_then(|json| StepTests::parse(&json)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn launch_tokens_fit_ec2_for_the_longest_run_ids_and_differ_by_run_and_attempt() {
        let now: Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
        let longest = ClusterName::parse(&"c".repeat(crate::domain::names::MAX_CLUSTER_NAME_LEN)).unwrap();
        let ids = [
            RunId::new(RunKind::Build, &longest, now),
            RunId::new(RunKind::Build, &longest, now),
            RunId::parse(&format!("build-{}", "9".repeat(94))).unwrap(),
        ];
        let mut tokens = std::collections::HashSet::new();
        for id in &ids {
            for attempt in [1, 2, 11, u32::MAX] {
                for choice in [0, 1, 10, u32::MAX] {
                    let token = id.launch_token(attempt, choice);
                    assert!(token.len() <= EC2_CLIENT_TOKEN_LIMIT && token.is_ascii(), "{token}");
                    assert_eq!(token, id.launch_token(attempt, choice), "a retry asks with the same token");
                    assert!(tokens.insert(token), "one token per run, attempt and choice");
                }
            }
        }
        assert!(ids[0].as_str().len() > EC2_CLIENT_TOKEN_LIMIT, "the run id itself would not fit: {}", ids[0]);
    }

    #[test]
    fn run_ids_are_unique_safe_and_know_their_kind() {
        let now: Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
        let cluster = ClusterName::parse("ci-1").unwrap();
        let a = RunId::new(RunKind::Test, &cluster, now);
        let b = RunId::new(RunKind::Build, &cluster, now);
        assert!(a.as_str().starts_with("test-ci-1-20261123t120000-"), "{a}");
        assert_eq!((a.kind(), b.kind()), (RunKind::Test, RunKind::Build));
        assert_eq!(RunId::parse(a.as_str()).unwrap(), a);
        for bad in ["", "x-1", "test-$(id)", "test-A", "build-a b", &format!("test-{}", "a".repeat(100))] {
            assert_eq!(RunId::parse(bad).unwrap_err().code(), "InvalidRequest", "{bad}");
        }
    }

    #[test]
    fn runner_image_events_start_for_an_architecture_or_resume() {
        assert_eq!(
            RunnerImageRequest::parse(json!({})).unwrap(),
            RunnerImageRequest::Start { architecture: None, wait_seconds: None, requested_by: None }
        );
        let x86 = RunnerImageRequest::parse(json!({"architecture": "x86_64", "wait_seconds": 0})).unwrap();
        assert!(
            matches!(x86, RunnerImageRequest::Start { architecture: Some(a), wait_seconds: Some(0), .. } if a == "x86_64")
        );
        let resume =
            RunnerImageRequest::parse(json!({"run_id": "image-ci-runner-image-20261203t120000-ab12"})).unwrap();
        assert!(matches!(resume, RunnerImageRequest::Resume { .. }));
        for bad in [
            json!({"architecture": "riscv"}),
            json!({"architecture": 64}),
            json!({"cluster": "ci-1"}),
            json!({"wait_seconds": 841}),
            json!({"run_id": "test-ci-1-20261123t120000-ab12"}),
            json!({"run_id": "image-x", "architecture": "arm64"}),
        ] {
            assert_eq!(RunnerImageRequest::parse(bad.clone()).unwrap_err().code(), "InvalidRequest", "{bad}");
        }
    }

    #[test]
    fn run_events_start_or_resume() {
        assert_eq!(
            RunRequest::parse(json!({"cluster": "ci-1", "version": "main"})).unwrap(),
            RunRequest::Start {
                cluster: ClusterName::parse("ci-1").unwrap(),
                version: GitRef::parse("main").unwrap(),
                wait_seconds: None,
                hold_minutes: 0,
                requested_by: None,
            }
        );
        let held = RunRequest::parse(json!({"cluster": "ci-1", "version": "main", "hold_minutes": 240})).unwrap();
        assert!(matches!(held, RunRequest::Start { hold_minutes: 240, .. }));
        let resume =
            RunRequest::parse(json!({"run_id": "test-ci-1-20261123t120000-ab12", "wait_seconds": 30})).unwrap();
        assert_eq!(resume.wait_seconds(), Some(30));
        let bad = [
            json!({"cluster": "ci-1"}),
            json!({"cluster": "ci-1", "version": "main;id"}),
            json!({"cluster": "ci-1", "version": "main", "wait_seconds": 841}),
            json!({"cluster": "ci-1", "version": "main", "wait_seconds": -1}),
            json!({"cluster": "ci-1", "version": "main", "extra": 1}),
            json!({"cluster": "ci-1", "version": "main", "hold_minutes": 241}),
            json!({"cluster": "ci-1", "version": "main", "hold_minutes": -1}),
            json!({"run_id": "test-ci-1-20261123t120000-ab12", "hold_minutes": 5}),
            json!({"run_id": "test-x", "cluster": "ci-1"}),
            json!({"run_id": "nope"}),
        ];
        for event in bad {
            assert_eq!(RunRequest::parse(event.clone()).unwrap_err().code(), "InvalidRequest", "{event}");
        }
    }
}
