//! The `instance_event` Lambda function: EC2's spot interruption warnings and instance state
//! changes, routed by the template's EventBridge rule, end a run's attempt and begin its next
//! (`provisioner_core::lambda::instance_event`).
use std::sync::Arc;

use provisioner_core::aws::Aws;
use provisioner_core::{catalog::Catalog, lambda, settings::Settings, wiring};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let settings = Settings::from_env();
    let aws = Aws::from_env().await;
    // It relaunches runs of both kinds: the template gives it both instance profiles.
    let runner = wiring::runner(&aws, &settings, Arc::new(Catalog::shipped()?))?;
    lambda::serve("instance_event", aws.calls, runner, lambda::instance_event).await
}
