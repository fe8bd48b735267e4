//! The `status` Lambda function: STATUS: every cluster, run and what the sweeper would do (`provisioner_core::lambda::status`).
use provisioner_core::aws::Aws;
use provisioner_core::{lambda, settings::Settings, wiring};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let settings = Settings::from_env();
    let aws = Aws::from_env().await;
    // Both sides of the provisioner, every adapter but the registry: see `wiring::operations`.
    let operations = wiring::operations(&aws, &settings)?;
    lambda::serve("status", aws.calls, operations, lambda::status).await
}
