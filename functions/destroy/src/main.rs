//! The `destroy` Lambda function: DESTROY(cluster) of the spec (`provisioner_core::lambda::destroy`).
use std::sync::Arc;

use provisioner_core::aws::Aws;
use provisioner_core::service::Provisioner;
use provisioner_core::{catalog::Catalog, lambda, settings::Settings, wiring};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let settings = Settings::from_env();
    let aws = Aws::from_env().await;
    let ports = wiring::cluster_ports(&aws, &settings)?
        .with_logs(Arc::new(provisioner_core::aws::cluster_logs::RunCommandLogs::new(&aws)));
    let provisioner = Provisioner::new(Arc::new(Catalog::shipped()?), ports, settings.cluster_parameters());
    lambda::serve("destroy", aws.calls, provisioner, lambda::destroy).await
}
