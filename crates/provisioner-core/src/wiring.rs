//! Each function's ports on AWS: the adapters, built from the SDK configuration and the settings
//! the template gives. A main takes its side's ports from here, adds what makes it different (its
//! registry, its run kind) and calls its side's one constructor (`Provisioner::new`,
//! `Runner::new`, `Operations::new`); tests and the fault storm give those constructors fakes.

use std::sync::Arc;

use crate::aws::{cloudformation, cluster_logs, dynamodb, ec2, scheduler, sns, Aws};
use crate::catalog::Catalog;
use crate::ports::{ClusterLogs, ClusterPorts, Images, NoImages, RunPorts};
use crate::service::runner::Runner;
use crate::service::survey::Operations;
use crate::service::Provisioner;
use crate::settings::Settings;

/// The cluster side's ports, with `images` as the registry (only `deploy` gives a real one) and
/// `logs` as what keeps a cluster's logs (only what destroys gives a real one).
pub fn cluster_ports(
    aws: &Aws,
    settings: &Settings,
    images: Arc<dyn Images>,
    logs: Arc<dyn ClusterLogs>,
) -> Result<ClusterPorts, String> {
    Ok(ClusterPorts {
        stacks: Arc::new(cloudformation::CloudFormationStacks::new(aws)),
        schedules: Arc::new(scheduler::EventBridgeSchedules::new(aws, settings.schedule_target()?)),
        locks: Arc::new(dynamodb::DynamoStore::new(aws, settings.table()?)),
        images,
        history: Arc::new(dynamodb::DynamoStore::new(aws, settings.table()?)),
        runs: Arc::new(dynamodb::DynamoStore::new(aws, settings.table()?).with_runner_roles(settings.runner_roles())),
        logs,
        notices: sns::SnsNotices::or_none(aws, settings.alert_topic()),
        clock: settings.clock(),
    })
}

/// The run side's ports.
pub fn run_ports(aws: &Aws, settings: &Settings) -> Result<RunPorts, String> {
    Ok(RunPorts {
        runs: Arc::new(dynamodb::DynamoStore::new(aws, settings.table()?).with_runner_roles(settings.runner_roles())),
        instances: Arc::new(ec2::Ec2Instances::new(aws)),
        stacks: Arc::new(cloudformation::CloudFormationStacks::new(aws)),
        history: Arc::new(dynamodb::DynamoStore::new(aws, settings.table()?)),
        notices: sns::SnsNotices::or_none(aws, settings.alert_topic()),
        clock: settings.clock(),
    })
}

/// The run side on AWS.
pub fn runner(aws: &Aws, settings: &Settings, catalog: Arc<Catalog>) -> Result<Runner, String> {
    Ok(Runner::new(catalog, run_ports(aws, settings)?, settings.runs(aws.region())?))
}

/// What `status` and `sweep` are built from: the cluster side without a registry (only deploy
/// checks images) and the run side, which resumes runs and launches their next attempts.
pub fn operations(aws: &Aws, settings: &Settings) -> Result<Operations, String> {
    let catalog = Arc::new(Catalog::shipped().map_err(|error| error.to_string())?);
    let provisioner = Provisioner::new(
        catalog.clone(),
        cluster_ports(aws, settings, Arc::new(NoImages), Arc::new(cluster_logs::RunCommandLogs::new(aws)))?,
        settings.cluster_parameters(),
    );
    Ok(Operations::new(provisioner, runner(aws, settings, catalog)?))
}
