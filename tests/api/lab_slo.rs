//! Per-lab service levels, black-box on both stores: time to sandbox, 409s and cleanup
//! time per lab in the metrics and in `GET /v1/admin/tracks`, with a bounded `lab` label.

use std::time::Duration;

use crate::helpers::csp::{accept_deletions, account, csp, sync, use_csp};
use crate::helpers::{TestApp, error_of, json_of, series_sum};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn allocate_for(app: &TestApp, holder: &str, lab: &str) -> reqwest::Response {
    app.allocate_with(holder, &[("X-Instruqt-Track-ID", lab)])
        .await
}

fn count(metrics: &str, series: &str, lab: &str) -> f64 {
    series_sum(metrics, &format!("{series}{{lab=\"{lab}\"}}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_lab_has_its_time_to_sandbox_409s_and_cleanup_time() {
    let provider = csp(
        (1..=3).map(|n| account(n, &format!("lab-{n}"))).collect(),
        Duration::ZERO,
    )
    .await;
    accept_deletions(&provider).await;
    let app = TestApp::builder()
        .config(|c| use_csp(c, &provider))
        .spawn()
        .await;
    json_of(sync(&app).await, StatusCode::OK).await;

    let first = json_of(
        allocate_for(&app, "stu-1", "dns").await,
        StatusCode::CREATED,
    )
    .await;
    json_of(
        allocate_for(&app, "stu-2", "dns").await,
        StatusCode::CREATED,
    )
    .await;
    json_of(
        allocate_for(&app, "stu-3", "web").await,
        StatusCode::CREATED,
    )
    .await;
    error_of(
        allocate_for(&app, "stu-4", "dns").await,
        StatusCode::CONFLICT,
        "NO_SANDBOXES_AVAILABLE",
    )
    .await;
    let id = first["sandbox_id"].as_str().unwrap();
    json_of(app.mark(id, "stu-1").await, StatusCode::OK).await;
    let cleanup = app
        .admin(Method::POST, "/v1/admin/cleanup")
        .send()
        .await
        .unwrap();
    json_of(cleanup, StatusCode::OK).await;

    let metrics = app.metrics_text().await;
    let time_to_sandbox = "broker_lab_time_to_sandbox_seconds_count";
    assert_eq!(count(&metrics, time_to_sandbox, "dns"), 2.0);
    assert_eq!(count(&metrics, time_to_sandbox, "web"), 1.0);
    assert_eq!(count(&metrics, "broker_lab_exhausted_total", "dns"), 1.0);
    assert_eq!(count(&metrics, "broker_lab_exhausted_total", "web"), 0.0);
    assert_eq!(
        count(&metrics, "broker_lab_cleanup_seconds_count", "dns"),
        1.0
    );

    let tracks = json_of(app.admin_get("/v1/admin/tracks").await, StatusCode::OK).await;
    let dns = tracks["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|lab| lab["track_name"] == "dns")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(dns["exhausted"], json!(1), "{tracks}");
    for percentile in [
        "time_to_sandbox_p50",
        "time_to_sandbox_p95",
        "time_to_sandbox_p99",
    ] {
        let seconds = dns[percentile]
            .as_f64()
            .unwrap_or_else(|| panic!("{percentile}: {tracks}"));
        assert!((0.0..5.0).contains(&seconds), "{percentile}: {seconds}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lab_label_keeps_only_the_most_recent_labs() {
    let app = TestApp::builder()
        .config(|c| c.http.lab_metrics_max = 2)
        .spawn()
        .await;
    app.seed("lab-", 0, 4).await;
    for (holder, lab) in [("stu-1", "a"), ("stu-2", "b"), ("stu-3", "c")] {
        json_of(allocate_for(&app, holder, lab).await, StatusCode::CREATED).await;
    }
    json_of(app.allocate("stu-4").await, StatusCode::CREATED).await;
    let metrics = app.metrics_text().await;
    let labels: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("broker_lab_time_to_sandbox_seconds_count{"))
        .collect();
    assert_eq!(labels.len(), 3, "{labels:?}");
    assert!(
        !metrics.contains("lab=\"a\""),
        "the lab seen longest ago lost its series"
    );
    for lab in ["b", "c", "none"] {
        assert_eq!(
            count(&metrics, "broker_lab_time_to_sandbox_seconds_count", lab),
            1.0,
            "{lab}"
        );
    }
}
