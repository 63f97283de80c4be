//! The shared black-box suites (HTTP and store conformance) on the DynamoDB store, against
//! DynamoDB Local started by the tests themselves, plus what only a shared table has:
//! a fleet of instances, store outages, the table layout and `init-table`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

#[path = "../api/admin.rs"]
mod admin;
#[path = "../api/bad_input.rs"]
mod bad_input;
mod binary;
#[path = "../api/concurrency.rs"]
mod concurrency;
mod fleet;
#[path = "../api/helpers.rs"]
mod helpers;
#[path = "../api/jobs.rs"]
mod jobs;
mod local;
#[path = "../api/niosxaas.rs"]
mod niosxaas;
#[path = "../api/ops.rs"]
mod ops;
mod outage;
mod python_table;
#[path = "../api/shutdown.rs"]
mod shutdown;
#[path = "../api/store_conformance.rs"]
mod store_conformance;
#[path = "../api/track.rs"]
mod track;

/// This crate runs every shared suite on a fresh DynamoDB Local table per test.
mod flavor {
    use crate::helpers::StoreGuard;
    use sandbox_broker::store::SharedStore;

    pub async fn fresh_store() -> (SharedStore, StoreGuard) {
        let (store, table) = crate::local::fresh_table_store().await;
        (store, Box::new(table))
    }
}
