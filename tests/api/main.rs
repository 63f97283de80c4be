#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]
//! Black-box tests: the real router on port 0, the real binary for process-level behaviour.

mod admin;
mod admin_controls;
mod audit;
mod backup;
mod bad_input;
mod class_start;
mod concurrency;
mod connections;
mod dashboard_browser;
mod deploy_files;
mod edge;
mod embedded;
mod env_example;
mod forecast;
mod helpers;
mod jobs;
mod lab;
mod lab_slo;
mod lab_tokens;
mod layers;
mod load_scenarios;
mod metric_names;
mod niosxaas;
mod observability;
mod ops;
mod process;
mod provider;
mod reservations;
mod schedule;
mod schema_conformance;
mod shutdown;
mod simulator;
mod store_conformance;
mod terraform;
mod trust;
mod usage;
mod waiting;
mod webhooks;
mod webhooks_crash;

/// This crate runs every shared suite on the embedded store.
mod flavor {

    use crate::helpers::StoreGuard;
    use sandbox_broker::store::SharedStore;
    use sandbox_broker::store::embedded::EmbeddedStore;

    /// An embedded store in a fresh temporary directory.
    pub async fn fresh_store() -> (SharedStore, StoreGuard) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("open embedded store");
        (SharedStore::new(store), Box::new(dir))
    }

    /// A store whose file holds `allocations` (sandbox id, student) allocated at
    /// `allocated_at`, written behind the service's back (straight into the file before
    /// the store opens it, as another writer would).
    pub async fn store_holding_allocations(
        allocations: &[(&str, &str)],
        allocated_at: i64,
    ) -> (SharedStore, StoreGuard) {
        use redb::TableDefinition;
        let dir = tempfile::tempdir().expect("temp dir");
        drop(EmbeddedStore::open(dir.path()).expect("create the store's tables"));
        let db = redb::Database::open(dir.path().join("sandbox-broker.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let sandboxes: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sandboxes");
            let by_status: TableDefinition<'_, &str, ()> = TableDefinition::new("by_status");
            let (mut sandboxes, mut by_status) = (
                txn.open_table(sandboxes).unwrap(),
                txn.open_table(by_status).unwrap(),
            );
            for (id, holder) in allocations {
                let mut row = crate::helpers::sandboxes("lab-py-", 0, 1).remove(0);
                row.sandbox_id = sandbox_broker::domain::SandboxId::parse("id", id).unwrap();
                let mut row = row.into_available_row(sandbox_broker::domain::time::EpochSecs::new(
                    allocated_at - 86_400,
                ));
                row.status = sandbox_broker::domain::SandboxStatus::Allocated;
                row.holder = Some((*holder).to_owned());
                row.idempotency_key = Some((*holder).to_owned());
                row.allocated_at = Some(sandbox_broker::domain::time::EpochSecs::new(allocated_at));
                row.updated_at = sandbox_broker::domain::time::EpochSecs::new(allocated_at);
                let json = serde_json::to_vec(&row).unwrap();
                sandboxes.insert(*id, json.as_slice()).unwrap();
                by_status
                    .insert(format!("allocated\0{id}").as_str(), ())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
        drop(db);
        let store = EmbeddedStore::open(dir.path()).expect("reopen the store");
        (SharedStore::new(store), Box::new(dir))
    }

    /// Where a `serve` process keeps its state: a data directory here.
    pub type ServicePlace = tempfile::TempDir;

    /// A fresh place for a `serve` process.
    pub async fn service_place() -> ServicePlace {
        tempfile::tempdir().expect("a data directory")
    }

    /// `serve` on `place`, with the test tokens and JSON logs on stdout.
    pub fn serve_command(place: &ServicePlace) -> std::process::Command {
        crate::helpers::process::on_embedded(&["serve"], place.path())
    }

    /// `count` handles on one embedded store: a process owns its file, so a "fleet" on
    /// this store is several routers in front of one writer.
    pub async fn fleet_stores(count: usize) -> (Vec<SharedStore>, StoreGuard) {
        let (store, guard) = fresh_store().await;
        ((0..count).map(|_| store.clone()).collect(), guard)
    }
}
