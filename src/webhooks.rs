//! Webhook deliveries: one HTTP client that posts signed events (docs/webhooks.md).
//!
//! Rule: a delivery never follows a redirect, never reaches a loopback, private or
//! link-local address unless `ALLOW_PRIVATE_WEBHOOKS` allows it (the resolver drops such
//! addresses, so a name that later resolves inside the network — DNS rebinding — is caught
//! at delivery too), and is signed as `domain::webhooks` says, with every live secret.

pub mod config;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::domain::ValidationError;
use crate::domain::time::EpochSecs;
use crate::domain::webhooks::{self, DeliveryOutcome, WebhookEndpoint};

/// Resolves names as the system does, leaving out refused addresses unless allowed.
#[derive(Debug, Clone, Copy)]
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|address| allow_private || !webhooks::refused_address(address.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "{host} resolves only to addresses a webhook may not reach (ALLOW_PRIVATE_WEBHOOKS)"
                )
                .into());
            }
            let addresses: Addrs = Box::new(found.into_iter());
            Ok(addresses)
        })
    }
}

/// Why an endpoint URL's host is refused.
fn host_refused(host: &str) -> ValidationError {
    ValidationError::new(
        "url",
        format!(
            "{host} is a loopback, private or link-local address; webhooks may not reach into \
             the service's network (ALLOW_PRIVATE_WEBHOOKS=true allows it)"
        ),
    )
}

/// Posts signed events to endpoints.
#[derive(Debug, Clone)]
pub struct Deliverer {
    http: reqwest::Client,
    allow_http: bool,
    allow_private: bool,
}

impl Deliverer {
    /// A client whose attempts take at most `timeout`; `allow_http` lets `http://` URLs
    /// through (`ALLOW_HTTP_UPSTREAMS`), `allow_private` internal addresses.
    pub fn new(
        timeout: Duration,
        allow_http: bool,
        allow_private: bool,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(!allow_http)
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .user_agent(concat!(
                "sandbox-broker-webhooks/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(Self {
            http,
            allow_http,
            allow_private,
        })
    }

    /// Whether plain `http://` endpoints are allowed (`ALLOW_HTTP_UPSTREAMS`).
    pub fn allows_http(&self) -> bool {
        self.allow_http
    }

    /// Whether an endpoint at `url` may be registered: the URL's rules, and its host must
    /// resolve, and not (only) to a refused address.
    pub async fn check_endpoint(&self, url: &str) -> Result<(), ValidationError> {
        let (host, port) = webhooks::check_url(url, self.allow_http)?;
        if self.allow_private {
            return Ok(());
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return if webhooks::refused_address(ip) {
                Err(host_refused(&host))
            } else {
                Ok(())
            };
        }
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| ValidationError::new("url", format!("{host} does not resolve")))?
            .collect();
        if addresses
            .iter()
            .any(|address| webhooks::refused_address(address.ip()))
        {
            return Err(host_refused(&host));
        }
        Ok(())
    }

    /// One attempt: posts `body` (the event `id`) to `endpoint`, signed at `now`.
    pub async fn deliver(
        &self,
        endpoint: &WebhookEndpoint,
        id: &str,
        body: &[u8],
        now: EpochSecs,
    ) -> DeliveryOutcome {
        let failed = |status: Option<u16>, error: String| DeliveryOutcome::Failed { status, error };
        // An IP literal never reaches the resolver: its check is here.
        if !self.allow_private
            && let Ok((host, _)) = webhooks::check_url(&endpoint.url, self.allow_http)
            && host.parse::<IpAddr>().is_ok_and(webhooks::refused_address)
        {
            return failed(None, host_refused(&host).to_string());
        }
        let timestamp = now.get();
        let signature =
            match webhooks::signature_header(&endpoint.signing_secrets(now), id, timestamp, body) {
                Ok(signature) => signature,
                Err(err) => return failed(None, err.to_string()),
            };
        let sent = self
            .http
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => DeliveryOutcome::Delivered {
                status: response.status().as_u16(),
            },
            Ok(response) => {
                let status = response.status();
                let error = if status.is_redirection() {
                    format!("HTTP {status} (redirects are not followed)")
                } else {
                    format!("HTTP {status}")
                };
                failed(Some(status.as_u16()), error)
            }
            Err(err) => failed(None, crate::telemetry::error_chain(&err)),
        }
    }
}
