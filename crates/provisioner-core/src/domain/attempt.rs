//! A run's attempts: one instance each. An attempt that the cloud ended (a spot interruption, a
//! vanished instance, one that never checked in, no capacity) is followed by another under the
//! same run id, from a clean start, up to the profile's `max_attempts`; a failed step is never
//! retried.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// How an attempt's instance is bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Market {
    #[serde(rename = "spot")]
    Spot,
    #[serde(rename = "on-demand")]
    OnDemand,
}

impl Market {
    pub fn as_str(self) -> &'static str {
        match self {
            Market::Spot => "spot",
            Market::OnDemand => "on-demand",
        }
    }
}

impl fmt::Display for Market {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an attempt ended (the contract's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Running,
    /// The instance reported its last step.
    Completed,
    /// A spot interruption.
    Interrupted,
    /// The instance vanished without reporting.
    Lost,
    /// It never reported its first step within the profile's `boot_timeout_minutes`.
    BootTimeout,
    /// It could not be launched.
    Capacity,
    /// The run reached its time limit: never retried.
    TimedOut,
    Cancelled,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Running => "running",
            AttemptOutcome::Completed => "completed",
            AttemptOutcome::Interrupted => "interrupted",
            AttemptOutcome::Lost => "lost",
            AttemptOutcome::BootTimeout => "boot_timeout",
            AttemptOutcome::Capacity => "capacity",
            AttemptOutcome::TimedOut => "timed_out",
            AttemptOutcome::Cancelled => "cancelled",
        }
    }

    /// Ended for a reason of the cloud: another attempt may follow.
    pub fn is_cloud(self) -> bool {
        matches!(
            self,
            AttemptOutcome::Interrupted | AttemptOutcome::Lost | AttemptOutcome::BootTimeout | AttemptOutcome::Capacity
        )
    }
}

/// One attempt of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first.
    pub number: u32,
    /// None until launched, and for one that could not be.
    pub instance_id: Option<String>,
    pub market: Market,
    /// The instance type it runs on, once launched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub outcome: AttemptOutcome,
    /// When its instance must report its first step, or be replaced (`boot_timeout`).
    pub check_in_by: Timestamp,
    /// Its time limit: its instance powers off then.
    pub deadline: Timestamp,
    /// The step it was in when the cloud ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Where its instance writes its step logs ([`instance_log_location`]); empty until the
    /// attempt has an instance.
    #[serde(default)]
    pub log_location: String,
}

impl Attempt {
    /// `i-… (spot) interrupted in step unit-tests`: how an alert and `RunLost` name it.
    pub fn describe(&self) -> String {
        let instance = self.instance_id.as_deref().unwrap_or("no instance");
        let step = self.step.as_deref().map(|step| format!(" in step {step}")).unwrap_or_default();
        format!("attempt {}: {instance} ({}) {}{step}", self.number, self.market, self.outcome.as_str())
    }
}

/// The unique ids of the roles run instances carry (IAM's `RoleId`, `AROA…`). AWS names an
/// instance profile's session after its instance, so an instance calls as ROLE-ID:INSTANCE-ID
/// (`aws:userid`): the name of its report and of its log prefix, the only ones its role may write.
#[derive(Debug, Clone, Default)]
pub struct RunnerRoles {
    pub test: Option<String>,
    pub build: Option<String>,
}

impl RunnerRoles {
    /// `aws:userid` of `instance_id`, launched for a run of `kind`; None when the role is unknown.
    pub fn caller(&self, kind: super::RunKind, instance_id: &str) -> Option<String> {
        let role = match kind {
            // The runner image run carries out TEST steps, with the TEST role.
            super::RunKind::Test | super::RunKind::RunnerImage => self.test.as_ref(),
            super::RunKind::Build => self.build.as_ref(),
        }?;
        Some(format!("{role}:{instance_id}"))
    }
}

/// Where the instance calling as `caller` ([`RunnerRoles::caller`]) writes its step logs in the
/// run-log `bucket`: `s3://<bucket>/runs/<caller>/`, the one prefix its role may write. Each
/// attempt has its own instance, so a retry keeps the logs of the attempts before it.
pub fn instance_log_location(bucket: &str, caller: &str) -> String {
    format!("s3://{bucket}/runs/{caller}/")
}

/// What was said of every attempt, for `RunLost` and its alert.
pub fn describe_all(attempts: &[Attempt]) -> String {
    attempts.iter().map(Attempt::describe).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_serialize_as_the_contract_names_them_and_read_back() {
        let at: Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
        let attempt = Attempt {
            number: 2,
            instance_id: Some("i-1".into()),
            market: Market::OnDemand,
            instance_type: None,
            started_at: at,
            ended_at: None,
            outcome: AttemptOutcome::BootTimeout,
            check_in_by: at,
            deadline: at,
            step: None,
            log_location: instance_log_location("b", "AROAX:i-1"),
        };
        let json = serde_json::to_value(&attempt).unwrap();
        assert_eq!(json["market"], "on-demand");
        assert_eq!(json["outcome"], "boot_timeout");
        assert_eq!(json["started_at"], "2026-11-23T12:00:00Z");
        assert_eq!(json["ended_at"], serde_json::Value::Null);
        assert_eq!(json["log_location"], "s3://b/runs/AROAX:i-1/");
        assert_eq!(serde_json::from_value::<Attempt>(json).unwrap(), attempt);
        assert_eq!(attempt.describe(), "attempt 2: i-1 (on-demand) boot_timeout");
    }

    #[test]
    fn only_the_clouds_endings_are_retried() {
        use AttemptOutcome::*;
        let retried: Vec<_> = [Running, Completed, Interrupted, Lost, BootTimeout, Capacity, TimedOut, Cancelled]
            .into_iter()
            .filter(|o| o.is_cloud())
            .collect();
        assert_eq!(retried, vec![Interrupted, Lost, BootTimeout, Capacity]);
    }
}
