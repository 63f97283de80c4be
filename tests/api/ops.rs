//! Operations: health, readiness, metrics, request ids, security headers, CORS, rate limits, docs,
//! and the 500/503 envelopes behind a failing store.

use std::sync::Arc;

use async_trait::async_trait;
use reqwest::{Method, Response, StatusCode};
use sandbox_broker::domain::usage::AllocationFacts;
use sandbox_broker::domain::{NamePrefix, NiosxaasHistory, Sandbox, SandboxId};
use sandbox_broker::store::{
    Allocation, AllocationRequest, AllocationStore, AnalyticsStore, HealthStore, Outcome,
    PoolStats, ReleaseOutcome, ReleaseRequest, SharedStore, StoreError,
};

use crate::helpers::{TestApp, error_of, json_of};

fn assert_security_headers(response: &Response, what: &str) {
    let headers = response.headers();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        (
            "permissions-policy",
            "geolocation=(), microphone=(), camera=()",
        ),
        ("x-xss-protection", "0"),
    ] {
        assert_eq!(
            headers.get(name).map(|v| v.to_str().unwrap()),
            Some(value),
            "{name} on {what}"
        );
    }
    assert!(
        headers.contains_key("strict-transport-security"),
        "HSTS on {what}"
    );
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.starts_with("default-src 'none'"),
        "CSP on {what}: {csp}"
    );
    assert!(
        headers.contains_key("x-request-id"),
        "X-Request-ID on {what}"
    );
    let json = headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json {
        assert_eq!(
            headers.get("cache-control").map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "Cache-Control on {what}"
        );
    }
}

#[tokio::test]
async fn healthz_and_readyz_report_without_auth() {
    let app = TestApp::spawn().await;

    let health = json_of(
        app.client.get(app.url("/healthz")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    let ready = json_of(
        app.client.get(app.url("/readyz")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;

    assert_eq!(health["status"], "healthy");
    assert!(health["timestamp"].is_i64());
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["store"], "ok");
    // The Python service's key, where the store is DynamoDB.
    let dynamodb = app.store.health.backend().map(|_| "ok");
    assert_eq!(ready["checks"]["dynamodb"].as_str(), dynamodb, "{ready}");
}

#[tokio::test]
async fn the_root_answers_as_before_and_redoc_leads_to_the_docs() {
    let app = TestApp::spawn().await;

    let root = app.client.get(app.url("/")).send().await.unwrap();
    assert_security_headers(&root, "GET /");
    let root = json_of(root, StatusCode::OK).await;
    let redoc = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url("/v1/redoc"))
        .send()
        .await
        .unwrap();

    assert_eq!(
        (root["service"].as_str(), root["docs"].as_str()),
        (Some("Sandbox Broker API"), Some("/v1/docs"))
    );
    assert_eq!(root["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(redoc.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(redoc.headers()["location"], "/v1/docs/");
}

#[tokio::test]
async fn metrics_keep_the_python_names_and_pool_gauges_follow_each_change() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 4).await;
    app.allocate("stu").await;
    app.allocate("stu").await;
    app.allocate("other").await;

    let text = app.metrics_text().await;

    for line in [
        "broker_allocate_total{outcome=\"success\"} 2",
        "broker_allocate_total{outcome=\"idempotent\"} 1",
        "broker_allocate_idempotent_hits_total 1",
        "broker_allocate_conflicts_total 0",
        "broker_pool_available 2",
        "broker_pool_allocated 2",
        "broker_pool_pending_deletion 0",
        "broker_pool_stale 0",
        "broker_pool_deletion_failed 0",
        "broker_pool_total 4",
        "broker_store_up 1",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    assert!(
        text.contains("broker_request_latency_seconds_count{endpoint=\"/v1/allocate\",method=\"POST\",status=\"201\"} 2"),
        "request latency not recorded per route:\n{text}"
    );
    assert!(
        text.contains("broker_allocation_latency_seconds_count{outcome=\"success\"} 2"),
        "{text}"
    );
}

/// The value of the series `series` (name and labels exactly) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_each_configured_prefix_and_say_when_each_job_ran_and_is_due() {
    let app = TestApp::builder()
        .pool_prefixes("dns-, sec-,none-")
        .spawn()
        .await;
    app.seed("dns-", 0, 3).await;
    app.seed("sec-", 100, 2).await;
    app.allocate_with("stu", &[("X-Sandbox-Name-Prefix", "dns-")])
        .await;
    let before = sandbox_broker::domain::now_epoch();
    app.expire_now().await;

    let text = app.metrics_text().await;

    let value =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no `{series}` in\n{text}"));
    assert_eq!(
        value(r#"broker_pool_available_by_prefix{prefix="dns-"}"#),
        2.0
    );
    assert_eq!(
        value(r#"broker_pool_available_by_prefix{prefix="sec-"}"#),
        2.0
    );
    assert_eq!(
        value(r#"broker_pool_available_by_prefix{prefix="none-"}"#),
        0.0
    );
    assert_eq!(
        value(r#"broker_job_last_outcome{job="expiry",outcome="completed"}"#),
        1.0
    );
    assert_eq!(
        value(r#"broker_job_last_outcome{job="expiry",outcome="failed"}"#),
        0.0
    );
    let finished = value(r#"broker_job_last_finished_timestamp_seconds{job="expiry"}"#);
    let due = value(r#"broker_job_next_run_timestamp_seconds{job="expiry"}"#);
    assert!(finished >= before as f64, "{finished} < {before}");
    assert!(due > finished, "next run {due} after the last {finished}");
}

#[tokio::test]
async fn sane_request_ids_are_echoed_and_others_replaced() {
    let app = TestApp::spawn().await;
    let long = "a".repeat(200);
    for (sent, echoed) in [
        ("trace-123_abc.d:e", true),
        ("has space", false),
        (long.as_str(), false),
        ("<x>", false),
    ] {
        let response = app
            .client
            .get(app.url("/healthz"))
            .header("X-Request-ID", sent)
            .send()
            .await
            .unwrap();
        let got = response.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(got == sent, echoed, "sent {sent:?}, got {got:?}");
        assert!(!got.is_empty());
    }
    let response = app
        .client
        .get(app.url("/nope"))
        .header("X-Request-ID", "mine-1")
        .send()
        .await
        .unwrap();
    let detail = error_of(response, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    assert_eq!(detail["request_id"], "mine-1");
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_get_the_envelope_and_security_headers() {
    let app = TestApp::spawn().await;

    let missing = app.client.get(app.url("/v1/nope")).send().await.unwrap();
    assert_security_headers(&missing, "404");
    error_of(missing, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    let wrong = app.lab(Method::GET, "/v1/allocate").send().await.unwrap();
    assert_security_headers(&wrong, "405");
    assert_eq!(wrong.headers()["allow"], "POST", "the envelope keeps Allow");
    error_of(wrong, StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after_and_spares_ops_routes() {
    let app = TestApp::builder()
        .config(|c| {
            c.rate_limit.rate_limit_per_sec = 1.try_into().unwrap();
            c.rate_limit.rate_limit_burst = 2.try_into().unwrap();
        })
        .spawn()
        .await;
    app.seed("lab-", 0, 5).await;

    let first = app.allocate("stu").await;
    assert_eq!(first.headers()["x-ratelimit-limit"], "1");
    assert_eq!(first.headers()["x-ratelimit-remaining"], "1");
    app.allocate("stu").await;
    let limited = app.allocate("stu").await;

    assert_security_headers(&limited, "429");
    assert!(
        limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    error_of(
        limited,
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMIT_EXCEEDED",
    )
    .await;
    let other_holder = app.allocate("someone-else").await;
    assert_eq!(
        other_holder.status(),
        StatusCode::CREATED,
        "buckets are per student"
    );
    for _ in 0..5 {
        let health = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        assert!(!health.headers().contains_key("x-ratelimit-limit"));
    }
}

#[tokio::test]
async fn cors_preflight_allows_the_api_headers() {
    let app = TestApp::builder()
        .config(|c| {
            c.http.cors_allowed_origins =
                sandbox_broker::config::CorsOrigins::parse("https://labs.example.com").unwrap();
        })
        .spawn()
        .await;

    let response = app
        .client
        .request(Method::OPTIONS, app.url("/v1/allocate"))
        .header("Origin", "https://labs.example.com")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,x-instruqt-sandbox-id,idempotency-key",
        )
        .send()
        .await
        .unwrap();

    assert!(response.status().is_success(), "{}", response.status());
    let headers = response.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://labs.example.com"
    );
    assert_eq!(
        headers["access-control-max-age"], "3600",
        "preflights cached for an hour, as before"
    );
    let allowed = headers["access-control-allow-headers"].to_str().unwrap();
    assert!(
        allowed.contains("x-instruqt-sandbox-id") && allowed.contains("idempotency-key"),
        "{allowed}"
    );
}

#[tokio::test]
async fn openapi_lists_every_route_and_the_docs_page_is_served_locally() {
    let app = TestApp::spawn().await;

    let spec = json_of(
        app.client
            .get(app.url("/v1/openapi.json"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let docs = app.client.get(app.url("/v1/docs/")).send().await.unwrap();

    let paths = spec["paths"].as_object().unwrap();
    for path in [
        "/v1/allocate",
        "/v1/sandboxes/{sandbox_id}",
        "/v1/sandboxes/{sandbox_id}/mark-for-deletion",
        "/v1/admin/sandboxes",
        "/v1/admin/stats",
        "/v1/admin/tracks",
        "/v1/admin/bulk-delete",
        "/v1/admin/sync",
        "/v1/admin/jobs",
        "/v1/admin/expire",
        "/v1/admin/cleanup",
        "/v1/admin/auto-delete-stale",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    assert_eq!(docs.status(), StatusCode::OK);
    let csp = docs.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("http"),
        "{csp}"
    );
    assert!(docs.text().await.unwrap().contains("swagger-ui"));
    let js = app
        .client
        .get(app.url("/v1/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        js.status(),
        StatusCode::OK,
        "the Swagger UI bundle is served from the binary"
    );
}

/// Stands in for the roles a request reaches first — allocation, analytics (`/metrics`)
/// and health (`/readyz`) — and fails each call; the other roles are a real store's.
struct FailingStore {
    unavailable: bool,
}

impl FailingStore {
    fn fail(&self) -> StoreError {
        if self.unavailable {
            StoreError::Unavailable("connection refused to 10.0.0.7:8000".into())
        } else {
            StoreError::Internal("row 42 cannot be decoded: secret detail".into())
        }
    }

    /// A store whose allocation, analytics and health fail as this one says.
    async fn over_a_real_store(self) -> (SharedStore, crate::helpers::StoreGuard) {
        let (real, guard) = crate::helpers::fresh_store().await;
        let failing = Arc::new(self);
        let store = SharedStore {
            allocation: failing.clone(),
            analytics: failing.clone(),
            health: failing,
            ..real
        };
        (store, guard)
    }
}

#[async_trait]
impl AllocationStore for FailingStore {
    async fn allocate(&self, _: AllocationRequest) -> Outcome<Allocation> {
        Err(self.fail())
    }
    async fn get(&self, _: &SandboxId) -> Result<Option<Sandbox>, StoreError> {
        Err(self.fail())
    }
    async fn release(&self, _: ReleaseRequest) -> Outcome<ReleaseOutcome> {
        Err(self.fail())
    }
    async fn held_by(&self, _: &AllocationRequest) -> Result<Option<Sandbox>, StoreError> {
        Err(self.fail())
    }
}

#[async_trait]
impl AnalyticsStore for FailingStore {
    async fn stats(&self) -> Result<PoolStats, StoreError> {
        Err(self.fail())
    }
    async fn allocation_facts(&self) -> Result<Vec<AllocationFacts>, StoreError> {
        Err(self.fail())
    }
    async fn available_by_prefix(&self, _: &[NamePrefix]) -> Result<Vec<u64>, StoreError> {
        Err(self.fail())
    }
    async fn niosxaas_history(
        &self,
        _: &SandboxId,
        _: sandbox_broker::domain::time::EpochSecs,
    ) -> Result<Option<NiosxaasHistory>, StoreError> {
        Err(self.fail())
    }
    async fn niosxaas_histories(
        &self,
        _: sandbox_broker::domain::time::EpochSecs,
    ) -> Result<Vec<NiosxaasHistory>, StoreError> {
        Err(self.fail())
    }
}

#[async_trait]
impl HealthStore for FailingStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Err(self.fail())
    }
}

#[tokio::test]
async fn a_store_outage_is_503_with_retry_after_and_readyz_not_ready_while_healthz_stays_200() {
    let (store, guard) = FailingStore { unavailable: true }.over_a_real_store().await;
    let app = TestApp::builder().store(store, guard).spawn().await;

    let allocate = app.allocate("stu").await;
    assert_eq!(allocate.headers()["retry-after"], "5");
    assert_security_headers(&allocate, "503");
    let detail = error_of(
        allocate,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    )
    .await;
    assert!(
        !detail.to_string().contains("10.0.0.7"),
        "leaks internals: {detail}"
    );

    let ready = json_of(
        app.client.get(app.url("/readyz")).send().await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert_eq!(ready["status"], "not_ready");
    assert_eq!(ready["checks"]["store"], "unavailable");
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(
        metrics.status(),
        StatusCode::OK,
        "metrics stay up through a store outage"
    );
    let text = metrics.text().await.unwrap();
    assert!(text.contains("broker_store_up 0"), "{text}");
    assert!(
        text.contains("broker_allocate_total{outcome=\"error\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn an_internal_failure_is_an_enveloped_500_that_leaks_nothing() {
    let (store, guard) = FailingStore { unavailable: false }
        .over_a_real_store()
        .await;
    let app = TestApp::builder().store(store, guard).spawn().await;

    let response = app.get_sandbox("1", "stu").await;

    assert_security_headers(&response, "500");
    let detail = error_of(
        response,
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_ERROR",
    )
    .await;
    assert!(
        !detail.to_string().contains("secret"),
        "leaks internals: {detail}"
    );
    let counted = app.allocate("stu").await;
    error_of(counted, StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR").await;
    let text = app
        .client
        .get(app.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        text.status(),
        StatusCode::OK,
        "docs do not depend on the store"
    );
}

#[tokio::test]
async fn the_dashboard_is_served_from_the_binary_and_holds_no_data_without_a_token() {
    let app = TestApp::spawn().await;
    app.seed("lab-secret-name-", 0, 1).await;

    let page = app.client.get(app.url("/dashboard")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    let script = app
        .client
        .get(app.url("/dashboard/app.js"))
        .send()
        .await
        .unwrap();
    let style = app
        .client
        .get(app.url("/dashboard/app.css"))
        .send()
        .await
        .unwrap();

    assert!(
        csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(
        html.contains("data-api-base=\"/v1\""),
        "the page is told the API base"
    );
    assert!(
        !html.contains("lab-secret-name-"),
        "the page itself carries no pool data"
    );
    assert!(
        !html.contains("<script>") && !html.contains("https://"),
        "no inline script, no CDN"
    );
    assert_eq!(script.status(), StatusCode::OK);
    let js = script.text().await.unwrap();
    assert!(
        js.contains("/admin/stats") && js.contains("Authorization"),
        "it reads the admin API with the token"
    );
    assert!(
        !js.contains("innerHTML"),
        "untrusted names are rendered as text"
    );
    assert_eq!(style.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_and_paths_add_no_metric_series() {
    let app = TestApp::spawn().await;
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    let send = |method: &str, path: String| {
        let request = app.client.request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            app.url(&path),
        );
        async move { request.send().await.unwrap().status() }
    };
    // Every label value a stranger can reach, once: each standard method and `other`.
    for method in [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "FOOBAR",
    ] {
        send(method, "/no-such-route".into()).await;
    }
    // The scrape's own series exists from the second scrape on.
    app.metrics_text().await;
    let before = series(&app.metrics_text().await);

    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..1000 {
        let letters = 3 + (next() % 8) as usize;
        let method: String = (0..letters)
            .map(|_| char::from(b'A' + (next() % 26) as u8))
            .collect();
        let path = format!("/r-{:x}/{:x}", next(), next());
        let status = send(&method, path).await;
        assert!(status.is_client_error(), "{method}: {status}");
    }
    let after = series(&app.metrics_text().await);

    assert_eq!(after, before, "1,000 made-up requests minted series");
}
