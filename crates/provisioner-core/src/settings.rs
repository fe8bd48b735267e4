//! The functions' settings: the environment template.yaml (or the local stack) gives them, read in
//! one place. Each function asks for the ones it needs; a missing one stops it at start-up with a
//! sentence naming the variable.

use std::collections::BTreeMap;

use crate::domain::attempt::RunnerRoles;
use crate::domain::RunKind;

/// The account's settings that cluster stacks take as parameters, by parameter name; an empty
/// value leaves the template's default.
pub type ClusterSettings = BTreeMap<String, String>;

/// Where destroy schedules live and what they invoke.
#[derive(Debug, Clone)]
pub struct ScheduleTarget {
    pub group: String,
    pub destroy_function_arn: String,
    pub role_arn: String,
    pub dead_letter_arn: Option<String>,
}

/// Account-specific settings of runs (template.yaml sets them).
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub region: String,
    pub table: String,
    pub log_bucket: String,
    pub repository: String,
    pub build_image: String,
    pub registry: String,
    pub domain: String,
    pub project_bucket: String,
    pub project_folder: String,
    pub github_token_secret: Option<String>,
    /// The role a TEST run's instance hands the steps that read cloud data (the Lua selftests).
    pub step_role_arn: Option<String>,
    /// The instance profiles TEST and BUILD instances launch with (each its own runner role).
    pub test_instance_profile: Option<String>,
    pub build_instance_profile: Option<String>,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub runner_roles: RunnerRoles,
}

impl RunSettings {
    /// The instance profile runs of `kind` launch with.
    pub fn instance_profile(&self, kind: RunKind) -> Option<&String> {
        match kind {
            // The runner image run carries out TEST steps, with what they may do.
            RunKind::Test | RunKind::RunnerImage => self.test_instance_profile.as_ref(),
            RunKind::Build => self.build_instance_profile.as_ref(),
        }
    }
}

/// The account's settings that cluster stacks take as parameters: (template parameter, variable).
/// Empty ones leave the cluster template's default.
pub const CLUSTER_SETTINGS: &[(&str, &str)] = &[
    ("Domain", DOMAIN),
    ("HostedZoneId", "PROVISIONER_HOSTED_ZONE_ID"),
    ("ContainerRegistry", CONTAINER_REGISTRY),
    ("ProjectBucket", PROJECT_BUCKET),
    ("ProjectPublicBucket", "PROVISIONER_PROJECT_PUBLIC_BUCKET"),
    // Where a destroy keeps the cluster's container logs (the run-log bucket).
    ("LogBucket", RUN_LOG_BUCKET),
    ("ProjectFolder", PROJECT_FOLDER),
    ("JwtIssuer", "PROVISIONER_JWT_ISSUER"),
    ("PublicDataBuckets", "PROVISIONER_PUBLIC_DATA_BUCKETS"),
    ("AlertStream", "PROVISIONER_ALERT_STREAM"),
    ("TelemetryStream", "PROVISIONER_TELEMETRY_STREAM"),
];

/// Cluster settings that TEST and BUILD read too.
pub const DOMAIN: &str = "PROVISIONER_DOMAIN";
pub const CONTAINER_REGISTRY: &str = "PROVISIONER_CONTAINER_REGISTRY";
pub const PROJECT_BUCKET: &str = "PROVISIONER_PROJECT_BUCKET";
pub const PROJECT_FOLDER: &str = "PROVISIONER_PROJECT_FOLDER";

/// The other variables, each read by the functions named.
pub const TABLE: &str = "PROVISIONER_TABLE"; // all
pub const SCHEDULE_GROUP: &str = "PROVISIONER_SCHEDULE_GROUP"; // deploy, schedule_destroy, destroy
pub const DESTROY_FUNCTION_ARN: &str = "PROVISIONER_DESTROY_FUNCTION_ARN";
pub const SCHEDULER_ROLE_ARN: &str = "PROVISIONER_SCHEDULER_ROLE_ARN";
pub const DEAD_LETTER_ARN: &str = "PROVISIONER_DEAD_LETTER_ARN";
pub const RUN_LOG_BUCKET: &str = "PROVISIONER_RUN_LOG_BUCKET"; // test, build
pub const REPOSITORY_URL: &str = "PROVISIONER_REPOSITORY_URL";
pub const BUILD_IMAGE: &str = "PROVISIONER_BUILD_IMAGE";
/// The Secrets Manager secret (name or ARN) holding the GitHub token of the client tests.
pub const GITHUB_TOKEN_SECRET: &str = "PROVISIONER_GITHUB_TOKEN_SECRET";
/// Each run kind launches with its own instance profile: only BUILD's may push images.
pub const TEST_RUNNER_INSTANCE_PROFILE: &str = "PROVISIONER_TEST_RUNNER_INSTANCE_PROFILE";
pub const BUILD_RUNNER_INSTANCE_PROFILE: &str = "PROVISIONER_BUILD_RUNNER_INSTANCE_PROFILE";
/// The unique ids of those profiles' roles (`AROA…`): each instance reports under its caller id,
/// ROLE-ID:INSTANCE-ID, the only item its role may write.
pub const TEST_RUNNER_ROLE_ID: &str = "PROVISIONER_TEST_RUNNER_ROLE_ID";
/// The role whose temporary credentials a TEST instance gives the steps that read cloud data: the
/// instance role's own never reach the repository's code.
pub const TEST_STEP_ROLE_ARN: &str = "PROVISIONER_TEST_STEP_ROLE_ARN";
pub const BUILD_RUNNER_ROLE_ID: &str = "PROVISIONER_BUILD_RUNNER_ROLE_ID";
/// The SNS topic alerts go to (all functions); without it, alerts are only logged.
pub const ALERT_TOPIC_ARN: &str = "PROVISIONER_ALERT_TOPIC_ARN";
/// Comma-separated lists; empty means the default VPC's.
pub const RUNNER_SUBNETS: &str = "PROVISIONER_RUNNER_SUBNETS";
pub const RUNNER_SECURITY_GROUPS: &str = "PROVISIONER_RUNNER_SECURITY_GROUPS";

/// The local stack's alone: a file holding how many seconds its clock was moved forward
/// (`make local-advance`). Unset on AWS, where the functions read the system clock.
pub const LOCAL_CLOCK_FILE: &str = "PROVISIONER_LOCAL_CLOCK_FILE";

/// The variables that were set, each trimmed; unset and empty are the same.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

impl Settings {
    pub fn from_env() -> Settings {
        Settings::from_lookup(|name| std::env::var(name).ok())
    }

    /// Settings from any source of variables (tests give a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Settings {
        let names =
            CLUSTER_SETTINGS.iter().map(|(_, variable)| *variable).chain(OTHER_VARIABLES).chain(LOCAL_STACK_VARIABLES);
        let values = names
            .filter_map(|name| Some((name.to_owned(), lookup(name)?.trim().to_owned())))
            .filter(|(_, value)| !value.is_empty())
            .collect();
        Settings { values }
    }

    fn optional(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }

    fn required(&self, name: &str) -> Result<String, String> {
        self.optional(name)
            .ok_or_else(|| format!("the environment variable {name} is not set; the provisioner's template sets it"))
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.optional(name)
            .map(|value| value.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }

    /// The DynamoDB table of locks and run records.
    pub fn table(&self) -> Result<String, String> {
        self.required(TABLE)
    }

    /// The runner roles whose instances' reports runs are read with.
    pub fn runner_roles(&self) -> RunnerRoles {
        RunnerRoles { test: self.optional(TEST_RUNNER_ROLE_ID), build: self.optional(BUILD_RUNNER_ROLE_ID) }
    }

    /// The clock the functions read: the system's, or on the local stack the one it moves.
    pub fn clock(&self) -> std::sync::Arc<dyn crate::ports::Clock> {
        match self.optional(LOCAL_CLOCK_FILE) {
            Some(file) => std::sync::Arc::new(crate::ports::MovedClock::new(file.into())),
            None => std::sync::Arc::new(crate::ports::SystemClock),
        }
    }

    /// The alert topic, when the template made one.
    pub fn alert_topic(&self) -> Option<String> {
        self.optional(ALERT_TOPIC_ARN)
    }

    /// Where destroy schedules go and what they invoke.
    pub fn schedule_target(&self) -> Result<ScheduleTarget, String> {
        Ok(ScheduleTarget {
            group: self.required(SCHEDULE_GROUP)?,
            destroy_function_arn: self.required(DESTROY_FUNCTION_ARN)?,
            role_arn: self.required(SCHEDULER_ROLE_ARN)?,
            dead_letter_arn: self.optional(DEAD_LETTER_ARN),
        })
    }

    /// The parameters every cluster stack gets from the account, and the provisioner's version.
    pub fn cluster_parameters(&self) -> ClusterSettings {
        let mut parameters: ClusterSettings = CLUSTER_SETTINGS
            .iter()
            .filter_map(|(parameter, variable)| Some(((*parameter).to_owned(), self.optional(variable)?)))
            .collect();
        parameters
            .insert("EnvironmentVersion".into(), concat!("sliderule-provisioner-", env!("CARGO_PKG_VERSION")).into());
        parameters
    }

    /// What runs need, in `region` (the SDK's). A function is given the instance profiles of
    /// the kinds of run it may launch (and the role to pass exactly those).
    pub fn runs(&self, region: Option<String>) -> Result<RunSettings, String> {
        Ok(RunSettings {
            region: region.ok_or("no AWS region is configured (AWS_REGION)")?,
            table: self.table()?,
            log_bucket: self.required(RUN_LOG_BUCKET)?,
            repository: self.required(REPOSITORY_URL)?,
            build_image: self.required(BUILD_IMAGE)?,
            registry: self.required(CONTAINER_REGISTRY)?,
            domain: self.required(DOMAIN)?,
            project_bucket: self.optional(PROJECT_BUCKET).unwrap_or_default(),
            project_folder: self.optional(PROJECT_FOLDER).unwrap_or_default(),
            github_token_secret: self.optional(GITHUB_TOKEN_SECRET),
            step_role_arn: self.optional(TEST_STEP_ROLE_ARN),
            test_instance_profile: self.optional(TEST_RUNNER_INSTANCE_PROFILE),
            build_instance_profile: self.optional(BUILD_RUNNER_INSTANCE_PROFILE),
            subnets: self.list(RUNNER_SUBNETS),
            security_groups: self.list(RUNNER_SECURITY_GROUPS),
            runner_roles: self.runner_roles(),
        })
    }
}

/// What only the local stack sets (the template never does).
const LOCAL_STACK_VARIABLES: [&str; 1] = [LOCAL_CLOCK_FILE];

const OTHER_VARIABLES: [&str; 17] = [
    ALERT_TOPIC_ARN,
    TABLE,
    SCHEDULE_GROUP,
    DESTROY_FUNCTION_ARN,
    SCHEDULER_ROLE_ARN,
    DEAD_LETTER_ARN,
    RUN_LOG_BUCKET,
    REPOSITORY_URL,
    BUILD_IMAGE,
    GITHUB_TOKEN_SECRET,
    TEST_RUNNER_INSTANCE_PROFILE,
    BUILD_RUNNER_INSTANCE_PROFILE,
    TEST_RUNNER_ROLE_ID,
    BUILD_RUNNER_ROLE_ID,
    TEST_STEP_ROLE_ARN,
    RUNNER_SUBNETS,
    RUNNER_SECURITY_GROUPS,
];

/// Whether `parameter` of a cluster template is set from the account's settings.
pub fn is_cluster_setting(parameter: &str) -> bool {
    CLUSTER_SETTINGS.iter().any(|(p, _)| *p == parameter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let map: BTreeMap<&str, &str> = pairs.iter().copied().collect();
        Settings::from_lookup(|name| map.get(name).map(|v| (*v).to_owned()))
    }

    const RUN_VARIABLES: [(&str, &str); 7] = [
        (TABLE, "state"),
        (RUN_LOG_BUCKET, "logs"),
        (REPOSITORY_URL, "https://github.com/SlideRuleEarth/sliderule.git"),
        (BUILD_IMAGE, "build:latest"),
        (CONTAINER_REGISTRY, "123456789012.dkr.ecr.us-west-2.amazonaws.com"),
        (DOMAIN, "slideruleearth.io"),
        (RUNNER_SUBNETS, " subnet-a, ,subnet-b "),
    ];

    #[test]
    fn a_missing_variable_is_named_and_empty_counts_as_missing() {
        let empty = settings(&[(TABLE, "  "), (SCHEDULE_GROUP, "g"), (DESTROY_FUNCTION_ARN, "arn:d")]);
        assert_eq!(
            empty.table().unwrap_err(),
            "the environment variable PROVISIONER_TABLE is not set; the provisioner's template sets it"
        );
        assert!(empty.schedule_target().unwrap_err().contains(SCHEDULER_ROLE_ARN));
        let runs = settings(&RUN_VARIABLES[..6]);
        assert!(runs.runs(None).unwrap_err().contains("AWS_REGION"));
        assert!(settings(&RUN_VARIABLES[1..]).runs(Some("us-west-2".into())).unwrap_err().contains(TABLE));
    }

    #[test]
    fn each_function_gets_what_the_template_gives() {
        let mut pairs = RUN_VARIABLES.to_vec();
        pairs.extend([
            (SCHEDULE_GROUP, "destroys"),
            (DESTROY_FUNCTION_ARN, "arn:destroy"),
            (SCHEDULER_ROLE_ARN, "arn:role"),
            (BUILD_RUNNER_INSTANCE_PROFILE, "builder"),
            ("PROVISIONER_HOSTED_ZONE_ID", ""),
        ]);
        let settings = settings(&pairs);
        let target = settings.schedule_target().unwrap();
        assert_eq!((target.group.as_str(), target.dead_letter_arn), ("destroys", None));
        let runs = settings.runs(Some("us-west-2".into())).unwrap();
        assert_eq!(runs.subnets, ["subnet-a", "subnet-b"]);
        assert_eq!(
            (runs.instance_profile(RunKind::Build).map(String::as_str), runs.project_bucket.as_str()),
            (Some("builder"), "")
        );
        assert_eq!(runs.instance_profile(RunKind::Test), None);
        let parameters = settings.cluster_parameters();
        assert_eq!(parameters.get("Domain").map(String::as_str), Some("slideruleearth.io"));
        assert!(!parameters.contains_key("HostedZoneId"), "an empty setting leaves the template's default");
        assert!(parameters["EnvironmentVersion"].starts_with("sliderule-provisioner-"));
    }

    #[test]
    fn the_template_sets_exactly_the_variables_read_here() {
        let template = include_str!("../../../template.yaml");
        let mut set: Vec<&str> = template
            .lines()
            .filter_map(|line| line.trim().split_once(':').map(|(key, _)| key))
            .filter(|key| key.starts_with("PROVISIONER_"))
            .collect();
        set.sort();
        let mut read: Vec<&str> =
            CLUSTER_SETTINGS.iter().map(|(_, variable)| *variable).chain(OTHER_VARIABLES).collect();
        read.sort();
        read.dedup();
        assert_eq!(set, read);
    }

    #[test]
    fn every_cluster_setting_is_a_parameter_of_the_shipped_cluster_template() {
        let template = include_str!("../../../clusters/sliderule-cluster.yaml");
        for (parameter, _) in CLUSTER_SETTINGS {
            assert!(template.contains(&format!("\n  {parameter}:\n")), "{parameter}");
        }
    }
}
