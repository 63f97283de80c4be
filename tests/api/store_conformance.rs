//! The store conformance suite: one body of tests against any store (a `SharedStore`).
//! Each test crate instantiates it for its store flavor (`tests/api`: embedded,
//! `tests/dynamodb`: DynamoDB Local).

use std::collections::HashSet;

use futures::future::join_all;
use sandbox_broker::domain::time::{EpochMillis, EpochSecs};
use sandbox_broker::domain::{
    DeletableStatus, HolderKey, IdempotencyKey, LabName, LabPolicy, NamePrefix, Sandbox, SandboxId,
    SandboxStatus,
};
use sandbox_broker::store::{
    Allocation, AllocationKey, AllocationRequest, DeletionClaim, FinishedDeletion, JobRecord,
    LeaseOutcome, LeaseRequest, ListQuery, Refusal, ReleaseRequest, SharedStore,
};

use crate::helpers::{finish_deletion_of, listed, release_of, sandboxes, sync_rules};

const NOW: EpochSecs = EpochSecs::new(1_800_000_000);

fn holder(key: &str) -> HolderKey {
    HolderKey::parse("student", key).unwrap()
}

fn request(key: &str) -> AllocationRequest {
    AllocationRequest {
        key: AllocationKey {
            holder: holder(key),
            idempotency_key: None,
        },
        lab: None,
        name_prefix: None,
        lab_duration_hours: 48,
        now: NOW,
        token: None,
        reservation: None,
    }
}

fn with_prefix(mut request: AllocationRequest, prefix: &str) -> AllocationRequest {
    request.name_prefix = Some(NamePrefix::parse("prefix", prefix).unwrap());
    request
}

/// What `request` was granted, which the test knows it is.
async fn granted(store: &SharedStore, request: AllocationRequest) -> Allocation {
    store.allocation.allocate(request).await.unwrap().unwrap()
}

/// The stored row `raw`, which the test knows exists.
async fn stored(store: &SharedStore, raw: &str) -> Sandbox {
    store.allocation.get(&id(raw)).await.unwrap().unwrap()
}

fn id(raw: &str) -> SandboxId {
    SandboxId::parse("id", raw).unwrap()
}

fn query(limit: usize) -> ListQuery {
    ListQuery {
        limit,
        ..ListQuery::default()
    }
}

/// Every row, by following cursors.
async fn list_all(store: &SharedStore, mut q: ListQuery) -> Vec<sandbox_broker::domain::Sandbox> {
    let mut rows = Vec::new();
    loop {
        let page = store.admin.list(q.clone()).await.unwrap();
        rows.extend(page.sandboxes);
        match page.next {
            Some(next) => q.cursor = Some(next),
            None => return rows,
        }
    }
}

pub async fn allocation_hands_out_each_sandbox_once_then_reports_exhaustion(store: SharedStore) {
    store
        .admin
        .import(sandboxes("lab-", 0, 3), NOW)
        .await
        .unwrap();
    let mut ids = HashSet::new();
    for n in 0..3 {
        let allocation = granted(&store, request(&format!("s{n}"))).await;
        assert!(allocation.newly_allocated);
        assert_eq!(allocation.sandbox.status, SandboxStatus::Allocated);
        assert_eq!(
            allocation.sandbox.holder.as_deref(),
            Some(format!("s{n}").as_str())
        );
        assert_eq!(allocation.sandbox.allocated_at, Some(NOW));
        assert_eq!(allocation.sandbox.lab_duration_hours, Some(48));
        assert!(
            allocation.sandbox.allocated_here(),
            "marked as this service's allocation, so its lab duration is trusted"
        );
        ids.insert(allocation.sandbox.sandbox_id);
    }
    assert_eq!(ids.len(), 3);
    assert!(matches!(
        store.allocation.allocate(request("s9")).await,
        Ok(Err(Refusal::NoneAvailable))
    ));
}

pub async fn the_same_key_replays_and_other_keys_get_other_sandboxes(store: SharedStore) {
    store
        .admin
        .import(sandboxes("lab-", 0, 5), NOW)
        .await
        .unwrap();
    let first = granted(&store, request("s1")).await;
    let replay = granted(&store, request("s1")).await;
    let mut keyed = request("s1");
    keyed.key.idempotency_key = Some(IdempotencyKey::parse("k", "second").unwrap());
    let second = granted(&store, keyed.clone()).await;
    let second_replay = granted(&store, keyed).await;

    assert!(!replay.newly_allocated);
    assert_eq!(replay.sandbox, first.sandbox);
    assert!(second.newly_allocated);
    assert_ne!(second.sandbox.sandbox_id, first.sandbox.sandbox_id);
    assert_eq!(second_replay.sandbox.sandbox_id, second.sandbox.sandbox_id);
    assert_eq!(second.sandbox.idempotency_key.as_deref(), Some("second"));
}

pub async fn prefixes_select_by_name_and_exhaust_separately(store: SharedStore) {
    store
        .admin
        .import(sandboxes("lab-a-", 0, 2), NOW)
        .await
        .unwrap();
    store
        .admin
        .import(sandboxes("lab-b-", 100, 1), NOW)
        .await
        .unwrap();

    let b = granted(&store, with_prefix(request("s1"), "lab-b-")).await;
    let b_again = store
        .allocation
        .allocate(with_prefix(request("s2"), "lab-b-"))
        .await;
    let a = granted(&store, with_prefix(request("s3"), "lab-a")).await;
    let none = store
        .allocation
        .allocate(with_prefix(request("s4"), "zzz"))
        .await;

    assert!(b.sandbox.name.starts_with("lab-b-"));
    assert!(matches!(b_again, Ok(Err(Refusal::NoneAvailable))));
    assert!(a.sandbox.name.starts_with("lab-a-"));
    assert!(matches!(none, Ok(Err(Refusal::NoneAvailable))));
}

pub async fn marking_checks_ownership_is_idempotent_and_frees_the_key(store: SharedStore) {
    store
        .admin
        .import(sandboxes("lab-", 0, 3), NOW)
        .await
        .unwrap();
    let held = granted(&store, request("s1")).await.sandbox;
    let held_id = id(&held.sandbox_id);
    let unheld = ["1", "2", "3"]
        .into_iter()
        .find(|n| *n != held.sandbox_id)
        .unwrap();

    assert!(matches!(
        store
            .allocation
            .release(release_of(&id("nope"), &holder("s1"), NOW))
            .await,
        Ok(Err(Refusal::SandboxNotFound))
    ));
    assert!(matches!(
        store
            .allocation
            .release(release_of(&held_id, &holder("s2"), NOW))
            .await,
        Ok(Err(Refusal::NotHolder))
    ));
    assert!(
        matches!(
            store
                .allocation
                .release(release_of(&id(unheld), &holder("s1"), NOW))
                .await,
            Ok(Err(Refusal::NotHolder))
        ),
        "an available row has no owner"
    );
    let marked = store
        .allocation
        .release(release_of(&held_id, &holder("s1"), NOW + 5))
        .await
        .unwrap()
        .unwrap();
    let repeat = store
        .allocation
        .release(release_of(&held_id, &holder("s1"), NOW + 9))
        .await
        .unwrap()
        .unwrap();

    assert!(marked.newly_released);
    assert_eq!(marked.sandbox.status, SandboxStatus::PendingDeletion);
    assert_eq!(marked.sandbox.deletion_requested_at, Some(NOW + 5));
    assert!(!repeat.newly_released);
    assert_eq!(
        repeat.sandbox.deletion_requested_at,
        Some(NOW + 5),
        "a repeat changes nothing"
    );
    let next = granted(&store, request("s1")).await;
    assert!(next.newly_allocated);
    assert_ne!(next.sandbox.sandbox_id, held.sandbox_id);
}

pub async fn import_upserts_available_rows_only(store: SharedStore) {
    let summary = store
        .admin
        .import(sandboxes("lab-", 0, 3), NOW)
        .await
        .unwrap();
    assert_eq!((summary.imported, summary.skipped), (3, 0));
    let held = granted(&store, request("s1")).await.sandbox;

    let mut again = sandboxes("new-", 0, 3);
    again[0].sfdc_account_id = Some("001NEW".into());
    let summary = store.admin.import(again, NOW + 1).await.unwrap();

    assert_eq!((summary.imported, summary.skipped), (2, 1));
    let untouched = stored(&store, &held.sandbox_id).await;
    assert_eq!(
        untouched, held,
        "an allocated row is never touched by import"
    );
    let renamed = granted(&store, with_prefix(request("s2"), "new-")).await;
    assert!(
        renamed.sandbox.name.starts_with("new-"),
        "the new name is what allocation matches"
    );
    assert!(
        store
            .allocation
            .allocate(with_prefix(request("s3"), "lab-"))
            .await
            .is_ok_and(|outcome| outcome.is_err()),
        "old names are gone from the index"
    );
}

pub async fn get_returns_rows_in_any_status(store: SharedStore) {
    store
        .admin
        .import(sandboxes("lab-", 0, 2), NOW)
        .await
        .unwrap();
    assert!(store.allocation.get(&id("999")).await.unwrap().is_none());
    let available = stored(&store, "1").await;
    assert_eq!(available.status, SandboxStatus::Available);
    assert_eq!(available.allocated_at, None);
    assert_eq!(
        stored(&store, "2").await.sfdc_account_id.as_deref(),
        Some("001SFDC2")
    );
}

pub async fn list_pages_visit_every_match_once(store: SharedStore) {
    store
        .admin
        .import(sandboxes("lab-", 0, 23), NOW)
        .await
        .unwrap();
    for n in 0..5 {
        granted(&store, request(&format!("s{n}"))).await;
    }

    let all = list_all(&store, query(4)).await;
    let allocated = list_all(
        &store,
        ListQuery {
            status: Some(SandboxStatus::Allocated),
            ..query(2)
        },
    )
    .await;
    let one_holder = list_all(
        &store,
        ListQuery {
            holder: Some(holder("s3")),
            ..query(10)
        },
    )
    .await;

    let ids: Vec<&str> = all.iter().map(|r| r.sandbox_id.as_str()).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 23);
    assert_eq!(allocated.len(), 5);
    assert!(
        allocated
            .iter()
            .all(|r| r.status == SandboxStatus::Allocated)
    );
    assert_eq!(one_holder.len(), 1);

    // Free-text search matches id, name, student and lab, ignoring case, across pages.
    let search = |text: &str| ListQuery {
        search: Some(sandbox_broker::domain::SearchText::parse("q", text).unwrap()),
        ..query(3)
    };
    let held_by_s3 = one_holder[0].sandbox_id.clone();
    let found = list_all(&store, search("S3")).await;
    assert_eq!(
        found
            .iter()
            .map(|r| r.sandbox_id.as_str())
            .collect::<Vec<_>>(),
        [held_by_s3.as_str()]
    );
    assert_eq!(list_all(&store, search("LAB-")).await.len(), 23);
    let by_name = list_all(&store, search("lab-00012")).await;
    assert_eq!(by_name.len(), 1);
    assert_eq!(by_name[0].name, "lab-00012");
    assert!(list_all(&store, search("no-such-text")).await.is_empty());
}

/// The per-prefix pool gauges count exactly what an allocation with that prefix can get.
pub async fn available_by_prefix_counts_what_a_prefix_allocation_can_get(store: SharedStore) {
    let mut rows = sandboxes("dns-", 0, 5);
    rows.extend(sandboxes("dnssec-", 100, 2));
    rows.extend(sandboxes("sec-", 200, 3));
    store.admin.import(rows, NOW).await.unwrap();
    for n in 0..2 {
        store
            .allocation
            .allocate(with_prefix(request(&format!("s{n}")), "dns-"))
            .await
            .unwrap()
            .unwrap();
    }
    let prefix = |raw: &str| sandbox_broker::domain::NamePrefix::parse("p", raw).unwrap();
    let prefixes = [
        prefix("dns-"),
        prefix("dns"),
        prefix("sec-"),
        prefix("nothing-"),
    ];

    let counts = store
        .analytics
        .available_by_prefix(&prefixes)
        .await
        .unwrap();

    assert_eq!(counts, [3, 5, 3, 0]);
    assert_eq!(
        store.analytics.available_by_prefix(&[]).await.unwrap(),
        Vec::<u64>::new()
    );
}

pub async fn stats_and_track_stats_are_exact(store: SharedStore) {
    store
        .admin
        .import(sandboxes("lab-", 0, 10), NOW)
        .await
        .unwrap();
    for n in 0..4 {
        let mut r = request(&format!("s{n}"));
        r.lab = Some(LabName::parse("t", if n < 3 { "dns" } else { "sec" }).unwrap());
        let held = granted(&store, r).await.sandbox;
        if n == 0 {
            store
                .allocation
                .release(release_of(&id(&held.sandbox_id), &holder("s0"), NOW))
                .await
                .unwrap()
                .unwrap();
        }
    }

    let stats = store.analytics.stats().await.unwrap();
    let facts = store.analytics.allocation_facts().await.unwrap();
    let labs = sandbox_broker::domain::usage::lab_stats(&facts);

    assert_eq!(
        (
            stats.available,
            stats.allocated,
            stats.pending_deletion,
            stats.total()
        ),
        (6, 3, 1, 10)
    );
    let listed = list_all(&store, query(100)).await;
    for status in SandboxStatus::ALL {
        let counted = listed.iter().filter(|r| r.status == status).count() as u64;
        assert_eq!(
            stats.get(status),
            counted,
            "{status} count disagrees with the rows"
        );
    }
    let summary: Vec<(&str, u64, u64, u64, u64)> = labs
        .iter()
        .map(|t| {
            (
                t.lab.as_str(),
                t.allocated,
                t.pending_deletion,
                t.total,
                t.released,
            )
        })
        .collect();
    assert_eq!(summary, [("dns", 2, 1, 3, 1), ("sec", 1, 0, 1, 0)]);
    // Only handed-out rows carry facts; each carries its times.
    assert_eq!(facts.len(), 4);
    assert_eq!(facts.iter().filter(|f| f.allocated_at.is_some()).count(), 4);
    assert_eq!(
        facts
            .iter()
            .filter_map(|f| f.released_at)
            .collect::<Vec<_>>(),
        [NOW.get()]
    );
}

pub async fn bulk_delete_removes_exactly_one_status(store: SharedStore) {
    store
        .admin
        .import(sandboxes("lab-", 0, 6), NOW)
        .await
        .unwrap();
    granted(&store, request("s1")).await;

    let removed = store
        .admin
        .bulk_delete(DeletableStatus::parse("available").unwrap(), NOW)
        .await
        .unwrap();
    let none = store
        .admin
        .bulk_delete(DeletableStatus::parse("stale").unwrap(), NOW)
        .await
        .unwrap();

    assert_eq!((removed, none), (5, 0));
    let stats = store.analytics.stats().await.unwrap();
    assert_eq!((stats.available, stats.allocated, stats.total()), (0, 1, 1));
    assert!(matches!(
        store.allocation.allocate(request("s2")).await,
        Ok(Err(Refusal::NoneAvailable))
    ));
    store
        .admin
        .import(sandboxes("lab-", 0, 6), NOW)
        .await
        .unwrap();
    assert_eq!(
        store.analytics.stats().await.unwrap().available,
        5,
        "removed rows can be imported again"
    );
}

pub async fn concurrent_allocations_never_share_a_sandbox(store: SharedStore) {
    store
        .admin
        .import(sandboxes("lab-", 0, 50), NOW)
        .await
        .unwrap();
    let calls = (0..80).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .allocation
                .allocate(request(&format!("s{}", n % 60)))
                .await
        })
    });
    let results: Vec<_> = join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let ok: Vec<_> = results
        .iter()
        .filter_map(|r| r.as_ref().ok()?.as_ref().ok())
        .collect();
    let exhausted = results
        .iter()
        .filter(|r| matches!(r, Ok(Err(Refusal::NoneAvailable))))
        .count();
    assert_eq!(ok.len() + exhausted, 80, "only exhaustion may fail");
    let per_holder: std::collections::HashMap<&str, HashSet<&str>> =
        ok.iter().fold(Default::default(), |mut map, a| {
            map.entry(a.sandbox.holder.as_deref().unwrap())
                .or_default()
                .insert(a.sandbox.sandbox_id.as_str());
            map
        });
    assert!(
        per_holder.values().all(|ids| ids.len() == 1),
        "a student got two sandboxes"
    );
    let distinct: HashSet<&str> = per_holder.values().flatten().copied().collect();
    assert_eq!(
        distinct.len(),
        per_holder.len(),
        "two students share a sandbox"
    );
    assert_eq!(distinct.len(), 50);
}

pub async fn ping_succeeds_on_a_healthy_store(store: SharedStore) {
    store.health.ping().await.unwrap();
}

macro_rules! conformance_suite {
    ($flavor:ident, $make:expr) => {
        mod $flavor {
            conformance_suite!(@cases $make;
                allocation_hands_out_each_sandbox_once_then_reports_exhaustion,
                the_same_key_replays_and_other_keys_get_other_sandboxes,
                prefixes_select_by_name_and_exhaust_separately,
                marking_checks_ownership_is_idempotent_and_frees_the_key,
                import_upserts_available_rows_only,
                get_returns_rows_in_any_status,
                list_pages_visit_every_match_once,
                stats_and_track_stats_are_exact,
                available_by_prefix_counts_what_a_prefix_allocation_can_get,
                bulk_delete_removes_exactly_one_status,
                concurrent_allocations_never_share_a_sandbox,
                ping_succeeds_on_a_healthy_store,
                sync_adds_refreshes_and_stales_without_resurrecting_anything,
                a_job_lease_has_one_holder_until_it_expires_or_is_released,
                a_lease_runs_out_exactly_at_its_end,
                expiry_releases_only_ended_labs_and_frees_their_keys,
                stale_rows_are_removed_only_after_their_grace,
                deletions_are_claimed_by_one_runner_and_recorded_only_by_it,
                a_deletion_claim_holds_through_its_last_second,
                a_tombstone_is_dropped_exactly_at_its_ttl,
                a_final_deletion_outcome_writes_the_niosxaas_history_with_the_row,
                an_export_restores_into_an_empty_store_item_for_item,
                lab_tokens_are_kept_capped_and_revoked,
                reservations_hold_rows_for_their_lab_only_and_return_the_rest,
                a_sync_stales_a_reserved_row_the_provider_dropped,
                a_reservation_and_its_rows_survive_an_export_and_restore,
                webhook_endpoints_keep_their_secrets_and_delivery_state,
                the_outbox_fans_out_keeps_and_settles_deliveries,
            );
        }
    };
    (@cases $make:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = $make;
                super::$case(store).await;
            }
        )+
    };
}

conformance_suite!(this_flavor, crate::helpers::fresh_store().await);

pub async fn sync_adds_refreshes_and_stales_without_resurrecting_anything(store: SharedStore) {
    let first = store
        .lifecycle
        .sync_provider(listed(&[1, 2, 3, 4, 5], "lab-"), sync_rules(true), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.synced, first.added, first.marked_stale), (5, 5, 0));
    let held = granted(&store, request("s1")).await.sandbox;
    let released = granted(&store, request("s2")).await.sandbox;
    store
        .allocation
        .release(release_of(&id(&released.sandbox_id), &holder("s2"), NOW))
        .await
        .unwrap()
        .unwrap();

    // The provider still lists everything but drops one available sandbox and renames one.
    let available: Vec<u64> = (1..=5)
        .filter(|n| {
            ![held.sandbox_id.as_str(), released.sandbox_id.as_str()]
                .contains(&n.to_string().as_str())
        })
        .collect();
    let (gone, renamed) = (available[0], available[1]);
    let mut listing = listed(
        &[1, 2, 3, 4, 5, 6]
            .into_iter()
            .filter(|n| *n != gone)
            .collect::<Vec<_>>(),
        "lab-",
    );
    for sandbox in &mut listing {
        if sandbox.sandbox_id.as_str() == renamed.to_string() {
            sandbox.name = sandbox_broker::domain::SandboxName::parse("n", "lab-renamed").unwrap();
        }
    }
    let second = store
        .lifecycle
        .sync_provider(listing.clone(), sync_rules(true), NOW + 10)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(second.added, 1, "sandbox 6 is new");
    assert_eq!(
        second.untouched, 2,
        "the allocated and the released sandbox stay as they are"
    );
    assert_eq!(second.marked_stale, 1);
    assert_eq!(
        stored(&store, &held.sandbox_id).await.status,
        SandboxStatus::Allocated
    );
    assert_eq!(
        stored(&store, &released.sandbox_id).await.status,
        SandboxStatus::PendingDeletion
    );
    assert_eq!(
        stored(&store, &gone.to_string()).await.status,
        SandboxStatus::Stale
    );
    let refreshed = stored(&store, &renamed.to_string()).await;
    assert_eq!(
        (refreshed.name.as_str(), refreshed.last_synced),
        ("lab-renamed", Some(NOW + 10))
    );

    // Back at the provider: the stale row returns.
    let third = store
        .lifecycle
        .sync_provider(
            listed(&[1, 2, 3, 4, 5, 6], "lab-"),
            sync_rules(true),
            NOW + 20,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((third.restored, third.marked_stale, third.added), (1, 0, 0));
    assert_eq!(
        stored(&store, &gone.to_string()).await.status,
        SandboxStatus::Available
    );

    // The same listing again within the same second changes nothing, and is no error.
    let before = stored(&store, &renamed.to_string()).await;
    let repeat = store
        .lifecycle
        .sync_provider(
            listed(&[1, 2, 3, 4, 5, 6], "lab-"),
            sync_rules(true),
            NOW + 20,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            repeat.synced,
            repeat.added,
            repeat.restored,
            repeat.untouched
        ),
        (4, 0, 0, 2)
    );
    assert_eq!(stored(&store, &renamed.to_string()).await, before);
    let stats = store.analytics.stats().await.unwrap();
    assert_eq!(
        (
            stats.available,
            stats.allocated,
            stats.pending_deletion,
            stats.stale
        ),
        (4, 1, 1, 0)
    );
}

/// Both stores draw the boundary where `domain::lease` does: held a millisecond before
/// its end, free at it.
pub async fn a_lease_runs_out_exactly_at_its_end(store: SharedStore) {
    let now = 1_800_000_000_000;
    let ends = now + 30_000;
    store
        .jobs
        .acquire_lease(LeaseRequest {
            job: "expiry",
            instance: "a",
            now: EpochMillis::new(now),
            ttl: std::time::Duration::from_millis(30_000),
        })
        .await
        .unwrap();
    assert_eq!(
        store
            .jobs
            .acquire_lease(LeaseRequest {
                job: "expiry",
                instance: "b",
                now: EpochMillis::new(ends - 1),
                ttl: std::time::Duration::from_millis(30_000)
            })
            .await
            .unwrap(),
        LeaseOutcome::Held {
            instance: "a".into(),
            until_ms: EpochMillis::new(ends)
        }
    );
    assert_eq!(
        store
            .jobs
            .acquire_lease(LeaseRequest {
                job: "expiry",
                instance: "b",
                now: EpochMillis::new(ends),
                ttl: std::time::Duration::from_millis(30_000)
            })
            .await
            .unwrap(),
        LeaseOutcome::Acquired
    );
}

pub async fn a_job_lease_has_one_holder_until_it_expires_or_is_released(store: SharedStore) {
    let now = 1_800_000_000_000;
    assert_eq!(
        store
            .jobs
            .acquire_lease(LeaseRequest {
                job: "sync",
                instance: "a",
                now: EpochMillis::new(now),
                ttl: std::time::Duration::from_millis(30_000)
            })
            .await
            .unwrap(),
        LeaseOutcome::Acquired
    );
    assert_eq!(
        store
            .jobs
            .acquire_lease(LeaseRequest {
                job: "sync",
                instance: "b",
                now: EpochMillis::new(now + 1_000),
                ttl: std::time::Duration::from_millis(30_000)
            })
            .await
            .unwrap(),
        LeaseOutcome::Held {
            instance: "a".into(),
            until_ms: EpochMillis::new(now + 30_000)
        }
    );
    assert_eq!(
        store
            .jobs
            .acquire_lease(LeaseRequest {
                job: "sync",
                instance: "a",
                now: EpochMillis::new(now + 2_000),
                ttl: std::time::Duration::from_millis(30_000)
            })
            .await
            .unwrap(),
        LeaseOutcome::Acquired,
        "renewal"
    );
    assert_eq!(
        store
            .jobs
            .acquire_lease(LeaseRequest {
                job: "cleanup",
                instance: "b",
                now: EpochMillis::new(now),
                ttl: std::time::Duration::from_millis(30_000)
            })
            .await
            .unwrap(),
        LeaseOutcome::Acquired,
        "jobs lease separately"
    );

    // a dies; its lease runs out; b takes over.
    assert_eq!(
        store
            .jobs
            .acquire_lease(LeaseRequest {
                job: "sync",
                instance: "b",
                now: EpochMillis::new(now + 40_000),
                ttl: std::time::Duration::from_millis(30_000)
            })
            .await
            .unwrap(),
        LeaseOutcome::Acquired
    );
    // a's late report records its run but leaves b's lease alone.
    let run = JobRecord {
        job: "sync".into(),
        last_started_at: Some(EpochSecs::new(1_800_000_000)),
        last_finished_at: Some(EpochSecs::new(1_800_000_001)),
        last_outcome: Some("completed".into()),
        last_counts: [("synced".to_owned(), 3u64)].into_iter().collect(),
        next_run_at: Some(EpochSecs::new(1_800_000_600)),
        ..JobRecord::default()
    };
    store.jobs.finish_job_run(run.clone(), "a").await.unwrap();
    let records = store.jobs.job_records().await.unwrap();
    let sync = records.iter().find(|r| r.job == "sync").unwrap();
    assert_eq!(sync.instance.as_deref(), Some("b"));
    assert_eq!(
        (sync.last_outcome.as_deref(), sync.last_counts.get("synced")),
        (Some("completed"), Some(&3))
    );

    store.jobs.finish_job_run(run, "b").await.unwrap();
    let sync = store
        .jobs
        .job_records()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.job == "sync")
        .unwrap();
    assert_eq!(
        sync.instance, None,
        "the holder's own report releases the lease"
    );
    assert_eq!(
        store
            .jobs
            .acquire_lease(LeaseRequest {
                job: "sync",
                instance: "c",
                now: EpochMillis::new(now + 41_000),
                ttl: std::time::Duration::from_millis(30_000)
            })
            .await
            .unwrap(),
        LeaseOutcome::Acquired
    );
}

pub async fn expiry_releases_only_ended_labs_and_frees_their_keys(store: SharedStore) {
    store
        .admin
        .import(sandboxes("lab-", 0, 5), NOW)
        .await
        .unwrap();
    let mut short = request("short");
    short.lab_duration_hours = 1;
    let ended = granted(&store, short.clone()).await.sandbox;
    let long = granted(&store, request("long")).await.sandbox;
    let mut marked = request("marked");
    marked.lab_duration_hours = 1;
    let released = granted(&store, marked).await.sandbox;
    store
        .allocation
        .release(release_of(
            &id(&released.sandbox_id),
            &holder("marked"),
            NOW + 60,
        ))
        .await
        .unwrap()
        .unwrap();
    let grace = 1800;
    // The configured duration is long; this service's own 1 h allocations keep theirs.
    let policy = LabPolicy {
        lab_duration_hours: 48,
        grace_secs: grace,
    };

    let too_early = store
        .lifecycle
        .expire_allocations(NOW + 3600 + grace, policy)
        .await
        .unwrap();
    let expired = store
        .lifecycle
        .expire_allocations(NOW + 3600 + grace + 1, policy)
        .await
        .unwrap();
    let again = store
        .lifecycle
        .expire_allocations(NOW + 3600 + grace + 2, policy)
        .await
        .unwrap();

    assert!(too_early.is_empty(), "the grace period is respected");
    let ids: Vec<&str> = expired.iter().map(|r| r.sandbox_id.as_str()).collect();
    assert_eq!(
        ids,
        [ended.sandbox_id.as_str()],
        "only the ended lab, not the long one nor the released one"
    );
    assert_eq!(expired[0].status, SandboxStatus::PendingDeletion);
    assert_eq!(
        expired[0].deletion_requested_at,
        Some(NOW + 3600 + grace + 1)
    );
    assert!(again.is_empty(), "expiry is idempotent");
    assert_eq!(
        stored(&store, &long.sandbox_id).await.status,
        SandboxStatus::Allocated
    );
    assert_eq!(
        stored(&store, &released.sandbox_id)
            .await
            .deletion_requested_at,
        Some(NOW + 60),
        "the owner's own release stands"
    );
    let next = granted(&store, short).await;
    assert!(next.newly_allocated, "the expired key gets a new sandbox");
    assert_ne!(next.sandbox.sandbox_id, ended.sandbox_id);
}

pub async fn stale_rows_are_removed_only_after_their_grace(store: SharedStore) {
    store
        .lifecycle
        .sync_provider(listed(&[1, 2, 3], "lab-"), sync_rules(true), NOW)
        .await
        .unwrap()
        .unwrap();
    store
        .lifecycle
        .sync_provider(listed(&[3], "lab-"), sync_rules(true), NOW + 100)
        .await
        .unwrap()
        .unwrap();

    let early = store
        .lifecycle
        .delete_stale(NOW + 99, NOW + 200)
        .await
        .unwrap();
    let removed = store
        .lifecycle
        .delete_stale(NOW + 100, NOW + 200)
        .await
        .unwrap();

    assert_eq!((early, removed), (0, 2));
    let stats = store.analytics.stats().await.unwrap();
    assert_eq!((stats.stale, stats.available, stats.total()), (0, 1, 1));
}

/// `count` sandboxes imported, allocated to `s<n>` and released by them: their ids.
async fn released_rows(store: &SharedStore, count: u64) -> Vec<SandboxId> {
    store
        .admin
        .import(sandboxes("lab-", 0, count), NOW)
        .await
        .unwrap();
    let mut pending = Vec::new();
    for n in 0..count {
        let held = granted(store, request(&format!("s{n}"))).await.sandbox;
        store
            .allocation
            .release(release_of(
                &id(&held.sandbox_id),
                &holder(&format!("s{n}")),
                NOW,
            ))
            .await
            .unwrap()
            .unwrap();
        pending.push(id(&held.sandbox_id));
    }
    pending
}

/// Both stores drop a tombstone where `domain::lifecycle::tombstone_purgeable` says: at
/// its `ttl`, not a second before; and the row leaves its used-account marker.
pub async fn a_tombstone_is_dropped_exactly_at_its_ttl(store: SharedStore) {
    use sandbox_broker::store::DeletionOutcome;
    let pending = released_rows(&store, 1).await;
    finish_deletion_of(
        &store,
        &pending[0],
        DeletionOutcome::Deleted { ttl: NOW + 100 },
        None,
        NOW,
        NOW + 2,
    )
    .await;
    assert_eq!(store.lifecycle.purge_tombstones(NOW + 99).await.unwrap(), 0);
    assert!(store.allocation.get(&pending[0]).await.unwrap().is_some());
    assert_eq!(
        store.lifecycle.purge_tombstones(NOW + 100).await.unwrap(),
        1
    );
    assert!(store.allocation.get(&pending[0]).await.unwrap().is_none());
    let relisted = store
        .admin
        .import(sandboxes("lab-", 0, 1), NOW + 200)
        .await
        .unwrap();
    assert_eq!(
        (relisted.imported, relisted.skipped),
        (0, 1),
        "the purged account stays out"
    );
}

/// Both stores draw the boundary where `domain::lifecycle::deletion_claimable` does.
pub async fn a_deletion_claim_holds_through_its_last_second(store: SharedStore) {
    let pending = released_rows(&store, 1).await;
    let until = NOW + 60;
    let claim = |runner: &'static str, at: EpochSecs| {
        let (store, id) = (store.clone(), pending[0].clone());
        async move {
            store
                .lifecycle
                .claim_deletion(DeletionClaim {
                    id: &id,
                    runner,
                    now: at,
                    until: at + 60,
                })
                .await
                .unwrap()
        }
    };
    assert!(claim("runner-a", NOW).await.is_some());
    assert!(
        claim("runner-b", until).await.is_none(),
        "held at its last second"
    );
    assert!(
        claim("runner-b", until + 1).await.is_some(),
        "free once it ran out"
    );
}

pub async fn deletions_are_claimed_by_one_runner_and_recorded_only_by_it(store: SharedStore) {
    use sandbox_broker::store::DeletionOutcome;
    let pending = released_rows(&store, 3).await;
    assert_eq!(
        store
            .lifecycle
            .deletions_due(NOW, false)
            .await
            .unwrap()
            .len(),
        3
    );

    let claimed = store
        .lifecycle
        .claim_deletion(DeletionClaim {
            id: &pending[0],
            runner: "runner-a",
            now: NOW,
            until: NOW + 60,
        })
        .await
        .unwrap();
    let contested = store
        .lifecycle
        .claim_deletion(DeletionClaim {
            id: &pending[0],
            runner: "runner-b",
            now: NOW + 1,
            until: NOW + 61,
        })
        .await
        .unwrap();
    assert!(claimed.is_some());
    assert!(
        contested.is_none(),
        "a running claim excludes other runners"
    );
    let claimed = claimed.unwrap();
    store
        .lifecycle
        .finish_deletion(FinishedDeletion {
            claimed: &claimed,
            runner: "runner-b",
            outcome: DeletionOutcome::Deleted { ttl: NOW + 10 },
            niosxaas: None,
            now: NOW + 2,
        })
        .await
        .unwrap();
    assert_eq!(
        store
            .allocation
            .get(&pending[0])
            .await
            .unwrap()
            .unwrap()
            .status,
        SandboxStatus::PendingDeletion,
        "only the claim holder records"
    );
    store
        .lifecycle
        .finish_deletion(FinishedDeletion {
            claimed: &claimed,
            runner: "runner-a",
            outcome: DeletionOutcome::Deleted { ttl: NOW + 10 },
            niosxaas: None,
            now: NOW + 2,
        })
        .await
        .unwrap();
    let tombstone = store.allocation.get(&pending[0]).await.unwrap().unwrap();
    assert_eq!(
        (tombstone.status, tombstone.deleted_at, tombstone.ttl),
        (SandboxStatus::Deleted, Some(NOW + 2), Some(NOW + 10))
    );
    assert_eq!(
        tombstone.holder.as_deref(),
        Some("s0"),
        "the owner still sees its tombstone"
    );

    // A transient failure backs off; the schedule skips it, an admin run does not.
    let second = store
        .lifecycle
        .claim_deletion(DeletionClaim {
            id: &pending[1],
            runner: "runner-a",
            now: NOW,
            until: NOW + 60,
        })
        .await
        .unwrap()
        .unwrap();
    let retry = DeletionOutcome::Retry {
        next_attempt_at: NOW + 120,
        attempts: 0,
        transient_failures: 1,
        first_transient_failure_at: Some(NOW),
        error: "HTTP 503".into(),
    };
    store
        .lifecycle
        .finish_deletion(FinishedDeletion {
            claimed: &second,
            runner: "runner-a",
            outcome: retry,
            niosxaas: None,
            now: NOW + 3,
        })
        .await
        .unwrap();
    let due: Vec<String> = store
        .lifecycle
        .deletions_due(NOW + 60, false)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.sandbox_id)
        .collect();
    assert_eq!(due, [pending[2].as_str()]);
    assert_eq!(
        store
            .lifecycle
            .deletions_due(NOW + 60, true)
            .await
            .unwrap()
            .len(),
        2
    );
    let backing_off = store.allocation.get(&pending[1]).await.unwrap().unwrap();
    assert_eq!(
        (
            backing_off.deletion_transient_failures,
            backing_off.deletion_retry_count,
            backing_off.deletion_claimed_by
        ),
        (1, 0, None)
    );

    // An expired claim can be taken over; a failure is final.
    store
        .lifecycle
        .claim_deletion(DeletionClaim {
            id: &pending[2],
            runner: "runner-a",
            now: NOW,
            until: NOW + 5,
        })
        .await
        .unwrap()
        .unwrap();
    let taken_over = store
        .lifecycle
        .claim_deletion(DeletionClaim {
            id: &pending[2],
            runner: "runner-b",
            now: NOW + 6,
            until: NOW + 66,
        })
        .await
        .unwrap();
    let taken_over = taken_over.expect("a dead runner's claim runs out");
    store
        .lifecycle
        .finish_deletion(FinishedDeletion {
            claimed: &taken_over,
            runner: "runner-b",
            outcome: DeletionOutcome::Failed {
                attempts: 3,
                error: "HTTP 400".into(),
            },
            niosxaas: None,
            now: NOW + 7,
        })
        .await
        .unwrap();
    let failed = store.allocation.get(&pending[2]).await.unwrap().unwrap();
    assert_eq!(
        (failed.status, failed.deletion_retry_count),
        (SandboxStatus::DeletionFailed, 3)
    );
    assert!(
        store
            .lifecycle
            .claim_deletion(DeletionClaim {
                id: &pending[2],
                runner: "runner-a",
                now: NOW + 8,
                until: NOW + 68
            })
            .await
            .unwrap()
            .is_none()
    );

    assert_eq!(store.lifecycle.purge_tombstones(NOW + 9).await.unwrap(), 0);
    assert_eq!(store.lifecycle.purge_tombstones(NOW + 10).await.unwrap(), 1);
    let stats = store.analytics.stats().await.unwrap();
    assert_eq!(
        (stats.deleted, stats.pending_deletion, stats.deletion_failed),
        (0, 1, 1)
    );
}

pub async fn a_final_deletion_outcome_writes_the_niosxaas_history_with_the_row(store: SharedStore) {
    use sandbox_broker::domain::{NIOSXAAS_HISTORY_TTL_SECS, NiosxaasCleanup};
    use sandbox_broker::store::DeletionOutcome;
    let mut claimed: Vec<Sandbox> = Vec::new();
    for pending in released_rows(&store, 3).await {
        let row = store
            .lifecycle
            .claim_deletion(DeletionClaim {
                id: &pending,
                runner: "runner",
                now: NOW,
                until: NOW + 60,
            })
            .await
            .unwrap()
            .unwrap();
        claimed.push(row);
    }
    let first = id(&claimed[0].sandbox_id);
    let cleaned = NiosxaasCleanup {
        niosxaas_cleaned_at: Some(NOW + 1),
        niosxaas_services_matched: 2,
        ..NiosxaasCleanup::default()
    };

    // The hook cleaned, the provider failed: the row keeps the hook's result, no history yet.
    let retry = DeletionOutcome::Retry {
        next_attempt_at: NOW + 60,
        attempts: 0,
        transient_failures: 1,
        first_transient_failure_at: Some(NOW + 1),
        error: "HTTP 503".into(),
    };
    store
        .lifecycle
        .finish_deletion(FinishedDeletion {
            claimed: &claimed[0],
            runner: "runner",
            outcome: retry,
            niosxaas: Some(cleaned.clone()),
            now: NOW + 1,
        })
        .await
        .unwrap();
    let kept = store.allocation.get(&first).await.unwrap().unwrap();
    assert_eq!(kept.niosxaas.as_ref(), Some(&cleaned));
    assert!(
        store
            .analytics
            .niosxaas_history(&first, NOW + 1)
            .await
            .unwrap()
            .is_none()
    );

    // The next attempt deletes without rerunning the hook: the history keeps its result.
    let again = store
        .lifecycle
        .claim_deletion(DeletionClaim {
            id: &first,
            runner: "runner",
            now: NOW + 61,
            until: NOW + 120,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.niosxaas.as_ref(),
        Some(&cleaned),
        "a claim returns the hook's record"
    );
    store
        .lifecycle
        .finish_deletion(FinishedDeletion {
            claimed: &again,
            runner: "runner",
            outcome: DeletionOutcome::Deleted { ttl: NOW + 900 },
            niosxaas: None,
            now: NOW + 62,
        })
        .await
        .unwrap();
    let history = store
        .analytics
        .niosxaas_history(&first, NOW + 62)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            history.sandbox_id.as_str(),
            history.sandbox_name.as_str(),
            history.external_id.as_str(),
            history.holder.as_deref(),
            history.deleted_at,
            history.ttl,
        ),
        (
            claimed[0].sandbox_id.as_str(),
            claimed[0].name.as_str(),
            claimed[0].external_id.as_str(),
            Some("s0"),
            Some(NOW + 62),
            NOW + 62 + NIOSXAAS_HISTORY_TTL_SECS,
        )
    );
    assert_eq!(history.cleanup, cleaned);

    // A given-up deletion is history too, without `deleted_at`; a runner without the claim
    // writes nothing.
    let refused = NiosxaasCleanup {
        niosxaas_cleanup_failed_reason: Some("failed at delete: HTTP 400".into()),
        ..NiosxaasCleanup::default()
    };
    let failed = DeletionOutcome::Failed {
        attempts: 3,
        error: "failed at delete: HTTP 400".into(),
    };
    let second = id(&claimed[1].sandbox_id);
    store
        .lifecycle
        .finish_deletion(FinishedDeletion {
            claimed: &claimed[1],
            runner: "intruder",
            outcome: failed.clone(),
            niosxaas: Some(refused.clone()),
            now: NOW + 2,
        })
        .await
        .unwrap();
    assert!(
        store
            .analytics
            .niosxaas_history(&second, NOW + 2)
            .await
            .unwrap()
            .is_none()
    );
    store
        .lifecycle
        .finish_deletion(FinishedDeletion {
            claimed: &claimed[1],
            runner: "runner",
            outcome: failed,
            niosxaas: Some(refused.clone()),
            now: NOW + 2,
        })
        .await
        .unwrap();
    let history = store
        .analytics
        .niosxaas_history(&second, NOW + 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((history.deleted_at, history.cleanup), (None, refused));

    // A sandbox the hook never ran for has no history; history items are not sandboxes.
    let third = id(&claimed[2].sandbox_id);
    store
        .lifecycle
        .finish_deletion(FinishedDeletion {
            claimed: &claimed[2],
            runner: "runner",
            outcome: DeletionOutcome::Deleted { ttl: NOW + 900 },
            niosxaas: None,
            now: NOW + 3,
        })
        .await
        .unwrap();
    assert!(
        store
            .analytics
            .niosxaas_history(&third, NOW + 3)
            .await
            .unwrap()
            .is_none()
    );
    let stats = store.analytics.stats().await.unwrap();
    assert_eq!(
        (stats.deleted, stats.deletion_failed, stats.total()),
        (2, 1, 3)
    );
    let listed = store.admin.list(query(100)).await.unwrap().sandboxes.len();
    assert_eq!(listed, 3);

    // Every unexpired history item lists; expired history reads as gone.
    let mut listed: Vec<(String, Option<EpochSecs>)> = store
        .analytics
        .niosxaas_histories(NOW + 62)
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.sandbox_id, h.deleted_at))
        .collect();
    listed.sort();
    let mut expected = vec![
        (first.as_str().to_owned(), Some(NOW + 62)),
        (second.as_str().to_owned(), None),
    ];
    expected.sort();
    assert_eq!(listed, expected);
    let first_expires = NOW + 62 + NIOSXAAS_HISTORY_TTL_SECS;
    assert!(
        store
            .analytics
            .niosxaas_history(&first, first_expires)
            .await
            .unwrap()
            .is_none()
    );
    // The second item (written at NOW + 2) expires first.
    let left: Vec<String> = store
        .analytics
        .niosxaas_histories(NOW + 2 + NIOSXAAS_HISTORY_TTL_SECS)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.sandbox_id)
        .collect();
    assert_eq!(left, [first.as_str().to_owned()]);
}

/// Every item `store` exports now, read to the end.
async fn exported(store: &SharedStore) -> Vec<sandbox_broker::store::backup::BackupItem> {
    use futures::TryStreamExt;
    let export = store.backup.export(NOW).await.unwrap();
    export.items.try_collect().await.unwrap()
}

pub async fn an_export_restores_into_an_empty_store_item_for_item(store: SharedStore) {
    use futures::TryStreamExt;
    use sandbox_broker::store::backup::{BackupItem, RestoreMarker, Restored};
    assert_eq!(
        store.backup.any_item().await.unwrap(),
        None,
        "a fresh store is empty"
    );
    store
        .admin
        .import(sandboxes("lab-", 0, 3), NOW)
        .await
        .unwrap();
    granted(&store, request("stu")).await;
    let export = store.backup.export(NOW).await.unwrap();
    assert_eq!(export.header.items, 4, "three rows and one allocation key");
    let items: Vec<BackupItem> = export.items.try_collect().await.unwrap();
    assert_eq!(items.len(), 4);
    assert!(store.backup.any_item().await.unwrap().is_some());

    let (other, _guard) = crate::helpers::fresh_store().await;
    let marker = RestoreMarker {
        digest: "sha256:1".into(),
        items: 4,
        merge: false,
        started_at: NOW,
    };
    other
        .backup
        .set_restore_marker(Some(marker.clone()))
        .await
        .unwrap();
    assert_eq!(other.backup.restore_marker().await.unwrap(), Some(marker));
    assert_eq!(
        other.backup.any_item().await.unwrap(),
        None,
        "a marker is no item"
    );
    let written = other
        .backup
        .restore_items(items.clone(), NOW)
        .await
        .unwrap();
    // Every item is written, except that a store which derives an allocation key from its
    // allocated row (the embedded store) holds the key as soon as the row is restored.
    for (item, outcome) in items.iter().zip(&written) {
        let implied = matches!(item, BackupItem::AllocationKey(_))
            && *outcome == Restored::Present(Box::new(item.clone()));
        assert!(
            *outcome == Restored::Written || implied,
            "{item:?}: {outcome:?}"
        );
    }
    let again = other
        .backup
        .restore_items(items.clone(), NOW)
        .await
        .unwrap();
    let present: Vec<Restored> = items
        .iter()
        .map(|item| Restored::Present(Box::new(item.clone())))
        .collect();
    assert_eq!(again, present, "nothing is written twice");
    other.backup.set_restore_marker(None).await.unwrap();
    assert_eq!(other.backup.restore_marker().await.unwrap(), None);

    let mut back = exported(&other).await;
    let mut items = items;
    let key = |item: &BackupItem| item.key();
    back.sort_by_key(key);
    items.sort_by_key(key);
    assert_eq!(back, items);
    // The student's allocation replays on the restored store.
    let replay = other
        .allocation
        .allocate(request("stu"))
        .await
        .unwrap()
        .unwrap();
    assert!(!replay.newly_allocated);
}

pub async fn lab_tokens_are_kept_capped_and_revoked(store: SharedStore) {
    use sandbox_broker::domain::tokens::{LabToken, RawTokenSpec, TokenRefused, TokenSpec};
    use sandbox_broker::store::TokenGrant;
    let spec = |name: &str| {
        TokenSpec::parse(
            RawTokenSpec {
                name: Some(name.into()),
                name_prefixes: Some(vec!["lab-".into()]),
                max_active: Some(2),
                ..RawTokenSpec::default()
            },
            NOW,
        )
        .unwrap()
    };
    let (token, _) = LabToken::mint(spec("class-a"), NOW, [1; 32], [1; 8]);
    store
        .tokens
        .add_token(&token, 2, NOW)
        .await
        .unwrap()
        .unwrap();
    let (twin, _) = LabToken::mint(spec("class-a"), NOW, [2; 32], [2; 8]);
    assert_eq!(
        store.tokens.add_token(&twin, 2, NOW).await.unwrap(),
        Err(Refusal::Token(TokenRefused::NameTaken))
    );
    let (second, _) = LabToken::mint(spec("class-b"), NOW, [3; 32], [3; 8]);
    store
        .tokens
        .add_token(&second, 2, NOW)
        .await
        .unwrap()
        .unwrap();
    let (third, _) = LabToken::mint(spec("class-c"), NOW, [4; 32], [4; 8]);
    assert_eq!(
        store.tokens.add_token(&third, 2, NOW).await.unwrap(),
        Err(Refusal::Token(TokenRefused::TooMany { limit: 2 }))
    );

    store
        .admin
        .import(sandboxes("lab-", 0, 4), NOW)
        .await
        .unwrap();
    let under_token = |key: &str| AllocationRequest {
        token: Some(TokenGrant {
            id: token.id.clone(),
            max_active: token.max_active,
        }),
        ..request(key)
    };
    let first = granted(&store, under_token("stu-1")).await.sandbox;
    assert_eq!(first.token_id.as_deref(), Some(token.id.as_str()));
    granted(&store, under_token("stu-2")).await;
    let capped = store
        .allocation
        .allocate(under_token("stu-3"))
        .await
        .unwrap();
    assert!(matches!(capped, Err(Refusal::QuotaExceeded)), "{capped:?}");
    let replay = store
        .allocation
        .allocate(under_token("stu-1"))
        .await
        .unwrap()
        .unwrap();
    assert!(!replay.newly_allocated, "a replay at the cap is answered");
    let held = |uses: Vec<sandbox_broker::domain::tokens::TokenUse>| {
        uses.into_iter()
            .find(|u| u.token.id == token.id)
            .map(|u| u.held)
    };
    assert_eq!(held(store.tokens.tokens().await.unwrap()), Some(2));

    let release = ReleaseRequest {
        id: SandboxId::parse("id", &first.sandbox_id).unwrap(),
        holder: HolderKey::parse("h", "stu-1").unwrap(),
        now: NOW,
        token: Some(token.id.clone()),
    };
    store.allocation.release(release).await.unwrap().unwrap();
    assert_eq!(
        held(store.tokens.tokens().await.unwrap()),
        Some(1),
        "a release frees a slot"
    );
    granted(&store, under_token("stu-3")).await;

    store.tokens.touch_token(&token.id, NOW + 60).await.unwrap();
    let revoked = store
        .tokens
        .revoke_token(&token.id, NOW + 61)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(NOW + 61));
    let again = store
        .tokens
        .revoke_token(&token.id, NOW + 99)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.revoked_at,
        Some(NOW + 61),
        "the first revocation stands"
    );
    let listed = store.tokens.tokens().await.unwrap();
    let kept = listed.iter().find(|u| u.token.id == token.id).unwrap();
    assert_eq!(kept.token.last_used_at, Some(NOW + 60));
    assert!(
        store
            .tokens
            .revoke_token("tok_none", NOW)
            .await
            .unwrap()
            .is_none()
    );
    // Revoked, it no longer counts against MAX_TOKENS.
    store
        .tokens
        .add_token(&third, 2, NOW + 62)
        .await
        .unwrap()
        .unwrap();
}

fn reservation(
    id: &str,
    lab: &str,
    prefix: &str,
    count: u64,
) -> sandbox_broker::domain::reservations::Reservation {
    sandbox_broker::domain::reservations::Reservation {
        id: id.into(),
        lab: lab.into(),
        name_prefix: prefix.into(),
        count,
        starts_at: NOW + 100,
        ends_at: NOW + 10_000,
        created_at: NOW,
    }
}

fn for_lab(key: &str, lab: &str, prefix: &str, reservation: Option<&str>) -> AllocationRequest {
    let request = request(key);
    AllocationRequest {
        lab: Some(LabName::parse("lab", lab).unwrap()),
        reservation: reservation.map(str::to_owned),
        ..if prefix.is_empty() {
            request
        } else {
            with_prefix(request, prefix)
        }
    }
}

pub async fn reservations_hold_rows_for_their_lab_only_and_return_the_rest(store: SharedStore) {
    store
        .admin
        .import(sandboxes("lab-", 0, 10), NOW)
        .await
        .unwrap();
    store
        .admin
        .import(sandboxes("nios-", 100, 5), NOW)
        .await
        .unwrap();
    let class = reservation("res_a", "lab-a", "lab-", 4);
    let other = reservation("res_c", "lab-c", "nios-", 3);
    let reservations = &store.reservations;
    reservations.add_reservation(&class).await.unwrap();
    reservations.add_reservation(&other).await.unwrap();
    let mut kept = reservations.reservations().await.unwrap();
    kept.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(kept, [class.clone(), other.clone()]);
    assert_eq!(reservations.reservable("lab-").await.unwrap(), 10);
    assert_eq!(reservations.reservable("").await.unwrap(), 15);

    assert_eq!(reservations.hold_rows(&class, 4, NOW).await.unwrap(), 4);
    assert_eq!(reservations.hold_rows(&other, 3, NOW).await.unwrap(), 3);
    let stats = store.analytics.stats().await.unwrap();
    assert_eq!((stats.available, stats.reserved), (8, 7));
    assert_eq!(
        reservations.reservable("lab-").await.unwrap(),
        10,
        "held rows still count"
    );
    let counts = reservations.reservation_counts().await.unwrap();
    assert_eq!((counts["res_a"].held, counts["res_a"].used), (4, 0));
    let held = reservations.held_rows().await.unwrap();
    assert_eq!((held.len(), held["res_a"], held["res_c"]), (2, 4, 3));

    // Another lab gets only what is not set aside.
    for n in 0..6 {
        granted(&store, for_lab(&format!("b{n}"), "lab-b", "lab-", None)).await;
    }
    assert_eq!(
        store
            .allocation
            .allocate(for_lab("b6", "lab-b", "lab-", None))
            .await
            .unwrap()
            .err(),
        Some(Refusal::NoneAvailable),
        "the last four lab- rows are lab-a's"
    );
    // The class draws on its own rows, and a replay is the same sandbox.
    let mut drawn = HashSet::new();
    for n in 0..4 {
        let got = granted(
            &store,
            for_lab(&format!("a{n}"), "lab-a", "lab-", Some("res_a")),
        )
        .await;
        assert!(got.newly_allocated);
        assert_eq!(got.sandbox.reserved_for.as_deref(), Some("res_a"));
        assert_eq!(got.sandbox.lab.as_deref(), Some("lab-a"));
        drawn.insert(got.sandbox.sandbox_id);
    }
    assert_eq!(drawn.len(), 4);
    let replay = granted(&store, for_lab("a0", "lab-a", "lab-", Some("res_a"))).await;
    assert!(!replay.newly_allocated && drawn.contains(&replay.sandbox.sandbox_id));
    assert_eq!(
        store
            .allocation
            .allocate(for_lab("a4", "lab-a", "lab-", Some("res_a")))
            .await
            .unwrap()
            .err(),
        Some(Refusal::NoneAvailable),
        "used up, and the pool at lab- is empty"
    );
    // Drawing falls back to the pool once the reservation has no rows.
    let fallback = granted(&store, for_lab("a5", "lab-a", "", Some("res_a"))).await;
    assert_eq!(
        fallback.sandbox.reserved_for, None,
        "res_a has none left: a pool row"
    );
    let counts = reservations.reservation_counts().await.unwrap();
    assert_eq!((counts["res_a"].held, counts["res_a"].used), (0, 4));

    // One drawn from the other reservation, the rest returned.
    let nios = granted(&store, for_lab("c1", "lab-c", "nios-", Some("res_c"))).await;
    assert_eq!(nios.sandbox.reserved_for.as_deref(), Some("res_c"));
    assert_eq!(reservations.return_rows("res_c", NOW + 1).await.unwrap(), 2);
    assert_eq!(reservations.return_rows("res_c", NOW + 1).await.unwrap(), 0);
    let counts = reservations.reservation_counts().await.unwrap();
    assert_eq!((counts["res_c"].held, counts["res_c"].used), (0, 1));
    let stats = store.analytics.stats().await.unwrap();
    assert_eq!(
        (stats.reserved, stats.available),
        (0, 3),
        "5 nios less one handed out, one taken as fallback"
    );
    assert_eq!(
        granted(&store, for_lab("d0", "lab-d", "nios-", None))
            .await
            .sandbox
            .reserved_for,
        None,
        "returned rows serve anyone"
    );

    assert_eq!(
        reservations.remove_reservation("res_a").await.unwrap(),
        Some(class)
    );
    assert_eq!(
        reservations.remove_reservation("res_a").await.unwrap(),
        None
    );
    assert_eq!(reservations.reservations().await.unwrap(), [other]);
}

pub async fn a_sync_stales_a_reserved_row_the_provider_dropped(store: SharedStore) {
    store
        .lifecycle
        .sync_provider(listed(&[1, 2, 3, 4], "lab-"), sync_rules(true), NOW)
        .await
        .unwrap()
        .unwrap();
    let class = reservation("res_a", "lab-a", "lab-", 2);
    store.reservations.add_reservation(&class).await.unwrap();
    assert_eq!(
        store.reservations.hold_rows(&class, 2, NOW).await.unwrap(),
        2
    );
    let held: Vec<Sandbox> = list_all(
        &store,
        ListQuery {
            status: Some(SandboxStatus::Reserved),
            ..query(10)
        },
    )
    .await;
    assert_eq!(held.len(), 2);
    let dropped = held[0].sandbox_id.parse::<u64>().unwrap();
    let kept: Vec<u64> = (1..=4).filter(|id| *id != dropped).collect();
    let summary = store
        .lifecycle
        .sync_provider(listed(&kept, "lab-"), sync_rules(true), NOW + 5)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.marked_stale, 1);
    let gone = stored(&store, &held[0].sandbox_id).await;
    assert_eq!(
        (gone.status, gone.reserved_for),
        (SandboxStatus::Stale, None)
    );
    let still = stored(&store, &held[1].sandbox_id).await;
    assert_eq!(
        (still.status, still.reserved_for.as_deref()),
        (SandboxStatus::Reserved, Some("res_a")),
        "a listed reserved row is left alone"
    );
    let counts = store.reservations.reservation_counts().await.unwrap();
    assert_eq!((counts["res_a"].held, counts["res_a"].used), (1, 0));
}

pub async fn a_reservation_and_its_rows_survive_an_export_and_restore(store: SharedStore) {
    use sandbox_broker::store::backup::BackupItem;
    store
        .admin
        .import(sandboxes("lab-", 0, 3), NOW)
        .await
        .unwrap();
    let class = reservation("res_a", "lab-a", "lab-", 2);
    store.reservations.add_reservation(&class).await.unwrap();
    store.reservations.hold_rows(&class, 2, NOW).await.unwrap();
    granted(&store, for_lab("a0", "lab-a", "lab-", Some("res_a"))).await;
    let items = exported(&store).await;
    assert!(items.contains(&BackupItem::Reservation(class.clone())));

    let (other, _guard) = crate::helpers::fresh_store().await;
    other.backup.restore_items(items, NOW).await.unwrap();
    assert_eq!(other.reservations.reservations().await.unwrap(), [class]);
    let counts = other.reservations.reservation_counts().await.unwrap();
    assert_eq!((counts["res_a"].held, counts["res_a"].used), (1, 1));
    let drawn = granted(&other, for_lab("a1", "lab-a", "lab-", Some("res_a"))).await;
    assert_eq!(drawn.sandbox.reserved_for.as_deref(), Some("res_a"));
}

pub async fn webhook_endpoints_keep_their_secrets_and_delivery_state(store: SharedStore) {
    use sandbox_broker::domain::webhooks::{
        DeliveryOutcome, DeliveryState, RawEndpointSpec, WebhookEndpoint, new_secret,
    };
    let endpoint = WebhookEndpoint::parse(
        RawEndpointSpec {
            url: Some("https://hooks.example.com/in".into()),
            events: Some(vec!["sandbox.allocated".into()]),
            description: Some("lab platform".into()),
        },
        false,
        "wh_1".into(),
        new_secret([1; 24]),
        NOW,
    )
    .unwrap();
    let webhooks = &store.webhooks;
    webhooks.add_webhook(&endpoint).await.unwrap();
    let listed = webhooks.webhooks().await.unwrap();
    assert_eq!(
        (listed.len(), &listed[0].endpoint, &listed[0].state),
        (1, &endpoint, &DeliveryState::default())
    );

    let failed = DeliveryState::default().after(
        &DeliveryOutcome::Failed {
            status: Some(500),
            error: "HTTP 500".into(),
        },
        NOW + 1,
    );
    webhooks.record_delivery("wh_1", &failed).await.unwrap();
    let rotated = endpoint.rotated(new_secret([2; 24]), NOW + 2);
    assert!(webhooks.replace_webhook(&rotated).await.unwrap());
    let listed = webhooks.webhooks().await.unwrap();
    assert_eq!(
        (&listed[0].endpoint, &listed[0].state),
        (&rotated, &failed),
        "a rotation keeps the state"
    );
    let mut ghost = rotated.clone();
    ghost.id = "wh_2".into();
    assert!(
        !webhooks.replace_webhook(&ghost).await.unwrap(),
        "no such endpoint"
    );
    webhooks.record_delivery("wh_2", &failed).await.unwrap();
    assert_eq!(
        webhooks.webhooks().await.unwrap().len(),
        1,
        "recording makes no endpoint"
    );

    let items = exported(&store).await;
    let (other, _guard) = crate::helpers::fresh_store().await;
    other.backup.restore_items(items, NOW).await.unwrap();
    let moved = other.webhooks.webhooks().await.unwrap();
    assert_eq!(
        (&moved[0].endpoint, &moved[0].state),
        (&rotated, &failed),
        "an export carries both"
    );

    assert_eq!(
        webhooks.remove_webhook("wh_1").await.unwrap(),
        Some(rotated)
    );
    assert_eq!(webhooks.remove_webhook("wh_1").await.unwrap(), None);
    assert!(webhooks.webhooks().await.unwrap().is_empty());
}

pub async fn the_outbox_fans_out_keeps_and_settles_deliveries(store: SharedStore) {
    use sandbox_broker::domain::time::EpochMillis;
    use sandbox_broker::domain::webhooks::outbox::{OutboxEvent, RetryPolicy};
    use sandbox_broker::domain::webhooks::{
        EventType, RawEndpointSpec, WebhookEndpoint, new_secret,
    };
    let endpoint_at = |id: &str, events: &[&str], registered| {
        WebhookEndpoint::parse(
            RawEndpointSpec {
                url: Some("https://hooks.example.com/in".into()),
                events: Some(events.iter().map(|e| (*e).to_owned()).collect()),
                description: None,
            },
            false,
            id.into(),
            new_secret([1; 24]),
            registered,
        )
        .unwrap()
    };
    let endpoint = |id: &str, events: &[&str]| endpoint_at(id, events, NOW);
    let allocations = endpoint("wh_a", &["sandbox.allocated", "sandbox.released"]);
    let jobs = endpoint("wh_j", &["job.failed"]);
    // Registered after every event below happened: none of them is its to receive.
    let late = endpoint_at(
        "wh_late",
        &["sandbox.allocated", "sandbox.released", "job.failed"],
        NOW + 3,
    );
    // Events are kept for the endpoints registered when they happen.
    for registered in [&allocations, &jobs] {
        store.webhooks.add_webhook(registered).await.unwrap();
    }
    store
        .admin
        .import(sandboxes("lab-", 0, 2), NOW)
        .await
        .unwrap();
    // Two changes announce two events on the row, one write each; a job's failure a third.
    let held = granted(&store, request("s1")).await.sandbox;
    store
        .allocation
        .release(release_of(&id(&held.sandbox_id), &holder("s1"), NOW + 1))
        .await
        .unwrap()
        .unwrap();
    let failed_job = OutboxEvent::other(
        EventType::JobFailed,
        NOW + 2,
        serde_json::json!({"job": "expiry"}),
    );
    store.outbox.announce(&failed_job).await.unwrap();
    let (backlog, oldest) = store.outbox.outbox_backlog().await.unwrap();
    assert!(backlog >= 2 && oldest == Some(NOW), "{backlog} {oldest:?}");

    let endpoints = [allocations.clone(), jobs.clone(), late];
    let moved = store
        .outbox
        .fan_out(&endpoints, 100, EpochMillis::new(5_000))
        .await
        .unwrap();
    assert_eq!(moved, 3, "two sandbox events and one job event");
    assert_eq!(
        store
            .outbox
            .fan_out(&endpoints, 100, EpochMillis::new(6_000))
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.outbox.outbox_backlog().await.unwrap().0, 0);

    let to_a = store.outbox.deliveries("wh_a", 10).await.unwrap();
    let kinds: Vec<EventType> = to_a.iter().map(|d| d.event.kind).collect();
    assert_eq!(
        kinds,
        [EventType::SandboxAllocated, EventType::SandboxReleased],
        "in order"
    );
    assert_eq!(to_a[0].event.data["sandbox_id"], held.sandbox_id.as_str());
    assert_eq!(
        to_a[0].event.data["status"], "allocated",
        "as of its moment"
    );
    let to_j = store.outbox.deliveries("wh_j", 10).await.unwrap();
    assert_eq!((to_j.len(), &to_j[0].event.id), (1, &failed_job.id));
    let to_late = store.outbox.deliveries("wh_late", 10).await.unwrap();
    assert!(to_late.is_empty(), "{to_late:?}");

    // Retried, then given up: kept and shown; delivered: gone.
    let policy = RetryPolicy {
        give_up_after_secs: 10,
    };
    let retried = policy.after_failure(&to_a[0], "HTTP 500".into(), NOW + 3, 0.5);
    store
        .outbox
        .settle_delivery(&to_a[0], Some(&retried))
        .await
        .unwrap();
    let given_up = policy.after_failure(&retried, "HTTP 500".into(), NOW + 20, 0.5);
    assert!(given_up.failed_at.is_some());
    store
        .outbox
        .settle_delivery(&retried, Some(&given_up))
        .await
        .unwrap();
    store.outbox.settle_delivery(&to_a[1], None).await.unwrap();
    let left = store.outbox.deliveries("wh_a", 10).await.unwrap();
    assert_eq!(left, [given_up], "the given-up one stays, to be seen");

    // An export carries it, and a restore brings it back as it was.
    {
        let items = exported(&store).await;
        let (other, _guard) = crate::helpers::fresh_store().await;
        other.backup.restore_items(items, NOW).await.unwrap();
        assert_eq!(other.outbox.deliveries("wh_a", 10).await.unwrap(), left);
        assert_eq!(other.outbox.deliveries("wh_j", 10).await.unwrap(), to_j);
    }

    assert_eq!(store.outbox.drop_deliveries("wh_a").await.unwrap(), 1);
    assert!(
        store
            .outbox
            .deliveries("wh_a", 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A settle after the endpoint's removal makes nothing come back.
    store
        .outbox
        .settle_delivery(&to_a[0], Some(&retried))
        .await
        .unwrap();
    assert!(
        store
            .outbox
            .deliveries("wh_a", 10)
            .await
            .unwrap()
            .is_empty()
    );
}
