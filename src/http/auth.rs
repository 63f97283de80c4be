//! Bearer-token authentication (docs/api.md, *Authentication*), checked before anything else on a route.
//!
//! Rule: a presented token is hashed and its digest compared in constant time with the
//! digest of every configured token, so neither a token's content nor its length shows in
//! the timing; a failure says nothing about which part was wrong, and counts against the
//! client address. Once an address has failed too often its failures are answered 429
//! instead of 401/403, but a right token is always served: a class behind one NAT address
//! is never locked out by one student's (or one stale dashboard tab's) wrong token.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};
use tokio::time::Instant;

use std::collections::HashMap;
use std::sync::Arc;

use super::error::ApiError;
use super::middleware::{address_allowed, client_address_of, rate_limited};
use crate::config_values::ConfigError;
use crate::domain::tokens::{LabToken, TokenUse, is_lab_token_secret, secret_digest};
use crate::http::state::AppState;

mod config;
pub use config::{AuthConfig, MIN_TOKEN_CHARS, TokenList};

/// The SHA-256 digests of one role's tokens.
pub struct TokenDigests(Vec<[u8; 32]>);

impl TokenDigests {
    fn of(tokens: &TokenList) -> Self {
        Self(tokens.tokens().map(digest).collect())
    }

    /// Whether `candidate` is one of the tokens; every digest is compared, whatever matches.
    fn accept(&self, candidate: &str) -> bool {
        let candidate = digest(candidate);
        let matched = self.0.iter().fold(Choice::from(0), |found, token| {
            found | token.ct_eq(&candidate)
        });
        bool::from(matched)
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The accepted tokens per role.
pub struct Auth {
    /// `BROKER_API_TOKEN`, unless `ALLOW_STATIC_TRACK_TOKEN=false` turned it off.
    lab: Option<TokenDigests>,
    admin: TokenDigests,
    /// `METRICS_TOKEN`: `None` leaves `/metrics` open.
    metrics: Option<TokenDigests>,
    /// `MAX_TOKENS`: live lab tokens at most.
    pub max_tokens: usize,
}

impl Auth {
    /// Takes the token lists from `config`: admin is required, and track too unless
    /// `ALLOW_STATIC_TRACK_TOKEN=false` (then lab tokens are the only track tokens).
    pub fn from_config(config: &AuthConfig) -> Result<Self, ConfigError> {
        let lab = match (&config.api_token, config.allow_static_track_token) {
            (Some(list), true) => Some(TokenDigests::of(list)),
            (None, true) => return Err(ConfigError::Missing("BROKER_API_TOKEN")),
            (_, false) => None,
        };
        Ok(Self {
            lab,
            admin: config
                .admin_token
                .as_ref()
                .map(TokenDigests::of)
                .ok_or(ConfigError::Missing("BROKER_ADMIN_TOKEN"))?,
            metrics: config.metrics_token.as_ref().map(TokenDigests::of),
            max_tokens: crate::config_values::as_usize(config.max_tokens),
        })
    }
}

/// Every lab token by its secret's digest, as one instance last read them (at most
/// [`LAB_TOKENS_REFRESH`] ago).
#[derive(Debug, Default)]
pub struct LabTokens(HashMap<String, Arc<LabToken>>);

impl LabTokens {
    /// Indexes `tokens` by digest.
    pub fn of(tokens: Vec<TokenUse>) -> Self {
        Self(
            tokens
                .into_iter()
                .map(|used| (used.token.secret_sha256.clone(), Arc::new(used.token)))
                .collect(),
        )
    }

    /// The token whose secret is `secret`, live or not.
    pub fn find(&self, secret: &str) -> Option<Arc<LabToken>> {
        self.0.get(&secret_digest(secret)).cloned()
    }
}

/// How long an instance reuses the lab tokens it read: a token revoked on one instance
/// stops working across the fleet within it (and at once on the instance that revoked it).
pub const LAB_TOKENS_REFRESH: std::time::Duration = std::time::Duration::from_secs(4);

/// The lab token a track request was let in with (absent: the static track token).
#[derive(Debug, Clone)]
pub struct ScopedToken(pub Arc<LabToken>);

/// The token of `Authorization: Bearer <token>`: scheme case-insensitive, exactly one token.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let mut parts = value.split_ascii_whitespace();
    let (scheme, token) = (parts.next()?, parts.next()?);
    (parts.next().is_none() && scheme.eq_ignore_ascii_case("bearer")).then_some(token)
}

/// Which admin made a request: the fingerprint of the admin token it was let in with
/// (`admin:` and the first 12 hex digits of its SHA-256), never the token. It names an admin
/// in the action log; with several admin tokens configured, each names its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminActor(pub String);

impl AdminActor {
    fn of(token: &str) -> Self {
        let hex: String = digest(token)
            .iter()
            .take(6)
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Self(format!("admin:{hex}"))
    }
}

/// Who may call a route.
#[derive(Clone, Copy)]
enum Role {
    Lab,
    Admin,
    Metrics,
}

/// The one check behind every token-guarded route: a right token is served, whatever its
/// address did before; a missing, malformed or wrong token is counted against the address
/// and refused: 429 once the address has used its failures up, else 401 (403 for a
/// well-formed wrong token on admin routes). Tokens are at least 16 characters, so the
/// throttle bounds the cost and noise of guessing, not its odds, which are hopeless anyway.
/// An accepted request carries who it is (`ScopedToken`, `AdminActor`) in its extensions.
async fn authorize(app: &AppState, role: Role, request: &mut Request) -> Result<(), ApiError> {
    let tokens = match role {
        Role::Lab => app.auth.lab.as_ref(),
        Role::Admin => Some(&app.auth.admin),
        Role::Metrics => match &app.auth.metrics {
            Some(tokens) => Some(tokens),
            None => return Ok(()),
        },
    };
    let presented = bearer_token(request.headers());
    if matches!(role, Role::Lab)
        && let Some(secret) = presented.filter(|token| is_lab_token_secret(token))
    {
        let lab_tokens = app.current_lab_tokens().await?;
        if let Some(token) = lab_tokens
            .find(secret)
            .filter(|t| t.is_live(app.clock.now()))
        {
            app.used_lab_token(&token);
            request.extensions_mut().insert(ScopedToken(token));
            return Ok(());
        }
    }
    let failure = match presented {
        Some(token) if tokens.is_some_and(|tokens| tokens.accept(token)) => {
            if matches!(role, Role::Admin) {
                let actor = AdminActor::of(token);
                request.extensions_mut().insert(actor);
            }
            return Ok(());
        }
        Some(_) if matches!(role, Role::Admin) => ApiError::Forbidden,
        _ => ApiError::Unauthorized,
    };
    let address = client_address_of(app, request);
    let now = Instant::now();
    if let Some(retry_after_secs) = app.auth_failures.blocked(address, now) {
        app.metrics
            .http
            .auth_failures_total
            .with_label_values(&["throttled"])
            .inc();
        return Err(ApiError::AuthThrottled { retry_after_secs });
    }
    app.auth_failures.record_failure(address, now);
    app.metrics
        .http
        .auth_failures_total
        .with_label_values(&["rejected"])
        .inc();
    Err(failure)
}

/// Track routes, in one layer: a track token (else 401), then the client address's
/// bucket, then the student's (`middleware::rate_limited`). One layer rather than three:
/// each layer around a route is cloned, and its future moved, on every request.
pub async fn guard_lab_route(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    authorize(&app, Role::Lab, &mut request).await?;
    address_allowed(&app, &request)?;
    Ok(rate_limited(&app, request, next).await)
}

/// Admin routes, in one layer: an admin token (missing or malformed is 401, a well-formed
/// non-admin token 403), then the caller's bucket.
pub async fn guard_admin_route(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    authorize(&app, Role::Admin, &mut request).await?;
    Ok(rate_limited(&app, request, next).await)
}

/// `/metrics`: open unless `METRICS_TOKEN` is set, then that token, else 401.
pub async fn require_metrics_token(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    authorize(&app, Role::Metrics, &mut request).await?;
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with_auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_takes_exactly_one_token() {
        assert_eq!(bearer_token(&with_auth("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&with_auth("bEaReR   abc ")), Some("abc"));
        for bad in ["Bearer", "Bearer a b", "Basic abc", "abc", ""] {
            assert_eq!(bearer_token(&with_auth(bad)), None, "{bad:?} accepted");
        }
    }

    #[test]
    fn an_admin_is_named_by_a_fingerprint_of_their_token_never_the_token() {
        let actor = AdminActor::of("admin-token-for-tests");
        assert!(
            actor.0.starts_with("admin:") && actor.0.len() == 18,
            "{actor:?}"
        );
        assert!(!actor.0.contains("admin-token"));
        assert_eq!(actor, AdminActor::of("admin-token-for-tests"));
        assert_ne!(actor, AdminActor::of("another-admin-token"));
    }

    #[test]
    fn any_configured_token_matches() {
        let tokens = TokenDigests::of(&TokenList::parse("old,new").unwrap());
        assert!(tokens.accept("old"));
        assert!(tokens.accept("new"));
        assert!(!tokens.accept("ne"));
        assert!(!tokens.accept("newer"));
        assert!(!tokens.accept(""));
    }
}
