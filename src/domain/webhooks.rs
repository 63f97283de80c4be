//! Webhooks: the endpoints an admin registers, the events sent to them, and how a delivery
//! is signed — the Standard Webhooks specification (<https://www.standardwebhooks.com>), so a
//! receiver verifies with any of its libraries (docs/webhooks.md).
//!
//! Rule: a delivery carries `webhook-id` (the event's id, the same on every retry),
//! `webhook-timestamp` (epoch seconds of this attempt) and `webhook-signature`: `v1,` and
//! the base64 HMAC-SHA256 of `id.timestamp.body` under each live secret, space-separated.
//! A secret is `whsec_` and base64 of 24 random bytes; after a rotation the previous one
//! signs too for [`ROTATION_OVERLAP_SECS`]. Endpoints are `https://` (plain `http://` only
//! when `ALLOW_HTTP_UPSTREAMS` allows it) and never at a loopback, private or link-local
//! address unless `ALLOW_PRIVATE_WEBHOOKS` allows it.

pub mod outbox;

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::ValidationError;
use super::time::EpochSecs;

/// What every signing secret starts with (the specification's form).
pub const SECRET_PREFIX: &str = "whsec_";
/// What every endpoint id starts with.
pub const ID_PREFIX: &str = "wh_";
/// What every event id starts with.
pub const EVENT_ID_PREFIX: &str = "msg_";
/// How long a rotated-out secret keeps signing beside the new one.
pub const ROTATION_OVERLAP_SECS: i64 = 86_400;
/// The longest endpoint URL.
pub const URL_LIMIT: usize = 2048;
/// The longest description.
pub const DESCRIPTION_LIMIT: usize = 256;

/// What happened: an event's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    /// A student got a sandbox.
    #[serde(rename = "sandbox.allocated")]
    SandboxAllocated,
    /// Its student released it.
    #[serde(rename = "sandbox.released")]
    SandboxReleased,
    /// Auto-expiry released it (its lab and grace ended).
    #[serde(rename = "sandbox.expired")]
    SandboxExpired,
    /// The provider deleted it.
    #[serde(rename = "sandbox.deleted")]
    SandboxDeleted,
    /// Its deletion was given up.
    #[serde(rename = "sandbox.deletion_failed")]
    SandboxDeletionFailed,
    /// A name prefix's available count went below its low watermark.
    #[serde(rename = "pool.low")]
    PoolLow,
    /// A name prefix has no sandbox available.
    #[serde(rename = "pool.empty")]
    PoolEmpty,
    /// The provider's circuit breaker opened.
    #[serde(rename = "provider.unavailable")]
    ProviderUnavailable,
    /// It closed again.
    #[serde(rename = "provider.recovered")]
    ProviderRecovered,
    /// A background job's run failed.
    #[serde(rename = "job.failed")]
    JobFailed,
    /// The auditor found something wrong.
    #[serde(rename = "audit.violation")]
    AuditViolation,
    /// An admin's test delivery (`POST /v1/admin/webhooks/{id}/test`); every endpoint gets it.
    #[serde(rename = "webhook.test")]
    WebhookTest,
}

impl EventType {
    /// Every type an endpoint may subscribe to (`webhook.test` is always sent when asked).
    pub const SUBSCRIBABLE: [Self; 11] = [
        Self::SandboxAllocated,
        Self::SandboxReleased,
        Self::SandboxExpired,
        Self::SandboxDeleted,
        Self::SandboxDeletionFailed,
        Self::PoolLow,
        Self::PoolEmpty,
        Self::ProviderUnavailable,
        Self::ProviderRecovered,
        Self::JobFailed,
        Self::AuditViolation,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SandboxAllocated => "sandbox.allocated",
            Self::SandboxReleased => "sandbox.released",
            Self::SandboxExpired => "sandbox.expired",
            Self::SandboxDeleted => "sandbox.deleted",
            Self::SandboxDeletionFailed => "sandbox.deletion_failed",
            Self::PoolLow => "pool.low",
            Self::PoolEmpty => "pool.empty",
            Self::ProviderUnavailable => "provider.unavailable",
            Self::ProviderRecovered => "provider.recovered",
            Self::JobFailed => "job.failed",
            Self::AuditViolation => "audit.violation",
            Self::WebhookTest => "webhook.test",
        }
    }

    /// The subscribable type named `name`.
    pub fn parse(field: &str, name: &str) -> Result<Self, ValidationError> {
        Self::SUBSCRIBABLE
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::SUBSCRIBABLE.iter().map(|k| k.as_str()).collect();
                ValidationError::new(field, format!("must be one of {}", known.join(", ")))
            })
    }
}

/// A registered endpoint, as the store keeps it (its secrets included: they sign).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    /// Its id (`wh_…`).
    pub id: String,
    /// Where deliveries are posted.
    pub url: String,
    /// What it subscribed to.
    pub events: Vec<EventType>,
    /// The admin's note.
    #[serde(default)]
    pub description: Option<String>,
    /// The secret that signs now (`whsec_…`).
    pub secret: String,
    /// The secret rotated out, while it still signs.
    #[serde(default)]
    pub previous_secret: Option<String>,
    /// Until when the previous secret signs.
    #[serde(default)]
    pub previous_until: Option<EpochSecs>,
    /// When it was registered.
    pub created_at: EpochSecs,
}

impl WebhookEndpoint {
    /// Whether it gets events of `kind` (a test, always).
    pub fn wants(&self, kind: EventType) -> bool {
        kind == EventType::WebhookTest || self.events.contains(&kind)
    }

    /// Whether an event of `kind` that happened `at` is delivered to it: one it wants,
    /// from the second it was registered on. An event still in the outbox when it is
    /// registered happened before it (to the second) and is not its to receive.
    pub fn receives(&self, kind: EventType, at: EpochSecs) -> bool {
        self.wants(kind) && at >= self.created_at
    }

    /// The secrets that sign a delivery at `now`: the current one, and the previous one
    /// within its overlap.
    pub fn signing_secrets(&self, now: EpochSecs) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(previous), Some(until)) = (&self.previous_secret, self.previous_until)
            && now < until
        {
            secrets.push(previous);
        }
        secrets
    }

    /// The endpoint after `secret` replaced its current one at `now`; the current one
    /// signs beside it for [`ROTATION_OVERLAP_SECS`].
    pub fn rotated(&self, secret: String, now: EpochSecs) -> Self {
        Self {
            previous_secret: Some(self.secret.clone()),
            previous_until: Some(now + ROTATION_OVERLAP_SECS),
            secret,
            ..self.clone()
        }
    }
}

/// How deliveries to an endpoint have gone (what `GET /v1/admin/webhooks` shows).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryState {
    /// When a delivery last succeeded (a 2xx answer).
    #[serde(default)]
    pub last_success_at: Option<EpochSecs>,
    /// When one last failed.
    #[serde(default)]
    pub last_failure_at: Option<EpochSecs>,
    /// The status of that failure, when the receiver answered.
    #[serde(default)]
    pub last_failure_status: Option<u16>,
    /// What went wrong then (the status, a timeout, a refused address, …).
    #[serde(default)]
    pub last_failure_error: Option<String>,
    /// Failures since the last success.
    #[serde(default)]
    pub consecutive_failures: u32,
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    Delivered {
        /// Its status.
        status: u16,
    },
    /// Anything else: a non-2xx answer, a timeout, a connection or address refused.
    Failed {
        /// The status, when the receiver answered.
        status: Option<u16>,
        /// What went wrong, for the operator.
        error: String,
    },
}

impl DeliveryState {
    /// The state after an attempt that ended as `outcome` at `now`.
    pub fn after(&self, outcome: &DeliveryOutcome, now: EpochSecs) -> Self {
        match outcome {
            DeliveryOutcome::Delivered { .. } => Self {
                last_success_at: Some(now),
                consecutive_failures: 0,
                ..self.clone()
            },
            DeliveryOutcome::Failed { status, error } => Self {
                last_failure_at: Some(now),
                last_failure_status: *status,
                last_failure_error: Some(error.clone()),
                consecutive_failures: self.consecutive_failures.saturating_add(1),
                ..self.clone()
            },
        }
    }
}

/// An endpoint and how its deliveries have gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUse {
    /// The endpoint.
    pub endpoint: WebhookEndpoint,
    /// Its deliveries.
    pub state: DeliveryState,
}

/// An endpoint's settings as sent, before validation.
#[derive(Debug, Clone, Default)]
pub struct RawEndpointSpec {
    /// `url`.
    pub url: Option<String>,
    /// `events`.
    pub events: Option<Vec<String>>,
    /// `description`.
    pub description: Option<String>,
}

impl WebhookEndpoint {
    /// Validates `raw` (plain `http://` only when `allow_http`) and makes the endpoint `id`
    /// with `secret` at `now`. The address the host resolves to is checked apart
    /// ([`refused_address`]), because resolving is I/O.
    pub fn parse(
        raw: RawEndpointSpec,
        allow_http: bool,
        id: String,
        secret: String,
        now: EpochSecs,
    ) -> Result<Self, ValidationError> {
        let RawEndpointSpec {
            url,
            events,
            description,
        } = raw;
        let url = url.ok_or_else(|| ValidationError::new("url", "is required"))?;
        check_url(&url, allow_http)?;
        let names = events.unwrap_or_default();
        if names.is_empty() {
            return Err(ValidationError::new(
                "events",
                "must name at least one event type",
            ));
        }
        let mut events = names
            .iter()
            .map(|name| EventType::parse("events", name))
            .collect::<Result<Vec<_>, _>>()?;
        events.sort_unstable();
        events.dedup();
        let description = description
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty());
        if description.as_ref().is_some_and(|text| {
            text.chars().count() > DESCRIPTION_LIMIT || text.chars().any(char::is_control)
        }) {
            return Err(ValidationError::new(
                "description",
                format!(
                    "must be at most {DESCRIPTION_LIMIT} characters, without control characters"
                ),
            ));
        }
        Ok(Self {
            id,
            url,
            events,
            description,
            secret,
            previous_secret: None,
            previous_until: None,
            created_at: now,
        })
    }
}

/// The URL's host, when it is an acceptable endpoint URL: `https://` (or `http://` when
/// `allow_http`), a host, no credentials, printable ASCII, at most [`URL_LIMIT`] long.
pub fn check_url(url: &str, allow_http: bool) -> Result<(String, u16), ValidationError> {
    let refuse = |reason: &str| Err(ValidationError::new("url", reason));
    if url.len() > URL_LIMIT || !url.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return refuse("must be at most 2048 printable characters without spaces");
    }
    let (scheme, rest) = match url.split_once("://") {
        Some(("https", rest)) => ("https", rest),
        Some(("http", rest)) if allow_http => ("http", rest),
        _ => {
            return refuse(
                "must be an https:// URL (ALLOW_HTTP_UPSTREAMS allows http:// for local tests)",
            );
        }
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return refuse("must not carry credentials");
    }
    let Some((host, port)) = split_host_port(authority) else {
        return refuse("must name a host (and a port from 1 to 65535, if any)");
    };
    let port = port.unwrap_or(if scheme == "https" { 443 } else { 80 });
    Ok((host, port))
}

/// `host[:port]` or `[v6]:port`, the port parsed; `None` when malformed.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(port) => Some(port.parse::<u16>().ok().filter(|p| *p > 0)?),
        None => None,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// Whether a delivery must not go to `ip`: loopback, private, link-local, shared (CGNAT),
/// unspecified, multicast or broadcast — what would reach into the service's own network
/// (an SSRF) rather than a receiver on the internet.
pub fn refused_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || (a == 100 && (64..128).contains(&b))
                || a == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return refused_address(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// A new signing secret from random bytes.
pub fn new_secret(random: [u8; 24]) -> String {
    format!("{SECRET_PREFIX}{}", STANDARD.encode(random))
}

/// A new endpoint id from random bytes.
pub fn new_id(random: [u8; 8]) -> String {
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{ID_PREFIX}{hex}")
}

/// A new event id from random bytes.
pub fn new_event_id(random: [u8; 16]) -> String {
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{EVENT_ID_PREFIX}{hex}")
}

/// An event as delivered: `{"type", "timestamp", "data"}` (the Standard Webhooks payload).
#[derive(Debug, Serialize)]
pub struct EventBody<'a, D: Serialize> {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When, in RFC 3339.
    pub timestamp: String,
    /// Its details: never a token or a secret.
    pub data: &'a D,
}

/// The body of an event of `kind` that happened at `at`, with `data`.
pub fn event_body<D: Serialize>(
    kind: EventType,
    at: EpochSecs,
    data: &D,
) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&EventBody {
        kind,
        timestamp: at.rfc3339(),
        data,
    })
}

/// Why a secret cannot sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a webhook secret must be whsec_ and base64")]
pub struct BadSecret;

/// One signature: `v1,` and the base64 HMAC-SHA256 of `id.timestamp.body` under `secret`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, BadSecret> {
    let key = secret
        .strip_prefix(SECRET_PREFIX)
        .and_then(|encoded| STANDARD.decode(encoded).ok())
        .ok_or(BadSecret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| BadSecret)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The `webhook-signature` header: one signature per secret, space-separated.
pub fn signature_header(
    secrets: &[&str],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, BadSecret> {
    let signatures = secrets
        .iter()
        .map(|secret| sign(secret, id, timestamp, body))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(signatures.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_is_signed_as_the_specification_signs_it() {
        // The specification's published test vector (its reference libraries' tests).
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, id, 1_614_265_330, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(sign("nope", id, 1, body), Err(BadSecret));
        let both = signature_header(&[secret, secret], id, 1_614_265_330, body).unwrap();
        assert_eq!(both.split(' ').count(), 2);
    }

    #[test]
    fn a_rotated_out_secret_signs_for_a_day() {
        let now = EpochSecs::new(1_000);
        let endpoint = WebhookEndpoint::parse(
            RawEndpointSpec {
                url: Some("https://hooks.example.com/in".into()),
                events: Some(vec!["sandbox.allocated".into(), "sandbox.allocated".into()]),
                description: None,
            },
            false,
            "wh_1".into(),
            new_secret([1; 24]),
            now,
        )
        .unwrap();
        assert_eq!(
            endpoint.events,
            [EventType::SandboxAllocated],
            "deduplicated"
        );
        assert!(endpoint.wants(EventType::WebhookTest));
        assert!(!endpoint.wants(EventType::PoolLow));
        assert!(endpoint.receives(EventType::SandboxAllocated, now));
        assert!(
            !endpoint.receives(EventType::SandboxAllocated, EpochSecs::new(999)),
            "an event from before it was registered"
        );
        assert!(!endpoint.receives(EventType::PoolLow, now));
        let rotated = endpoint.rotated(new_secret([2; 24]), now);
        assert_eq!(
            rotated.signing_secrets(now),
            [rotated.secret.as_str(), endpoint.secret.as_str()]
        );
        assert_eq!(
            rotated.signing_secrets(now + ROTATION_OVERLAP_SECS),
            [rotated.secret.as_str()]
        );
    }

    #[test]
    fn urls_and_events_are_checked() {
        let field = |url: &str, events: Vec<&str>, allow_http| {
            WebhookEndpoint::parse(
                RawEndpointSpec {
                    url: Some(url.into()),
                    events: Some(events.into_iter().map(str::to_owned).collect()),
                    description: None,
                },
                allow_http,
                "wh_1".into(),
                new_secret([1; 24]),
                EpochSecs::new(1),
            )
            .err()
            .map(|err| err.field)
        };
        let events = vec!["pool.low"];
        assert_eq!(field("https://a.example/x", events.clone(), false), None);
        assert_eq!(
            field("http://a.example/x", events.clone(), false).as_deref(),
            Some("url")
        );
        assert_eq!(field("http://a.example/x", events.clone(), true), None);
        assert_eq!(
            field("https://user:pw@a.example/", events.clone(), false).as_deref(),
            Some("url")
        );
        assert_eq!(
            field("https:///x", events.clone(), false).as_deref(),
            Some("url")
        );
        assert_eq!(
            field("https://a.example:0/", events.clone(), false).as_deref(),
            Some("url")
        );
        assert_eq!(
            field("ftp://a.example/", events.clone(), false).as_deref(),
            Some("url")
        );
        assert_eq!(
            field("https://a.example/", vec![], false).as_deref(),
            Some("events")
        );
        assert_eq!(
            field("https://a.example/", vec!["webhook.test"], false).as_deref(),
            Some("events")
        );
        assert_eq!(
            check_url("https://[::1]:8443/x", false).unwrap(),
            ("::1".into(), 8443)
        );
        assert_eq!(
            check_url("https://Hooks.Example.com", false).unwrap(),
            ("hooks.example.com".into(), 443)
        );
    }

    #[test]
    fn addresses_inside_the_network_are_refused() {
        for refused in [
            "127.0.0.1",
            "10.0.0.5",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "224.0.0.1",
        ] {
            assert!(refused_address(refused.parse().unwrap()), "{refused}");
        }
        for allowed in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "8.8.8.8",
        ] {
            assert!(!refused_address(allowed.parse().unwrap()), "{allowed}");
        }
    }
}
