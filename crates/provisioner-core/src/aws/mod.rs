//! AWS adapters behind the ports: the only place SDK types appear. Every SDK error becomes an
//! [`Error::Aws`] classified by its code, so services react to kinds, not strings.

pub mod cloudformation;
pub mod cluster_logs;
pub mod dynamodb;
pub mod ec2;
pub mod ecr;
pub mod scheduler;
pub mod sns;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::error::{AwsErrorKind, AwsFailure, Error};

/// Attempts per call, including the first: throttling and 5xx are retried with backoff.
const MAX_ATTEMPTS: u32 = 5;
/// How the functions name themselves to AWS (User-Agent `app/sliderule-provisioner`).
pub const APP_NAME: &str = "sliderule-provisioner";
/// No single call may eat the invocation's deadline.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// What every adapter's clients are built from: an SDK configuration, and the log their calls go to.
#[derive(Debug, Clone)]
pub struct Aws {
    pub config: SdkConfig,
    pub calls: CallLog,
}

impl Aws {
    /// The SDK configuration from the environment (region, credentials, `AWS_ENDPOINT_URL` for the
    /// local emulator), with our retry and timeout policy.
    pub async fn from_env() -> Aws {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .http_client(https_client())
            // In every request's User-Agent: tools/guard/aws_guard.py tells the functions' calls by it.
            .app_name(aws_config::AppName::new(APP_NAME).expect("a valid app name"))
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .timeout_config(TimeoutConfig::builder().operation_timeout(OPERATION_TIMEOUT).build())
            .load()
            .await;
        Aws::from_config(config)
    }

    pub fn from_config(config: SdkConfig) -> Aws {
        Aws { config, calls: CallLog::default() }
    }

    /// The region calls go to, when one is configured.
    pub fn region(&self) -> Option<String> {
        self.config.region().map(|region| region.to_string())
    }
}

/// The HTTP(S) client of every SDK configuration: hyper with rustls, as the SDK's default client,
/// on ring rather than aws-lc (the workspace's Cargo.toml says why).
pub fn https_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

/// A client of one SDK crate made from an [`Aws`], its calls recorded in the [`CallLog`].
#[macro_export]
#[doc(hidden)]
macro_rules! aws_client {
    ($sdk:ident, $aws:expr) => {
        $sdk::Client::from_conf($sdk::config::Builder::from(&$aws.config).interceptor($aws.calls.clone()).build())
    };
}

/// Records each AWS call (once, however often the SDK retries it) as `Service.Operation`, so every
/// invocation logs what it cost and `make bench` can count calls per operation.
#[derive(Debug, Clone, Default)]
pub struct CallLog {
    calls: Arc<Mutex<Vec<String>>>,
}

impl CallLog {
    /// The calls recorded since the last take, oldest first.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

impl Intercept for CallLog {
    fn name(&self) -> &'static str {
        "CallLog"
    }

    // Not read_before_execution: client interceptors see it before the operation's metadata is set.
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let call = cfg
            .load::<Metadata>()
            .map_or_else(|| "Unknown.Unknown".to_owned(), |m| format!("{}.{}", m.service(), m.name()));
        self.calls.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(call);
        Ok(())
    }
}

/// Sorts an AWS error code into how the provisioner reacts to it.
pub fn kind_of(code: &str) -> AwsErrorKind {
    match code {
        "ResourceNotFoundException"
        | "NotFoundException"
        | "InvalidInstanceID.NotFound"
        | "ParameterNotFound"
        | "NoSuchEntity"
        | "NoSuchKey"
        | "NoSuchBucket"
        | "ImageNotFoundException"
        | "RepositoryNotFoundException" => AwsErrorKind::NotFound,
        "AlreadyExistsException"
        | "ConflictException"
        | "ConditionalCheckFailedException"
        | "TransactionConflictException"
        | "ResourceInUseException"
        | "IdempotentParameterMismatch" => AwsErrorKind::Conflict,
        "Throttling"
        | "ThrottlingException"
        | "TooManyRequestsException"
        | "ProvisionedThroughputExceededException"
        | "RequestLimitExceeded"
        | "RequestThrottled"
        | "SlowDown" => AwsErrorKind::Throttled,
        "InsufficientInstanceCapacity"
        | "InsufficientCapacity"
        | "InsufficientHostCapacity"
        | "SpotMaxPriceTooLow"
        | "Unsupported" => AwsErrorKind::Capacity,
        "InsufficientFreeAddressesInSubnet" | "InvalidSubnetID.NotFound" | "InvalidSubnetID.Malformed" => {
            AwsErrorKind::Subnet
        }
        "LimitExceededException"
        | "ServiceQuotaExceededException"
        | "MaxSpotInstanceCountExceeded"
        | "InstanceLimitExceeded"
        | "VcpuLimitExceeded" => AwsErrorKind::Quota,
        "AccessDenied"
        | "AccessDeniedException"
        | "UnauthorizedOperation"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId" => AwsErrorKind::AccessDenied,
        "InternalError"
        | "InternalFailure"
        | "InternalServerError"
        | "InternalServiceError"
        | "InternalServerException"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "Unavailable"
        | "RequestTimeout"
        | "RequestTimeoutException" => AwsErrorKind::Indeterminate,
        _ => AwsErrorKind::Other,
    }
}

/// Converts an SDK error into our error, naming service, operation and code.
pub fn aws_error<E, R>(service: &'static str, operation: &'static str, error: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    // Transport failures get a fixed phrase: their error chains are long and say little more.
    let (code, message, kind) = match &error {
        SdkError::ServiceError(service_error) => {
            let inner = service_error.err();
            let code = inner.code().unwrap_or("Unknown").to_owned();
            let kind = kind_of(&code);
            (code, one_line(inner.message().unwrap_or_default()), kind)
        }
        SdkError::TimeoutError(_) => fixed("Timeout", "no answer came in time", AwsErrorKind::Indeterminate),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            fixed("ConnectionTimeout", "the connection timed out", AwsErrorKind::Indeterminate)
        }
        SdkError::DispatchFailure(failure) if failure.is_io() => {
            fixed("ConnectionFailure", "the connection failed or was reset", AwsErrorKind::Indeterminate)
        }
        SdkError::DispatchFailure(_) => {
            fixed("DispatchFailure", "the request could not be sent", AwsErrorKind::Indeterminate)
        }
        SdkError::ConstructionFailure(_) => {
            fixed("ConstructionFailure", "the request could not be built", AwsErrorKind::Other)
        }
        _ => fixed("ResponseError", "the answer could not be read", AwsErrorKind::Indeterminate),
    };
    // The whole chain goes to the log only.
    tracing::warn!(service, operation, %code, ?kind, detail = %DisplayErrorContext(&error), "AWS call failed");
    Error::Aws(AwsFailure { service, operation, code, message, kind })
}

fn fixed(code: &str, message: &str, kind: AwsErrorKind) -> (String, String, AwsErrorKind) {
    (code.to_owned(), message.to_owned(), kind)
}

fn one_line(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_sort_into_kinds() {
        let table = [
            ("ResourceNotFoundException", AwsErrorKind::NotFound),
            ("AlreadyExistsException", AwsErrorKind::Conflict),
            ("ConflictException", AwsErrorKind::Conflict),
            ("ConditionalCheckFailedException", AwsErrorKind::Conflict),
            ("Throttling", AwsErrorKind::Throttled),
            ("ThrottlingException", AwsErrorKind::Throttled),
            ("RequestLimitExceeded", AwsErrorKind::Throttled),
            ("ProvisionedThroughputExceededException", AwsErrorKind::Throttled),
            ("LimitExceededException", AwsErrorKind::Quota),
            ("ServiceQuotaExceededException", AwsErrorKind::Quota),
            ("MaxSpotInstanceCountExceeded", AwsErrorKind::Quota),
            ("VcpuLimitExceeded", AwsErrorKind::Quota),
            ("InstanceLimitExceeded", AwsErrorKind::Quota),
            ("InsufficientInstanceCapacity", AwsErrorKind::Capacity),
            ("InsufficientHostCapacity", AwsErrorKind::Capacity),
            ("SpotMaxPriceTooLow", AwsErrorKind::Capacity),
            ("Unsupported", AwsErrorKind::Capacity),
            ("InsufficientFreeAddressesInSubnet", AwsErrorKind::Subnet),
            ("InvalidSubnetID.NotFound", AwsErrorKind::Subnet),
            ("AccessDeniedException", AwsErrorKind::AccessDenied),
            ("UnauthorizedOperation", AwsErrorKind::AccessDenied),
            ("ValidationError", AwsErrorKind::Other),
            ("InternalFailure", AwsErrorKind::Indeterminate),
            ("ServiceUnavailable", AwsErrorKind::Indeterminate),
        ];
        for (code, kind) in table {
            assert_eq!(kind_of(code), kind, "{code}");
        }
    }

    /// A refused connection answers one sentence naming service, operation and code, not the
    /// SDK's error chain.
    #[tokio::test]
    async fn a_connection_failure_is_one_sentence() {
        use crate::ports::Runs;

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = listener.local_addr().unwrap();
        drop(listener);
        let config = aws_config::defaults(BehaviorVersion::latest())
            .http_client(https_client())
            .region(aws_config::Region::new("us-west-2"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("a", "b", None, None, "test"))
            .endpoint_url(format!("http://{closed}"))
            .retry_config(RetryConfig::disabled())
            .load()
            .await;
        let store = dynamodb::DynamoStore::new(&Aws::from_config(config), "table");
        let error = store.get(&crate::domain::RunId::parse("test-ci-1-20261123t120000z").unwrap()).await.unwrap_err();
        assert_eq!(error.aws_kind(), Some(AwsErrorKind::Indeterminate));
        assert_eq!(
            error.to_string(),
            "DynamoDB GetItem failed with ConnectionFailure (the connection failed or was reset); \
             retry later, and check the provisioner's permissions if it persists"
        );
    }

    #[test]
    fn messages_are_flattened_and_bounded() {
        assert_eq!(one_line("a\n  b\tc"), "a b c");
        assert_eq!(one_line(&"x".repeat(1000)).len(), 300);
    }
}
