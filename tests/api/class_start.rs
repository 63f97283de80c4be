//! A class start: hundreds of students press "start lab" within seconds. Every one of them
//! gets a sandbox while the pool has one, the rest a clean 409, nobody a 503 — on one
//! instance or three sharing the store — and the pool is exactly what the answers say.
//! The counts are exact: a slow store is waited for, never reported as down.

use std::collections::{HashMap, HashSet};

use reqwest::StatusCode;
use sandbox_broker::domain::now_epoch;
use sandbox_broker::domain::time::EpochSecs;

use crate::helpers::{Answer, TestApp, burst, fleet, json_of, sandboxes};

fn new_holders(count: usize) -> Vec<(String, Option<String>)> {
    (0..count).map(|n| (format!("stu-{n:05}"), None)).collect()
}

/// Counts answers by status, and fails on any that is neither 201 nor 409.
fn tally(answers: &[Answer]) -> (usize, usize) {
    let mut by_status: HashMap<StatusCode, usize> = HashMap::new();
    for answer in answers {
        *by_status.entry(answer.status).or_default() += 1;
    }
    let unexpected: Vec<_> = answers
        .iter()
        .filter(|a| a.status != StatusCode::CREATED && a.status != StatusCode::CONFLICT)
        .take(3)
        .map(|a| format!("{} {}: {}", a.holder, a.status, a.body))
        .collect();
    assert!(
        unexpected.is_empty(),
        "answers other than 201/409 ({by_status:?}), e.g. {unexpected:?}"
    );
    (
        by_status.get(&StatusCode::CREATED).copied().unwrap_or(0),
        by_status.get(&StatusCode::CONFLICT).copied().unwrap_or(0),
    )
}

/// The invariants after a burst: no sandbox twice, each winner reads its own sandbox,
/// and the admin answers (stats, lists) agree with the rows — right away, with 200.
async fn check_pool(apps: &[TestApp], answers: &[Answer], pool: u64) {
    let winners: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .collect();
    let ids: HashSet<&str> = winners
        .iter()
        .map(|a| a.body["sandbox_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), winners.len(), "a sandbox was handed out twice");
    for answer in answers.iter().filter(|a| a.status == StatusCode::CONFLICT) {
        assert_eq!(answer.body["detail"]["code"], "NO_SANDBOXES_AVAILABLE");
    }
    let stats = apps[apps.len() - 1].stats().await;
    let allocated = winners.len() as u64;
    assert_eq!(stats["allocated"], allocated, "{stats}");
    assert_eq!(stats["available"], pool - allocated, "{stats}");
    assert_eq!(stats["total"], pool, "{stats}");
    let mut page = json_of(
        apps[0]
            .admin_get("/v1/admin/sandboxes?status=allocated&limit=100")
            .await,
        StatusCode::OK,
    )
    .await;
    let mut held: HashMap<String, String> = HashMap::new();
    let mut cursor = page["cursor"].as_str().map(str::to_owned);
    loop {
        for row in page["sandboxes"].as_array().unwrap() {
            let holder = row["allocated_to_track"].as_str().unwrap().to_owned();
            let id = row["sandbox_id"].as_str().unwrap().to_owned();
            assert!(
                held.insert(holder.clone(), id).is_none(),
                "{holder} holds two sandboxes"
            );
        }
        let Some(next) = cursor.take() else { break };
        page = json_of(
            apps[0]
                .admin_get(&format!(
                    "/v1/admin/sandboxes?status=allocated&limit=100&cursor={next}"
                ))
                .await,
            StatusCode::OK,
        )
        .await;
        cursor = page["cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(held.len() as u64, allocated, "listed allocations");
    for winner in winners {
        assert_eq!(
            held.get(&winner.holder).map(String::as_str),
            winner.body["sandbox_id"].as_str(),
            "{} got a sandbox the table does not give them",
            winner.holder
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_hundred_students_sixty_four_at_a_time_for_three_hundred_sandboxes_get_300_201_and_100_409()
 {
    let (apps, _guard) = fleet(1).await;
    apps[0]
        .store
        .admin
        .import(sandboxes("lab-", 0, 300), EpochSecs::new(now_epoch()))
        .await
        .unwrap();

    let answers = burst(&apps, new_holders(400), 64).await;

    assert_eq!(tally(&answers), (300, 100));
    check_pool(&apps, &answers, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifteen_hundred_students_on_five_hundred_connections_all_get_a_sandbox() {
    let (apps, _guard) = fleet(1).await;
    apps[0]
        .store
        .admin
        .import(sandboxes("lab-", 0, 1500), EpochSecs::new(now_epoch()))
        .await
        .unwrap();

    let answers = burst(&apps, new_holders(1500), 500).await;

    assert_eq!(tally(&answers), (1500, 0));
    check_pool(&apps, &answers, 1500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_hundred_students_on_three_instances_96_at_a_time_get_exactly_600_201_and_200_409() {
    let (apps, _guard) = fleet(3).await;
    apps[0]
        .store
        .admin
        .import(sandboxes("lab-", 0, 600), EpochSecs::new(now_epoch()))
        .await
        .unwrap();

    let answers = burst(&apps, new_holders(800), 96).await;

    assert_eq!(tally(&answers), (600, 200));
    check_pool(&apps, &answers, 600).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_identical_requests_spread_over_three_instances_get_one_sandbox_and_one_201() {
    let (apps, _guard) = fleet(3).await;
    apps[0]
        .store
        .admin
        .import(sandboxes("lab-", 0, 50), EpochSecs::new(now_epoch()))
        .await
        .unwrap();
    let same: Vec<(String, Option<String>)> = (0..30)
        .map(|_| ("same-student".to_owned(), Some("k1".to_owned())))
        .collect();

    let answers = burst(&apps, same, 30).await;

    let ids: HashSet<&str> = answers
        .iter()
        .map(|a| a.body["sandbox_id"].as_str().unwrap())
        .collect();
    let created = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .count();
    let replayed = answers
        .iter()
        .filter(|a| a.status == StatusCode::OK)
        .count();
    assert_eq!(ids.len(), 1, "one key got several sandboxes: {ids:?}");
    assert_eq!((created, replayed), (1, 29));
    assert_eq!(apps[2].stats().await["allocated"], 1);
}
