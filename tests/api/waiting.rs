//! `Prefer: wait=N` on an exhausted pool, black-box on both stores: served by the sync the
//! exhaustion triggers, first come first served, bounded, and 409 when the time is up.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::csp::{account, csp, listings, use_csp};
use crate::helpers::{TestApp, error_of, json_of};

/// `POST /v1/allocate` as `holder`, waiting up to `seconds`; the answer and how long it took.
async fn allocate_waiting(
    app: &TestApp,
    holder: &str,
    seconds: u64,
) -> (reqwest::Response, Duration) {
    let started = Instant::now();
    let response = app
        .lab(Method::POST, "/v1/allocate")
        .header("X-Instruqt-Sandbox-ID", holder)
        .header("Prefer", format!("wait={seconds}"))
        .send()
        .await
        .unwrap();
    (response, started.elapsed())
}

async fn import(app: &TestApp, id: u64) {
    let rows = json!({"sandboxes": [{"sandbox_id": format!("{id}"), "name": format!("lab-{id}"), "external_id": format!("identity/accounts/{id}")}]});
    json_of(app.import(&rows).await, StatusCode::OK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_request_is_served_by_the_sync_its_exhaustion_triggers() {
    let provider = csp(
        vec![account(1, "lab-1"), account(2, "lab-2")],
        Duration::ZERO,
    )
    .await;
    let app = TestApp::builder()
        .config(|c| {
            use_csp(c, &provider);
            c.jobs.sync_min_gap = Duration::from_secs(60);
        })
        .spawn()
        .await;

    let (served, waited) = allocate_waiting(&app, "stu-1", 20).await;
    let body: Value = json_of(served, StatusCode::CREATED).await;
    assert!(body["name"].as_str().unwrap().starts_with("lab-"), "{body}");
    assert!(
        waited < Duration::from_secs(20),
        "served mid-wait, after {waited:?}"
    );
    assert_eq!(listings(&provider).await, 1, "the exhaustion's sync");

    // What that sync added serves the next student at once.
    json_of(
        allocate_waiting(&app, "stu-2", 1).await.0,
        StatusCode::CREATED,
    )
    .await;
    // Exhausted again within SYNC_MIN_GAP_SEC: no second sync, and a 409 when time is up.
    let (refused, waited) = allocate_waiting(&app, "stu-3", 1).await;
    assert!(refused.headers().contains_key("retry-after"));
    error_of(refused, StatusCode::CONFLICT, "NO_SANDBOXES_AVAILABLE").await;
    assert!(waited >= Duration::from_secs(1), "it waited: {waited:?}");
    assert_eq!(listings(&provider).await, 1, "at most one sync per gap");

    let metrics = app.metrics_text().await;
    let waits = |outcome: &str| {
        crate::helpers::series_sum(
            &metrics,
            &format!("broker_wait_seconds_count{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!((waits("served"), waits("timed_out")), (1.0, 1.0));
    let refusals =
        crate::helpers::series_sum(&metrics, "broker_allocate_total{outcome=\"no_sandboxes\"}");
    assert_eq!(
        refusals, 1.0,
        "a waiting request is counted once, however often it tried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_first_come_first_served_as_sandboxes_appear() {
    let app = TestApp::spawn().await;
    let first = allocate_waiting(&app, "stu-a", 10);
    let second = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        allocate_waiting(&app, "stu-b", 10).await
    };
    let sandboxes = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        import(&app, 1).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        import(&app, 2).await;
    };
    let ((first, _), (second, _), ()) = tokio::join!(first, second, sandboxes);
    let got = json_of(first, StatusCode::CREATED).await;
    assert_eq!(
        got["sandbox_id"], "1",
        "the first to wait gets the first sandbox"
    );
    assert_eq!(
        json_of(second, StatusCode::CREATED).await["sandbox_id"],
        "2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_prefer_nothing_waits_and_a_full_queue_answers_at_once() {
    let app = TestApp::builder()
        .config(|c| c.http.wait_queue_max = 1)
        .spawn()
        .await;
    let started = Instant::now();
    error_of(
        app.allocate("stu-now").await,
        StatusCode::CONFLICT,
        "NO_SANDBOXES_AVAILABLE",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no header, no wait"
    );

    let waiting = allocate_waiting(&app, "stu-wait", 2);
    let full = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        allocate_waiting(&app, "stu-full", 2).await
    };
    let ((timed_out, waited_out), (full, waited)) = tokio::join!(waiting, full);
    error_of(full, StatusCode::CONFLICT, "NO_SANDBOXES_AVAILABLE").await;
    assert!(
        waited < Duration::from_secs(1),
        "a full queue answers at once: {waited:?}"
    );
    let waited = waited_out;
    error_of(timed_out, StatusCode::CONFLICT, "NO_SANDBOXES_AVAILABLE").await;
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
}
