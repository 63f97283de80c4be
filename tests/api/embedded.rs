//! Embedded-store specifics: what survives a close and reopen, and the directory lock.

use sandbox_broker::domain::{SandboxStatus, StudentKey};
use sandbox_broker::store::embedded::{EmbeddedStore, OpenError};
use sandbox_broker::store::{AllocationKey, AllocationRequest, Store};

use crate::helpers::sandboxes;

fn request(student: &str) -> AllocationRequest {
    AllocationRequest {
        key: AllocationKey {
            student: StudentKey::parse("s", student).unwrap(),
            idempotency_key: None,
        },
        track_name: None,
        name_prefix: None,
        lab_duration_hours: 1,
        now: 100,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_store_has_every_row_count_index_and_allocation_key() {
    let dir = tempfile::tempdir().unwrap();
    let held = {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.import(sandboxes("lab-", 0, 10), 1).await.unwrap();
        store.allocate(request("stu")).await.unwrap().sandbox
    };

    let store = EmbeddedStore::open(dir.path()).unwrap();

    let stats = store.stats().await.unwrap();
    assert_eq!((stats.available, stats.allocated), (9, 1));
    let replay = store.allocate(request("stu")).await.unwrap();
    assert!(
        !replay.newly_allocated,
        "the allocation key survived the reopen"
    );
    assert_eq!(replay.sandbox, held);
    let fresh = store.allocate(request("other")).await.unwrap();
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
