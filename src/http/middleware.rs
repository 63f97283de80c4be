//! The middleware stack every response passes through, built in one place.
//!
//! Rule (outermost first): request-id sanitising and assignment, security headers, CORS,
//! metrics and the access log, the error envelope, panic catching, the request timeout.
//! The envelope sits inside the request-id layer so every error body carries the same
//! `request_id` as the `X-Request-ID` header, and outside panic/timeout so those are
//! enveloped too.

use std::any::Any;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;

use super::error::{ApiError, ErrorBody};
use super::extract::{self, IDEMPOTENCY_HEADER};
use crate::http::state::AppState;
use crate::ratelimit::{CallerKey, Decision, client_address};

mod access_log;

use self::access_log::record_request;
pub use self::access_log::{LoggedSandbox, Outcome};

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const PERMISSIONS_POLICY: HeaderName = HeaderName::from_static("permissions-policy");
const X_XSS_PROTECTION: HeaderName = HeaderName::from_static("x-xss-protection");
/// Rate limit headers.
const RATE_LIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const RATE_LIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// What a trusted proxy says the client's address is.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Largest accepted request body (the import route's limit).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest incoming request id that is echoed rather than replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Strict policy for API answers: they are data, never a page.
const STRICT_CSP: &str = "default-src 'none'; frame-ancestors 'none'";
/// The docs pages and the dashboard: their own scripts, styles, images and fetches only.
/// The one hash is the single `<style>` element the vendored Swagger UI bundle injects;
/// pinning it by hash keeps `'unsafe-inline'` out.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

/// Wraps `router` (routes, fallback included) in the full stack.
pub fn apply(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    let cors = cors_layer(&state.http.cors_allowed_origins.0);
    let stack = ServiceBuilder::new()
        .layer(middleware::from_fn(drop_insane_request_id))
        .layer(SetRequestIdLayer::new(REQUEST_ID, RandomRequestId))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security_headers,
        ))
        .layer(cors)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ))
        .layer(middleware::from_fn(render_error_envelope))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.http.request_timeout,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    router.layer(stack)
}

/// Fresh `X-Request-ID` values: random (version 4) UUIDs from the thread's generator.
/// tower-http's `MakeRequestUuid` asks the kernel (`getrandom`) for each one, a system
/// call on every request.
#[derive(Debug, Clone, Copy, Default)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        let mut text = uuid::Uuid::encode_buffer();
        HeaderValue::from_str(id.hyphenated().encode_lower(&mut text))
            .ok()
            .map(RequestId::new)
    }
}

fn is_sane_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
}

/// Removes an incoming `X-Request-ID` that is too long or has odd characters, so a fresh one is made.
async fn drop_insane_request_id(mut request: Request, next: Next) -> Response {
    if request
        .headers()
        .get(REQUEST_ID)
        .is_some_and(|id| !is_sane_request_id(id))
    {
        request.headers_mut().remove(REQUEST_ID);
    }
    next.run(request).await
}

async fn security_headers(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let is_docs = path
        .strip_prefix(app.http.api_base_path.as_str())
        .is_some_and(|rest| rest == "/docs" || rest.starts_with("/docs/"));
    let relaxed = is_docs || path == "/dashboard" || path.starts_with("/dashboard/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let csp = if relaxed { DOCS_CSP } else { STRICT_CSP };
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=63072000; includeSubDomains"),
    );
    headers.insert(
        PERMISSIONS_POLICY,
        HeaderValue::from_static("geolocation=(), microphone=(), camera=()"),
    );
    // `0`: today's advice (OWASP); the old filter's `1; mode=block` enabled XS-leaks.
    headers.insert(X_XSS_PROTECTION, HeaderValue::from_static("0"));
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json && !headers.contains_key(header::CACHE_CONTROL) {
        // Allocations and pool state must never be served from a cache.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn cors_layer(origins: &[HeaderValue]) -> CorsLayer {
    let allow_origin = if origins.is_empty() {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().cloned())
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            extract::HOLDER_HEADER,
            extract::LEGACY_HOLDER_HEADER,
            extract::LAB_HEADER,
            extract::NAME_PREFIX_HEADER,
            IDEMPOTENCY_HEADER,
            REQUEST_ID,
        ])
        .expose_headers([
            REQUEST_ID,
            RATE_LIMIT_LIMIT,
            RATE_LIMIT_REMAINING,
            header::RETRY_AFTER,
        ])
        // Preflights cached for an hour, as the Python service allowed.
        .max_age(std::time::Duration::from_secs(3600))
}

/// The request's id as set by the request-id layer (empty only if that layer is missing).
fn request_id_of(request: &Request) -> String {
    request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Writes `request_id` into error envelopes and envelopes bare error statuses from the framework.
async fn render_error_envelope(request: Request, next: Next) -> Response {
    let request_id = request_id_of(&request);
    let response = next.run(request).await;
    let status = response.status();
    let body = match response.extensions().get::<ErrorBody>() {
        Some(body) => body.clone(),
        None if status.is_client_error() || status.is_server_error() => {
            if response.headers().contains_key(header::CONTENT_TYPE) {
                // A deliberate document (e.g. /readyz's not_ready report), not an error.
                return response;
            }
            ApiError::for_bare_status(status).body()
        }
        None => return response,
    };
    let (parts, _) = response.into_parts();
    let mut enveloped = ErrorBody { request_id, ..body }.to_response(status);
    // Keep what the original answer said about itself (Allow, rate-limit headers, …),
    // every value of it; the envelope's own headers (content type, Retry-After) win.
    let mut headers = parts.headers;
    headers.remove(header::CONTENT_LENGTH);
    for (name, value) in enveloped.headers() {
        headers.insert(name.clone(), value.clone());
    }
    *enveloped.headers_mut() = headers;
    enveloped
}

fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    ApiError::Internal("a request handler panicked".into()).into_response()
}

/// The caller's bucket (the student key, else the client address): over it, 429 with
/// `Retry-After`; either way the `RateLimit-Limit` and `RateLimit-Remaining` headers.
pub(crate) async fn rate_limited(app: &AppState, request: Request, next: Next) -> Response {
    let caller = caller_key(app, &request);
    let (mut response, remaining) = match app.rate_limiter.check(&caller) {
        Decision::Allowed { remaining } => (next.run(request).await, remaining),
        Decision::Limited { retry_after_secs } => {
            app.metrics.http.rate_limited_total.inc();
            (
                ApiError::RateLimited { retry_after_secs }.into_response(),
                0,
            )
        }
    };
    let headers = response.headers_mut();
    headers.insert(
        RATE_LIMIT_LIMIT,
        HeaderValue::from(app.rate_limiter.limit_per_sec()),
    );
    headers.insert(RATE_LIMIT_REMAINING, HeaderValue::from(remaining));
    response
}

/// Track routes: the client address's own bucket (`RATE_LIMIT_PER_ADDRESS_PER_SEC`), on top
/// of the per-student one, so one client cannot send more by inventing student keys.
/// `Err` is the 429 to answer.
pub(crate) fn address_allowed(app: &AppState, request: &Request) -> Result<(), ApiError> {
    let address = CallerKey::Address(client_address_of(app, request));
    match app.address_limiter.check(&address) {
        Decision::Allowed { .. } => Ok(()),
        Decision::Limited { retry_after_secs } => {
            app.metrics.http.rate_limited_total.inc();
            Err(ApiError::RateLimited { retry_after_secs })
        }
    }
}

fn caller_key(app: &AppState, request: &Request) -> CallerKey {
    match extract::holder_key(request.headers()) {
        Ok(holder) => CallerKey::Holder(holder.as_str().to_owned()),
        Err(_) => CallerKey::Address(client_address_of(app, request)),
    }
}

/// The client's address: the peer, or what a trusted proxy says in `X-Forwarded-For`.
pub(crate) fn client_address_of(app: &AppState, request: &Request) -> std::net::IpAddr {
    let peer = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |info| info.0.ip());
    let forwarded = request
        .headers()
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok());
    client_address(peer, forwarded, &app.http.trusted_proxies.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_echoed_only_when_sane() {
        for ok in ["abc-123", "2f1c2b7e-1a2b-4c3d-8e9f-0123456789ab", "a.b:c_d"] {
            assert!(is_sane_request_id(&HeaderValue::from_static(ok)), "{ok}");
        }
        let long = "a".repeat(129);
        for bad in ["", "a b", "<script>", "a/b", long.as_str()] {
            assert!(
                !is_sane_request_id(&HeaderValue::from_str(bad).unwrap()),
                "{bad}"
            );
        }
    }
}
