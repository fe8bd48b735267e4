//! The `cancel` Lambda function: ends an active run at once (`provisioner_core::lambda::cancel`).
use std::sync::Arc;

use provisioner_core::aws::Aws;
use provisioner_core::{catalog::Catalog, lambda, settings::Settings, wiring};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let settings = Settings::from_env();
    let aws = Aws::from_env().await;
    let runner = wiring::runner(&aws, &settings, Arc::new(Catalog::shipped()?))?;
    lambda::serve("cancel", aws.calls, runner, lambda::cancel).await
}
