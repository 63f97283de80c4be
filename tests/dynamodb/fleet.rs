//! Several service instances on one table: what only a shared table has. The class-start
//! races across instances (exact counts, one sandbox per key) are in `class_start.rs`,
//! shared with the embedded store.

use reqwest::StatusCode;
use sandbox_broker::domain::now_epoch;
use sandbox_broker::domain::time::EpochSecs;
use serde_json::Value;

use crate::helpers::{TestApp, json_of, sandboxes};
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

/// A lab token capped at 10, 60 students at once spread over three instances: exactly 10
/// sandboxes, and 50 answers of 429 `QUOTA_EXCEEDED`; a token revoked on one instance stops
/// working on the others within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_tokens_cap_holds_across_three_instances_and_its_revocation_reaches_them_all() {
    let (apps, _table) = fleet(3).await;
    apps[0].seed("lab-", 0, 40).await;
    let minted = apps[0]
        .admin(reqwest::Method::POST, "/v1/admin/tokens")
        .json(&serde_json::json!({"name": "fleet", "name_prefixes": ["lab-"], "max_active": 10}))
        .send()
        .await
        .unwrap();
    let minted = json_of(minted, StatusCode::CREATED).await;
    let (id, secret) = (
        minted["id"].as_str().unwrap().to_owned(),
        minted["token"].as_str().unwrap().to_owned(),
    );
    let allocate = |app: &TestApp, holder: String| {
        app.client
            .post(app.url("/v1/allocate"))
            .bearer_auth(&secret)
            .header("X-Instruqt-Sandbox-ID", holder)
            .send()
    };
    let answers =
        futures::future::join_all((0..60).map(|n| allocate(&apps[n % 3], format!("stu-{n}"))))
            .await;
    let statuses: Vec<StatusCode> = answers.into_iter().map(|r| r.unwrap().status()).collect();
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let capped = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((created, capped), (10, 50), "{statuses:?}");

    let revoked = apps[1]
        .admin(reqwest::Method::DELETE, &format!("/v1/admin/tokens/{id}"))
        .send()
        .await
        .unwrap();
    json_of(revoked, StatusCode::OK).await;
    let started = std::time::Instant::now();
    for app in &apps {
        loop {
            let status = allocate(app, "stu-after".into()).await.unwrap().status();
            if status == StatusCode::UNAUTHORIZED {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "still {status} 5 s after the revocation"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

/// While no webhook endpoint is registered a change carries no event (a fan-out would drop
/// it, and it would cost the outbox index a write). An endpoint registered on one instance
/// is announced to by that instance's next change at once, and by the others' within
/// `ENDPOINTS_RECHECK` (5 s): they renew their reading of the table in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_endpoint_no_event_is_written_and_a_new_one_is_announced_to_fleet_wide() {
    use std::time::{Duration, Instant};

    let (stores, _table) = local::fleet_table_stores(2).await;
    let mut apps = Vec::new();
    for store in stores {
        // No dispatcher run during the test: the outbox backlog only grows.
        let quiet = |c: &mut sandbox_broker::config::Config| {
            c.webhooks.webhook_dispatch_interval = Duration::from_secs(3600);
            c.webhooks.allow_private_webhooks = true;
        };
        apps.push(
            TestApp::builder()
                .store(store, Box::new(()))
                .config(quiet)
                .spawn()
                .await,
        );
    }
    apps[0].seed("lab-", 0, 80).await;
    async fn allocated(app: &TestApp, holder: String) {
        assert_eq!(app.allocate(&holder).await.status(), StatusCode::CREATED);
    }
    async fn backlog(app: &TestApp) -> u64 {
        app.store.outbox.outbox_backlog().await.unwrap().0
    }
    // Each instance's first change starts its first reading of the endpoints (until it
    // has one, events are written).
    allocated(&apps[0], "warm-0".into()).await;
    allocated(&apps[1], "warm-1".into()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = backlog(&apps[0]).await;
    for n in 0..5 {
        allocated(&apps[1], format!("quiet-{n}")).await;
        allocated(&apps[0], format!("quiet-0-{n}")).await;
    }
    assert_eq!(backlog(&apps[0]).await, before, "no endpoint, no event");

    let made = apps[0]
        .admin(reqwest::Method::POST, "/v1/admin/webhooks")
        .json(&serde_json::json!({"url": "http://127.0.0.1:9/broker", "events": ["sandbox.allocated"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), StatusCode::CREATED);
    allocated(&apps[0], "here".into()).await;
    assert_eq!(
        backlog(&apps[0]).await,
        before + 1,
        "announced at once where registered"
    );

    let registered = Instant::now();
    for n in 0.. {
        allocated(&apps[1], format!("there-{n}")).await;
        if backlog(&apps[1]).await > before + 1 {
            break;
        }
        assert!(
            registered.elapsed() < Duration::from_secs(15),
            "the other instance never announced to the new endpoint"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
