//! Each function's ports on AWS: the adapters, built from the SDK configuration and the settings
//! the template gives. A main takes its side's ports from here, adds what makes it different (its
//! registry, its run kind) and calls its side's one constructor (`Provisioner::new`,
//! `Runner::new`, `Operations::new`); tests and the fault storm give those constructors fakes.

use std::sync::Arc;

use crate::aws::{cloudformation, cluster_logs, dynamodb, ec2, scheduler, sns, Aws};
use crate::catalog::Catalog;
use crate::ports::{ClusterPorts, NoImages, NoLogs, RunPorts};
use crate::service::run::Runner;
use crate::service::survey::Operations;
use crate::service::Provisioner;
use crate::settings::Settings;

/// The cluster side's ports, without a registry or a keeper of a cluster's logs: `deploy` adds
/// the one ([`ClusterPorts::with_images`]), what destroys the other ([`ClusterPorts::with_logs`]).
pub fn cluster_ports(aws: &Aws, settings: &Settings) -> Result<ClusterPorts, String> {
    Ok(ClusterPorts {
        stacks: Arc::new(cloudformation::CloudFormationStacks::new(aws)),
        schedules: Arc::new(scheduler::EventBridgeSchedules::new(aws, settings.schedule_target()?)),
        locks: Arc::new(dynamodb::DynamoStore::new(aws, settings.table()?)),
        images: Arc::new(NoImages),
        history: Arc::new(dynamodb::DynamoStore::new(aws, settings.table()?)),
        spend: Arc::new(dynamodb::DynamoStore::new(aws, settings.table()?)),
        logs: Arc::new(NoLogs),
        notices: sns::SnsNotices::or_none(aws, settings.alert_topic()),
        clock: settings.clock(),
    })
}

/// The run side's ports.
pub fn run_ports(aws: &Aws, settings: &Settings) -> Result<RunPorts, String> {
    Ok(RunPorts {
        runs: Arc::new(dynamodb::DynamoStore::new(aws, settings.table()?).with_runner_roles(settings.runner_roles())),
        instances: Arc::new(ec2::Ec2Instances::new(aws)),
        test_history: Arc::new(dynamodb::DynamoStore::new(aws, settings.table()?)),
        launch_log: Arc::new(dynamodb::DynamoStore::new(aws, settings.table()?)),
        spend: Arc::new(dynamodb::DynamoStore::new(aws, settings.table()?)),
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
        cluster_ports(aws, settings)?.with_logs(Arc::new(cluster_logs::RunCommandLogs::new(aws))),
        settings.cluster_parameters(),
    );
    Ok(Operations::new(provisioner, runner(aws, settings, catalog)?))
}
