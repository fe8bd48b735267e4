//! The names and tags of what the provisioner makes: a cluster's stack and destroy schedules
//! (and the cluster read back from their names), and the tags of stacks and run instances. (A
//! cluster's lock is an item of the table: `table::lock::key`.)

use jiff::Timestamp;

use super::ClusterName;

/// Every stack the provisioner creates is named with this prefix; IAM policies rely on it.
pub const STACK_NAME_PREFIX: &str = "sliderule-cluster-";
/// Every destroy schedule's name starts with this.
pub const DESTROY_SCHEDULE_PREFIX: &str = "destroy.";

/// Tags of stacks and instances.
pub mod tags {
    /// Every stack and instance the provisioner makes carries it (`true`): what the sweeper looks at.
    pub const PROVISIONER: &str = "sliderule:provisioner";
    pub const CLUSTER: &str = "sliderule:cluster";
    /// A stack's profile and version.
    pub const PROFILE: &str = "sliderule:profile";
    pub const VERSION: &str = "sliderule:version";
    /// The run an instance belongs to: how a run finds an instance it lost track of.
    pub const RUN_ID: &str = "sliderule:run-id";
    /// What a resource is: a run's instance (`test`, `build`), an image run's (`runner_image`), or
    /// a cluster's stack and what CloudFormation makes of it ([`CLUSTER_KIND`]). The sweeper's
    /// instance rules and the grants of the roles select by it.
    pub const KIND: &str = "sliderule:kind";
    /// The kind of a cluster's stack, which CloudFormation copies onto the cluster's instances.
    pub const CLUSTER_KIND: &str = "cluster";
    /// The stack that made a resource: CloudFormation sets it, and nobody else can (`aws:` is reserved).
    pub const CLOUDFORMATION_STACK: &str = "aws:cloudformation:stack-name";
    /// The Auto Scaling group that launched an instance (set by Auto Scaling alone).
    pub const AUTO_SCALING_GROUP: &str = "aws:autoscaling:groupName";
    /// Who asked for the stack or run (the events' `requested_by`), when they said.
    pub const REQUESTED_BY: &str = "sliderule:requested-by";
    /// Which attempt of its run an instance carries out (1 for the first).
    pub const ATTEMPT: &str = "sliderule:attempt";
    /// When the instance's run must have ended (RFC 3339): the sweeper terminates it after.
    pub const EXPIRES: &str = "sliderule:expires-at";
    /// A runner image's architecture, and the hash of the plan that made it.
    pub const ARCHITECTURE: &str = "sliderule:architecture";
    pub const PLAN_HASH: &str = "sliderule:plan-hash";
    /// The build-environment image a runner image's run pulled (its `BUILD_IMAGE`).
    pub const BUILD_IMAGE: &str = "sliderule:build-image";
    /// The digest of that image as the run pulled it, and the versions of the tools it installed.
    pub const BUILD_IMAGE_DIGEST: &str = "sliderule:build-image-digest";
    pub const TOOLS: &str = "sliderule:tools";
    /// The day a runner image was made (YYYY-MM-DD), for people; its age is EC2's CreationDate.
    pub const CREATED_ON: &str = "sliderule:created-on";
}

/// `sliderule-cluster-<name>`.
pub fn stack_name(cluster: &ClusterName) -> String {
    format!("{STACK_NAME_PREFIX}{cluster}")
}

/// The cluster a stack named by [`stack_name`] holds.
pub fn stack_cluster(stack_name: &str) -> Option<ClusterName> {
    ClusterName::parse(stack_name.strip_prefix(STACK_NAME_PREFIX)?).ok()
}

/// Prefix of every destroy schedule of `cluster`. The dot cannot occur in a cluster name, so
/// `destroy.ci-a.` never matches the schedules of `ci-ab`.
pub fn schedule_prefix(cluster: &ClusterName) -> String {
    format!("{DESTROY_SCHEDULE_PREFIX}{cluster}.")
}

/// The schedule that destroys `cluster` at `at`.
pub fn schedule_name(cluster: &ClusterName, at: Timestamp) -> String {
    format!("{}{}", schedule_prefix(cluster), at.strftime("%Y%m%dT%H%M%S"))
}

/// The cluster a destroy schedule named by [`schedule_name`] destroys.
/// When a schedule named by [`schedule_name`] fires.
pub fn scheduled_time(schedule_name: &str) -> Option<Timestamp> {
    let stamp = schedule_name.rsplit('.').next()?;
    let civil = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%S", stamp).ok()?;
    jiff::tz::TimeZone::UTC.to_timestamp(civil).ok()
}

pub fn scheduled_cluster(schedule_name: &str) -> Option<&str> {
    schedule_name.strip_prefix(DESTROY_SCHEDULE_PREFIX)?.split('.').next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::names::MAX_CLUSTER_NAME_LEN;

    /// What is named after a cluster fits AWS for the longest name a cluster may have: a schedule
    /// name 64 characters (Scheduler's model), a stack name 128 (CloudFormation's); and each gives
    /// its cluster back.
    #[test]
    fn names_derived_from_the_longest_cluster_name_fit_aws() {
        let longest = ClusterName::parse(&format!("c{}", "x".repeat(MAX_CLUSTER_NAME_LEN - 1))).unwrap();
        let name = schedule_name(&longest, "2026-12-31T23:59:59Z".parse().unwrap());
        assert!(name.len() <= 64, "{name}: {} characters", name.len());
        assert_eq!(scheduled_cluster(&name), Some(longest.as_str()));
        let stack = stack_name(&longest);
        assert!(stack.len() <= 128);
        assert_eq!(stack_cluster(&stack), Some(longest));
        assert_eq!(stack_cluster("other-stack"), None);
    }
}
