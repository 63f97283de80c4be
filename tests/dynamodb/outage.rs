//! DynamoDB down, slow or throttling: answers stay 503 (never 500), arrive in under two
//! seconds, nothing partial is acknowledged, and the same process serves again afterwards.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;
use sandbox_broker::domain::now_epoch;
use sandbox_broker::domain::time::EpochSecs;
use sandbox_broker::store::dynamo::{self, DynamoStore};
use sandbox_broker::store::{AdminStore, SharedStore};
use serde_json::Value;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{TestApp, error_of, sandboxes};
use crate::local;

/// An app on `endpoint` with the production timeouts and retries.
async fn app_on(endpoint: &str, table: &str) -> TestApp {
    let config = sandbox_broker::config::Config::for_tests("unused".into(), "t", "a");
    let settings = dynamo::DynamoSettings {
        table: table.to_owned(),
        endpoint_url: Some(endpoint.to_owned()),
        ..config.store.dynamo.settings()
    };
    let store: SharedStore = SharedStore::new(
        DynamoStore::new(&dynamo::client(&settings).await, &settings)
            .await
            .expect("the store opens"),
    );
    TestApp::builder().store(store, Box::new(())).spawn().await
}

async fn allocate_timed(app: &TestApp, holder: &str) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let response = app.allocate(holder).await;
    let status = response.status();
    let retry_after = response.headers().get("retry-after").cloned();
    let body: Value = response.json().await.unwrap();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        assert!(retry_after.is_some(), "503 without Retry-After: {body}");
    }
    (status, body, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_stopping_under_load_gives_fast_503s_and_the_same_process_recovers() {
    let data = tempfile::tempdir().unwrap();
    let port = local::free_port();
    let mut emulator = local::start_emulator(port, Some(data.path()));
    let endpoint = format!("http://127.0.0.1:{port}");
    let table = local::table_name();
    let setup = dynamo::client(&local::settings(&endpoint, &table)).await;
    dynamo::schema::ensure_table(&setup, &table).await.unwrap();
    // The setup goes through a patient store: this emulator has just started cold, and
    // what is tested is the app's store (production settings) once it is warm.
    let patient = DynamoStore::new(&setup, &local::settings(&endpoint, &table))
        .await
        .expect("the store opens");
    patient
        .import(sandboxes("lab-", 0, 400), EpochSecs::new(now_epoch()))
        .await
        .unwrap();
    let app = app_on(&endpoint, &table).await;

    // Load: 16 students at a time, each a new key, until told to stop.
    let load = async {
        let mut answers = Vec::new();
        for round in 0..12 {
            let batch = (0..16).map(|n| {
                let holder = format!("stu-{round}-{n}");
                let app = &app;
                async move { (holder.clone(), allocate_timed(app, &holder).await) }
            });
            answers.extend(join_all(batch).await);
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        answers
    };
    let outage = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        emulator.stop();
        tokio::time::sleep(Duration::from_millis(900)).await;
        let health = app
            .client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status();
        let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
        let ready_status = ready.status();
        let ready_body: Value = ready.json().await.unwrap();
        (health, ready_status, ready_body)
    };
    let (answers, (health, ready_status, ready_body)) = tokio::join!(load, outage);

    assert_eq!(
        health,
        StatusCode::OK,
        "liveness does not depend on the store"
    );
    assert_eq!(ready_status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready_body["status"], "not_ready");
    let unavailable: Vec<_> = answers
        .iter()
        .filter(|(_, (s, _, _))| *s == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(!unavailable.is_empty(), "the outage was never noticed");
    for (holder, (status, body, took)) in &answers {
        assert!(
            matches!(
                *status,
                StatusCode::CREATED | StatusCode::SERVICE_UNAVAILABLE
            ),
            "{holder}: {status} {body}"
        );
        if *status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(body["detail"]["code"], "SERVICE_UNAVAILABLE");
            assert!(
                *took < Duration::from_secs(2),
                "{holder}: 503 took {took:?}"
            );
        }
    }

    // Back up on the same port and data: the same process serves again, nothing lost.
    let _emulator = local::start_emulator(port, Some(data.path()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let recovered = loop {
        let response = app.allocate("after-the-outage").await;
        if response.status() == StatusCode::CREATED || Instant::now() > deadline {
            break response.status();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        recovered,
        StatusCode::CREATED,
        "no recovery without a restart"
    );
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let mut ids = HashSet::new();
    for (holder, (status, body, _)) in &answers {
        if *status == StatusCode::CREATED {
            let id = body["sandbox_id"].as_str().unwrap();
            assert!(ids.insert(id.to_owned()), "{id} acknowledged twice");
            let view = app.get_sandbox(id, holder).await;
            assert_eq!(
                view.status(),
                StatusCode::OK,
                "acknowledged {holder} -> {id} lost"
            );
        }
    }
}

/// A DynamoDB endpoint that answers every call with a throttling error.
async fn throttling_endpoint() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_raw(
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#,
            "application/x-amz-json-1.0",
        ))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn persistent_throttling_is_retried_with_backoff_then_answered_503() {
    let server = throttling_endpoint().await;
    let app = app_on(&server.uri(), "throttled").await;

    let started = Instant::now();
    let response = app.allocate("stu").await;
    let took = started.elapsed();

    assert!(response.headers().contains_key("retry-after"));
    error_of(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    )
    .await;
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let calls = server.received_requests().await.unwrap_or_default().len();
    assert!(
        calls >= 3,
        "a throttled call is retried before giving up ({calls} calls)"
    );
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_blackholed_endpoint_answers_503_within_two_seconds() {
    // Accepts connections but never answers: only timeouts can end the call.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let app = app_on(&endpoint, "blackholed").await;

    let (status, body, took) = allocate_timed(&app, "stu").await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    hold.abort();
}
