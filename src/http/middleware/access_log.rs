//! The access log and the request histogram: one line and one observation per request.
//!
//! Rule: every label value comes from a closed set (standard methods or `other`, route
//! templates or `<unknown>`, status codes), and every logged value is bounded, so callers
//! can mint neither series nor giant lines.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::request_id_of;
use crate::http::error::ErrorBody;
use crate::http::extract;
use crate::http::state::AppState;
use crate::metrics::InFlightGuard;

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
fn logged_header(request: &Request, name: &axum::http::HeaderName) -> Option<String> {
    let value = request.headers().get(name)?.to_str().ok()?.trim();
    (!value.is_empty()).then(|| bounded(value).to_owned())
}

/// Records `broker_request_latency_seconds` and writes the one access-log line per request,
/// in the Python service's shape (docs/api.md, *Logs*) so its CloudWatch filters keep matching:
/// `action` = `"<METHOD> <path>"`, `outcome` = `success` below 400 else `failure`,
/// `latency_ms`, `track_id`, `instruqt_track_id`, `sandbox_id`, `error`. Levels: 5xx at
/// ERROR, 4xx at WARN, the rest at INFO (successful health, readiness and metrics calls at
/// DEBUG: a load balancer polls them).
pub(super) async fn record_request(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let _in_flight = InFlightGuard::new(&app.metrics.http.requests_in_flight);
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "<unknown>".to_owned(), |p| p.as_str().to_owned());
    let request_id = request_id_of(&request);
    let action = format!("{method} {}", bounded(request.uri().path()));
    let track_id = logged_header(&request, &extract::HOLDER_HEADER)
        .or_else(|| logged_header(&request, &extract::LEGACY_HOLDER_HEADER));
    let instruqt_track_id = logged_header(&request, &extract::LAB_HEADER);
    let path_sandbox = path_parameter(&route, request.uri().path(), "{sandbox_id}")
        .map(|id| bounded(id).to_owned());
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status();
    app.metrics
        .http
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
                http.method = method.as_str(),
                http.route = route.as_str(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
