//! An admin list whose filter matches almost nothing reads a bounded number of items per
//! request and pages on with a cursor, instead of scanning the whole table at once.

use sandbox_broker::domain::now_epoch;
use sandbox_broker::domain::time::EpochSecs;
use sandbox_broker::store::SharedStore;
use sandbox_broker::store::dynamo::{self, DynamoSettings, DynamoStore};
use serde_json::Value;

use crate::helpers::{TestApp, json_of, sandboxes};
use crate::local::{fresh_table_store, settings, shared};

fn calls_so_far(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("broker_dynamodb_call_duration_seconds_count"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_filter_matching_one_row_in_many_pages_on_in_bounded_requests_and_finds_it_once() {
    let (seeder, table) = fresh_table_store().await;
    seeder
        .admin
        .import(sandboxes("lab-a-", 0, 600), EpochSecs::new(now_epoch()))
        .await
        .unwrap();
    seeder
        .admin
        .import(sandboxes("zzz-", 9_000, 1), EpochSecs::new(now_epoch()))
        .await
        .unwrap();
    let bounded = DynamoSettings {
        list_evaluate_max: 100,
        ..settings(&shared().endpoint, &table)
    };
    let store: SharedStore = SharedStore::new(
        DynamoStore::new(&dynamo::client(&bounded).await, &bounded)
            .await
            .expect("the store opens"),
    );
    let app = TestApp::builder().store(store, Box::new(())).spawn().await;

    let mut found = Vec::new();
    let mut requests = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/admin/sandboxes?name_prefix=zzz-&limit=10".to_owned();
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let before = calls_so_far(&app.metrics_text().await);
        let page = json_of(app.admin_get(&path).await, reqwest::StatusCode::OK).await;
        let after = calls_so_far(&app.metrics_text().await);
        requests += 1;
        // One page of at most 200 items evaluated per request, never the whole table.
        assert!(
            after - before <= 1.0,
            "request {requests} made {} calls",
            after - before
        );
        for row in page["sandboxes"].as_array().unwrap() {
            found.push(row["sandbox_id"].as_str().unwrap().to_owned());
        }
        match &page["cursor"] {
            Value::String(next) => cursor = Some(next.clone()),
            _ => break,
        }
        assert!(requests < 50, "the cursor never ended");
    }
    assert_eq!(found, ["9001"]);
    assert!(
        requests >= 3,
        "601 rows at 200 per request take several requests: {requests}"
    );
}
