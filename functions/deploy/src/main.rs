//! The `deploy` Lambda function: DEPLOY(cluster) of the spec (`provisioner_core::lambda::deploy`).
use std::sync::Arc;

use provisioner_core::aws::{ecr::EcrImages, Aws};
use provisioner_core::service::Provisioner;
use provisioner_core::{catalog::Catalog, lambda, settings::Settings, wiring};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let settings = Settings::from_env();
    let aws = Aws::from_env().await;
    // The one function that checks the registry: it alone links ECR.
    let ports = wiring::cluster_ports(&aws, &settings)?.with_images(Arc::new(EcrImages::new(&aws)));
    let provisioner = Provisioner::new(Arc::new(Catalog::shipped()?), ports, settings.cluster_parameters());
    lambda::serve("deploy", aws.calls, provisioner, lambda::deploy).await
}
