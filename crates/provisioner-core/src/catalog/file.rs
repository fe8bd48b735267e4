//! The shapes of `clusters/catalog.yaml`, as read (and as its JSON Schema says), with their defaults.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::domain::{Attempt, AttemptOutcome, Market, RunKind};
use crate::domain::{ClusterName, GitRef};
use crate::instance::{Layout, Plan};

use super::*;

/// The catalog file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    /// Profiles, tried in order; the first whose `match` accepts a cluster name is used.
    pub profiles: Vec<ProfileFile>,
    /// What TEST and BUILD instances run.
    pub plans: Plans,
    /// Hourly prices of the instance types clusters and runs use: what status reports costs from.
    pub prices: Prices,
    /// Whose runner the runner image run uses and what it checks out; none: no runner image.
    #[serde(default)]
    pub runner_image: Option<RunnerImageFile>,
}

/// The runner image run, as the catalog names it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunnerImageFile {
    /// The name its run carries: its profile's runner launches it, and its budget pays for it.
    #[schemars(with = "String")]
    pub cluster: ClusterName,
    /// The version it checks out, whose client environments and browsers it caches.
    #[schemars(with = "String")]
    pub version: GitRef,
}

/// A profile's caps on concurrent runs, per kind; no cap when absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCaps {
    #[schemars(range(min = 1))]
    pub test: Option<u32>,
    #[schemars(range(min = 1))]
    pub build: Option<u32>,
}

impl RunCaps {
    /// The runner image run has no cap: one per architecture is active at most.
    pub fn of(&self, kind: RunKind) -> Option<u32> {
        match kind {
            RunKind::Test => self.test,
            RunKind::Build => self.build,
            RunKind::RunnerImage => None,
        }
    }
}

/// The plans of the two kinds of run, and the repository layouts they run on.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plans {
    /// The layouts the SlideRule repository has had, tried in order on each checkout.
    pub layouts: Vec<Layout>,
    /// With the steps only the runner image run runs (`image: only`), which TEST runs leave out.
    pub test: Plan,
    pub build: Plan,
    /// The TEST steps of the runner image (`image` set), derived when the catalog loads.
    #[serde(skip, default = "no_plan")]
    #[schemars(skip)]
    pub runner_image: Plan,
}

fn no_plan() -> Plan {
    Plan::new(Vec::new())
}

impl Plans {
    /// The plan a run of `kind` carries out.
    pub fn of(&self, kind: RunKind) -> &Plan {
        match kind {
            RunKind::Test => &self.test,
            RunKind::Build => &self.build,
            RunKind::RunnerImage => &self.runner_image,
        }
    }
}

/// One profile as written in the catalog.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    /// A short identifier, unique in the catalog.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9-]{0,39}$"))]
    pub name: String,
    /// What the profile is for.
    #[serde(default)]
    pub description: String,
    /// Cluster names this profile accepts: exact names, or patterns where `*` stands for any
    /// run of characters (`ci-*`).
    #[serde(rename = "match")]
    #[schemars(length(min = 1))]
    pub patterns: Vec<String>,
    /// File name of a CloudFormation template under `clusters/`.
    pub template: String,
    /// The version a deploy without one runs: a git ref or one of the repository's image tags
    /// (`latest` for the newest release, `unstable` for main).
    pub version: String,
    /// The image repositories the template runs at the version's tag: a deploy checks that each
    /// holds the tag before it creates anything.
    #[schemars(length(min = 1))]
    pub images: Vec<String>,
    /// Template parameters, besides those the provisioner sets (`is_provided`).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// The spot instances that run this cluster's TEST and BUILD.
    #[serde(default)]
    pub runner: RunnerProfile,
    /// A deploy that creates a cluster schedules its destroy this long after; none when absent.
    #[serde(default)]
    #[schemars(range(min = 10, max = 10080))]
    pub default_ttl_minutes: Option<u32>,
    /// The longest a destroy may be scheduled ahead, and the age past which the sweeper destroys
    /// a cluster that has no destroy schedule; no limit when absent.
    #[serde(default)]
    #[schemars(range(min = 10, max = 10080))]
    pub max_ttl_minutes: Option<u32>,
    /// Caps on concurrent runs of this profile's clusters, per kind.
    #[serde(default)]
    pub max_concurrent_runs: RunCaps,
    /// The instances a cluster of this profile runs, for its cost.
    #[serde(default)]
    pub instances: Vec<ClusterInstances>,
    /// What this profile's clusters and runs may cost in a calendar month (UTC), estimated from
    /// the price table: once reached, what would add cost (a deploy that creates, a run) is
    /// refused with `BudgetExceeded`. Nothing running is stopped. No budget when absent.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub monthly_budget_usd: Option<f64>,
}

/// The instances of a profile's runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunnerProfile {
    /// `arm64` or `x86_64`: picks the Amazon Linux 2023 AMI.
    #[serde(default = "default_architecture")]
    pub architecture: String,
    /// Tried in order until one has spot capacity.
    #[serde(default = "default_instance_types")]
    #[schemars(length(min = 1))]
    pub instance_types: Vec<String>,
    /// Size of the encrypted root volume.
    #[serde(default = "default_volume_gb")]
    pub volume_gb: i32,
    /// The deadman: the instance powers off (and terminates) this long after boot. Each attempt
    /// has its own; a held instance adds its hold.
    #[serde(default = "default_time_limit_minutes")]
    pub time_limit_minutes: u32,
    /// Attempts a run may take when the cloud ends one (interruption, lost, boot timeout, capacity).
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1, max = 5))]
    pub max_attempts: u32,
    /// Whether the last attempt runs on demand, and an attempt that no type or subnet has spot
    /// capacity for falls back to on-demand instead of ending `CapacityUnavailable`.
    #[serde(default = "default_on_demand_fallback")]
    pub on_demand_fallback: bool,
    /// An attempt whose instance has not reported its first step this long after launch is
    /// terminated and retried as `boot_timeout`.
    #[serde(default = "default_boot_timeout_minutes")]
    #[schemars(range(min = 2, max = 60))]
    pub boot_timeout_minutes: u32,
    /// A TEST run launches from the newest runner image of its architecture and plan no older than
    /// this; from the plain Amazon Linux AMI when there is none.
    #[serde(default = "default_runner_image_max_age_days")]
    #[schemars(range(min = 1, max = 90))]
    pub runner_image_max_age_days: u32,
    /// The alert of a failed TEST run none of whose test failures is new (each failed the
    /// previous run too): `one_line` (a short alert) or `none`.
    #[serde(default)]
    pub known_failures_alert: KnownFailuresAlert,
    /// What recent failed launches and interruptions change in where runs launch.
    #[serde(default)]
    pub launch_memory: LaunchMemory,
}

pub use crate::domain::launch_log::LaunchMemory;

/// How a failed TEST run with no new test failure is alerted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KnownFailuresAlert {
    /// One line: the run, and that it has no new failure.
    #[default]
    OneLine,
    /// No alert: the nightly's summary still shows it.
    None,
}

fn default_runner_image_max_age_days() -> u32 {
    14
}

fn default_max_attempts() -> u32 {
    3
}

fn default_on_demand_fallback() -> bool {
    true
}

fn default_boot_timeout_minutes() -> u32 {
    10
}

fn default_architecture() -> String {
    "arm64".into()
}

fn default_instance_types() -> Vec<String> {
    vec!["c7g.2xlarge".into(), "m7g.2xlarge".into(), "c6g.2xlarge".into()]
}

fn default_volume_gb() -> i32 {
    100
}

fn default_time_limit_minutes() -> u32 {
    180
}

impl Default for RunnerProfile {
    fn default() -> Self {
        RunnerProfile {
            architecture: default_architecture(),
            instance_types: default_instance_types(),
            volume_gb: default_volume_gb(),
            time_limit_minutes: default_time_limit_minutes(),
            max_attempts: default_max_attempts(),
            on_demand_fallback: default_on_demand_fallback(),
            boot_timeout_minutes: default_boot_timeout_minutes(),
            runner_image_max_age_days: default_runner_image_max_age_days(),
            known_failures_alert: KnownFailuresAlert::default(),
            launch_memory: LaunchMemory::default(),
        }
    }
}

impl RunnerProfile {
    /// Attempt `number` of a run that starts it `now`: on demand when it is the last of several
    /// and the profile says so; its check-in deadline and time limit from the profile.
    pub fn attempt(&self, number: u32, now: Timestamp) -> Attempt {
        let last = number > 1 && number >= self.max_attempts;
        Attempt {
            number,
            instance_id: None,
            market: if last && self.on_demand_fallback { Market::OnDemand } else { Market::Spot },
            instance_type: None,
            started_at: now,
            ended_at: None,
            outcome: AttemptOutcome::Running,
            check_in_by: now + SignedDuration::from_mins(i64::from(self.boot_timeout_minutes)),
            deadline: now + SignedDuration::from_mins(i64::from(self.time_limit_minutes)),
            step: None,
            log_location: String::new(),
        }
    }

    pub(super) fn check(&self, profile: &str) -> Result<(), String> {
        if !matches!(self.architecture.as_str(), "arm64" | "x86_64") {
            return Err(format!(
                "profile '{profile}' has runner architecture '{}'; use arm64 or x86_64",
                self.architecture
            ));
        }
        let instance_type = |t: &String| {
            !t.is_empty()
                && t.len() <= 32
                && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        };
        if self.instance_types.is_empty() || !self.instance_types.iter().all(instance_type) {
            return Err(format!("profile '{profile}' needs runner instance types such as c7g.2xlarge"));
        }
        if !(8..=2000).contains(&self.volume_gb) {
            return Err(format!("profile '{profile}' has a runner volume of {} GB; use 8 to 2000", self.volume_gb));
        }
        if !(10..=720).contains(&self.time_limit_minutes) {
            return Err(format!(
                "profile '{profile}' has a runner time limit of {} minutes; use 10 to 720",
                self.time_limit_minutes
            ));
        }
        let memory = self.launch_memory;
        let memory_ok = (1..=1440).contains(&memory.avoid_minutes)
            && (1..=100).contains(&memory.interruptions)
            && (1..=1440).contains(&memory.on_demand_minutes);
        if !memory_ok {
            return Err(format!(
                "profile '{profile}' has launch_memory {memory:?}; use avoid_minutes and on_demand_minutes of 1 to 1440, \
                 interruptions of 1 to 100"
            ));
        }
        if !(1..=90).contains(&self.runner_image_max_age_days) {
            return Err(format!(
                "profile '{profile}' accepts runner images {} days old; use 1 to 90",
                self.runner_image_max_age_days
            ));
        }
        if !(1..=5).contains(&self.max_attempts) {
            return Err(format!("profile '{profile}' allows {} runner attempts; use 1 to 5", self.max_attempts));
        }
        if !(2..=60).contains(&self.boot_timeout_minutes) || self.boot_timeout_minutes >= self.time_limit_minutes {
            return Err(format!(
                "profile '{profile}' has a runner boot timeout of {} minutes; use 2 to 60, under its time limit",
                self.boot_timeout_minutes
            ));
        }
        Ok(())
    }
}
