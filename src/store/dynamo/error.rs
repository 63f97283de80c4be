//! What a DynamoDB call's failure means for the broker.
//!
//! Rule: classify once, from the SDK's error kind and the service's error code, keeping the
//! SDK error as the source: a failed condition is a [`DynamoError::Conflict`] the protocol
//! reacts to; throttling (after the SDK's jittered retries), timeouts and unreachable
//! endpoints are [`StoreError::Unavailable`] (503); anything else is our bug (500).

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

use crate::store::StoreError;

/// A classified DynamoDB failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DynamoError {
    /// A condition expression did not hold: someone else changed the item first.
    #[error("conditional check failed")]
    Conflict,
    /// Any other failure, already mapped for the store's callers.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Service error codes that mean "try again later", not "you sent something wrong".
const RETRYABLE_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    // A missing table is an outage of this deployment, not a client error.
    "ResourceNotFoundException",
];

/// Classifies an SDK error.
pub(crate) fn classify<E, R>(err: SdkError<E, R>) -> DynamoError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = err.code().map(str::to_owned);
    match (&err, code.as_deref()) {
        (SdkError::ServiceError(_), Some("ConditionalCheckFailedException")) => {
            DynamoError::Conflict
        }
        (SdkError::ServiceError(_), Some(code)) if RETRYABLE_CODES.contains(&code) => {
            StoreError::Unavailable(Box::new(err)).into()
        }
        (
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_),
            _,
        ) => StoreError::Unavailable(Box::new(err)).into(),
        _ => StoreError::Internal(Box::new(err)).into(),
    }
}

impl DynamoError {
    /// For calls whose conflicts are unexpected: a conflict there is an internal error.
    pub(crate) fn into_store_error(self) -> StoreError {
        match self {
            Self::Conflict => StoreError::Internal("unexpected conditional check failure".into()),
            Self::Store(err) => err,
        }
    }
}

/// Shorthand for an internal error from a message.
pub(crate) fn internal(message: impl Into<String>) -> StoreError {
    StoreError::Internal(message.into().into())
}
