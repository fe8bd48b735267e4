//! The `status` Lambda function: STATUS: every cluster, run and what the sweeper would do (`provisioner_core::lambda::status`).
use std::sync::Arc;

use provisioner_core::aws::{
    cloudformation::CloudFormationStacks, dynamodb::DynamoStore, ec2::Ec2Instances, scheduler::EventBridgeSchedules,
    sns::SnsNotices, Aws,
};
use provisioner_core::service::{operations::Operations, run::Runner, NoImages, Provisioner, Timeouts};
use provisioner_core::{catalog::Catalog, domain::RunKind, lambda, ports::SystemClock, settings::Settings};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let settings = Settings::from_env();
    let aws = Aws::from_env().await;
    let (catalog, store) = (Arc::new(Catalog::shipped()?), Arc::new(DynamoStore::new(&aws, settings.table()?)));
    let notices = SnsNotices::or_none(&aws, settings.alert_topic());
    let provisioner = Provisioner {
        catalog: catalog.clone(),
        stacks: Arc::new(CloudFormationStacks::new(&aws)),
        schedules: Arc::new(EventBridgeSchedules::new(&aws, settings.schedule_target()?)),
        locks: store.clone(),
        images: Arc::new(NoImages),
        clock: Arc::new(SystemClock),
        timeouts: Timeouts::default(),
        settings: settings.cluster_parameters(),
        notices: notices.clone(),
    };
    // It resumes runs, never starts one: the kind picks only an instance profile it does not use.
    let runner = Runner {
        catalog,
        runs: store,
        instances: Arc::new(Ec2Instances::new(&aws)),
        clock: Arc::new(SystemClock),
        timeouts: Timeouts::default(),
        settings: settings.runs(RunKind::Test, aws.region())?,
        notices,
    };
    lambda::serve("status", aws.calls, Operations { provisioner, runner }, lambda::status).await
}
