//! `ApiError`: every way a request can fail, and the one envelope (docs/api.md, *Errors*) it renders.
//!
//! Rule: status codes and error codes (docs/api.md, *Errors*) are decided here and only here. A response is
//! rendered without `request_id`; the envelope middleware adds it from the request.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::ValidationError;
use crate::store::{Refusal, StoreError};

/// Seconds a client should wait after 409 `NO_SANDBOXES_AVAILABLE` before asking again.
pub const NO_SANDBOX_RETRY_AFTER_SECS: u64 = 30;
/// Seconds a client should wait after 503 `CORDONED` before asking again.
pub const CORDONED_RETRY_AFTER_SECS: u64 = 60;
/// Seconds a client should wait after a 503 before asking again.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

/// The edge's error; each variant names its status and error `code`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `MISSING_SANDBOX_ID`: neither student header is present.
    #[error("missing student key")]
    MissingHolderKey,
    /// 400 `VALIDATION_ERROR`: a header, path, query or body value is malformed.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// 401 `UNAUTHORIZED`, with `WWW-Authenticate: Bearer`.
    #[error("unauthorized")]
    Unauthorized,
    /// 403 `FORBIDDEN`: a valid token without admin rights on an admin route.
    #[error("forbidden")]
    Forbidden,
    /// 403 `NOT_SANDBOX_OWNER`: the sandbox is held by someone else, or by nobody.
    #[error("not the sandbox owner")]
    NotSandboxOwner,
    /// 404 `SANDBOX_NOT_FOUND`.
    #[error("sandbox not found")]
    SandboxNotFound,
    /// 404 `NOT_FOUND`: no such route.
    #[error("route not found")]
    RouteNotFound,
    /// 404 `NOT_FOUND`: the route exists but has nothing for this resource (says what).
    #[error("not found: {0}")]
    NothingFound(String),
    /// 405 `METHOD_NOT_ALLOWED`.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 408 `REQUEST_TIMEOUT`: the request took longer than `REQUEST_TIMEOUT_SEC`.
    #[error("request timed out")]
    RequestTimeout,
    /// 409 `NO_SANDBOXES_AVAILABLE`, with `Retry-After`.
    #[error("no sandboxes available")]
    NoSandboxesAvailable,
    /// 409 `JOB_ALREADY_RUNNING`: another run (here or on another instance) holds the lease.
    #[error("job already running")]
    JobAlreadyRunning {
        /// The job.
        job: &'static str,
        /// The instance running it.
        instance: String,
    },
    /// 503 `SERVICE_UNAVAILABLE`, with `Retry-After`: the provider cannot be used now.
    #[error("provider unavailable")]
    ProviderUnavailable(#[source] crate::jobs::JobError),
    /// 413 `PAYLOAD_TOO_LARGE`.
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    /// 429 `RATE_LIMIT_EXCEEDED`, with `Retry-After`.
    #[error("rate limited")]
    RateLimited {
        /// Whole seconds until the next request would be allowed.
        retry_after_secs: u64,
    },
    /// 429 `RATE_LIMIT_EXCEEDED`, with `Retry-After`: the client address failed to
    /// authenticate `AUTH_FAILURE_LIMIT` times in the current window.
    #[error("too many failed authentications")]
    AuthThrottled {
        /// Whole seconds until the address may try again.
        retry_after_secs: u64,
    },
    /// 409 `NOT_QUARANTINABLE` / `NOT_QUARANTINED` / `WAS_HANDED_OUT`: an admin's change
    /// does not apply to the row as it is.
    #[error(transparent)]
    RowActionRefused(crate::domain::lifecycle::RowActionRefused),
    /// 429 `QUOTA_EXCEEDED`, with `Retry-After`: the lab token already holds its
    /// `max_active` sandboxes.
    #[error("the lab token holds its cap of sandboxes")]
    QuotaExceeded,
    /// 403 `OUT_OF_SCOPE`: a lab token asked for a lab or name prefix outside its scope, or
    /// for a sandbox allocated under another token.
    #[error("outside the token's scope: {0}")]
    OutOfScope(String),
    /// 409 `TOO_MANY_TOKENS` / `TOKEN_NAME_TAKEN`: a new lab token is not kept.
    #[error(transparent)]
    TokenRefused(crate::domain::tokens::TokenRefused),
    /// 409 `RESERVATION_SHORT`: the pool, less what overlapping reservations still need,
    /// cannot hold a new reservation; the envelope carries the `shortfall`.
    #[error("the pool cannot hold the reservation: {shortfall} short")]
    ReservationShort {
        /// Sandboxes it lacks.
        shortfall: u64,
        /// Sandboxes it asked for.
        count: u64,
        /// What the pool at its prefix can give it, overlapping reservations deducted.
        free: u64,
    },
    /// 409 `TOO_MANY_WEBHOOKS`: `MAX_WEBHOOKS` endpoints exist already.
    #[error("{0} webhook endpoints exist already (MAX_WEBHOOKS)")]
    TooManyWebhooks(usize),
    /// 409 `NOT_ALLOCATED`: an admin release of a sandbox that is not allocated (any more).
    #[error("sandbox is {0}, not allocated")]
    NotAllocated(crate::domain::SandboxStatus),
    /// 409 `LISTING_REFUSED`: a sync did not apply the provider's listing, which would
    /// have marked too much of the pool stale (`?force=true` applies it).
    #[error(transparent)]
    ListingRefused(crate::domain::lifecycle::ListingRefused),
    /// 503 `CORDONED`, with `Retry-After`: an admin paused new allocations for the
    /// request's prefix or lab.
    #[error("new allocations are paused here")]
    Cordoned {
        /// The admin's reason.
        reason: String,
    },
    /// 503 `SERVICE_UNAVAILABLE`, with `Retry-After`: the store cannot serve now.
    #[error("service unavailable")]
    Unavailable(#[source] StoreError),
    /// 500 `INTERNAL_ERROR`; the cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// `Result` with [`ApiError`] as the default error.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl From<crate::jobs::JobError> for ApiError {
    fn from(err: crate::jobs::JobError) -> Self {
        use crate::jobs::JobError;
        match err {
            // A run that lost its lease mid-way was taken over: the job runs elsewhere now.
            JobError::AlreadyRunning { job, instance } | JobError::LeaseLost { job, instance } => {
                Self::JobAlreadyRunning { job, instance }
            }
            // Only scheduled runs are skipped as not due; an admin's run never is.
            err @ (JobError::NotDue { .. } | JobError::NoWebhooks) => Self::Internal(Box::new(err)),
            JobError::Store(err) => err.into(),
            JobError::ListingRefused(refused) => Self::ListingRefused(refused),
            err @ (JobError::NoProvider | JobError::Provider(_)) => Self::ProviderUnavailable(err),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::SandboxNotFound => Self::SandboxNotFound,
            Refusal::NotHolder => Self::NotSandboxOwner,
            Refusal::NoneAvailable => Self::NoSandboxesAvailable,
            Refusal::RowAction(refused) => Self::RowActionRefused(refused),
            Refusal::Token(refused) => Self::TokenRefused(refused),
            Refusal::QuotaExceeded => Self::QuotaExceeded,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(_) => Self::Unavailable(err),
            StoreError::Internal(source) => Self::Internal(source),
            StoreError::InvalidCursor => Self::Validation(ValidationError::new(
                "cursor",
                "does not belong to this listing (the filters changed?)",
            )),
        }
    }
}

/// The envelope's inner object (filled in with `request_id` by the envelope middleware);
/// also the OpenAPI schema of every error answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Contract code, e.g. `NO_SANDBOXES_AVAILABLE`.
    #[schema(value_type = String)]
    pub code: &'static str,
    /// Human-readable explanation, safe to show.
    pub message: String,
    /// Filled in by the envelope middleware from `X-Request-ID`.
    pub request_id: String,
    /// Seconds to wait, where the error has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Sandboxes a reservation lacks (`RESERVATION_SHORT` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shortfall: Option<u64>,
}

/// The error envelope every error answer carries: `{"detail": {...}}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    /// The error.
    pub detail: ErrorBody,
}

impl ErrorBody {
    /// The complete JSON response for this body.
    pub fn to_response(&self, status: StatusCode) -> Response {
        let envelope = ErrorEnvelope {
            detail: self.clone(),
        };
        let mut response = (status, Json(envelope)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response.extensions_mut().insert(self.clone());
        response
    }
}

impl ApiError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingHolderKey | Self::Validation(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::NotSandboxOwner | Self::OutOfScope(_) => StatusCode::FORBIDDEN,
            Self::SandboxNotFound | Self::RouteNotFound | Self::NothingFound(_) => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::NoSandboxesAvailable
            | Self::JobAlreadyRunning { .. }
            | Self::ListingRefused(_)
            | Self::NotAllocated(_)
            | Self::TokenRefused(_)
            | Self::ReservationShort { .. }
            | Self::TooManyWebhooks(_)
            | Self::RowActionRefused(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } | Self::AuthThrottled { .. } | Self::QuotaExceeded => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Unavailable(_) | Self::ProviderUnavailable(_) | Self::Cordoned { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The envelope body: code, a message that leaks no internals, and `retry_after`.
    pub fn body(&self) -> ErrorBody {
        let (code, message, retry_after) = match self {
            Self::MissingHolderKey => (
                "MISSING_SANDBOX_ID",
                "Missing student key: send the X-Instruqt-Sandbox-ID header (or the legacy X-Track-ID header)".to_owned(),
                None,
            ),
            Self::Validation(err) => ("VALIDATION_ERROR", err.to_string(), None),
            Self::Unauthorized => (
                "UNAUTHORIZED",
                "Missing or invalid bearer token".to_owned(),
                None,
            ),
            Self::Forbidden => (
                "FORBIDDEN",
                "This route needs an admin token".to_owned(),
                None,
            ),
            Self::NotSandboxOwner => (
                "NOT_SANDBOX_OWNER",
                "This sandbox is not allocated to you".to_owned(),
                None,
            ),
            Self::SandboxNotFound => ("SANDBOX_NOT_FOUND", "Sandbox not found".to_owned(), None),
            Self::RouteNotFound => ("NOT_FOUND", "No such route".to_owned(), None),
            Self::NothingFound(what) => ("NOT_FOUND", what.clone(), None),
            Self::MethodNotAllowed => (
                "METHOD_NOT_ALLOWED",
                "Method not allowed on this route".to_owned(),
                None,
            ),
            Self::RequestTimeout => (
                "REQUEST_TIMEOUT",
                "The request took too long and was abandoned".to_owned(),
                None,
            ),
            Self::NoSandboxesAvailable => (
                "NO_SANDBOXES_AVAILABLE",
                "No sandboxes available in pool".to_owned(),
                Some(NO_SANDBOX_RETRY_AFTER_SECS),
            ),
            Self::PayloadTooLarge(what) => ("PAYLOAD_TOO_LARGE", what.clone(), None),
            Self::RowActionRefused(refused) => (
                match refused {
                    crate::domain::lifecycle::RowActionRefused::NotQuarantinable(_) => {
                        "NOT_QUARANTINABLE"
                    }
                    crate::domain::lifecycle::RowActionRefused::NotQuarantined(_) => {
                        "NOT_QUARANTINED"
                    }
                    crate::domain::lifecycle::RowActionRefused::WasHandedOut => "WAS_HANDED_OUT",
                },
                format!("{}: nothing was changed", capitalized(&refused.to_string())),
                None,
            ),
            Self::QuotaExceeded => (
                "QUOTA_EXCEEDED",
                "This lab token already holds its max_active sandboxes; one must be released first"
                    .to_owned(),
                Some(NO_SANDBOX_RETRY_AFTER_SECS),
            ),
            Self::OutOfScope(scope) => ("OUT_OF_SCOPE", capitalized(scope), None),
            Self::TokenRefused(refused) => (
                match refused {
                    crate::domain::tokens::TokenRefused::TooMany { .. } => "TOO_MANY_TOKENS",
                    crate::domain::tokens::TokenRefused::NameTaken => "TOKEN_NAME_TAKEN",
                },
                format!("{}: no token was minted", capitalized(&refused.to_string())),
                None,
            ),
            Self::Cordoned { reason } => (
                "CORDONED",
                format!("New sandboxes for this lab are paused by an admin: {reason}"),
                Some(CORDONED_RETRY_AFTER_SECS),
            ),
            Self::ReservationShort {
                shortfall,
                count,
                free,
            } => (
                "RESERVATION_SHORT",
                format!(
                    "The pool cannot hold this reservation: it asks for {count} sandboxes and \
                     {free} are free at its name prefix over its time (the overlapping \
                     reservations' needs deducted), {shortfall} short. Nothing was reserved"
                ),
                None,
            ),
            Self::TooManyWebhooks(limit) => (
                "TOO_MANY_WEBHOOKS",
                format!("{limit} webhook endpoints exist already (MAX_WEBHOOKS); delete one first"),
                None,
            ),
            Self::NotAllocated(status) => (
                "NOT_ALLOCATED",
                format!(
                    "The sandbox is {status}, not allocated (or its holder changed meanwhile): \
                     nothing to release"
                ),
                None,
            ),
            Self::ListingRefused(refused) => (
                "LISTING_REFUSED",
                format!(
                    "The provider's listing would mark {} of {} available sandboxes stale, more \
                     than SYNC_MAX_STALE_FRACTION ({}) allows, so nothing was changed. Check the \
                     provider; POST /v1/admin/sync?force=true applies the listing anyway",
                    refused.would_mark_stale, refused.available, refused.max_stale_fraction
                ),
                None,
            ),
            Self::JobAlreadyRunning { job, instance } => (
                "JOB_ALREADY_RUNNING",
                format!("The {job} job is already running on instance {instance}"),
                None,
            ),
            Self::ProviderUnavailable(err) => (
                "SERVICE_UNAVAILABLE",
                match err {
                    crate::jobs::JobError::NoProvider => {
                        "No provider is configured (set CSP_API_TOKEN)".to_owned()
                    }
                    _ => "The provider cannot be reached or refused the request; try again shortly"
                        .to_owned(),
                },
                Some(UNAVAILABLE_RETRY_AFTER_SECS),
            ),
            Self::RateLimited { retry_after_secs } => (
                "RATE_LIMIT_EXCEEDED",
                "Too many requests; slow down".to_owned(),
                Some(*retry_after_secs),
            ),
            Self::AuthThrottled { retry_after_secs } => (
                "RATE_LIMIT_EXCEEDED",
                "Too many failed authentications from this address; try again later".to_owned(),
                Some(*retry_after_secs),
            ),
            Self::Unavailable(_) => (
                "SERVICE_UNAVAILABLE",
                "The service cannot reach its store right now; try again shortly".to_owned(),
                Some(UNAVAILABLE_RETRY_AFTER_SECS),
            ),
            Self::Internal(_) => (
                "INTERNAL_ERROR",
                "Internal server error".to_owned(),
                None,
            ),
        };
        let shortfall = match self {
            Self::ReservationShort { shortfall, .. } => Some(*shortfall),
            _ => None,
        };
        ErrorBody {
            code,
            message,
            request_id: String::new(),
            retry_after,
            shortfall,
        }
    }

    /// The error a framework-made response with this status stands for, when a layer
    /// outside our handlers (routing, timeouts) answered without an [`ApiError`].
    pub fn for_bare_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::RouteNotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::REQUEST_TIMEOUT => Self::RequestTimeout,
            StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge("Request body too large".to_owned())
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                Self::Unavailable(StoreError::Unavailable("overloaded".into()))
            }
            status if status.is_client_error() => Self::Validation(ValidationError::new(
                "request",
                format!("was refused: {status}"),
            )),
            status => Self::Internal(format!("unhandled status {status}").into()),
        }
    }
}

/// `text` with its first letter in upper case, for a message made of an error's sentence.
fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(source) = &self {
            tracing::error!(error = %crate::telemetry::error_chain(source.as_ref()), "internal error");
        } else if let Self::Unavailable(source) = &self {
            tracing::warn!(error = %crate::telemetry::error_chain(source), "store unavailable");
        } else if let Self::ProviderUnavailable(source) = &self {
            tracing::warn!(error = %crate::telemetry::error_chain(source), "provider unavailable");
        }
        self.body().to_response(self.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_and_store_errors_map_to_the_documented_statuses() {
        let refusals = [
            (Refusal::SandboxNotFound, 404, "SANDBOX_NOT_FOUND"),
            (Refusal::NotHolder, 403, "NOT_SANDBOX_OWNER"),
            (Refusal::NoneAvailable, 409, "NO_SANDBOXES_AVAILABLE"),
        ];
        for (refusal, status, code) in refusals {
            let api = ApiError::from(refusal);
            assert_eq!(api.status().as_u16(), status, "{code}");
            assert_eq!(api.body().code, code);
        }
        let cases = [
            (
                StoreError::Unavailable("x".into()),
                503,
                "SERVICE_UNAVAILABLE",
            ),
            (
                StoreError::Internal("secret detail".into()),
                500,
                "INTERNAL_ERROR",
            ),
        ];
        for (store_error, status, code) in cases {
            let api = ApiError::from(store_error);
            assert_eq!(api.status().as_u16(), status, "{code}");
            let body = api.body();
            assert_eq!(body.code, code);
            assert!(!body.message.contains("secret"), "{code} leaks its cause");
        }
    }

    #[test]
    fn retry_after_is_sent_as_header_and_field() {
        let response = ApiError::NoSandboxesAvailable.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "30");
        assert_eq!(
            response
                .extensions()
                .get::<ErrorBody>()
                .and_then(|b| b.retry_after),
            Some(30)
        );
    }
}
