//! Turning SDK errors into [`BackendError`]s that say what to do next.

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use labelfleet_core::error::BackendError;

/// Error codes that mean "try again later".
const TRANSIENT_CODES: [&str; 10] = [
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "SlowDown",
    "TransactionInProgressException",
];

/// The error code of an SDK error, if the service sent one.
pub fn code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    err.as_service_error().and_then(|e| e.code())
}

/// Classifies an SDK error from operation `op` (for example `SQS ReceiveMessage on
/// queue x`).
pub fn classify<E, R>(op: &str, err: SdkError<E, R>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            BackendError::Unavailable(format!(
                "{op}: {}",
                aws_sdk_sqs::error::DisplayErrorContext(&err)
            ))
        }
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("Unknown");
            let message = e.message().unwrap_or("no message");
            let status = service.raw();
            let status = format!("{status:?}");
            if TRANSIENT_CODES.contains(&code) || status.contains("status: 5") {
                BackendError::Unavailable(format!("{op}: {code}: {message}"))
            } else if code.contains("AccessDenied")
                || code == "UnauthorizedOperation"
                || code == "AuthorizationError"
            {
                BackendError::Other(format!(
                    "{op}: the credentials lack a permission ({code}: {message}); grant it to the role or user that runs labelfleet"
                ))
            } else if matches!(
                code,
                "AWS.SimpleQueueService.NonExistentQueue"
                    | "QueueDoesNotExist"
                    | "ResourceNotFoundException"
                    | "NoSuchBucket"
            ) {
                BackendError::Other(format!(
                    "{op}: {code}: {message}; create the queue, table and bucket with `labelfleet setup`"
                ))
            } else {
                BackendError::Other(format!("{op}: {code}: {message}"))
            }
        }
        _ => BackendError::Other(format!(
            "{op}: {}",
            aws_sdk_sqs::error::DisplayErrorContext(&err)
        )),
    }
}
