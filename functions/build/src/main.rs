//! The `build` Lambda function: see provisioner_core::service::run.
#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    provisioner_core::lambda::serve_run(provisioner_core::runner::RunKind::Build).await
}
