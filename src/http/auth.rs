//! Bearer-token authentication (contract §3.1), checked before anything else on a route.
//!
//! Rule: tokens are compared in constant time against every configured token, and a
//! failure says nothing about which part was wrong.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use subtle::{Choice, ConstantTimeEq};

use super::error::ApiError;
use crate::app::AppState;
use crate::config::{Config, ConfigError, TokenList};

/// The accepted tokens per role.
pub struct Auth {
    track: TokenList,
    admin: TokenList,
}

impl Auth {
    /// Takes both token lists from `config`; both are required.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        Ok(Self {
            track: config
                .api_token
                .clone()
                .ok_or(ConfigError::Missing("BROKER_API_TOKEN"))?,
            admin: config
                .admin_token
                .clone()
                .ok_or(ConfigError::Missing("BROKER_ADMIN_TOKEN"))?,
        })
    }
}

/// The token of `Authorization: Bearer <token>`: scheme case-insensitive, exactly one token.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let mut parts = value.split_ascii_whitespace();
    let (scheme, token) = (parts.next()?, parts.next()?);
    (parts.next().is_none() && scheme.eq_ignore_ascii_case("bearer")).then_some(token)
}

/// Whether `candidate` equals any token; every token is compared, whatever matches.
fn is_one_of(tokens: &TokenList, candidate: &str) -> bool {
    let matched = tokens.tokens().fold(Choice::from(0), |found, token| {
        found | token.as_bytes().ct_eq(candidate.as_bytes())
    });
    bool::from(matched)
}

/// Track routes: a track token, else 401.
pub async fn require_track_token(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match bearer_token(request.headers()) {
        Some(token) if is_one_of(&app.auth.track, token) => Ok(next.run(request).await),
        _ => Err(ApiError::Unauthorized),
    }
}

/// Admin routes: missing or malformed is 401, a well-formed non-admin token is 403.
pub async fn require_admin_token(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match bearer_token(request.headers()) {
        None => Err(ApiError::Unauthorized),
        Some(token) if is_one_of(&app.auth.admin, token) => Ok(next.run(request).await),
        Some(_) => Err(ApiError::Forbidden),
    }
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
    fn any_configured_token_matches() {
        let tokens = TokenList::parse("old,new").unwrap();
        assert!(is_one_of(&tokens, "old"));
        assert!(is_one_of(&tokens, "new"));
        assert!(!is_one_of(&tokens, "ne"));
        assert!(!is_one_of(&tokens, "newer"));
    }
}
