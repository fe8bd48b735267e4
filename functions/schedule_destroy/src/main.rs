//! The `schedule_destroy` Lambda function: SCHEDULE_DESTROY(cluster, time_to_destroy) of the spec
use std::sync::Arc;

use provisioner_core::aws::Aws;
use provisioner_core::service::Provisioner;
use provisioner_core::{catalog::Catalog, lambda, settings::Settings, wiring};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let settings = Settings::from_env();
    let aws = Aws::from_env().await;
    let ports = wiring::cluster_ports(&aws, &settings)?;
    let provisioner = Provisioner::new(Arc::new(Catalog::shipped()?), ports, settings.cluster_parameters());
    lambda::serve("schedule_destroy", aws.calls, provisioner, lambda::schedule_destroy).await
}
