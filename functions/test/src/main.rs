//! The `test` Lambda function: TEST(cluster, version) of the spec (`provisioner_core::lambda::test`).
use std::sync::Arc;

use provisioner_core::aws::Aws;
use provisioner_core::domain::RunKind;
use provisioner_core::{catalog::Catalog, lambda, settings::Settings, wiring};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let settings = Settings::from_env();
    let aws = Aws::from_env().await;
    // Its kind picks its instance profile: only BUILD's may push images.
    let runner = wiring::runner(&aws, &settings, Arc::new(Catalog::shipped()?), RunKind::Test)?;
    lambda::serve("test", aws.calls, runner, lambda::test).await
}
