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
#[path = "../api/admin_controls.rs"]
mod admin_controls;
#[path = "../api/audit.rs"]
mod audit;
mod backup_move;
#[path = "../api/bad_input.rs"]
mod bad_input;
mod binary;
mod bounded_list;
#[path = "../api/class_start.rs"]
mod class_start;
#[path = "../api/concurrency.rs"]
mod concurrency;
#[path = "../api/dashboard_browser.rs"]
mod dashboard_browser;
#[path = "../api/edge.rs"]
mod edge;
mod fleet;
#[path = "../api/forecast.rs"]
mod forecast;
// Not every helper is used by the DynamoDB suite (the Python tools run in the api suite).
#[allow(dead_code)]
#[path = "../api/helpers/mod.rs"]
mod helpers;
#[path = "../api/jobs.rs"]
mod jobs;
#[path = "../api/lab.rs"]
mod lab;
#[path = "../api/lab_slo.rs"]
mod lab_slo;
#[path = "../api/lab_tokens.rs"]
mod lab_tokens;
mod local;
mod lost_answers;
#[path = "../api/metric_names.rs"]
mod metric_names;
#[path = "../api/niosxaas.rs"]
mod niosxaas;
#[path = "../api/observability.rs"]
mod observability;
#[path = "../api/ops.rs"]
mod ops;
mod outage;
mod prefixes;
mod python_table;
#[path = "../api/reservations.rs"]
mod reservations;
#[path = "../api/schedule.rs"]
mod schedule;
#[path = "../api/shutdown.rs"]
mod shutdown;
#[path = "../api/store_conformance.rs"]
mod store_conformance;
#[path = "../api/trust.rs"]
mod trust;
#[path = "../api/usage.rs"]
mod usage;
#[path = "../api/waiting.rs"]
mod waiting;
#[path = "../api/webhooks.rs"]
mod webhooks;
#[path = "../api/webhooks_crash.rs"]
mod webhooks_crash;

/// This crate runs every shared suite on a fresh DynamoDB Local table per test.
mod flavor {
    use crate::helpers::StoreGuard;
    use sandbox_broker::store::SharedStore;

    pub async fn fresh_store() -> (SharedStore, StoreGuard) {
        let (store, table) = crate::local::fresh_table_store().await;
        (store, Box::new(table))
    }

    /// Where a `serve` process keeps its state: a fresh table here.
    pub type ServicePlace = String;

    /// A fresh table (prepared as `init-table` does) for a `serve` process.
    pub async fn service_place() -> ServicePlace {
        crate::local::fresh_table_store().await.1
    }

    /// `serve` on the table `place`, with the test tokens and JSON logs on stdout.
    pub fn serve_command(place: &ServicePlace) -> std::process::Command {
        let mut command = crate::local::broker(&["serve"], &crate::local::shared().endpoint, place);
        command
            .env("BROKER_API_TOKEN", crate::helpers::LAB_TOKEN)
            .env("BROKER_ADMIN_TOKEN", crate::helpers::ADMIN_TOKEN)
            .env("RATE_LIMIT_PER_SEC", "100000")
            .env("RATE_LIMIT_BURST", "100000")
            .env("LOG_FORMAT", "json")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        command
    }

    /// `count` stores on one fresh table, each with its own client, queue and candidates,
    /// as separate instances of the service have.
    pub async fn fleet_stores(count: usize) -> (Vec<SharedStore>, StoreGuard) {
        let (stores, table) = crate::local::fleet_table_stores(count).await;
        (stores, Box::new(table))
    }

    /// A store on a fresh table holding `allocations` (sandbox id, student) allocated at
    /// `allocated_at`, written behind the service's back as the Python service writes them.
    pub async fn store_holding_allocations(
        allocations: &[(&str, &str)],
        allocated_at: i64,
    ) -> (SharedStore, StoreGuard) {
        let (store, table) = crate::local::fresh_table_store().await;
        let settings = crate::local::settings(&crate::local::shared().endpoint, &table);
        let client = sandbox_broker::store::dynamo::client(&settings).await;
        let items = allocations
            .iter()
            .map(|(id, holder)| crate::local::python_allocation(id, holder, holder, allocated_at))
            .collect();
        crate::local::put_items(&client, &table, items).await;
        (store, Box::new(table))
    }
}
