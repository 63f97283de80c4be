//! Trust: an account handed out once never becomes available again, a
//! deletion the provider contradicts is retried, and a listing that would empty the pool
//! is not applied. On both stores: the store itself, and black-box over HTTP with a
//! simulated CSP.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use sandbox_broker::domain::clock::ManualClock;
use sandbox_broker::domain::time::EpochSecs;
use sandbox_broker::domain::{SandboxId, SandboxStatus};
use sandbox_broker::store::{AllocationKey, AllocationRequest, DeletionOutcome, SharedStore};
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::csp::{account, cleanup, sync, use_csp};
use crate::helpers::release_of;
use crate::helpers::series_sum;
use crate::helpers::{TestApp, error_of, fresh_store, json_of, sandboxes, sync_rules};

const NOW: EpochSecs = EpochSecs::new(1_800_000_000);

/// What the provider lists: sandboxes `lab-<id>`.
fn listed(ids: &[u64]) -> Vec<sandbox_broker::provider::ProviderSandbox> {
    crate::helpers::listed(ids, "lab-")
}

/// Allocates and releases sandbox `id` (the only one of its name) for `student`, claims
/// its deletion and records `outcome`.
async fn hand_out_and_finish(store: &SharedStore, id: u64, outcome: DeletionOutcome) {
    let holder = format!("stu-{id}");
    let request = AllocationRequest {
        key: AllocationKey {
            holder: sandbox_broker::domain::HolderKey::parse("s", &holder).unwrap(),
            idempotency_key: None,
        },
        lab: None,
        name_prefix: Some(
            sandbox_broker::domain::NamePrefix::parse("p", &format!("lab-{id}")).unwrap(),
        ),
        lab_duration_hours: 4,
        now: NOW,
        token: None,
        reservation: None,
    };
    let held = store
        .allocation
        .allocate(request)
        .await
        .unwrap()
        .unwrap()
        .sandbox;
    assert_eq!(held.sandbox_id, id.to_string());
    let sandbox = SandboxId::parse("id", &held.sandbox_id).unwrap();
    let key = sandbox_broker::domain::HolderKey::parse("s", &holder).unwrap();
    store
        .allocation
        .release(release_of(&sandbox, &key, NOW + 1))
        .await
        .unwrap()
        .unwrap();
    crate::helpers::finish_deletion_of(store, &sandbox, outcome, None, NOW + 2, NOW + 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_account_stays_out_of_the_pool_however_its_row_left() {
    let (store, _guard) = fresh_store().await;
    store
        .lifecycle
        .sync_provider(listed(&[1, 2, 3, 4]), sync_rules(false), NOW)
        .await
        .unwrap()
        .unwrap();
    // 1: deleted, its tombstone purged after its ttl. 2: given up, then bulk-deleted.
    // 3: deleted, then the tombstone bulk-deleted. 4: never handed out.
    hand_out_and_finish(&store, 1, DeletionOutcome::Deleted { ttl: NOW + 10 }).await;
    let failed = DeletionOutcome::Failed {
        attempts: 3,
        error: "HTTP 400".into(),
    };
    hand_out_and_finish(&store, 2, failed).await;
    hand_out_and_finish(&store, 3, DeletionOutcome::Deleted { ttl: NOW + 9_999 }).await;
    assert_eq!(store.lifecycle.purge_tombstones(NOW + 10).await.unwrap(), 1);
    let status = |raw| sandbox_broker::domain::DeletableStatus::parse(raw).unwrap();
    assert_eq!(
        store
            .admin
            .bulk_delete(status("deletion_failed"), NOW + 20)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .admin
            .bulk_delete(status("deleted"), NOW + 20)
            .await
            .unwrap(),
        1
    );

    // The provider still lists all four (and a fifth, new one).
    let summary = store
        .lifecycle
        .sync_provider(listed(&[1, 2, 3, 4, 5]), sync_rules(false), NOW + 30)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (summary.kept_out, summary.added, summary.synced),
        (3, 1, 2),
        "{summary:?}"
    );
    for used in ["1", "2", "3"] {
        let id = SandboxId::parse("id", used).unwrap();
        assert_eq!(
            store.allocation.get(&id).await.unwrap(),
            None,
            "{used} came back"
        );
    }
    let stats = store.analytics.stats().await.unwrap();
    assert_eq!((stats.available, stats.total()), (2, 2), "{stats:?}");

    // An import of the same ids is skipped too.
    let mut again = sandboxes("lab-", 0, 3);
    for (n, row) in again.iter_mut().enumerate() {
        row.sandbox_id = SandboxId::parse("id", &(n + 1).to_string()).unwrap();
    }
    let imported = store.admin.import(again, NOW + 40).await.unwrap();
    assert_eq!((imported.imported, imported.skipped), (0, 3));
    assert_eq!(store.analytics.stats().await.unwrap().available, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_the_provider_contradicts_is_retried_under_the_retry_rules() {
    let (store, _guard) = fresh_store().await;
    store
        .lifecycle
        .sync_provider(listed(&[1]), sync_rules(false), NOW)
        .await
        .unwrap()
        .unwrap();
    hand_out_and_finish(&store, 1, DeletionOutcome::Deleted { ttl: NOW + 86_400 }).await;
    let grace = sync_rules(false).deletion_verify_grace_secs;
    let deleted_at = NOW + 3;

    let within = store
        .lifecycle
        .sync_provider(listed(&[1]), sync_rules(false), deleted_at + grace)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((within.unverified, within.untouched), (0, 1));
    let id = SandboxId::parse("id", "1").unwrap();
    assert_eq!(
        store.allocation.get(&id).await.unwrap().unwrap().status,
        SandboxStatus::Deleted
    );

    let past = store
        .lifecycle
        .sync_provider(listed(&[1]), sync_rules(false), deleted_at + grace + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(past.unverified, 1, "{past:?}");
    let retried = store.allocation.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (
            retried.status,
            retried.ttl,
            retried.deleted_at,
            retried.deletion_retry_count
        ),
        (SandboxStatus::PendingDeletion, None, None, 1)
    );
    assert!(
        retried
            .last_deletion_error
            .as_deref()
            .unwrap()
            .starts_with("deletion unverified"),
        "{retried:?}"
    );
    let due = store
        .lifecycle
        .deletions_due(deleted_at + grace + 1, false)
        .await
        .unwrap();
    assert_eq!(due.len(), 1, "cleanup takes it up again at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_would_mark_most_of_the_pool_stale_changes_nothing_unless_forced() {
    let (store, _guard) = fresh_store().await;
    let all: Vec<u64> = (1..=30).collect();
    store
        .lifecycle
        .sync_provider(listed(&all), sync_rules(false), NOW)
        .await
        .unwrap()
        .unwrap();
    let refused = store
        .lifecycle
        .sync_provider(listed(&[]), sync_rules(false), NOW + 10)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        (refused.would_mark_stale, refused.available),
        (30, 30),
        "{refused:?}"
    );
    // Half is still believable; one more is not. Nothing was written either time.
    let half = store
        .lifecycle
        .sync_provider(listed(&all[..15]), sync_rules(false), NOW + 20)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(half.marked_stale, 15);
    let stats = store.analytics.stats().await.unwrap();
    assert_eq!((stats.available, stats.stale), (15, 15));
    let forced = store
        .lifecycle
        .sync_provider(listed(&[]), sync_rules(true), NOW + 30)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(forced.marked_stale, 15);
}

/// A CSP listing `ids` (named `lab-<id>`) whose DELETE answers `delete_status`.
async fn csp(ids: &[u64], delete_status: u16) -> MockServer {
    let server = MockServer::start().await;
    list(&server, ids).await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(delete_status))
        .mount(&server)
        .await;
    server
}

async fn list(server: &MockServer, ids: &[u64]) {
    let accounts: Vec<Value> = ids
        .iter()
        .map(|id| account(*id, &format!("lab-{id}")))
        .collect();
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": accounts})))
        .mount(server)
        .await;
}

async fn admin_post(app: &TestApp, path: &str) -> reqwest::Response {
    app.admin(Method::POST, path).send().await.unwrap()
}

#[tokio::test]
async fn a_failed_deletion_bulk_deleted_and_synced_is_never_handed_to_the_next_student() {
    let provider = csp(&[1, 2], 400).await;
    let app = TestApp::builder()
        .config(|c| {
            use_csp(c, &provider);
            c.jobs.deletion_retry_max_attempts = 1;
        })
        .spawn()
        .await;
    json_of(sync(&app).await, StatusCode::OK).await;
    let first = json_of(app.allocate("stu-a").await, StatusCode::CREATED).await;
    let used = first["sandbox_id"].as_str().unwrap().to_owned();
    json_of(app.mark(&used, "stu-a").await, StatusCode::OK).await;
    assert_eq!(cleanup(&app).await["failed"], 1);
    let bulk = admin_post(&app, "/v1/admin/bulk-delete?status=deletion_failed").await;
    assert_eq!(json_of(bulk, StatusCode::OK).await["deleted"], 1);

    let again = json_of(sync(&app).await, StatusCode::OK).await;
    assert_eq!(
        (again["kept_out"].as_u64(), again["synced"].as_u64()),
        (Some(1), Some(1))
    );
    let next = json_of(app.allocate("stu-b").await, StatusCode::CREATED).await;
    assert_ne!(
        next["sandbox_id"],
        used.as_str(),
        "a used account was handed out again"
    );
    error_of(
        app.allocate("stu-c").await,
        StatusCode::CONFLICT,
        "NO_SANDBOXES_AVAILABLE",
    )
    .await;
}

#[tokio::test]
async fn a_deletion_the_provider_contradicts_is_flagged_retried_and_never_trusted_after_a_bulk_delete()
 {
    let provider = csp(&[1, 2], 204).await;
    let clock = Arc::new(ManualClock::starting_now());
    let app = TestApp::builder()
        .clock(clock.clone())
        .config(|c| {
            use_csp(c, &provider);
            crate::helpers::only_first_scheduled_runs(c);
        })
        .spawn()
        .await;
    crate::helpers::after_the_first_scheduled_runs(&app, &clock).await;
    json_of(sync(&app).await, StatusCode::OK).await;
    let mut used = Vec::new();
    for holder in ["stu-a", "stu-b"] {
        let held = json_of(app.allocate(holder).await, StatusCode::CREATED).await;
        let id = held["sandbox_id"].as_str().unwrap().to_owned();
        json_of(app.mark(&id, holder).await, StatusCode::OK).await;
        used.push(id);
    }
    assert_eq!(cleanup(&app).await["deleted"], 2);

    // migrating.md's pre-rollback step: tombstones go; the accounts stay out all the same.
    let bulk = admin_post(&app, "/v1/admin/bulk-delete?status=deleted").await;
    assert_eq!(json_of(bulk, StatusCode::OK).await["deleted"], 2);
    let kept = json_of(sync(&app).await, StatusCode::OK).await;
    assert_eq!(kept["kept_out"], 2, "{kept}");
    assert_eq!(app.stats().await["available"], 0);

    // Fresh accounts, deleted "successfully" but still listed past the grace: retried.
    provider.reset().await;
    let provider_ids = [3, 4];
    list(&provider, &provider_ids).await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&provider)
        .await;
    json_of(sync(&app).await, StatusCode::OK).await;
    let held = json_of(app.allocate("stu-c").await, StatusCode::CREATED).await;
    let id = held["sandbox_id"].as_str().unwrap().to_owned();
    json_of(app.mark(&id, "stu-c").await, StatusCode::OK).await;
    assert_eq!(cleanup(&app).await["deleted"], 1);
    clock.advance(Duration::from_secs(3601));
    let verified = json_of(sync(&app).await, StatusCode::OK).await;
    assert_eq!(verified["unverified"], 1, "{verified}");
    let row = json_of(app.get_sandbox(&id, "stu-c").await, StatusCode::OK).await;
    assert_eq!(row["status"], "pending_deletion", "{row}");
    let metrics = app.metrics_text().await;
    assert_eq!(
        series_sum(&metrics, "broker_deletion_unverified_total"),
        1.0
    );
    let list = json_of(
        app.admin_get(&format!("/v1/admin/sandboxes?q={id}")).await,
        StatusCode::OK,
    )
    .await;
    let error = list["sandboxes"][0]["last_deletion_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.starts_with("deletion unverified"), "{list}");
    let retried = cleanup(&app).await;
    assert_eq!(retried["deleted"], 1, "cleanup retries it: {retried}");
}

#[tokio::test]
async fn an_empty_listing_is_refused_with_a_clear_error_until_an_admin_forces_it() {
    let ids: Vec<u64> = (1..=30).collect();
    let provider = csp(&ids, 204).await;
    let app = TestApp::builder()
        .config(|c| use_csp(c, &provider))
        .spawn()
        .await;
    json_of(sync(&app).await, StatusCode::OK).await;

    provider.reset().await;
    list(&provider, &[]).await;
    let refused = error_of(sync(&app).await, StatusCode::CONFLICT, "LISTING_REFUSED").await;
    let message = refused["message"].as_str().unwrap();
    assert!(message.contains("30 of 30"), "{message}");
    assert!(message.contains("force=true"), "{message}");
    assert_eq!(app.stats().await["available"], 30, "nothing was applied");
    json_of(app.allocate("stu").await, StatusCode::CREATED).await;

    let sync_job = app.job("sync").await;
    assert_eq!(sync_job["last_outcome"], "refused", "{sync_job}");
    let metrics = app.metrics_text().await;
    assert_eq!(
        series_sum(&metrics, "broker_sync_total{outcome=\"refused\"}"),
        1.0
    );
    assert_eq!(
        series_sum(
            &metrics,
            "broker_job_last_outcome{job=\"sync\",outcome=\"refused\"}"
        ),
        1.0
    );

    let bad = admin_post(&app, "/v1/admin/sync?force=yes").await;
    error_of(bad, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    let forced = json_of(
        admin_post(&app, "/v1/admin/sync?force=true").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(forced["marked_stale"], 29, "{forced}");
}

#[tokio::test]
async fn every_page_of_the_listing_is_read_and_a_listing_with_a_failed_page_is_never_applied() {
    use wiremock::matchers::query_param;
    let page = |ids: std::ops::Range<u64>| {
        let accounts: Vec<Value> = ids.map(|id| account(id, &format!("lab-{id}"))).collect();
        ResponseTemplate::new(200).set_body_json(json!({ "results": accounts }))
    };
    let provider = MockServer::start().await;
    // The CSP caps its pages at 100, whatever `_limit` asks.
    for (offset, answer) in [
        ("0", page(1..101)),
        ("100", page(101..201)),
        ("200", page(201..251)),
        ("250", page(0..0)),
    ] {
        Mock::given(method("GET"))
            .and(query_param("_offset", offset))
            .respond_with(answer)
            .mount(&provider)
            .await;
    }
    let app = TestApp::builder()
        .config(|c| use_csp(c, &provider))
        .spawn()
        .await;
    let synced = json_of(sync(&app).await, StatusCode::OK).await;
    assert_eq!(synced["synced"], 250, "{synced}");

    // Later the second page fails: nothing of the first is applied either.
    provider.reset().await;
    Mock::given(method("GET"))
        .and(query_param("_offset", "0"))
        .respond_with(page(1..101))
        .mount(&provider)
        .await;
    Mock::given(method("GET"))
        .and(query_param("_offset", "100"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&provider)
        .await;
    error_of(
        sync(&app).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    )
    .await;
    let stats = app.stats().await;
    assert_eq!(
        (stats["available"].as_u64(), stats["stale"].as_u64()),
        (Some(250), Some(0))
    );
}
