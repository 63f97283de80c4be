//! Embedded-store specifics: what survives a close and reopen, and the directory lock.

use sandbox_broker::domain::time::EpochSecs;
use sandbox_broker::domain::{HolderKey, SandboxStatus};
use sandbox_broker::store::embedded::{EmbeddedStore, OpenError};
use sandbox_broker::store::{
    AdminStore, AllocationKey, AllocationRequest, AllocationStore, AnalyticsStore, HealthStore,
    LifecycleStore,
};

use crate::helpers::sandboxes;

fn request(holder: &str) -> AllocationRequest {
    AllocationRequest {
        key: AllocationKey {
            holder: HolderKey::parse("s", holder).unwrap(),
            idempotency_key: None,
        },
        lab: None,
        name_prefix: None,
        lab_duration_hours: 1,
        now: EpochSecs::new(100),
        token: None,
        reservation: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_store_has_every_row_count_index_and_allocation_key() {
    let dir = tempfile::tempdir().unwrap();
    let held = {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store
            .import(sandboxes("lab-", 0, 10), EpochSecs::new(1))
            .await
            .unwrap();
        store
            .allocate(request("stu"))
            .await
            .unwrap()
            .unwrap()
            .sandbox
    };

    let store = EmbeddedStore::open(dir.path()).unwrap();

    let stats = store.stats().await.unwrap();
    assert_eq!((stats.available, stats.allocated), (9, 1));
    let replay = store.allocate(request("stu")).await.unwrap().unwrap();
    assert!(
        !replay.newly_allocated,
        "the allocation key survived the reopen"
    );
    assert_eq!(replay.sandbox, held);
    let fresh = store.allocate(request("other")).await.unwrap().unwrap();
    assert_ne!(fresh.sandbox.sandbox_id, held.sandbox_id);
    assert_eq!(fresh.sandbox.status, SandboxStatus::Allocated);
}

#[tokio::test]
async fn an_open_store_locks_its_directory_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let first = EmbeddedStore::open(dir.path()).unwrap();

    assert!(matches!(
        EmbeddedStore::open(dir.path()),
        Err(OpenError::Locked(_))
    ));
    drop(first);
    assert!(
        EmbeddedStore::open(dir.path()).is_ok(),
        "the lock is released on drop"
    );
}

/// An in-memory disk whose writes and syncs fail while `failing` is set.
#[derive(Debug)]
struct FlakyDisk {
    inner: redb::backends::InMemoryBackend,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FlakyDisk {
    fn check(&self) -> Result<(), std::io::Error> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            Err(std::io::Error::other("injected disk failure"))
        } else {
            Ok(())
        }
    }
}

impl redb::StorageBackend for FlakyDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.write(offset, data)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_disk_acknowledges_nothing_and_fails_readiness() {
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let disk = FlakyDisk {
        inner: redb::backends::InMemoryBackend::new(),
        failing: failing.clone(),
    };
    let store = EmbeddedStore::open_with_backend(disk).unwrap();
    store
        .import(sandboxes("lab-", 0, 5), EpochSecs::new(1))
        .await
        .unwrap();
    let held = store
        .allocate(request("stu-1"))
        .await
        .unwrap()
        .unwrap()
        .sandbox;

    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    let refused = store.allocate(request("stu-2")).await;
    let not_ready = store.ping().await;

    assert!(
        matches!(
            refused,
            Err(sandbox_broker::store::StoreError::Unavailable(_))
        ),
        "{refused:?}"
    );
    assert!(not_ready.is_err(), "readiness must fail while commits fail");
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.available, stats.allocated),
        (4, 1),
        "the refused allocation left no trace"
    );
    let listed = store
        .list(sandbox_broker::store::ListQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        listed
            .sandboxes
            .iter()
            .all(|r| r.holder.as_deref() != Some("stu-2"))
    );

    // redb refuses writes after an I/O failure until the file is reopened (a restart runs
    // its repair), so the store keeps saying "not ready" rather than pretending to recover.
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(
        store.ping().await.is_err(),
        "readiness stays failed until a restart repairs the file"
    );
    assert!(store.allocate(request("stu-3")).await.is_err());
    let replay = store
        .get(&sandbox_broker::domain::SandboxId::parse("id", &held.sandbox_id).unwrap())
        .await
        .unwrap();
    assert_eq!(replay, Some(held), "acknowledged rows stay readable");
}

#[tokio::test]
async fn the_embedded_store_lists_in_sandbox_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    store
        .import(sandboxes("lab-", 0, 25), EpochSecs::new(1))
        .await
        .unwrap();
    let mut query = sandbox_broker::store::ListQuery {
        limit: 4,
        ..Default::default()
    };
    let mut ids = Vec::new();
    loop {
        let page = store.list(query.clone()).await.unwrap();
        ids.extend(page.sandboxes.into_iter().map(|r| r.sandbox_id));
        match page.next {
            Some(next) => query.cursor = Some(next),
            None => break,
        }
    }
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids.len(), 25);
    assert_eq!(ids, sorted);
}

/// Group commits the store has made so far (`broker_store_commit_seconds`' count).
fn commits(store: &EmbeddedStore) -> u64 {
    store
        .collectors()
        .iter()
        .flat_map(|collector| collector.collect())
        .filter(|family| family.name() == "broker_store_commit_seconds")
        .map(|family| family.get_metric()[0].get_histogram().get_sample_count())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_writes_in_bounded_commits_while_allocations_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    store
        .import(sandboxes("lab-", 0, 1000), EpochSecs::new(1))
        .await
        .unwrap();
    for student in 0..600 {
        let held = store.allocate(request(&format!("old-{student}"))).await;
        assert!(matches!(held, Ok(Ok(_))), "{held:?}");
    }
    let policy = sandbox_broker::domain::LabPolicy {
        lab_duration_hours: 1,
        grace_secs: 0,
    };
    let before = commits(&store);

    // The 600 labs (1 hour from t=100) have ended at t=10,000; students starting now
    // (t=9,000) have not.
    let expiry = tokio::spawn({
        let store = std::sync::Arc::clone(&store);
        async move {
            store
                .expire_allocations(EpochSecs::new(10_000), policy)
                .await
        }
    });
    let students: Vec<_> = (0..100)
        .map(|student| {
            let store = std::sync::Arc::clone(&store);
            tokio::spawn(async move {
                let mut late = request(&format!("new-{student}"));
                late.now = EpochSecs::new(9_000);
                store.allocate(late).await
            })
        })
        .collect();
    let mut handed = std::collections::HashSet::new();
    for student in students {
        let served = student.await.unwrap().unwrap().unwrap();
        assert!(handed.insert(served.sandbox.sandbox_id), "no sandbox twice");
    }
    let expired = expiry.await.unwrap().unwrap();

    assert_eq!(expired.len(), 600, "every ended lab, and only those");
    let released: std::collections::HashSet<_> =
        expired.iter().map(|row| row.sandbox_id.clone()).collect();
    assert_eq!(released.len(), 600);
    assert!(
        commits(&store) - before >= 600_u64.div_ceil(32),
        "the expiry's 600 rows went 32 a command, each command its own commit (docs/architecture.md)"
    );
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.allocated, stats.available),
        (100, 300),
        "the students who started now hold theirs"
    );
}
