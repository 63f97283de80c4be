//! Several service instances on one table: what only a shared table has. The class-start
//! races across instances (exact counts, one sandbox per key) are in `class_start.rs`,
//! shared with the embedded store.

use reqwest::StatusCode;
use sandbox_broker::domain::now_epoch;
use sandbox_broker::domain::time::EpochSecs;
use serde_json::Value;

use crate::helpers::{TestApp, sandboxes};
use crate::local;

/// `n` instances, each with its own client, store and candidate pool, on one fresh table.
async fn fleet(n: usize) -> (Vec<TestApp>, String) {
    let (stores, table) = local::fleet_table_stores(n).await;
    let mut apps = Vec::new();
    for store in stores {
        apps.push(TestApp::builder().store(store, Box::new(())).spawn().await);
    }
    (apps, table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_released_on_one_instance_gets_a_new_sandbox_on_another() {
    let (apps, _table) = fleet(2).await;
    apps[0]
        .store
        .admin
        .import(sandboxes("lab-", 0, 5), EpochSecs::new(now_epoch()))
        .await
        .unwrap();

    let first: Value = apps[0].allocate("stu").await.json().await.unwrap();
    let id = first["sandbox_id"].as_str().unwrap();
    assert_eq!(apps[1].mark(id, "stu").await.status(), StatusCode::OK);
    let second = apps[1].allocate("stu").await;

    assert_eq!(second.status(), StatusCode::CREATED);
    let second: Value = second.json().await.unwrap();
    assert_ne!(second["sandbox_id"], first["sandbox_id"]);
    let replay: Value = apps[0].allocate("stu").await.json().await.unwrap();
    assert_eq!(replay["sandbox_id"], second["sandbox_id"]);
}
