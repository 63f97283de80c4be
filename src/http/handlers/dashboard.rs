//! `GET /dashboard`: the operators' page, compiled into the binary (no CDN). It holds no
//! data itself; it asks for the admin token and reads only the admin API.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::http::state::AppState;

const PAGE: &str = include_str!("../dashboard/index.html");
const SCRIPT: &str = include_str!("../dashboard/app.js");
const STYLE: &str = include_str!("../dashboard/app.css");

fn asset(content_type: &'static str, body: String) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The page, told where the API lives (`API_BASE_PATH` is validated to URL-safe characters).
pub async fn page(State(app): State<AppState>) -> Response {
    let html = PAGE.replace("__API_BASE__", &app.http.api_base_path);
    asset("text/html; charset=utf-8", html)
}

/// The page's script.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT.to_owned())
}

/// The page's styles.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE.to_owned())
}
