//! The `destroy` Lambda function: see provisioner_core::service.
#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    provisioner_core::lambda::serve(provisioner_core::lambda::Function::Destroy).await
}
