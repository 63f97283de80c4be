//! Real parallel requests against the invariants: no sandbox twice, one sandbox per key.

use std::collections::{HashMap, HashSet};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, burst, json_of};

/// Every request at once on one instance, answers in the requests' order.
async fn allocate_all(
    app: &crate::helpers::TestApp,
    requests: Vec<(String, Option<String>)>,
) -> Vec<(StatusCode, Value)> {
    let all = requests.len();
    burst(std::slice::from_ref(app), requests, all)
        .await
        .into_iter()
        .map(|answer| (answer.status, answer.body))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_hundred_students_racing_for_three_hundred_sandboxes_get_three_hundred_distinct_ones()
{
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 300).await;

    let results = allocate_all(&app, (0..400).map(|n| (format!("stu-{n}"), None)).collect()).await;

    let winners: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .map(|(_, b)| b)
        .collect();
    let exhausted = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CONFLICT)
        .count();
    let ids: HashSet<&str> = winners
        .iter()
        .map(|b| b["sandbox_id"].as_str().unwrap())
        .collect();
    assert_eq!(winners.len(), 300);
    assert_eq!(ids.len(), 300, "a sandbox was handed out twice");
    assert_eq!(exhausted, 100);
    let stats = app.stats().await;
    assert_eq!(
        (stats["allocated"].as_u64(), stats["available"].as_u64()),
        (Some(300), Some(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_identical_requests_get_one_sandbox_one_201_and_thirty_nine_200() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 50).await;

    let results = allocate_all(
        &app,
        (0..40)
            .map(|_| ("same-student".to_owned(), Some("k1".to_owned())))
            .collect(),
    )
    .await;

    let created = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let replayed = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let ids: HashSet<&str> = results
        .iter()
        .map(|(_, b)| b["sandbox_id"].as_str().unwrap())
        .collect();
    assert_eq!((created, replayed, ids.len()), (1, 39, 1));
    assert_eq!(app.stats().await["allocated"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_keys_racing_get_exactly_one_sandbox_per_key() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 100).await;
    let requests: Vec<(String, Option<String>)> = (0..200)
        .map(|n| {
            (
                format!("stu-{}", n % 10),
                (n % 3 != 0).then(|| format!("key-{}", n % 2)),
            )
        })
        .collect();

    let results = allocate_all(&app, requests.clone()).await;

    let mut by_key: HashMap<(String, Option<String>), HashSet<String>> = HashMap::new();
    for ((holder, key), (status, body)) in requests.into_iter().zip(&results) {
        assert!(status.is_success(), "{status}: {body}");
        by_key
            .entry((holder, key))
            .or_default()
            .insert(body["sandbox_id"].as_str().unwrap().to_owned());
    }
    assert!(
        by_key.values().all(|ids| ids.len() == 1),
        "a key got two sandboxes: {by_key:?}"
    );
    let all: Vec<&String> = by_key.values().flatten().collect();
    assert_eq!(
        all.iter().collect::<HashSet<_>>().len(),
        all.len(),
        "two keys share a sandbox"
    );
    assert_eq!(
        json_of(app.admin_get("/v1/admin/stats").await, StatusCode::OK).await["allocated"],
        by_key.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn marks_racing_allocations_never_hand_out_a_released_sandbox() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 60).await;
    let first = allocate_all(&app, (0..30).map(|n| (format!("stu-{n}"), None)).collect()).await;

    let marks = first.iter().enumerate().map(|(n, (_, body))| {
        let app = &app;
        let id = body["sandbox_id"].as_str().unwrap().to_owned();
        async move { app.mark(&id, &format!("stu-{n}")).await.status() }
    });
    let again = allocate_all(&app, (0..30).map(|n| (format!("stu-{n}"), None)).collect());
    let (mark_statuses, second) = tokio::join!(join_all(marks), again);

    assert!(mark_statuses.iter().all(|s| *s == StatusCode::OK));
    let old: HashSet<&str> = first
        .iter()
        .map(|(_, b)| b["sandbox_id"].as_str().unwrap())
        .collect();
    for (n, (status, body)) in second.iter().enumerate() {
        let id = body["sandbox_id"].as_str().unwrap();
        match *status {
            StatusCode::OK => assert!(
                old.contains(id),
                "stu-{n}: a replay must be its own sandbox"
            ),
            StatusCode::CREATED => {
                assert!(!old.contains(id), "stu-{n}: got a released sandbox {id}")
            }
            other => panic!("stu-{n}: {other}"),
        }
    }
}
