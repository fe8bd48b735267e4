//! The `build` Lambda function: BUILD(cluster, version) of the spec (`provisioner_core::lambda::build`).
use std::sync::Arc;

use provisioner_core::aws::{dynamodb::DynamoStore, ec2::Ec2Instances, sns::SnsNotices, Aws};
use provisioner_core::service::{run::Runner, Timeouts};
use provisioner_core::{catalog::Catalog, domain::RunKind, lambda, ports::SystemClock, settings::Settings};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let settings = Settings::from_env();
    let aws = Aws::from_env().await;
    let runner = Runner {
        catalog: Arc::new(Catalog::shipped()?),
        runs: Arc::new(DynamoStore::new(&aws, settings.table()?)),
        instances: Arc::new(Ec2Instances::new(&aws)),
        clock: Arc::new(SystemClock),
        timeouts: Timeouts::default(),
        settings: settings.runs(RunKind::Build, aws.region())?,
        notices: SnsNotices::or_none(&aws, settings.alert_topic()),
    };
    lambda::serve("build", aws.calls, runner, lambda::build).await
}
