//! A simulated CSP (wiremock) for the jobs, and the admin calls that drive them.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{TestApp, json_of};

/// A CSP account as the provider lists it.
pub fn account(id: u64, name: &str) -> Value {
    json!({"id": format!("identity/accounts/uuid-{id}"), "csp_id": id, "name": name, "account_type": "sandbox", "state": "active"})
}

/// A simulated CSP listing `accounts`, answering after `delay`.
pub async fn csp(accounts: Vec<Value>, delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/current_user/accounts"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"results": accounts}))
                .set_delay(delay),
        )
        .mount(&server)
        .await;
    server
}

/// Makes `server` accept every deletion (204).
pub async fn accept_deletions(server: &MockServer) {
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(204))
        .mount(server)
        .await;
}

/// How many listings `server` was asked for: each starts at its first page.
pub async fn listings(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|request| request.url.query() == Some("_offset=0&_limit=1000"))
        .count()
}

pub fn use_csp(config: &mut sandbox_broker::config::Config, server: &MockServer) {
    config.csp.csp_base_url = format!("{}/v2", server.uri());
    config.csp.csp_api_token = Some("csp-token".into());
    config.csp.circuit_breaker_threshold = 2;
    config.jobs.sync_interval = Duration::from_secs(3600);
}

pub async fn sync(app: &TestApp) -> reqwest::Response {
    app.admin(Method::POST, "/v1/admin/sync")
        .send()
        .await
        .unwrap()
}

/// `count` released sandboxes: allocated to `stu-N`, then marked by them. Returns their ids.
pub async fn released(app: &TestApp, count: u64) -> Vec<String> {
    app.seed("lab-", 500, count).await;
    let mut ids = Vec::new();
    for n in 0..count {
        let body = json_of(app.allocate(&format!("stu-{n}")).await, StatusCode::CREATED).await;
        let id = body["sandbox_id"].as_str().unwrap().to_owned();
        json_of(app.mark(&id, &format!("stu-{n}")).await, StatusCode::OK).await;
        ids.push(id);
    }
    ids
}

pub async fn cleanup(app: &TestApp) -> Value {
    json_of(
        app.admin(Method::POST, "/v1/admin/cleanup")
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await
}
