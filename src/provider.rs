//! The provider: where sandboxes come from and where they are deleted (docs/api.md, *Outbound calls* and cleanup).
//!
//! Rule: the jobs only see [`ProviderClient`]; the Infoblox CSP client, the circuit
//! breaker around it and the simulated provider of the demo and tests all implement it,
//! and every failure is one [`ProviderError`] that says whether it is the provider's
//! passing trouble (transient: retry later, never count against the sandbox) or a refusal.

pub mod breaker;
pub mod client;
mod config;
pub mod instrumented;
pub mod niosxaas;
pub mod simulated;

pub use config::CspConfig;

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::deletion::AttemptFailure;

/// The HTTP client of every outbound call: HTTPS only unless `allow_http` (a local
/// simulator), and never following a redirect, so a token or password is only ever sent
/// to the host it was configured for (a 3xx is an error like any other refusal).
pub(crate) fn outbound_client(
    connect_timeout: Duration,
    timeout: Duration,
    allow_http: bool,
) -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .https_only(!allow_http)
        .user_agent(concat!("sandbox-broker/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|err| ProviderError::Other(format!("cannot build the HTTP client: {err}")))
}

/// One sandbox as the provider lists it (a domain value, so the store below the provider
/// can take a listing without depending on it).
pub use crate::domain::ProviderSandbox;

/// What a listing returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderListing {
    /// Active sandboxes.
    pub sandboxes: Vec<ProviderSandbox>,
    /// Rows that looked like active sandboxes but had no usable `csp_id` or `name`.
    pub skipped: u64,
}

/// How a provider call failed; one variant per outcome callers treat differently.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider does not know the resource (a delete treats this as success).
    #[error("not found at the provider")]
    NotFound,
    /// The provider refused our credentials (401/403).
    #[error("the provider refused our credentials (HTTP {0})")]
    Unauthorized(u16),
    /// 429: slow down, for `retry_after` if the provider said.
    #[error("rate limited by the provider")]
    RateLimited {
        /// The provider's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// Connection failure, timeout or 5xx.
    #[error("provider unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The circuit breaker is open: the call was not made.
    #[error("provider circuit breaker is open")]
    CircuitOpen,
    /// Any other refusal, e.g. a 4xx about this sandbox, or an unreadable answer.
    #[error("provider refused: {0}")]
    Other(String),
}

impl ProviderError {
    /// Transient failures (docs/api.md, cleanup: connection, timeout, 429, 5xx, breaker open) are
    /// retried later and never count as a deletion attempt. Everything else is a refusal.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::Unavailable(_) | Self::CircuitOpen
        )
    }

    /// What this failure means for a deletion attempt: transient failures, and a refused
    /// credential, never count against the sandbox (a credential is our configuration,
    /// not the sandbox: like an outage it must not burn the pool); anything else is the
    /// provider refusing it.
    pub fn attempt_failure(&self) -> AttemptFailure {
        match self {
            Self::RateLimited { retry_after } => AttemptFailure::Transient {
                retry_after: *retry_after,
            },
            Self::Unauthorized(_) => AttemptFailure::Transient { retry_after: None },
            other if other.is_transient() => AttemptFailure::Transient { retry_after: None },
            _ => AttemptFailure::Refused,
        }
    }

    /// The `outcome` label of a call's result in the request-duration metrics.
    pub fn outcome_label<T>(result: &Result<T, Self>) -> &'static str {
        match result {
            Ok(_) => "success",
            Err(Self::NotFound) => "not_found",
            Err(Self::Unauthorized(_)) => "unauthorized",
            Err(Self::RateLimited { .. }) => "rate_limited",
            Err(Self::Unavailable(_)) => "unavailable",
            Err(Self::CircuitOpen) => "circuit_open",
            Err(Self::Other(_)) => "refused",
        }
    }

    /// Whether the failure says something about the provider's health (what the
    /// circuit breaker counts), as opposed to about one request.
    pub fn is_provider_failure(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Unavailable(_))
    }
}

/// A provider of sandboxes.
#[async_trait]
pub trait ProviderClient: Send + Sync + 'static {
    /// Every active sandbox the provider has.
    async fn list_sandboxes(&self) -> Result<ProviderListing, ProviderError>;

    /// Deletes the sandbox whose provider id is `external_id`; `Ok` also when it was
    /// already gone (200, 204 and 404 all mean deleted).
    async fn delete_sandbox(&self, external_id: &str) -> Result<(), ProviderError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_of_the_sandbox_counts_as_a_deletion_attempt() {
        let transient = |retry_after| AttemptFailure::Transient { retry_after };
        let wait = Some(Duration::from_secs(30));
        let cases = [
            (ProviderError::Unavailable("503".into()), transient(None)),
            (ProviderError::CircuitOpen, transient(None)),
            (ProviderError::Unauthorized(401), transient(None)),
            (
                ProviderError::RateLimited { retry_after: wait },
                transient(wait),
            ),
            (
                ProviderError::Other("HTTP 400".into()),
                AttemptFailure::Refused,
            ),
            (ProviderError::NotFound, AttemptFailure::Refused),
        ];
        for (error, expected) in cases {
            assert_eq!(error.attempt_failure(), expected, "{error:?}");
        }
    }
}
