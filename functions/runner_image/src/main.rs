//! The `runner_image` Lambda function: makes the runner image TEST runs launch from
//! (`provisioner_core::lambda::runner_image`).
use std::sync::Arc;

use provisioner_core::aws::Aws;
use provisioner_core::{catalog::Catalog, lambda, settings::Settings, wiring};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let settings = Settings::from_env();
    let aws = Aws::from_env().await;
    // It carries out TEST steps: the template gives it the TEST instance profile, and lets it pass only that role.
    let runner = wiring::runner(&aws, &settings, Arc::new(Catalog::shipped()?))?;
    lambda::serve("runner_image", aws.calls, runner, lambda::runner_image).await
}
