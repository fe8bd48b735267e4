//! The one error type. Each variant maps to a stable `errorType` code of the outside contract;
//! its message is one sentence saying what happened and what to do.

use std::fmt;

/// How an AWS failure behaves, so callers can react without knowing service error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsErrorKind {
    /// The resource does not exist.
    NotFound,
    /// The resource already exists, or is in a state that forbids the call.
    Conflict,
    /// Rate limited (still failing after the SDK's retries).
    Throttled,
    /// No capacity for what was asked (an instance type in a zone): another type may have it.
    Capacity,
    /// The subnet cannot take it (no free addresses, or gone): another subnet may.
    Subnet,
    /// An account-wide quota or limit: nothing else asked now does better.
    Quota,
    /// The caller is not allowed.
    AccessDenied,
    /// The call may or may not have taken effect: no answer came (timeout, connection reset), or
    /// the service failed (5xx) after the SDK's retries. Callers that create things look before
    /// trying again.
    Indeterminate,
    /// Anything else: a definite refusal such as invalid parameters.
    Other,
}

/// An AWS call that failed, with enough context to find it in CloudTrail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsFailure {
    pub service: &'static str,
    pub operation: &'static str,
    pub code: String,
    pub message: String,
    pub kind: AwsErrorKind,
}

impl fmt::Display for AwsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} failed with {}", self.service, self.operation, self.code)?;
        if !self.message.is_empty() {
            write!(f, " ({})", self.message)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidRequest(String),
    #[error(
        "no cluster profile in the catalog matches '{0}'; use 'developers' or a 'ci-*' name, or add a profile to \
            clusters/catalog.yaml"
    )]
    UnknownCluster(String),
    #[error(
        "cluster '{cluster}' is not running and is scheduled for delete at {at}; wait for the destroy, or run \
        destroy now, then deploy again"
    )]
    ScheduledForDelete { cluster: String, at: String },
    #[error(
        "cluster '{cluster}' is scheduled for delete at {at}, which is 5 minutes away or less, so it can no \
        longer be moved; deploy it again after it is destroyed"
    )]
    TooLateToReschedule { cluster: String, at: String },
    #[error(
        "cluster '{cluster}' is held by a {operation} that started at {since} and did not finish in time; try \
        again in a few minutes"
    )]
    Busy { cluster: String, operation: String, since: String },
    /// `Busy` too: a profile's cap on concurrent runs is reached.
    #[error("{0}")]
    RunsCapped(String),
    /// `Busy` too: a start could not record its run before its answer was due (AWS too slow).
    #[error("{0}")]
    StartTooSlow(String),
    #[error("{0}")]
    DeployFailed(String),
    #[error("{0}")]
    DeployTimedOut(String),
    #[error("{0}")]
    DestroyFailed(String),
    #[error("{0}")]
    DestroyTimedOut(String),
    #[error("{0}")]
    TestsFailed(String),
    #[error("{0}")]
    BuildFailed(String),
    #[error("{0}")]
    RunLost(String),
    #[error("{0}")]
    CapacityUnavailable(String),
    #[error("{0}")]
    ImagesMissing(String),
    #[error("{0}")]
    RunCancelled(String),
    #[error("{0}")]
    RunTimedOut(String),
    #[error("{0}")]
    BudgetExceeded(String),
    #[error("{0}; retry later, and check the provisioner's permissions if it persists")]
    Aws(AwsFailure),
}

impl Error {
    /// The contract's stable `errorType` code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) => "InvalidRequest",
            Error::UnknownCluster(_) => "UnknownCluster",
            Error::ScheduledForDelete { .. } => "ScheduledForDelete",
            Error::TooLateToReschedule { .. } => "TooLateToReschedule",
            Error::Busy { .. } | Error::RunsCapped(_) | Error::StartTooSlow(_) => "Busy",
            Error::DeployFailed(_) => "DeployFailed",
            Error::DeployTimedOut(_) => "DeployTimedOut",
            Error::DestroyFailed(_) => "DestroyFailed",
            Error::DestroyTimedOut(_) => "DestroyTimedOut",
            Error::TestsFailed(_) => "TestsFailed",
            Error::BuildFailed(_) => "BuildFailed",
            Error::RunLost(_) => "RunLost",
            Error::CapacityUnavailable(_) => "CapacityUnavailable",
            Error::ImagesMissing(_) => "ImagesMissing",
            Error::RunCancelled(_) => "RunCancelled",
            Error::RunTimedOut(_) => "RunTimedOut",
            Error::BudgetExceeded(_) => "BudgetExceeded",
            Error::Aws(_) => "AwsError",
        }
    }

    pub fn aws_kind(&self) -> Option<AwsErrorKind> {
        match self {
            Error::Aws(failure) => Some(failure.kind),
            _ => None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidRequest(message.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How Lambda reports a failed invocation: `errorType` is the contract code.
impl From<Error> for lambda_runtime::Diagnostic {
    fn from(error: Error) -> Self {
        lambda_runtime::Diagnostic { error_type: error.code().to_owned(), error_message: error.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_one_of_the_contract_codes() {
        let contract = [
            "InvalidRequest",
            "UnknownCluster",
            "ScheduledForDelete",
            "TooLateToReschedule",
            "Busy",
            "Busy",
            "Busy",
            "DeployFailed",
            "DeployTimedOut",
            "DestroyFailed",
            "DestroyTimedOut",
            "TestsFailed",
            "BuildFailed",
            "RunLost",
            "CapacityUnavailable",
            "ImagesMissing",
            "RunCancelled",
            "RunTimedOut",
            "BudgetExceeded",
            "AwsError",
        ];
        let samples = [
            Error::invalid("x"),
            Error::UnknownCluster("x".into()),
            Error::ScheduledForDelete { cluster: "x".into(), at: "t".into() },
            Error::TooLateToReschedule { cluster: "x".into(), at: "t".into() },
            Error::Busy { cluster: "x".into(), operation: "deploy".into(), since: "t".into() },
            Error::RunsCapped("x".into()),
            Error::StartTooSlow("x".into()),
            Error::DeployFailed("x".into()),
            Error::DeployTimedOut("x".into()),
            Error::DestroyFailed("x".into()),
            Error::DestroyTimedOut("x".into()),
            Error::TestsFailed("x".into()),
            Error::BuildFailed("x".into()),
            Error::RunLost("x".into()),
            Error::CapacityUnavailable("x".into()),
            Error::ImagesMissing("x".into()),
            Error::RunCancelled("x".into()),
            Error::RunTimedOut("x".into()),
            Error::BudgetExceeded("x".into()),
            Error::Aws(AwsFailure {
                service: "s",
                operation: "o",
                code: "c".into(),
                message: String::new(),
                kind: AwsErrorKind::Other,
            }),
        ];
        let codes: Vec<_> = samples.iter().map(Error::code).collect();
        assert_eq!(codes, contract);
    }

    #[test]
    fn an_aws_error_names_service_operation_and_code() {
        let error = Error::Aws(AwsFailure {
            service: "CloudFormation",
            operation: "CreateStack",
            code: "LimitExceededException".into(),
            message: "too many stacks".into(),
            kind: AwsErrorKind::Quota,
        });
        let text = error.to_string();
        assert!(text.contains("CloudFormation CreateStack failed with LimitExceededException"), "{text}");
        assert!(text.contains("too many stacks"), "{text}");
    }
}
