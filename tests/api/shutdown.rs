//! Graceful shutdown: a request in flight when shutdown begins still gets its answer.

use std::sync::Arc;

use reqwest::StatusCode;
use sandbox_broker::domain::time::EpochSecs;
use tokio::sync::{Notify, Semaphore};

use crate::helpers::doubles::GatedStore;
use crate::helpers::{TestApp, fresh_store, json_of, sandboxes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_a_request_in_flight_and_then_stops_serving() {
    let (inner, guard) = fresh_store().await;
    inner
        .admin
        .import(sandboxes("lab-", 0, 3), EpochSecs::new(0))
        .await
        .unwrap();
    let store = Arc::new(GatedStore {
        inner,
        entered: Notify::new(),
        gate: Semaphore::new(0),
        refuse_actions: false,
    });
    let mut app = TestApp::builder()
        .store(store.shared(), guard)
        .spawn()
        .await;
    let client = app.client.clone();
    let url = app.url("/v1/allocate");
    let in_flight = tokio::spawn(async move {
        client
            .post(url)
            .bearer_auth(crate::helpers::LAB_TOKEN)
            .header("X-Instruqt-Sandbox-ID", "stu")
            .send()
            .await
    });
    store.entered.notified().await;

    app.begin_shutdown();
    store.gate.add_permits(1);

    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request was answered");
    let body = json_of(response, StatusCode::CREATED).await;
    assert!(body["name"].as_str().unwrap().starts_with("lab-"), "{body}");
    let server = app.server.take().unwrap();
    server.await.unwrap().expect("the server stopped cleanly");
    let late = reqwest::Client::new().get(app.url("/healthz")).send().await;
    assert!(
        late.is_err(),
        "a stopped server must not accept new requests"
    );
}
