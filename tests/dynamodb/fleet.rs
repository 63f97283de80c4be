//! Three service instances on one table, racing: the invariants hold across instances.

use std::collections::HashSet;
use std::sync::Arc;

use futures::future::join_all;
use reqwest::StatusCode;
use sandbox_broker::domain::now_epoch;
use sandbox_broker::store::SharedStore;
use sandbox_broker::store::dynamo::{self, DynamoStore};
use serde_json::Value;

use crate::helpers::{TestApp, sandboxes, spawn_app_on};
use crate::local;

/// `n` instances, each with its own client, store and candidate pool, on one fresh table.
async fn fleet(n: usize) -> (Vec<TestApp>, String) {
    let shared = local::shared();
    let table = local::table_name();
    let settings = local::settings(&shared.endpoint, &table);
    let client = dynamo::client(&settings).await;
    dynamo::schema::ensure_table(&client, &table).await.unwrap();
    let mut apps = Vec::new();
    for _ in 0..n {
        let client = dynamo::client(&settings).await;
        let store: SharedStore = Arc::new(DynamoStore::new(client, &settings));
        apps.push(spawn_app_on(store, Box::new(()), |_| {}).await);
    }
    (apps, table)
}

async fn allocate_across(
    apps: &[TestApp],
    students: &[(String, Option<&str>)],
) -> Vec<(StatusCode, Value)> {
    let calls = students.iter().enumerate().map(|(n, (student, key))| {
        let app = &apps[n % apps.len()];
        async move {
            let headers: Vec<(&str, &str)> =
                key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
            let response = app.allocate_with(student, &headers).await;
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    });
    join_all(calls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_hundred_students_on_three_instances_get_exactly_six_hundred_distinct_sandboxes() {
    let (apps, _table) = fleet(3).await;
    apps[0]
        .store
        .import(sandboxes("lab-", 0, 600), now_epoch())
        .await
        .unwrap();
    let students: Vec<(String, Option<&str>)> =
        (0..800).map(|n| (format!("stu-{n}"), None)).collect();

    let results = allocate_across(&apps, &students).await;

    let winners: Vec<&str> = results
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .map(|(_, body)| body["sandbox_id"].as_str().unwrap())
        .collect();
    let exhausted = results
        .iter()
        .filter(|(status, _)| *status == StatusCode::CONFLICT)
        .count();
    let other: Vec<_> = results
        .iter()
        .filter(|(s, _)| *s != StatusCode::CREATED && *s != StatusCode::CONFLICT)
        .collect();
    assert!(
        other.is_empty(),
        "{} answers were neither 201 nor 409, e.g. {:?}",
        other.len(),
        other.first()
    );
    assert_eq!(winners.len(), 600);
    assert_eq!(
        winners.iter().collect::<HashSet<_>>().len(),
        600,
        "a sandbox was handed out twice"
    );
    assert_eq!(exhausted, 200);
    let stats = apps[1].stats().await;
    assert_eq!(
        (stats["allocated"].as_u64(), stats["available"].as_u64()),
        (Some(600), Some(0))
    );
    let mut conflicts = 0u64;
    for app in &apps {
        let text = app.metrics_text().await;
        conflicts += text
            .lines()
            .find_map(|l| l.strip_prefix("broker_allocate_conflicts_total "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    eprintln!("candidates lost to other instances while allocating 600: {conflicts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_identical_requests_spread_over_three_instances_get_one_sandbox() {
    let (apps, _table) = fleet(3).await;
    apps[0]
        .store
        .import(sandboxes("lab-", 0, 50), now_epoch())
        .await
        .unwrap();
    let students: Vec<(String, Option<&str>)> = (0..30)
        .map(|_| ("same-student".to_owned(), Some("k1")))
        .collect();

    let results = allocate_across(&apps, &students).await;

    let ids: HashSet<&str> = results
        .iter()
        .map(|(_, body)| body["sandbox_id"].as_str().unwrap())
        .collect();
    let created = results
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .count();
    let replayed = results
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .count();
    assert_eq!(ids.len(), 1, "one key got several sandboxes: {ids:?}");
    assert_eq!(created + replayed, 30);
    assert!(created >= 1, "somebody allocated it");
    assert_eq!(apps[2].stats().await["allocated"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_released_on_one_instance_gets_a_new_sandbox_on_another() {
    let (apps, _table) = fleet(2).await;
    apps[0]
        .store
        .import(sandboxes("lab-", 0, 5), now_epoch())
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
