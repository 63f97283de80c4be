//! Background jobs through the admin API, against a simulated CSP (wiremock).

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use sandbox_broker::domain::time::EpochMillis;
use sandbox_broker::domain::time::EpochSecs;
use sandbox_broker::store::LeaseRequest;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::csp::{account, cleanup, csp, listings, released, sync, use_csp};
use crate::helpers::{TestApp, error_of, fresh_store, json_of, listed, sync_rules};

#[tokio::test]
async fn an_admin_sync_fills_the_pool_and_later_marks_vanished_sandboxes_stale_and_back() {
    let csp_server = csp(
        (1..=4).map(|n| account(n, &format!("lab-{n}"))).collect(),
        Duration::ZERO,
    )
    .await;
    let app = TestApp::builder()
        .config(|c| use_csp(c, &csp_server))
        .spawn()
        .await;

    let first = json_of(sync(&app).await, StatusCode::OK).await;
    assert_eq!(
        (
            first["status"].as_str(),
            first["synced"].as_u64(),
            first["marked_stale"].as_u64()
        ),
        (Some("completed"), Some(4), Some(0))
    );
    let held = json_of(app.allocate("stu").await, StatusCode::CREATED).await;

    csp_server.reset().await;
    let remaining: Vec<Value> = (1..=4)
        .filter(|n| n.to_string() != held["sandbox_id"].as_str().unwrap())
        .skip(1)
        .map(|n| account(n, &format!("lab-{n}")))
        .collect();
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": remaining})))
        .mount(&csp_server)
        .await;
    let second = json_of(sync(&app).await, StatusCode::OK).await;

    assert_eq!(second["marked_stale"], 1, "{second}");
    let stats = app.stats().await;
    assert_eq!(
        (
            stats["stale"].as_u64(),
            stats["allocated"].as_u64(),
            stats["available"].as_u64()
        ),
        (Some(1), Some(1), Some(2))
    );
    let sync_job = app.job("sync").await;
    assert_eq!(sync_job["last_outcome"], "completed");
    assert_eq!(sync_job["last_counts"]["marked_stale"], 1);
    assert_eq!(
        sync_job["lease_holder"],
        Value::Null,
        "a finished run releases its lease"
    );
}

#[tokio::test]
async fn a_provider_outage_postpones_the_sync_changes_nothing_and_opens_the_breaker() {
    let csp_server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&csp_server)
        .await;
    let app = TestApp::builder()
        .config(|c| use_csp(c, &csp_server))
        .spawn()
        .await;
    app.seed("lab-", 0, 3).await;

    for _ in 0..2 {
        let response = sync(&app).await;
        assert!(response.headers().contains_key("retry-after"));
        error_of(
            response,
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
        )
        .await;
    }
    let calls_before = csp_server.received_requests().await.unwrap().len();
    error_of(
        sync(&app).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    )
    .await;

    assert_eq!(
        csp_server.received_requests().await.unwrap().len(),
        calls_before,
        "an open breaker makes no call"
    );
    assert_eq!(
        app.stats().await["available"],
        3,
        "an outage never marks the pool stale"
    );
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("broker_provider_circuit_state 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("broker_sync_total{outcome=\"postponed\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("broker_provider_request_duration_seconds_count{operation=\"list\",outcome=\"unavailable\"} 2"),
        "only the calls that reached the provider are timed: {metrics}"
    );
    let jobs = json_of(app.admin_get("/v1/admin/jobs").await, StatusCode::OK).await;
    assert_eq!(jobs["jobs"][0]["last_outcome"], "postponed");
}

#[tokio::test]
async fn a_sync_while_another_instance_holds_the_lease_is_409_job_already_running() {
    let csp_server = csp(vec![account(1, "lab-1")], Duration::ZERO).await;
    let app = TestApp::builder()
        .config(|c| use_csp(c, &csp_server))
        .spawn()
        .await;
    let now_ms = sandbox_broker::domain::now_epoch_ms();
    app.store
        .jobs
        .acquire_lease(LeaseRequest {
            job: "sync",
            instance: "instance-b",
            now: EpochMillis::new(now_ms),
            ttl: Duration::from_secs(60),
        })
        .await
        .unwrap();

    let detail = error_of(
        sync(&app).await,
        StatusCode::CONFLICT,
        "JOB_ALREADY_RUNNING",
    )
    .await;

    assert!(
        detail["message"].as_str().unwrap().contains("instance-b"),
        "{detail}"
    );
    let jobs = json_of(app.admin_get("/v1/admin/jobs").await, StatusCode::OK).await;
    assert_eq!(jobs["jobs"][0]["lease_holder"], "instance-b");
    assert!(
        csp_server.received_requests().await.unwrap().is_empty(),
        "the provider was not called"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_triggered_at_once_run_one_sync() {
    let csp_server = csp(
        vec![account(1, "lab-1"), account(2, "lab-2")],
        Duration::from_millis(300),
    )
    .await;
    let (store, guard) = fresh_store().await;
    let mut apps = Vec::new();
    for _ in 0..3 {
        apps.push(
            TestApp::builder()
                .store(store.clone(), Box::new(()))
                .config(|c| use_csp(c, &csp_server))
                .spawn()
                .await,
        );
    }
    let _guard = guard;

    let statuses: Vec<StatusCode> = join_all(
        apps.iter()
            .map(|app| async move { sync(app).await.status() }),
    )
    .await;

    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        listings(&csp_server).await,
        1,
        "one listing for the whole fleet"
    );
    assert_eq!(apps[2].stats().await["available"], 2);
}

#[tokio::test]
async fn without_a_provider_the_sync_is_off_and_says_why() {
    let app = TestApp::spawn().await;

    let detail = error_of(
        sync(&app).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    )
    .await;
    let jobs = json_of(app.admin_get("/v1/admin/jobs").await, StatusCode::OK).await;

    assert!(
        detail["message"]
            .as_str()
            .unwrap()
            .contains("CSP_API_TOKEN"),
        "{detail}"
    );
    let job = |name: &str| {
        jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["job"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (
            job("sync")["enabled"].as_bool(),
            job("sync")["interval_sec"].as_u64()
        ),
        (Some(false), Some(600))
    );
    assert_eq!(
        job("cleanup")["enabled"],
        false,
        "cleanup needs the provider too"
    );
    assert_eq!(job("expiry")["enabled"], true, "expiry needs no provider");
}

#[tokio::test]
async fn an_admin_expiry_releases_ended_labs_and_their_owners_marks_stay_harmless() {
    let app = TestApp::builder()
        .config(|c| c.lab.grace_period_minutes = 30)
        .spawn()
        .await;
    app.seed("lab-", 0, 3).await;
    let long_ago = sandbox_broker::domain::now_epoch() - 3 * 3600;
    let ended = app
        .store
        .allocation
        .allocate(sandbox_broker::store::AllocationRequest {
            key: sandbox_broker::store::AllocationKey {
                holder: sandbox_broker::domain::HolderKey::parse("s", "forgetful").unwrap(),
                idempotency_key: None,
            },
            lab: None,
            name_prefix: None,
            lab_duration_hours: 2,
            now: EpochSecs::new(long_ago),
            token: None,
            reservation: None,
        })
        .await
        .unwrap()
        .unwrap()
        .sandbox;
    let current = json_of(app.allocate("diligent").await, StatusCode::CREATED).await;

    let expired = json_of(
        app.admin(Method::POST, "/v1/admin/expire")
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;

    assert_eq!(
        (expired["status"].as_str(), expired["expired"].as_u64()),
        (Some("completed"), Some(1))
    );
    let view = json_of(
        app.get_sandbox(&ended.sandbox_id, "forgetful").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(view["status"], "pending_deletion");
    let late_mark = json_of(
        app.mark(&ended.sandbox_id, "forgetful").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        late_mark["status"], "pending_deletion",
        "the owner's late release is a harmless repeat"
    );
    let still = json_of(
        app.get_sandbox(current["sandbox_id"].as_str().unwrap(), "diligent")
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(still["status"], "allocated");
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("broker_expiry_total{outcome=\"success\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("broker_expiry_orphaned_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn auto_delete_stale_removes_only_rows_stale_longer_than_the_grace() {
    let app = TestApp::spawn().await;
    let now = sandbox_broker::domain::now_epoch();
    app.store
        .lifecycle
        .sync_provider(
            listed(&[1, 2, 3], "lab-"),
            sync_rules(true),
            EpochSecs::new(now - 3 * 86_400),
        )
        .await
        .unwrap()
        .unwrap();
    app.store
        .lifecycle
        .sync_provider(
            listed(&[3], "lab-"),
            sync_rules(true),
            EpochSecs::new(now - 2 * 86_400),
        )
        .await
        .unwrap()
        .unwrap();
    app.store
        .lifecycle
        .sync_provider(
            listed(&[3], "lab-"),
            sync_rules(true),
            EpochSecs::new(now - 3600),
        )
        .await
        .unwrap()
        .unwrap();

    for bad in ["-1", "abc", "NaN"] {
        let response = app
            .admin(
                Method::POST,
                &format!("/v1/admin/auto-delete-stale?grace_period_hours={bad}"),
            )
            .send()
            .await
            .unwrap();
        error_of(response, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    }
    let kept = json_of(
        app.admin(
            Method::POST,
            "/v1/admin/auto-delete-stale?grace_period_hours=72",
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    let removed = json_of(
        app.admin(
            Method::POST,
            "/v1/admin/auto-delete-stale?grace_period_hours=24",
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;

    assert_eq!(kept["deleted"], 0);
    assert_eq!(
        (
            removed["status"].as_str(),
            removed["deleted"].as_u64(),
            removed["grace_period_hours"].as_f64()
        ),
        (Some("completed"), Some(2), Some(24.0))
    );
    assert_eq!(app.stats().await["total"], 1);
}

#[tokio::test]
async fn the_scheduled_stale_removal_runs_under_its_lease_and_removes_rows_stale_past_the_grace() {
    use sandbox_broker::domain::clock::{Clock, ManualClock};
    let clock = Arc::new(ManualClock::starting_now());
    let app = crate::helpers::TestApp::builder()
        .clock(clock.clone())
        .config(|c| {
            c.jobs.auto_delete_stale_interval = Duration::from_secs(1);
            c.jobs.auto_delete_stale_grace_hours = 24;
        })
        .spawn()
        .await;
    let now = clock.now();
    app.store
        .lifecycle
        .sync_provider(
            listed(&[1, 2, 3, 4], "lab-"),
            sync_rules(true),
            now - 3 * 86_400,
        )
        .await
        .unwrap()
        .unwrap();
    // 1 and 2 went stale two days ago, 3 an hour ago; 4 is still listed.
    app.store
        .lifecycle
        .sync_provider(listed(&[3, 4], "lab-"), sync_rules(true), now - 2 * 86_400)
        .await
        .unwrap()
        .unwrap();
    app.store
        .lifecycle
        .sync_provider(listed(&[4], "lab-"), sync_rules(true), now - 3600)
        .await
        .unwrap()
        .unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let job = loop {
        let job = app.job("auto_delete_stale").await;
        if job["last_outcome"] == "completed" {
            break job;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled run: {job}"
        );
        // The schedule runs on the clock: until the first run starts, move it an interval
        // on (never during a run, which would bring the second run at once).
        if job["lease_holder"].is_null() && job["last_started_at"].is_null() {
            clock.advance(Duration::from_secs(1));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    assert_eq!(
        (job["enabled"].as_bool(), job["interval_sec"].as_u64()),
        (Some(true), Some(1)),
        "needs no provider: {job}"
    );
    assert_eq!(job["last_counts"]["deleted"], 2, "{job}");
    let stats = app.stats().await;
    assert_eq!(
        (stats["total"].as_u64(), stats["stale"].as_u64()),
        (Some(2), Some(1)),
        "the row stale for an hour stays: {stats}"
    );
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("broker_auto_delete_stale_total{outcome=\"success\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("broker_auto_delete_stale_deleted_total 2"));
}

#[tokio::test]
async fn cleanup_deletes_released_sandboxes_at_the_provider_and_leaves_tombstones() {
    let provider = MockServer::start().await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(204))
        .expect(3)
        .mount(&provider)
        .await;
    let app = TestApp::builder()
        .config(|c| use_csp(c, &provider))
        .spawn()
        .await;
    let ids = released(&app, 3).await;

    let report = cleanup(&app).await;

    assert_eq!(
        (
            report["status"].as_str(),
            report["deleted"].as_u64(),
            report["failed"].as_u64()
        ),
        (Some("completed"), Some(3), Some(0))
    );
    let mut paths: Vec<String> = provider
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    paths.sort();
    let mut expected: Vec<String> = ids
        .iter()
        .map(|id| format!("/v2/sandbox/accounts/uuid-{id}"))
        .collect();
    expected.sort();
    assert_eq!(
        paths, expected,
        "each sandbox deleted once, by the uuid of its external id"
    );
    let tombstone = json_of(app.get_sandbox(&ids[0], "stu-0").await, StatusCode::OK).await;
    assert_eq!(
        tombstone["status"], "deleted",
        "the owner still sees its sandbox"
    );
    let repeat = json_of(app.mark(&ids[0], "stu-0").await, StatusCode::OK).await;
    assert_eq!(repeat["status"], "deleted");
    assert_eq!(app.stats().await["deleted"], 3);
    assert_eq!(
        cleanup(&app).await["deleted"],
        0,
        "nothing is deleted twice"
    );
}

#[tokio::test]
async fn a_provider_outage_burns_no_sandbox_and_cleanup_recovers_after_the_breaker() {
    let provider = MockServer::start().await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&provider)
        .await;
    let clock = Arc::new(sandbox_broker::domain::clock::ManualClock::starting_now());
    let app = crate::helpers::TestApp::builder()
        .clock(clock.clone())
        .config(|c| {
            use_csp(c, &provider);
            c.csp.circuit_breaker_timeout = Duration::from_secs(1);
        })
        .spawn()
        .await;
    let ids = released(&app, 4).await;

    let during = cleanup(&app).await;

    assert_eq!(
        (during["deleted"].as_u64(), during["failed"].as_u64()),
        (Some(0), Some(0)),
        "{during}"
    );
    assert_eq!(
        during["retrying"], 2,
        "two failures open the breaker: {during}"
    );
    assert_eq!(
        during["postponed"], 2,
        "the rest wait for the provider: {during}"
    );
    let stats = app.stats().await;
    assert_eq!(
        (
            stats["pending_deletion"].as_u64(),
            stats["deletion_failed"].as_u64()
        ),
        (Some(4), Some(0))
    );
    for id in &ids {
        let row = app
            .store
            .allocation
            .get(&sandbox_broker::domain::SandboxId::parse("i", id).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            row.deletion_retry_count, 0,
            "{id}: an outage never counts as an attempt"
        );
    }

    provider.reset().await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&provider)
        .await;
    clock.advance(Duration::from_secs(1)); // the breaker's open period ends: no sleeping
    let after = cleanup(&app).await;

    assert_eq!(after["deleted"], 4, "{after}");
    assert_eq!(app.stats().await["deleted"], 4);
    for (n, id) in ids.iter().enumerate() {
        let row = json_of(
            app.get_sandbox(id, &format!("stu-{n}")).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(row["status"], "deleted");
    }
}

#[tokio::test]
async fn permanent_refusals_count_and_the_third_makes_the_sandbox_deletion_failed() {
    let provider = MockServer::start().await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(400))
        .mount(&provider)
        .await;
    let app = TestApp::builder()
        .config(|c| use_csp(c, &provider))
        .spawn()
        .await;
    released(&app, 1).await;

    let first = cleanup(&app).await;
    let second = cleanup(&app).await;
    let third = cleanup(&app).await;

    assert_eq!(
        (first["retrying"].as_u64(), second["retrying"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(third["failed"], 1);
    let stats = app.stats().await;
    assert_eq!(
        (
            stats["deletion_failed"].as_u64(),
            stats["pending_deletion"].as_u64()
        ),
        (Some(1), Some(0))
    );
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("broker_cleanup_failed_total 1"),
        "{metrics}"
    );
    assert_eq!(
        cleanup(&app).await["failed"],
        0,
        "a failed sandbox waits for an operator"
    );
}

/// A provider whose listing starts (and says so) but ends only when the test opens it: a
/// sync that runs exactly as long as the test wants, in no real time.
#[derive(Default)]
struct GatedProvider {
    listing_started: tokio::sync::Notify,
    open: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl sandbox_broker::provider::ProviderClient for GatedProvider {
    async fn list_sandboxes(
        &self,
    ) -> Result<sandbox_broker::provider::ProviderListing, sandbox_broker::provider::ProviderError>
    {
        self.listing_started.notify_one();
        self.open.notified().await;
        Ok(sandbox_broker::provider::ProviderListing::default())
    }

    async fn delete_sandbox(&self, _: &str) -> Result<(), sandbox_broker::provider::ProviderError> {
        Ok(())
    }
}

/// When the `sync` lease runs out.
async fn sync_lease_end(store: &sandbox_broker::store::SharedStore) -> EpochMillis {
    store
        .jobs
        .job_records()
        .await
        .unwrap()
        .into_iter()
        .find(|record| record.job == "sync")
        .map_or(EpochMillis::new(i64::MIN), |record| {
            record.lease_expires_at_ms
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_job_renews_its_lease_so_no_second_instance_starts_it() {
    use sandbox_broker::domain::clock::{Clock, ManualClock};
    let clock = Arc::new(ManualClock::starting_now());
    let provider = Arc::new(GatedProvider::default());
    let (store, guard) = fresh_store().await;
    let three_second_lease =
        |c: &mut sandbox_broker::config::Config| c.jobs.job_lease = Duration::from_secs(3);
    let instance = |guard| {
        crate::helpers::TestApp::builder()
            .store(store.clone(), guard)
            .clock(clock.clone())
            .provider(provider.clone())
            .config(three_second_lease)
            .spawn()
    };
    let a = instance(Box::new(())).await;
    let b = instance(guard).await;

    let first = tokio::spawn(async move { sync(&a).await.status() });
    provider.listing_started.notified().await;
    let started = clock.now_ms();
    let unrenewed_end = sync_lease_end(&store).await;
    assert_eq!(unrenewed_end, started + 3_000);
    // Move the clock 100 ms at a time to a second past the unrenewed lease's end; before
    // a step would end the lease, wait for A's renewal (due every third of a lease) to land.
    while clock.now_ms() < unrenewed_end + 1_000 {
        let end = sync_lease_end(&store).await;
        if clock.now_ms() + 100 >= end {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while sync_lease_end(&store).await <= end {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the lease was not renewed"
                );
                tokio::task::yield_now().await;
            }
        }
        clock.advance(Duration::from_millis(100));
    }
    let second = sync(&b).await;

    assert_eq!(
        second.status(),
        StatusCode::CONFLICT,
        "the lease was renewed while the sync ran"
    );
    provider.open.notify_one();
    assert_eq!(first.await.unwrap(), StatusCode::OK);
}

#[tokio::test]
async fn an_instance_that_died_holding_a_lease_is_replaced_once_the_lease_runs_out() {
    use sandbox_broker::domain::clock::{Clock, ManualClock};
    let csp_server = csp(vec![account(1, "lab-1")], Duration::ZERO).await;
    let clock = Arc::new(ManualClock::starting_now());
    let app = crate::helpers::TestApp::builder()
        .clock(clock.clone())
        .config(|c| use_csp(c, &csp_server))
        .spawn()
        .await;
    app.store
        .jobs
        .acquire_lease(LeaseRequest {
            job: "sync",
            instance: "dead-instance",
            now: clock.now_ms(),
            ttl: std::time::Duration::from_millis(300),
        })
        .await
        .unwrap();
    error_of(
        sync(&app).await,
        StatusCode::CONFLICT,
        "JOB_ALREADY_RUNNING",
    )
    .await;

    clock.advance(Duration::from_millis(300)); // the dead holder's lease ends: no sleeping

    let report = json_of(sync(&app).await, StatusCode::OK).await;
    assert_eq!(report["synced"], 1);
}

/// Accepts every delete and records when it came.
#[derive(Default)]
struct RecordingProvider {
    deletes: std::sync::Mutex<Vec<std::time::Instant>>,
}

#[async_trait::async_trait]
impl sandbox_broker::provider::ProviderClient for RecordingProvider {
    async fn list_sandboxes(
        &self,
    ) -> Result<sandbox_broker::provider::ProviderListing, sandbox_broker::provider::ProviderError>
    {
        Ok(sandbox_broker::provider::ProviderListing::default())
    }

    async fn delete_sandbox(&self, _: &str) -> Result<(), sandbox_broker::provider::ProviderError> {
        self.deletes.lock().unwrap().push(std::time::Instant::now());
        Ok(())
    }
}

#[tokio::test]
async fn cleanup_throttles_by_batch_and_by_sandbox() {
    use sandbox_broker::domain::deletion::DeletionPolicy;
    use sandbox_broker::jobs::Trigger;
    use sandbox_broker::jobs::cleanup::{Cleanup, CleanupSettings};
    let app = TestApp::spawn().await;
    released(&app, 5).await;
    let provider = RecordingProvider::default();
    let settings = CleanupSettings {
        batch_size: 2,
        batch_delay: Duration::from_millis(250),
        per_sandbox_delay: Duration::from_millis(60),
        policy: DeletionPolicy {
            max_attempts: 3,
            backoff_base_secs: 60,
            give_up_secs: 86_400,
            tombstone_ttl_secs: 86_400,
        },
    };
    let metrics = sandbox_broker::metrics::Metrics::new().unwrap();
    let fence = sandbox_broker::jobs::Fence::unbounded(
        sandbox_broker::jobs::JobName::Cleanup,
        Arc::new(sandbox_broker::domain::clock::SystemClock),
    );
    let cleanup = Cleanup {
        provider: &provider,
        hook: None,
        store: &*app.store.lifecycle,
        metrics: &metrics,
        settings: &settings,
        runner: "runner",
        clock: &sandbox_broker::domain::clock::SystemClock,
        fence: &fence,
    };
    let counts = cleanup.run_once(Trigger::Admin).await.unwrap();

    assert_eq!(counts.deleted, 5);
    let at = provider.deletes.lock().unwrap().clone();
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    // Batches [0,1] [2,3] [4]: gaps 0→1 and 2→3 are inside a batch, 1→2 and 3→4 between batches.
    for inside in [gaps[0], gaps[2]] {
        assert!(
            inside >= settings.per_sandbox_delay,
            "within a batch: {gaps:?}"
        );
    }
    for between in [gaps[1], gaps[3]] {
        assert!(between >= settings.batch_delay, "between batches: {gaps:?}");
    }
}
