//! The middleware stack every response passes through, built in one place.
//!
//! Rule (outermost first): request-id sanitising and assignment, security headers, CORS,
//! metrics and the access log, the error envelope, panic catching, the request timeout.
//! The envelope sits inside the request-id layer so every error body carries the same
//! `request_id` as the `X-Request-ID` header, and outside panic/timeout so those are
//! enveloped too.

use std::any::Any;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;

use super::error::{ApiError, ErrorBody};
use super::extract::{self, IDEMPOTENCY_HEADER};
use crate::http::state::AppState;
use crate::metrics::InFlightGuard;
use crate::ratelimit::{CallerKey, Decision, client_address};

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const PERMISSIONS_POLICY: HeaderName = HeaderName::from_static("permissions-policy");
const X_XSS_PROTECTION: HeaderName = HeaderName::from_static("x-xss-protection");
/// Rate limit headers.
const RATE_LIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const RATE_LIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
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

/// The outcome reported in the access log, set by handlers whose outcome is richer than the status.
#[derive(Debug, Clone, Copy)]
pub struct Outcome(pub &'static str);

/// The sandbox a request dealt with, for the access log's `sandbox_id` (set by handlers
/// that learn it, e.g. allocation).
#[derive(Debug, Clone)]
pub struct LoggedSandbox(pub String);

/// Longest path or header value copied into a log line: enough for every real route,
/// bounded for made-up ones.
const MAX_LOGGED_CHARS: usize = 200;

/// Wraps `router` (routes, fallback included) in the full stack.
pub fn apply(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    let cors = cors_layer(&state.http.cors_allowed_origins.0);
    let stack = ServiceBuilder::new()
        .layer(middleware::from_fn(drop_insane_request_id))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
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
            HeaderName::from_static(extract::STUDENT_HEADER),
            HeaderName::from_static(extract::LEGACY_STUDENT_HEADER),
            HeaderName::from_static(extract::TRACK_HEADER),
            HeaderName::from_static(extract::NAME_PREFIX_HEADER),
            HeaderName::from_static(IDEMPOTENCY_HEADER),
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

/// The `method` label: one of HTTP's standard methods, or `other` for any made-up one, so
/// a caller cannot mint series (every label value of the request histogram comes from a
/// closed set: these, the route templates or `<unknown>`, and the status codes).
fn method_label(method: &Method) -> &'static str {
    static STANDARD: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    STANDARD
        .iter()
        .find(|standard| *standard == method)
        .map_or("other", Method::as_str)
}

/// `value` cut to [`MAX_LOGGED_CHARS`] characters.
fn bounded(value: &str) -> &str {
    value
        .char_indices()
        .nth(MAX_LOGGED_CHARS)
        .map_or(value, |(end, _)| &value[..end])
}

/// The segment of `path` that stands where `parameter` stands in the `route` template.
fn path_parameter<'a>(route: &str, path: &'a str, parameter: &str) -> Option<&'a str> {
    let index = route.split('/').position(|segment| segment == parameter)?;
    path.split('/')
        .nth(index)
        .filter(|segment| !segment.is_empty())
}

/// A request header as text for the log, if present and printable.
fn logged_header(request: &Request, name: &str) -> Option<String> {
    let value = request.headers().get(name)?.to_str().ok()?.trim();
    (!value.is_empty()).then(|| bounded(value).to_owned())
}

/// Records `broker_request_latency_seconds` and writes the one access-log line per request,
/// in the Python service's shape (contract §8) so its CloudWatch filters keep matching:
/// `action` = `"<METHOD> <path>"`, `outcome` = `success` below 400 else `failure`,
/// `latency_ms`, `track_id`, `instruqt_track_id`, `sandbox_id`, `error`. Levels: 5xx at
/// ERROR, 4xx at WARN, the rest at INFO (successful health, readiness and metrics calls at
/// DEBUG: a load balancer polls them).
async fn record_request(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let _in_flight = InFlightGuard::new(&app.metrics.requests_in_flight);
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "<unknown>".to_owned(), |p| p.as_str().to_owned());
    let request_id = request_id_of(&request);
    let action = format!("{method} {}", bounded(request.uri().path()));
    let track_id = logged_header(&request, extract::STUDENT_HEADER)
        .or_else(|| logged_header(&request, extract::LEGACY_STUDENT_HEADER));
    let instruqt_track_id = logged_header(&request, extract::TRACK_HEADER);
    let path_sandbox = path_parameter(&route, request.uri().path(), "{sandbox_id}")
        .map(|id| bounded(id).to_owned());
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status();
    app.metrics
        .request_latency_seconds
        .with_label_values(&[method_label(&method), route.as_str(), status.as_str()])
        .observe(elapsed.as_secs_f64());
    let outcome = if status.as_u16() < 400 {
        "success"
    } else {
        "failure"
    };
    let result = result_of(&response);
    let operation = operation_of(&method, &route, &app.http.api_base_path);
    let latency_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    let error_body = response.extensions().get::<ErrorBody>();
    let error_code = error_body.map(|b| b.code);
    let error = error_body.map(|b| b.message.as_str());
    let sandbox_id = response
        .extensions()
        .get::<LoggedSandbox>()
        .map(|s| s.0.clone())
        .or(path_sandbox);
    let message = format!("{action} - {}", status.as_u16());
    macro_rules! access_log {
        ($level:ident) => {
            tracing::$level!(
                request_id,
                action,
                outcome,
                latency_ms,
                track_id,
                instruqt_track_id,
                sandbox_id,
                error,
                operation,
                result,
                error.code = error_code,
                http.method = %method,
                http.route = %route,
                http.status = status.as_u16(),
                "{message}"
            )
        };
    }
    if status.is_server_error() {
        access_log!(error);
    } else if status.is_client_error() {
        access_log!(warn);
    } else if operation.starts_with("ops.") {
        access_log!(debug);
    } else {
        access_log!(info);
    }
    response
}

/// What the request came to, finer than `outcome`: a handler's own outcome
/// (`success`, `idempotent`, …), `no_sandboxes`, `rejected` (4xx), `error` (5xx).
fn result_of(response: &Response) -> &'static str {
    if let Some(Outcome(outcome)) = response.extensions().get::<Outcome>() {
        return outcome;
    }
    match response.extensions().get::<ErrorBody>() {
        Some(body) if body.code == "NO_SANDBOXES_AVAILABLE" => "no_sandboxes",
        _ if response.status().is_server_error() => "error",
        _ if response.status().is_client_error() => "rejected",
        _ => "success",
    }
}

/// A stable name for what the request did, for log filters: `allocate`, `admin.stats`, …
fn operation_of(method: &Method, route: &str, base: &str) -> String {
    if route == "<unknown>" {
        return "unknown".into();
    }
    let Some(path) = route.strip_prefix(base) else {
        return format!("ops.{}", route.trim_start_matches('/'));
    };
    match path {
        "/allocate" => "allocate".into(),
        "/sandboxes/{sandbox_id}" => "get_sandbox".into(),
        "/sandboxes/{sandbox_id}/mark-for-deletion" => "mark_for_deletion".into(),
        "/admin/sandboxes" if method == Method::POST => "admin.import_sandboxes".into(),
        "/admin/sandboxes" => "admin.list_sandboxes".into(),
        path if path.starts_with("/admin/") => {
            format!(
                "admin.{}",
                path.trim_start_matches("/admin/").replace('-', "_")
            )
        }
        path => format!("ops.{}", path.trim_start_matches('/')),
    }
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

/// Route layer on the track and admin routes: one token per request from the caller's bucket.
pub async fn rate_limit(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let caller = caller_key(&app, &request);
    let (mut response, remaining) = match app.rate_limiter.check(&caller) {
        Decision::Allowed { remaining } => (next.run(request).await, remaining),
        Decision::Limited { retry_after_secs } => {
            app.metrics.rate_limited_total.inc();
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

fn caller_key(app: &AppState, request: &Request) -> CallerKey {
    match extract::student_key(request.headers()) {
        Ok(student) => CallerKey::Student(student.as_str().to_owned()),
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
        .get("x-forwarded-for")
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

    #[test]
    fn made_up_methods_share_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for made_up in ["FOOBAR1", "XYZZY", "get"] {
            let method = Method::from_bytes(made_up.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "other", "{made_up}");
        }
    }

    #[test]
    fn the_sandbox_id_is_read_where_the_route_has_it() {
        let route = "/v1/sandboxes/{sandbox_id}/mark-for-deletion";
        assert_eq!(
            path_parameter(
                route,
                "/v1/sandboxes/2012224/mark-for-deletion",
                "{sandbox_id}"
            ),
            Some("2012224")
        );
        assert_eq!(
            path_parameter(
                "/v1/sandboxes/{sandbox_id}",
                "/v1/sandboxes/77",
                "{sandbox_id}"
            ),
            Some("77")
        );
        assert_eq!(
            path_parameter("/v1/allocate", "/v1/allocate", "{sandbox_id}"),
            None
        );
        assert_eq!(bounded(&"x".repeat(500)).len(), MAX_LOGGED_CHARS);
    }

    #[test]
    fn actions_name_routes_stably() {
        let cases = [
            (Method::POST, "/v1/allocate", "allocate"),
            (Method::GET, "/v1/sandboxes/{sandbox_id}", "get_sandbox"),
            (Method::POST, "/v1/admin/bulk-delete", "admin.bulk_delete"),
            (Method::GET, "/v1/admin/stats", "admin.stats"),
            (Method::GET, "/healthz", "ops.healthz"),
            (Method::GET, "/v1/openapi.json", "ops.openapi.json"),
            (Method::GET, "<unknown>", "unknown"),
        ];
        for (method, route, action) in cases {
            assert_eq!(operation_of(&method, route, "/v1"), action, "{route}");
        }
    }
}
