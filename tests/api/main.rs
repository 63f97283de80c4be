#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]
//! Black-box tests: the real router on port 0, the real binary for process-level behaviour.

mod admin;
mod bad_input;
mod class_start;
mod concurrency;
mod connections;
mod dashboard_browser;
mod deploy_files;
mod edge;
mod embedded;
mod env_example;
mod helpers;
mod jobs;
mod layers;
mod load_scenarios;
mod metric_names;
mod niosxaas;
mod observability;
mod ops;
mod process;
mod provider;
mod schedule;
mod schema_conformance;
mod shutdown;
mod simulator;
mod store_conformance;
mod terraform;
mod tools;
mod track;
mod trust;
mod usage;

/// This crate runs every shared suite on the embedded store.
mod flavor {
    use std::sync::Arc;

    use crate::helpers::StoreGuard;
    use sandbox_broker::store::SharedStore;
    use sandbox_broker::store::embedded::EmbeddedStore;

    /// An embedded store in a fresh temporary directory.
    pub async fn fresh_store() -> (SharedStore, StoreGuard) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("open embedded store");
        (Arc::new(store), Box::new(dir))
    }

    /// `count` handles on one embedded store: a process owns its file, so a "fleet" on
    /// this store is several routers in front of one writer.
    pub async fn fleet_stores(count: usize) -> (Vec<SharedStore>, StoreGuard) {
        let (store, guard) = fresh_store().await;
        ((0..count).map(|_| Arc::clone(&store)).collect(), guard)
    }
}
