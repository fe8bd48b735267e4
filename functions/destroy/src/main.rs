//! The `destroy` Lambda function: DESTROY(cluster) of the spec (`provisioner_core::lambda::destroy`).
use std::sync::Arc;

use provisioner_core::aws::{
    cloudformation::CloudFormationStacks, dynamodb::DynamoStore, scheduler::EventBridgeSchedules, sns::SnsNotices, Aws,
};
use provisioner_core::service::{NoImages, Provisioner, Timeouts};
use provisioner_core::{catalog::Catalog, lambda, ports::SystemClock, settings::Settings};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let settings = Settings::from_env();
    let aws = Aws::from_env().await;
    let provisioner = Provisioner {
        catalog: Arc::new(Catalog::shipped()?),
        stacks: Arc::new(CloudFormationStacks::new(&aws)),
        schedules: Arc::new(EventBridgeSchedules::new(&aws, settings.schedule_target()?)),
        locks: Arc::new(DynamoStore::new(&aws, settings.table()?)),
        images: Arc::new(NoImages),
        clock: Arc::new(SystemClock),
        timeouts: Timeouts::default(),
        settings: settings.cluster_parameters(),
        notices: SnsNotices::or_none(&aws, settings.alert_topic()),
    };
    lambda::serve("destroy", aws.calls, provisioner, lambda::destroy).await
}
