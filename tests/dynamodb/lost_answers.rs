//! Writes whose answer is lost: every write's first attempt lands in the table, but its
//! answer comes after the attempt timeout, so the store cannot know it landed and sends
//! it again. The retry fails its condition; the protocol must read that back as its own
//! write — each student's first request answers 201 (never "replay"), one sandbox each.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use futures::future::join_all;
use reqwest::StatusCode;
use sandbox_broker::domain::now_epoch;
use sandbox_broker::domain::time::EpochSecs;
use sandbox_broker::store::dynamo::{self, DynamoSettings, DynamoStore};
use sandbox_broker::store::{AdminStore, SharedStore};
use serde_json::Value;

use crate::helpers::{TestApp, sandboxes};
use crate::local;

/// A reverse proxy to DynamoDB Local that withholds the answer to the first attempt of
/// every `PutItem` and `UpdateItem` (recognised by its body) for `delay`.
struct LosingProxy {
    upstream: String,
    client: reqwest::Client,
    seen: Mutex<HashSet<u64>>,
    withheld: AtomicUsize,
    delay: Duration,
}

async fn forward(State(proxy): State<Arc<LosingProxy>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, 1 << 20).await.unwrap();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let is_write = target.ends_with(".PutItem") || target.ends_with(".UpdateItem");
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    let first = is_write && proxy.seen.lock().unwrap().insert(hasher.finish());
    if first {
        // Counted here: the client gives up on this attempt (and the server may drop this
        // handler) long before its answer would be sent.
        proxy.withheld.fetch_add(1, Ordering::AcqRel);
    }
    let mut upstream = proxy
        .client
        .post(format!("{}{}", proxy.upstream, parts.uri.path()));
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            upstream = upstream.header(name, value);
        }
    }
    let answer = upstream.body(bytes).send().await.unwrap();
    let status = answer.status();
    let content_type = answer.headers().get("content-type").cloned();
    let body = answer.bytes().await.unwrap();
    if first {
        tokio::time::sleep(proxy.delay).await;
    }
    let mut response = Response::builder().status(status);
    if let Some(content_type) = content_type {
        response = response.header("content-type", content_type);
    }
    response.body(Body::from(body)).unwrap()
}

/// Starts the proxy in front of `upstream`; returns its endpoint and the proxy.
async fn losing_proxy(upstream: &str, delay: Duration) -> (String, Arc<LosingProxy>) {
    let proxy = Arc::new(LosingProxy {
        upstream: upstream.to_owned(),
        client: reqwest::Client::new(),
        seen: Mutex::new(HashSet::new()),
        withheld: AtomicUsize::new(0),
        delay,
    });
    let router = axum::Router::new()
        .fallback(forward)
        .with_state(Arc::clone(&proxy));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (endpoint, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_that_landed_but_whose_answer_was_lost_still_answers_201() {
    let shared = local::shared();
    let table = local::table_name();
    let direct = local::settings(&shared.endpoint, &table);
    let setup = dynamo::client(&direct).await;
    dynamo::schema::ensure_table(&setup, &table).await.unwrap();
    DynamoStore::new(&setup, &direct)
        .await
        .expect("the store opens")
        .import(sandboxes("lab-", 0, 40), EpochSecs::new(now_epoch()))
        .await
        .unwrap();
    let (endpoint, proxy) = losing_proxy(&shared.endpoint, Duration::from_secs(1)).await;
    let settings = DynamoSettings {
        endpoint_url: Some(endpoint),
        // Well under the withheld answer's delay, so every write's first attempt is abandoned.
        attempt_timeout: Duration::from_millis(300),
        ..direct
    };
    let store: SharedStore = SharedStore::new(
        DynamoStore::new(&dynamo::client(&settings).await, &settings)
            .await
            .expect("the store opens"),
    );
    let app = TestApp::builder().store(store, Box::new(())).spawn().await;

    let holders: Vec<String> = (0..20).map(|n| format!("stu-{n}")).collect();
    let first = join_all(holders.iter().map(|holder| {
        let app = &app;
        async move {
            let response = app.allocate(holder).await;
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    }))
    .await;

    for (holder, (status, body)) in holders.iter().zip(&first) {
        assert_eq!(*status, StatusCode::CREATED, "{holder}: {body}");
    }
    let ids: HashSet<&str> = first
        .iter()
        .map(|(_, body)| body["sandbox_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 20, "one sandbox each, none twice");
    assert!(
        proxy.withheld.load(Ordering::Acquire) >= 40,
        "every key item and every claim lost its first answer ({} withheld)",
        proxy.withheld.load(Ordering::Acquire)
    );
    for (holder, (_, body)) in holders.iter().zip(&first) {
        let again = app.allocate(holder).await;
        assert_eq!(
            again.status(),
            StatusCode::OK,
            "{holder}: a real replay is 200"
        );
        let again: Value = again.json().await.unwrap();
        assert_eq!(again["sandbox_id"], body["sandbox_id"]);
    }
    assert_eq!(app.stats().await["allocated"], 20);
    let metrics = app.metrics_text().await;
    // Most abandoned attempts time out; one whose connection the proxy drops first fails
    // without an answer instead. Either way it is sent again, and counted.
    let retried: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("broker_dynamodb_retries_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        retried >= 40,
        "abandoned attempts are counted: {retried}\n{metrics}"
    );
    for series in [
        "broker_dynamodb_queue_depth ",
        "broker_dynamodb_in_flight ",
        "broker_dynamodb_concurrency_limit ",
        "broker_dynamodb_queue_wait_seconds_count ",
        "broker_dynamodb_up 1",
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
}
