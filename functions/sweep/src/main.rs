//! The `sweep` Lambda function: SWEEP: the safety net EventBridge Scheduler invokes every 10 minutes (`provisioner_core::lambda::sweep`).
use provisioner_core::aws::Aws;
use provisioner_core::{lambda, settings::Settings, wiring};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let settings = Settings::from_env();
    let aws = Aws::from_env().await;
    // Both sides of the provisioner, every adapter but the registry: see `wiring::operations`.
    let operations = wiring::operations(&aws, &settings)?;
    lambda::serve("sweep", aws.calls, operations, lambda::sweep).await
}
