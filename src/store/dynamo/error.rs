//! What a DynamoDB call's failure means for the broker.
//!
//! Rule: classify once, from the SDK's error kind and the service's error code, keeping the
//! SDK error as the source: a failed condition is a [`DynamoError::Conflict`] the protocol
//! reacts to; throttling and 5xx are the table being busy, timeouts and unreachable
//! endpoints no answer at all — both retried by `calls.rs`, and [`StoreError::Unavailable`]
//! (503) when they outlast the deadline or the table is down; anything else is our bug (500).

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;

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

/// Service error codes that mean "too much right now": the table answered, but did no work.
const BUSY_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
];

/// Service error codes that are an outage of this deployment, not a client error.
const UNAVAILABLE_CODES: &[&str] = &["ResourceNotFoundException"];

/// What a failed attempt says about the table, for the retry loop in `calls.rs`.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// The table answered, and that answer is the result: a failed condition, a refusal,
    /// a missing table. The table is up; the call ends.
    Answer(DynamoError),
    /// The table answered "not now" (throttling, 5xx): back off and send it again.
    Busy(StoreError),
    /// No answer at all (connection refused or reset, a timeout): send it again while
    /// the table is not known to be down.
    NoAnswer(StoreError),
}

/// Classifies a failed attempt.
pub(crate) fn verdict<E, R>(err: SdkError<E, R>) -> Verdict
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = err.code().map(str::to_owned);
    match (&err, code.as_deref()) {
        (SdkError::ServiceError(_), Some("ConditionalCheckFailedException")) => {
            Verdict::Answer(DynamoError::Conflict)
        }
        (SdkError::ServiceError(_), Some(code)) if BUSY_CODES.contains(&code) => {
            Verdict::Busy(StoreError::Unavailable(Box::new(err)))
        }
        (SdkError::ServiceError(_), Some(code)) if UNAVAILABLE_CODES.contains(&code) => {
            Verdict::Answer(StoreError::Unavailable(Box::new(err)).into())
        }
        (
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_),
            _,
        ) => Verdict::NoAnswer(StoreError::Unavailable(Box::new(err))),
        _ => Verdict::Answer(StoreError::Internal(Box::new(err)).into()),
    }
}

/// Classifies a failed transaction: a cancellation because a condition failed is a
/// [`DynamoError::Conflict`] like a failed conditional write; other cancellations
/// (a conflicting transaction, throttling) are the table being busy: sent again.
pub(crate) fn transaction_verdict(err: SdkError<TransactWriteItemsError, HttpResponse>) -> Verdict {
    if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
        err.as_service_error()
    {
        let condition_failed = cancelled
            .cancellation_reasons()
            .iter()
            .any(|reason| reason.code() == Some("ConditionalCheckFailed"));
        return if condition_failed {
            Verdict::Answer(DynamoError::Conflict)
        } else {
            Verdict::Busy(StoreError::Unavailable(Box::new(err)))
        };
    }
    verdict(err)
}

/// Classifies an SDK error of a call made without the store's retry loop (`init-table`).
pub(crate) fn classify<E, R>(err: SdkError<E, R>) -> DynamoError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match verdict(err) {
        Verdict::Answer(answer) => answer,
        Verdict::Busy(err) | Verdict::NoAnswer(err) => err.into(),
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
