//! Webhook endpoints, black-box on both stores: registering (the secret shown once),
//! listing with the delivery state, a signed test delivery that the Standard Webhooks
//! reference library (Python, from PyPI) verifies, secret rotation with both secrets
//! signing, a failing receiver, no redirect followed, and SSRF refusals.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_of, json_of};

const STANDARD_WEBHOOKS: &str = "standardwebhooks==1.3.0";

/// The suite's receiver (tests/webhooks/receiver.py) on a loopback port; killed when dropped.
pub struct Receiver {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    /// Starts one that answers 500 to its first `fail_first` deliveries.
    pub fn start(fail_first: u32) -> Self {
        Self::start_on(fail_first, 0)
    }

    /// [`Self::start`] on `port` (0: a free one).
    pub fn start_on(fail_first: u32, port: u16) -> Self {
        let python = crate::helpers::tools::python_venv(STANDARD_WEBHOOKS).join("bin/python");
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhooks/receiver.py");
        let mut child = Command::new(python)
            .arg(script)
            .env("FAIL_FIRST", fail_first.to_string())
            .env("PORT", port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the receiver");
        let stdout = child.stdout.take().expect("stdout");
        let mut port = String::new();
        BufReader::new(stdout)
            .read_line(&mut port)
            .expect("the receiver's port");
        Self {
            child,
            base: format!("http://127.0.0.1:{}", port.trim()),
        }
    }

    /// Each delivery, verified by the reference library with the first of `secrets` that
    /// verifies it (`verified_with` its index, null: none did).
    pub async fn verified(&self, secrets: &[&str]) -> Vec<Value> {
        // Secrets are `whsec_` and base64: only `+`, `/` and `=` need escaping.
        let query: Vec<String> = secrets
            .iter()
            .map(|s| {
                let escaped = s
                    .replace('+', "%2B")
                    .replace('/', "%2F")
                    .replace('=', "%3D");
                format!("secret={escaped}")
            })
            .collect();
        reqwest::Client::new()
            .get(format!("{}/verify?{}", self.base, query.join("&")))
            .send()
            .await
            .unwrap()
            .json::<Vec<Value>>()
            .await
            .unwrap()
    }
}

/// An app that may deliver over plain HTTP to loopback (the receiver).
async fn app_for_local_receivers() -> TestApp {
    TestApp::builder()
        .config(|c| {
            c.csp.allow_http_upstreams = true;
            c.webhooks.allow_private_webhooks = true;
        })
        .spawn()
        .await
}

async fn register(app: &TestApp, url: &str) -> reqwest::Response {
    app.admin(Method::POST, "/v1/admin/webhooks")
        .json(&json!({"url": url, "events": ["sandbox.allocated", "pool.low"], "description": "lab platform"}))
        .send()
        .await
        .unwrap()
}

/// Registers the endpoint `body` describes, which the test knows is accepted.
async fn registered(app: &TestApp, body: &Value) -> Value {
    let made = app
        .admin(Method::POST, "/v1/admin/webhooks")
        .json(body)
        .send()
        .await
        .unwrap();
    json_of(made, StatusCode::CREATED).await
}

async fn post(app: &TestApp, path: &str) -> Value {
    json_of(
        app.admin(Method::POST, path).send().await.unwrap(),
        StatusCode::OK,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_endpoint_gets_signed_test_events_and_a_rotation_keeps_both_secrets_signing() {
    let receiver = Receiver::start(0);
    let app = app_for_local_receivers().await;
    let made = json_of(
        register(&app, &format!("{}/hooks", receiver.base)).await,
        StatusCode::CREATED,
    )
    .await;
    let id = made["id"].as_str().unwrap().to_owned();
    let secret = made["secret"].as_str().unwrap().to_owned();
    assert!(
        id.starts_with("wh_") && secret.starts_with("whsec_"),
        "{made}"
    );
    assert_eq!(made["events"], json!(["sandbox.allocated", "pool.low"]));
    let listed = json_of(app.admin_get("/v1/admin/webhooks").await, StatusCode::OK).await;
    assert!(
        !listed.to_string().contains(&secret),
        "a secret is never listed"
    );
    assert_eq!(listed["webhooks"][0]["id"], id.as_str());

    let test = post(&app, &format!("/v1/admin/webhooks/{id}/test")).await;
    assert_eq!(
        (&test["delivered"], &test["status"]),
        (&json!(true), &json!(200)),
        "{test}"
    );
    let seen = receiver.verified(&[&secret]).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (&seen[0]["id"], &seen[0]["verified_with"], &seen[0]["type"]),
        (&test["event_id"], &json!(0), &json!("webhook.test")),
        "the reference library verifies it: {seen:?}"
    );
    assert_eq!(seen[0]["data"]["webhook_id"], id.as_str());
    let shown = json_of(
        app.admin_get(&format!("/v1/admin/webhooks/{id}")).await,
        StatusCode::OK,
    )
    .await;
    assert!(shown["last_success_at"].is_i64(), "{shown}");
    assert_eq!(shown["consecutive_failures"], 0);

    // Rotated: the new secret signs, and the old one still does for a day.
    let rotated = post(&app, &format!("/v1/admin/webhooks/{id}/rotate")).await;
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    assert!(rotated["previous_secret_expires_at"].is_i64(), "{rotated}");
    post(&app, &format!("/v1/admin/webhooks/{id}/test")).await;
    let by_new = receiver.verified(&[&new_secret]).await;
    let by_old = receiver.verified(&[&secret]).await;
    assert_eq!(
        (&by_new[1]["verified_with"], &by_old[1]["verified_with"]),
        (&json!(0), &json!(0)),
        "both secrets sign during the overlap"
    );
    assert_eq!(
        by_new[0]["verified_with"],
        Value::Null,
        "the first was signed before the new secret"
    );
    assert_ne!(
        by_new[0]["id"], by_new[1]["id"],
        "each event has its own id"
    );

    let log = json_of(app.admin_get("/v1/admin/actions").await, StatusCode::OK).await;
    let actions: Vec<&str> = log["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    for action in [
        "admin.webhook_create",
        "admin.webhook_test",
        "admin.webhook_rotate",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    let gone = app
        .admin(Method::DELETE, &format!("/v1/admin/webhooks/{id}"))
        .send()
        .await
        .unwrap();
    json_of(gone, StatusCode::OK).await;
    let again = app
        .admin(Method::DELETE, &format!("/v1/admin/webhooks/{id}"))
        .send()
        .await
        .unwrap();
    error_of(again, StatusCode::NOT_FOUND, "NOT_FOUND").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_and_a_redirect_are_recorded_as_failures() {
    let receiver = Receiver::start(1);
    let app = app_for_local_receivers().await;
    let made = json_of(
        register(&app, &format!("{}/hooks", receiver.base)).await,
        StatusCode::CREATED,
    )
    .await;
    let id = made["id"].as_str().unwrap();
    let failed = post(&app, &format!("/v1/admin/webhooks/{id}/test")).await;
    assert_eq!(
        (&failed["delivered"], &failed["status"]),
        (&json!(false), &json!(500)),
        "{failed}"
    );
    let shown = json_of(
        app.admin_get(&format!("/v1/admin/webhooks/{id}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (
            &shown["consecutive_failures"],
            &shown["last_failure_status"],
            &shown["last_success_at"]
        ),
        (&json!(1), &json!(500), &Value::Null),
        "{shown}"
    );
    let then = post(&app, &format!("/v1/admin/webhooks/{id}/test")).await;
    assert_eq!(then["delivered"], true);
    let shown = json_of(
        app.admin_get(&format!("/v1/admin/webhooks/{id}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(shown["consecutive_failures"], 0, "{shown}");

    let redirected = json_of(
        register(&app, &format!("{}/redirect", receiver.base)).await,
        StatusCode::CREATED,
    )
    .await;
    let id = redirected["id"].as_str().unwrap();
    let test = post(&app, &format!("/v1/admin/webhooks/{id}/test")).await;
    assert_eq!(
        (&test["delivered"], &test["status"]),
        (&json!(false), &json!(307)),
        "{test}"
    );
    assert!(
        test["error"]
            .as_str()
            .unwrap()
            .contains("redirects are not followed"),
        "{test}"
    );
    assert_eq!(
        receiver.verified(&[]).await.len(),
        2,
        "the redirect's target got nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_inside_the_network_and_bad_fields_are_refused() {
    let app = TestApp::builder()
        .config(|c| c.csp.allow_http_upstreams = true)
        .spawn()
        .await;
    for url in [
        "http://127.0.0.1:9/hooks",
        "http://localhost/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/",
        "http://[::1]:8080/",
        "http://[::ffff:192.168.0.1]/",
    ] {
        let body = error_of(
            register(&app, url).await,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        )
        .await;
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("ALLOW_PRIVATE_WEBHOOKS"),
            "{url}: {body}"
        );
    }
    let https_only = TestApp::builder()
        .config(|c| c.csp.allow_http_upstreams = false)
        .spawn()
        .await;
    let body = error_of(
        register(&https_only, "http://hooks.example.com/").await,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("https://"),
        "{body}"
    );
    for (bad, field) in [
        (json!({"events": ["pool.low"]}), "url"),
        (
            json!({"url": "https://hooks.example.com/", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://hooks.example.com/", "events": ["sandbox.stolen"]}),
            "events",
        ),
        (
            json!({"url": "https://user:pw@hooks.example.com/", "events": ["pool.low"]}),
            "url",
        ),
    ] {
        let response = https_only
            .admin(Method::POST, "/v1/admin/webhooks")
            .json(&bad)
            .send()
            .await
            .unwrap();
        let body = error_of(response, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
        assert!(
            body["message"].as_str().unwrap().starts_with(field),
            "{bad}: {body}"
        );
    }
    let listed = json_of(app.admin_get("/v1/admin/webhooks").await, StatusCode::OK).await;
    assert_eq!(listed["webhooks"], json!([]), "nothing was kept");
    let not_an_id = app.admin_get("/v1/admin/webhooks/res_1").await;
    error_of(not_an_id, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
}

/// Waits (up to thirty seconds) until the receiver has kept `count` deliveries.
pub async fn until_received(receiver: &Receiver, secrets: &[&str], count: usize) -> Vec<Value> {
    for _ in 0..600 {
        let seen = receiver.verified(secrets).await;
        if seen.len() >= count {
            return seen;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the receiver got {:?}", receiver.verified(secrets).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_are_delivered_signed_and_in_order_per_sandbox() {
    let receiver = Receiver::start(0);
    let app = app_for_local_receivers().await;
    app.seed("lab-", 0, 3).await;
    let body = json!({"url": format!("{}/hooks", receiver.base), "events": ["sandbox.allocated", "sandbox.released"]});
    let made = registered(&app, &body).await;
    let secret = made["secret"].as_str().unwrap().to_owned();

    let first = json_of(
        app.allocate_with("stu-1", &[("X-Instruqt-Track-ID", "dns")])
            .await,
        StatusCode::CREATED,
    )
    .await;
    let first_id = first["sandbox_id"].as_str().unwrap().to_owned();
    json_of(app.mark(&first_id, "stu-1").await, StatusCode::OK).await;
    let second = json_of(app.allocate("stu-2").await, StatusCode::CREATED).await;

    let seen = until_received(&receiver, &[&secret], 3).await;
    assert!(
        seen.iter().all(|d| d["verified_with"] == 0),
        "every delivery verifies: {seen:?}"
    );
    let of_first: Vec<&str> = seen
        .iter()
        .filter(|d| d["data"]["sandbox_id"] == first_id.as_str())
        .map(|d| d["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        of_first,
        ["sandbox.allocated", "sandbox.released"],
        "in order: {seen:?}"
    );
    let allocated = seen
        .iter()
        .find(|d| d["type"] == "sandbox.allocated" && d["data"]["sandbox_id"] == first_id.as_str())
        .unwrap();
    assert_eq!(
        (
            &allocated["data"]["track_name"],
            &allocated["data"]["allocated_to_track"],
            &allocated["data"]["status"]
        ),
        (&json!("dns"), &json!("stu-1"), &json!("allocated"))
    );
    assert!(
        seen.iter()
            .any(|d| d["data"]["sandbox_id"] == second["sandbox_id"])
    );
    let ids: std::collections::HashSet<&str> =
        seen.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "one id per event");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(receiver.verified(&[]).await.len(), 3, "each delivered once");
    let shown = json_of(app.admin_get("/v1/admin/webhooks").await, StatusCode::OK).await;
    assert!(shown["webhooks"][0]["last_success_at"].is_i64(), "{shown}");
    assert_eq!(
        (
            &shown["webhooks"][0]["pending"],
            &shown["webhooks"][0]["failed"]
        ),
        (&json!(0), &json!(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_answers_500_then_200_gets_the_event_on_a_retry() {
    let receiver = Receiver::start(1);
    let app = app_for_local_receivers().await;
    app.seed("lab-", 0, 1).await;
    let body = json!({"url": format!("{}/hooks", receiver.base), "events": ["sandbox.allocated"]});
    let made = registered(&app, &body).await;
    let secret = made["secret"].as_str().unwrap().to_owned();
    json_of(app.allocate("stu-1").await, StatusCode::CREATED).await;
    let seen = until_received(&receiver, &[&secret], 2).await;
    assert_eq!(
        seen[0]["id"], seen[1]["id"],
        "the retry carries the same webhook-id"
    );
    assert!(seen.iter().all(|d| d["verified_with"] == 0), "{seen:?}");
    let metrics = app.metrics_text().await;
    let id = made["id"].as_str().unwrap();
    for (outcome, count) in [("failed", 1.0), ("delivered", 1.0)] {
        let series =
            format!("broker_webhook_deliveries_total{{endpoint=\"{id}\",outcome=\"{outcome}\"}}");
        assert_eq!(
            crate::helpers::series_sum(&metrics, &series),
            count,
            "{series}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_crossing_its_watermark_and_running_out_is_announced_once_each() {
    let receiver = Receiver::start(0);
    let app = TestApp::builder()
        .config(|c| {
            c.csp.allow_http_upstreams = true;
            c.webhooks.allow_private_webhooks = true;
            c.http.pool_low_watermarks =
                sandbox_broker::http::config::PoolWatermarks::parse("lab-:2").unwrap();
        })
        .spawn()
        .await;
    app.seed("lab-", 0, 3).await;
    let body =
        json!({"url": format!("{}/hooks", receiver.base), "events": ["pool.low", "pool.empty"]});
    let secret = registered(&app, &body).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    // Let the dispatcher see the pool fine first.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    for n in 0..2 {
        json_of(app.allocate(&format!("stu-{n}")).await, StatusCode::CREATED).await;
    }
    let low = until_received(&receiver, &[&secret], 1).await;
    assert_eq!(low[0]["type"], "pool.low", "{low:?}");
    assert_eq!(
        low[0]["data"],
        json!({"name_prefix": "lab-", "available": 1, "watermark": 2})
    );
    json_of(app.allocate("stu-2").await, StatusCode::CREATED).await;
    let both = until_received(&receiver, &[&secret], 2).await;
    assert_eq!(both[1]["type"], "pool.empty", "{both:?}");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(receiver.verified(&[]).await.len(), 2, "each crossing once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_does_not_hold_up_the_others() {
    let receiver = Receiver::start(0);
    let app = app_for_local_receivers().await;
    app.seed("lab-", 0, 3).await;
    for path in ["slow", "hooks"] {
        let body =
            json!({"url": format!("{}/{path}", receiver.base), "events": ["sandbox.allocated"]});
        registered(&app, &body).await;
    }
    let started = std::time::Instant::now();
    for n in 0..3 {
        json_of(app.allocate(&format!("stu-{n}")).await, StatusCode::CREATED).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    // The slow endpoint takes 5 s an answer; the other gets all three meanwhile.
    let mut fast = 0;
    while started.elapsed() < std::time::Duration::from_secs(4) {
        let seen = receiver.verified(&[]).await;
        fast = seen.iter().filter(|d| d["path"] == "/hooks").count();
        if fast == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        fast, 3,
        "the fast endpoint got every event while the slow one was still busy"
    );
    let slow_by_then = receiver
        .verified(&[])
        .await
        .iter()
        .filter(|d| d["path"] == "/slow")
        .count();
    assert!(
        slow_by_then <= 1,
        "the slow one is still on its first: {slow_by_then}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_three_delivers_each_event_once() {
    let receiver = Receiver::start(0);
    let (stores, _guard) = crate::flavor::fleet_stores(3).await;
    let mut apps = Vec::new();
    for store in stores {
        let app = TestApp::builder()
            .store(store, Box::new(()))
            .config(|c| {
                c.csp.allow_http_upstreams = true;
                c.webhooks.allow_private_webhooks = true;
            })
            .spawn()
            .await;
        apps.push(app);
    }
    apps[0].seed("lab-", 0, 9).await;
    let body = json!({"url": format!("{}/hooks", receiver.base), "events": ["sandbox.allocated"]});
    let secret = registered(&apps[1], &body).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    for n in 0..9 {
        let app = &apps[n % 3];
        json_of(app.allocate(&format!("stu-{n}")).await, StatusCode::CREATED).await;
    }
    until_received(&receiver, &[&secret], 9).await;
    // Every instance's dispatcher has had its turns since: still nine, one per event.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let seen = receiver.verified(&[&secret]).await;
    let ids: std::collections::HashSet<&str> =
        seen.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!((seen.len(), ids.len()), (9, 9), "{seen:?}");
    assert!(seen.iter().all(|d| d["verified_with"] == 0));
}
