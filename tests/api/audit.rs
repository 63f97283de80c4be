//! The auditor: says what is wrong with the pool and repairs nothing, on both
//! stores, black-box over HTTP.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use sandbox_broker::domain::clock::{Clock, ManualClock};
use sandbox_broker::domain::now_epoch;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::csp::{account, cleanup, sync, use_csp};
use crate::helpers::series_sum;
use crate::helpers::{TestApp, error_of, json_of};

const CHECKS: [&str; 5] = [
    "key_holds_several",
    "allocated_missing_at_provider",
    "deletion_overdue",
    "deletion_failed",
    "deleted_still_listed",
];

async fn audit_now(app: &TestApp) -> Value {
    let ran = app
        .admin(Method::POST, "/v1/admin/audit")
        .send()
        .await
        .unwrap();
    json_of(ran, StatusCode::OK).await
}

/// The (check, sandbox) pairs of an audit, sorted.
fn found(audit: &Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = audit["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["check"].as_str().unwrap().to_owned(),
                v["sandbox_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

/// A CSP listing `lab-1`..`lab-3`; deleting `lab-1` "succeeds" (it stays listed),
/// deleting `lab-2` is refused.
async fn provider() -> MockServer {
    let server = MockServer::start().await;
    let accounts: Vec<Value> = (1..=3).map(|n| account(n, &format!("lab-{n}"))).collect();
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "results": accounts })))
        .mount(&server)
        .await;
    for (uuid, status) in [("uuid-1", 204), ("uuid-2", 400)] {
        Mock::given(method("DELETE"))
            .and(path(format!("/v2/sandbox/accounts/{uuid}")))
            .respond_with(ResponseTemplate::new(status))
            .mount(&server)
            .await;
    }
    server
}

#[tokio::test]
async fn the_auditor_reports_every_check_it_finds_and_repairs_nothing() {
    let csp = provider().await;
    // Behind the service's back, one student holds two sandboxes the provider no longer
    // lists (as another writer could leave them).
    let (store, guard) = crate::flavor::store_holding_allocations(
        &[("9001", "stu-dup"), ("9002", "stu-dup")],
        now_epoch() - 60,
    )
    .await;
    let app = TestApp::builder()
        .store(store, guard)
        .config(|c| {
            use_csp(c, &csp);
            c.jobs.deletion_retry_max_attempts = 1;
            c.http.metrics_pool_refresh = Duration::ZERO;
        })
        .spawn()
        .await;
    let none_yet = app.admin_get("/v1/admin/audit").await;
    error_of(none_yet, StatusCode::NOT_FOUND, "NOT_FOUND").await;

    json_of(sync(&app).await, StatusCode::OK).await;
    for (holder, prefix) in [("stu-a", "lab-1"), ("stu-b", "lab-2")] {
        let held = json_of(
            app.allocate_with(holder, &[("X-Sandbox-Name-Prefix", prefix)])
                .await,
            StatusCode::CREATED,
        )
        .await;
        let id = held["sandbox_id"].as_str().unwrap().to_owned();
        json_of(app.mark(&id, holder).await, StatusCode::OK).await;
    }
    let cleaned = cleanup(&app).await;
    assert_eq!(
        (cleaned["deleted"].as_u64(), cleaned["failed"].as_u64()),
        (Some(1), Some(1))
    );
    json_of(sync(&app).await, StatusCode::OK).await;
    let before = app.stats().await;

    let audit = audit_now(&app).await;
    assert_eq!(
        found(&audit),
        [
            ("allocated_missing_at_provider", "9001"),
            ("allocated_missing_at_provider", "9002"),
            ("deleted_still_listed", "1"),
            ("deletion_failed", "2"),
            ("key_holds_several", "9001"),
            ("key_holds_several", "9002"),
        ]
        .map(|(check, id)| (check.to_owned(), id.to_owned()))
    );
    let several = audit["violations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["check"] == "key_holds_several")
        .unwrap();
    assert_eq!(several["student"], "stu-dup", "{several}");
    let counts = &audit["counts"];
    for check in CHECKS {
        assert!(counts[check].is_u64(), "{check} missing from {counts}");
    }
    assert_eq!(counts["key_holds_several"], 2);
    assert_eq!(counts["deletion_overdue"], 0);
    assert_eq!(app.stats().await, before, "the auditor repairs nothing");

    let last = json_of(app.admin_get("/v1/admin/audit").await, StatusCode::OK).await;
    assert_eq!(last, audit, "GET answers the last audit");
    let metrics = app.metrics_text().await;
    for (check, expected) in [
        ("key_holds_several", 2.0),
        ("allocated_missing_at_provider", 2.0),
        ("deletion_overdue", 0.0),
        ("deletion_failed", 1.0),
        ("deleted_still_listed", 1.0),
    ] {
        let series = format!("broker_audit_violations{{check=\"{check}\"}}");
        assert!(metrics.contains(&series), "{series} missing");
        assert_eq!(series_sum(&metrics, &series), expected, "{series}");
    }
    let audit_job = app.job("audit").await;
    assert_eq!(
        (
            audit_job["enabled"].as_bool(),
            audit_job["interval_sec"].as_u64()
        ),
        (Some(true), Some(300)),
        "{audit_job}"
    );
}

#[tokio::test]
async fn a_deletion_pending_past_the_overdue_minutes_is_reported() {
    let csp = MockServer::start().await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&csp)
        .await;
    let clock = Arc::new(ManualClock::starting_now());
    let (store, guard) = crate::helpers::fresh_store().await;
    let app = TestApp::builder()
        .store(store, guard)
        .clock(clock.clone())
        .config(|c| {
            use_csp(c, &csp);
            crate::helpers::only_first_scheduled_runs(c);
        })
        .spawn()
        .await;
    crate::helpers::after_the_first_scheduled_runs(&app, &clock).await;
    app.seed("lab-", 0, 1).await;
    let held = json_of(app.allocate("stu").await, StatusCode::CREATED).await;
    let id = held["sandbox_id"].as_str().unwrap().to_owned();
    json_of(app.mark(&id, "stu").await, StatusCode::OK).await;

    let on_time = audit_now(&app).await;
    assert_eq!(on_time["counts"]["deletion_overdue"], 0, "{on_time}");
    clock.advance(Duration::from_secs(61 * 60));
    let late = audit_now(&app).await;
    assert_eq!(found(&late), [("deletion_overdue".to_owned(), id.clone())]);
    let detail = late["violations"][0]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("pending deletion for 61 minutes"),
        "{detail}"
    );
    assert_eq!(late["checked_at"], clock.now().get());
}
