//! The NIOSXaaS pre-delete hook through an admin cleanup, against a simulated CSP
//! (wiremock) that answers both the account API and the session and universal-infra APIs.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use sandbox_broker::domain::clock::{ManualClock, SharedClock, SystemClock};
use sandbox_broker::domain::time::EpochSecs;
use sandbox_broker::domain::{NIOSXAAS_HISTORY_TTL_SECS, SandboxId, SandboxStatus, now_epoch};
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::csp::{cleanup, released, use_csp};
use crate::helpers::{TestApp, error_of, json_of};

const SERVICE: &str = "Instrqt-SaaS";
const SERVICES_PATH: &str = "/api/universalinfra/v1/universalservices";

/// The app with the hook enabled against `server`, in shadow mode or not.
async fn app_with_hook(server: &MockServer, shadow: bool) -> TestApp {
    app_with_hook_on_clock(server, shadow, Arc::new(SystemClock)).await
}

/// [`app_with_hook`] with every rule, the breakers' open periods included, on `clock`.
async fn app_with_hook_on_clock(server: &MockServer, shadow: bool, clock: SharedClock) -> TestApp {
    TestApp::builder()
        .clock(clock)
        .config(|c| {
            use_csp(c, server);
            c.csp.circuit_breaker_timeout = Duration::from_secs(1);
            c.niosxaas.niosxaas_enabled = true;
            c.niosxaas.niosxaas_shadow_mode = shadow;
            c.niosxaas.niosxaas_base_url = server.uri();
            c.niosxaas.niosxaas_email = Some("robot@example.com".into());
            c.niosxaas.niosxaas_password = Some("s3cret".into());
            c.niosxaas.niosxaas_service_name = Some(SERVICE.into());
        })
        .spawn()
        .await
}

/// Sign-in and account switch answering JWTs; a switch is only accepted with the
/// service account's JWT.
async fn mount_session(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/v2/session/users/sign_in"))
        .and(body_json(
            json!({"email": "robot@example.com", "password": "s3cret"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"jwt": "service-jwt"})))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2/session/account_switch"))
        .and(header("authorization", "Bearer service-jwt"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"jwt": "sandbox-jwt"})))
        .mount(server)
        .await;
}

/// The sandbox account lists one service named `SERVICE` and one other.
async fn mount_services(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path(SERVICES_PATH))
        .and(header("authorization", "Bearer sandbox-jwt"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": [
            {"id": "infra/universal_service/svc-lab", "name": SERVICE},
            {"id": "infra/universal_service/svc-keep", "name": "customer-vpn"},
        ]})))
        .mount(server)
        .await;
}

/// Account deletions succeed.
async fn mount_account_deletes(server: &MockServer) {
    Mock::given(method("DELETE"))
        .and(path_regex("^/v2/sandbox/accounts/"))
        .respond_with(ResponseTemplate::new(204))
        .mount(server)
        .await;
}

/// `(method, path)` of every request the server received, in order.
async fn requests(server: &MockServer) -> Vec<(String, String)> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| (r.method.to_string(), r.url.path().to_owned()))
        .collect()
}

async fn row(app: &TestApp, id: &str) -> sandbox_broker::domain::Sandbox {
    app.store
        .allocation
        .get(&SandboxId::parse("id", id).unwrap())
        .await
        .unwrap()
        .unwrap()
}

async fn history(app: &TestApp, id: &str) -> Option<sandbox_broker::domain::NiosxaasHistory> {
    app.store
        .analytics
        .niosxaas_history(
            &SandboxId::parse("id", id).unwrap(),
            EpochSecs::new(now_epoch()),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn enforce_mode_deletes_the_named_service_before_the_account_and_writes_the_history() {
    let server = MockServer::start().await;
    mount_session(&server).await;
    mount_services(&server).await;
    Mock::given(method("DELETE"))
        .and(path(format!("{SERVICES_PATH}/svc-lab")))
        .and(header("authorization", "Bearer sandbox-jwt"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    mount_account_deletes(&server).await;
    let app = app_with_hook(&server, false).await;
    let ids = released(&app, 1).await;

    let report = cleanup(&app).await;

    assert_eq!(report["deleted"], 1, "{report}");
    let calls = requests(&server).await;
    let switch = calls
        .iter()
        .find(|(m, p)| m == "POST" && p == "/v2/session/account_switch")
        .map(|_| ());
    assert!(switch.is_some());
    let service_deleted = calls
        .iter()
        .position(|(m, p)| m == "DELETE" && p.starts_with(SERVICES_PATH));
    let account_deleted = calls
        .iter()
        .position(|(m, p)| m == "DELETE" && p.starts_with("/v2/sandbox/accounts/"));
    assert!(
        service_deleted < account_deleted && service_deleted.is_some(),
        "the service goes before the account: {calls:?}"
    );
    assert!(
        !calls.iter().any(|(_, p)| p.ends_with("svc-keep")),
        "a service with another name is left alone"
    );
    let switch_body = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.url.path() == "/v2/session/account_switch")
        .unwrap()
        .body_json::<serde_json::Value>()
        .unwrap();
    assert_eq!(
        switch_body,
        json!({"id": format!("identity/accounts/uuid-{}", ids[0])})
    );

    let history = history(&app, &ids[0]).await.expect("a history item");
    assert!(history.cleanup.niosxaas_cleaned_at.is_some());
    assert_eq!(
        (
            history.cleanup.niosxaas_cleanup_skipped,
            history.cleanup.niosxaas_cleanup_failed_reason.as_deref(),
            history.cleanup.niosxaas_services_matched,
            history.cleanup.niosxaas_shadow_mode,
            history.holder.as_deref(),
        ),
        (false, None, 1, false, Some("stu-0"))
    );
    let deleted_at = history.deleted_at.expect("deleted_at");
    assert_eq!(history.ttl, deleted_at + NIOSXAAS_HISTORY_TTL_SECS);
    let view = json_of(
        app.admin_get(&format!("/v1/admin/sandboxes/{}/niosxaas-cleanup", ids[0]))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (
            view["sandbox_name"].as_str(),
            view["niosxaas_services_matched"].as_u64(),
            view["niosxaas_cleanup_skipped"].as_bool(),
            view["deleted_at"].as_i64(),
        ),
        (
            Some(history.sandbox_name.as_str()),
            Some(1),
            Some(false),
            Some(deleted_at.get())
        )
    );
    let metrics = app.metrics_text().await;
    for line in [
        r#"broker_niosxaas_cleanups_total{mode="enforce",outcome="cleaned"} 1"#,
        r#"broker_niosxaas_services_total{mode="enforce"} 1"#,
        "broker_niosxaas_circuit_state 0",
        // The Python service's series, for its dashboards.
        r#"broker_niosxaas_cleanup_total{outcome="success"} 1"#,
        "broker_niosxaas_services_deleted_total 1",
        r#"broker_niosxaas_auth_total{outcome="success"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    // The overview the dashboard reads counts the run and lists its record.
    let overview = json_of(app.admin_get("/v1/admin/niosxaas").await, StatusCode::OK).await;
    assert_eq!(
        (
            &overview["enabled"],
            &overview["shadow_mode"],
            &overview["breaker"]
        ),
        (&json!(true), &json!(false), &json!("closed"))
    );
    assert_eq!(
        overview["counts"],
        json!({"cleaned": 1, "skipped": 0, "failed": 0, "pending": 0})
    );
    assert_eq!(overview["total_records"], 1);
    assert_eq!(overview["records"], json!([view]));
    let jobs = json_of(app.admin_get("/v1/admin/jobs").await, StatusCode::OK).await;
    assert_eq!(jobs["breakers"]["niosxaas"], "closed");
}

#[tokio::test]
async fn shadow_mode_only_lists_and_counts_and_its_failures_never_hold_up_a_deletion() {
    let server = MockServer::start().await;
    mount_session(&server).await;
    mount_services(&server).await;
    Mock::given(method("DELETE"))
        .and(path_regex(format!("^{SERVICES_PATH}")))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&server)
        .await;
    mount_account_deletes(&server).await;
    let app = app_with_hook(&server, true).await;
    let ids = released(&app, 2).await;

    let report = cleanup(&app).await;

    assert_eq!(report["deleted"], 2, "{report}");
    for id in &ids {
        let history = history(&app, id).await.expect("a history item");
        assert_eq!(
            (
                history.cleanup.niosxaas_cleaned_at,
                history.cleanup.niosxaas_cleanup_skipped,
                history.cleanup.niosxaas_services_matched,
                history.cleanup.niosxaas_shadow_mode,
            ),
            (None, true, 1, true),
            "shadow mode cleans nothing, so dashboards count it as skipped"
        );
    }
    let metrics = app.metrics_text().await;
    for line in [
        r#"broker_niosxaas_services_total{mode="shadow"} 2"#,
        r#"broker_niosxaas_cleanup_total{outcome="skipped"} 2"#,
        "broker_niosxaas_services_deleted_total 0",
    ] {
        assert!(
            metrics.contains(line),
            "{line} missing from
{metrics}"
        );
    }

    // NIOSXaaS down: shadow mode logs the failure and the account is deleted anyway.
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    mount_account_deletes(&server).await;
    app.seed("lab-", 600, 1).await;
    let held = json_of(app.allocate("stu-late").await, StatusCode::CREATED).await;
    let late = held["sandbox_id"].as_str().unwrap();
    json_of(app.mark(late, "stu-late").await, StatusCode::OK).await;
    assert_eq!(cleanup(&app).await["deleted"], 1);
    let history = history(&app, late).await.expect("a history item");
    let reason = history.cleanup.niosxaas_cleanup_failed_reason.unwrap();
    assert!(reason.contains("sign_in"), "{reason}");
    assert!(!history.cleanup.niosxaas_cleanup_skipped);
}

#[tokio::test]
async fn in_enforce_mode_a_niosxaas_outage_holds_up_deletion_burns_nothing_and_opens_only_its_own_breaker()
 {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/session/users/sign_in"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&server)
        .await;
    let clock = Arc::new(ManualClock::starting_now());
    let app = app_with_hook_on_clock(&server, false, clock.clone()).await;
    let ids = released(&app, 3).await;

    let during = cleanup(&app).await;

    assert_eq!(
        (
            during["deleted"].as_u64(),
            during["retrying"].as_u64(),
            during["postponed"].as_u64(),
            during["failed"].as_u64()
        ),
        (Some(0), Some(2), Some(1), Some(0)),
        "two failures open the hook's breaker, the rest waits: {during}"
    );
    for id in &ids {
        let row = row(&app, id).await;
        assert_eq!(row.status, SandboxStatus::PendingDeletion);
        assert_eq!(row.deletion_retry_count, 0, "an outage is never an attempt");
    }
    // Which two rows ran first (and carry the error) is the store's order, not the ids'.
    let mut errors = Vec::new();
    for id in &ids {
        errors.extend(row(&app, id).await.last_deletion_error);
    }
    assert_eq!(errors.len(), 2, "the two attempts record why: {errors:?}");
    for error in &errors {
        assert!(
            error.contains("NIOSXaaS") && error.contains("sign_in"),
            "{error}"
        );
    }
    let metrics = app.metrics_text().await;
    for line in [
        "broker_niosxaas_circuit_state 1",
        "broker_provider_circuit_state 0",
        r#"broker_niosxaas_cleanups_total{mode="enforce",outcome="postponed"} 1"#,
        r#"broker_niosxaas_cleanup_total{outcome="error"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    server.verify().await;

    // NIOSXaaS recovers; after the breaker's (one-second) open period the next run cleans up.
    server.reset().await;
    mount_session(&server).await;
    Mock::given(method("GET"))
        .and(path(SERVICES_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": []})))
        .mount(&server)
        .await;
    mount_account_deletes(&server).await;
    clock.advance(Duration::from_secs(1)); // the breaker's open period ends: no sleeping
    let after = cleanup(&app).await;

    assert_eq!(after["deleted"], 3, "{after}");
    let history = history(&app, &ids[0]).await.expect("a history item");
    assert_eq!(
        (
            history.cleanup.niosxaas_cleanup_skipped,
            history.cleanup.niosxaas_cleanup_failed_reason
        ),
        (true, None),
        "nothing to clean is recorded as skipped"
    );
}

#[tokio::test]
async fn a_refused_service_delete_counts_as_an_attempt_and_the_account_is_never_deleted() {
    let server = MockServer::start().await;
    mount_session(&server).await;
    mount_services(&server).await;
    Mock::given(method("DELETE"))
        .and(path(format!("{SERVICES_PATH}/svc-lab")))
        .respond_with(ResponseTemplate::new(400))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path_regex("^/v2/sandbox/accounts/"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&server)
        .await;
    let app = app_with_hook(&server, false).await;
    let ids = released(&app, 1).await;

    let runs = [
        cleanup(&app).await,
        cleanup(&app).await,
        cleanup(&app).await,
    ];

    assert_eq!(
        runs.iter()
            .map(|r| r["retrying"].as_u64())
            .collect::<Vec<_>>(),
        [Some(1), Some(1), Some(0)]
    );
    assert_eq!(runs[2]["failed"], 1);
    let failed = row(&app, &ids[0]).await;
    assert_eq!(
        (failed.status, failed.deletion_retry_count),
        (SandboxStatus::DeletionFailed, 3)
    );
    let history = history(&app, &ids[0])
        .await
        .expect("a given-up sandbox has history");
    assert_eq!(history.deleted_at, None);
    let reason = history.cleanup.niosxaas_cleanup_failed_reason.unwrap();
    assert!(
        reason.contains("delete") && reason.contains("400"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_finished_hook_is_not_rerun_when_only_the_account_delete_has_to_be_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/session/users/sign_in"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"jwt": "service-jwt"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2/session/account_switch"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"jwt": "sandbox-jwt"})))
        .mount(&server)
        .await;
    mount_services(&server).await;
    Mock::given(method("DELETE"))
        .and(path(format!("{SERVICES_PATH}/svc-lab")))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path_regex("^/v2/sandbox/accounts/"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    mount_account_deletes(&server).await;
    let app = app_with_hook(&server, false).await;
    let ids = released(&app, 1).await;

    let first = cleanup(&app).await;
    let kept = row(&app, &ids[0])
        .await
        .niosxaas
        .expect("the hook's record");
    let second = cleanup(&app).await;

    assert_eq!(
        (first["retrying"].as_u64(), second["deleted"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(kept.niosxaas_cleaned_at.is_some());
    let history = history(&app, &ids[0]).await.expect("a history item");
    assert_eq!(
        history.cleanup, kept,
        "the history keeps what the first run cleaned"
    );
    assert_eq!(
        json_of(app.get_sandbox(&ids[0], "stu-0").await, StatusCode::OK).await["status"],
        "deleted"
    );
}

#[tokio::test]
async fn an_account_already_gone_has_nothing_to_clean() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/session/users/sign_in"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"jwt": "service-jwt"})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2/session/account_switch"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    mount_account_deletes(&server).await;
    let app = app_with_hook(&server, false).await;
    let ids = released(&app, 1).await;
    let before = app
        .admin_get(&format!("/v1/admin/sandboxes/{}/niosxaas-cleanup", ids[0]))
        .await;
    error_of(before, StatusCode::NOT_FOUND, "NOT_FOUND").await;

    assert_eq!(cleanup(&app).await["deleted"], 1);
    let history = history(&app, &ids[0]).await.expect("a history item");
    assert_eq!(
        (
            history.cleanup.niosxaas_cleanup_skipped,
            history.cleanup.niosxaas_services_matched
        ),
        (true, 0)
    );
}

#[tokio::test]
async fn a_sign_in_redirect_is_not_followed_so_the_password_goes_nowhere_else() {
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"jwt": "stolen"})))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/session/users/sign_in"))
        .respond_with(ResponseTemplate::new(308).insert_header(
            "location",
            format!("{}/v2/session/users/sign_in", elsewhere.uri()).as_str(),
        ))
        .mount(&server)
        .await;
    mount_account_deletes(&server).await;
    let app = app_with_hook(&server, true).await;
    let ids = released(&app, 1).await;

    assert_eq!(cleanup(&app).await["deleted"], 1);

    let reason = history(&app, &ids[0]).await.expect("a history item");
    let reason = reason.cleanup.niosxaas_cleanup_failed_reason.unwrap();
    assert!(reason.contains("sign_in"), "{reason}");
    assert!(elsewhere.received_requests().await.unwrap().is_empty());
}
