//! The `build` Lambda function: BUILD(cluster, version) of the spec (`provisioner_core::lambda::build`).
use std::sync::Arc;

use provisioner_core::aws::Aws;
use provisioner_core::{catalog::Catalog, lambda, settings::Settings, wiring};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let settings = Settings::from_env();
    let aws = Aws::from_env().await;
    // The template gives it its own kind's instance profile, and lets it pass only that role.
    let runner = wiring::runner(&aws, &settings, Arc::new(Catalog::shipped()?))?;
    lambda::serve("build", aws.calls, runner, lambda::build).await
}
