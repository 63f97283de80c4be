//! Graceful shutdown: a request in flight when shutdown begins still gets its answer.

use std::sync::Arc;

use async_trait::async_trait;
use reqwest::StatusCode;
use sandbox_broker::domain::{DeletableStatus, NewSandbox, Sandbox, SandboxId, StudentKey};
use sandbox_broker::store::{
    Allocation, AllocationRequest, ImportSummary, ListQuery, MarkOutcome, PoolStats, SandboxPage,
    SharedStore, Store, StoreError,
};
use tokio::sync::{Notify, Semaphore};

use crate::helpers::{fresh_store, json_of, sandboxes, spawn_app_on};

/// Delegates to a real store, but holds each allocation until the test releases it
/// (`gate`), and refuses every action-log entry when `refuse_actions` is set.
pub(crate) struct GatedStore {
    pub(crate) inner: SharedStore,
    pub(crate) entered: Notify,
    pub(crate) gate: Semaphore,
    pub(crate) refuse_actions: bool,
}

#[async_trait]
impl Store for GatedStore {
    async fn allocate(&self, request: AllocationRequest) -> Result<Allocation, StoreError> {
        self.entered.notify_one();
        let _permit = self
            .gate
            .acquire()
            .await
            .map_err(|e| StoreError::Internal(Box::new(e)))?;
        self.inner.allocate(request).await
    }
    async fn get(&self, id: &SandboxId) -> Result<Option<Sandbox>, StoreError> {
        self.inner.get(id).await
    }
    async fn mark_for_deletion(
        &self,
        id: &SandboxId,
        s: &StudentKey,
        now: i64,
    ) -> Result<MarkOutcome, StoreError> {
        self.inner.mark_for_deletion(id, s, now).await
    }
    async fn import(&self, rows: Vec<NewSandbox>, now: i64) -> Result<ImportSummary, StoreError> {
        self.inner.import(rows, now).await
    }
    async fn list(&self, q: ListQuery) -> Result<SandboxPage, StoreError> {
        self.inner.list(q).await
    }
    async fn stats(&self) -> Result<PoolStats, StoreError> {
        self.inner.stats().await
    }
    async fn allocation_facts(
        &self,
    ) -> Result<Vec<sandbox_broker::domain::usage::AllocationFacts>, StoreError> {
        self.inner.allocation_facts().await
    }
    async fn available_by_prefix(
        &self,
        prefixes: &[sandbox_broker::domain::NamePrefix],
    ) -> Result<Vec<u64>, StoreError> {
        self.inner.available_by_prefix(prefixes).await
    }
    async fn bulk_delete(&self, s: DeletableStatus, now: i64) -> Result<u64, StoreError> {
        self.inner.bulk_delete(s, now).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn sync_provider(
        &self,
        listing: Vec<sandbox_broker::provider::ProviderSandbox>,
        rules: sandbox_broker::domain::lifecycle::SyncRules,
        now: i64,
    ) -> Result<sandbox_broker::store::SyncSummary, StoreError> {
        self.inner.sync_provider(listing, rules, now).await
    }
    async fn acquire_lease(
        &self,
        job: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<sandbox_broker::store::LeaseOutcome, StoreError> {
        self.inner.acquire_lease(job, holder, now_ms, ttl_ms).await
    }
    async fn finish_job_run(
        &self,
        record: sandbox_broker::store::JobRecord,
        holder: &str,
    ) -> Result<(), StoreError> {
        self.inner.finish_job_run(record, holder).await
    }
    async fn job_records(&self) -> Result<Vec<sandbox_broker::store::JobRecord>, StoreError> {
        self.inner.job_records().await
    }
    async fn expire_allocations(
        &self,
        now: i64,
        policy: sandbox_broker::domain::LabPolicy,
    ) -> Result<Vec<Sandbox>, StoreError> {
        self.inner.expire_allocations(now, policy).await
    }
    async fn delete_stale(&self, since: i64, now: i64) -> Result<u64, StoreError> {
        self.inner.delete_stale(since, now).await
    }
    async fn deletions_due(&self, now: i64, all: bool) -> Result<Vec<Sandbox>, StoreError> {
        self.inner.deletions_due(now, all).await
    }
    async fn claim_deletion(
        &self,
        id: &SandboxId,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<Option<Sandbox>, StoreError> {
        self.inner.claim_deletion(id, holder, now, until).await
    }
    async fn finish_deletion(
        &self,
        claimed: &Sandbox,
        holder: &str,
        outcome: sandbox_broker::store::DeletionOutcome,
        niosxaas: Option<sandbox_broker::domain::NiosxaasCleanup>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.inner
            .finish_deletion(claimed, holder, outcome, niosxaas, now)
            .await
    }
    async fn purge_tombstones(&self, now: i64) -> Result<u64, StoreError> {
        self.inner.purge_tombstones(now).await
    }
    async fn niosxaas_history(
        &self,
        id: &SandboxId,
        now: i64,
    ) -> Result<Option<sandbox_broker::domain::NiosxaasHistory>, StoreError> {
        self.inner.niosxaas_history(id, now).await
    }
    async fn niosxaas_histories(
        &self,
        now: i64,
    ) -> Result<Vec<sandbox_broker::domain::NiosxaasHistory>, StoreError> {
        self.inner.niosxaas_histories(now).await
    }
    async fn audit_facts(&self) -> Result<sandbox_broker::domain::audit::AuditFacts, StoreError> {
        self.inner.audit_facts().await
    }
    async fn save_audit(
        &self,
        report: &sandbox_broker::domain::audit::AuditReport,
    ) -> Result<(), StoreError> {
        self.inner.save_audit(report).await
    }
    async fn last_audit(
        &self,
    ) -> Result<Option<sandbox_broker::domain::audit::AuditReport>, StoreError> {
        self.inner.last_audit().await
    }
    async fn record_action(
        &self,
        action: &sandbox_broker::domain::actions::AdminAction,
    ) -> Result<(), StoreError> {
        if self.refuse_actions {
            return Err(StoreError::Unavailable("the action log is down".into()));
        }
        self.inner.record_action(action).await
    }
    async fn change_row(
        &self,
        id: &SandboxId,
        action: sandbox_broker::domain::lifecycle::RowAction,
        now: i64,
    ) -> Result<Sandbox, StoreError> {
        self.inner.change_row(id, action, now).await
    }
    async fn held_by(
        &self,
        request: &sandbox_broker::store::AllocationRequest,
    ) -> Result<Option<Sandbox>, StoreError> {
        self.inner.held_by(request).await
    }
    async fn cordons(&self) -> Result<Vec<sandbox_broker::domain::cordon::Cordon>, StoreError> {
        self.inner.cordons().await
    }
    async fn add_cordon(
        &self,
        cordon: &sandbox_broker::domain::cordon::Cordon,
    ) -> Result<(), StoreError> {
        self.inner.add_cordon(cordon).await
    }
    async fn remove_cordon(
        &self,
        id: &str,
    ) -> Result<Option<sandbox_broker::domain::cordon::Cordon>, StoreError> {
        self.inner.remove_cordon(id).await
    }
    async fn actions(
        &self,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<sandbox_broker::domain::actions::ActionPage, StoreError> {
        self.inner.actions(limit, cursor).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_a_request_in_flight_and_then_stops_serving() {
    let (inner, guard) = fresh_store().await;
    inner.import(sandboxes("lab-", 0, 3), 0).await.unwrap();
    let store = Arc::new(GatedStore {
        inner,
        entered: Notify::new(),
        gate: Semaphore::new(0),
        refuse_actions: false,
    });
    let mut app = spawn_app_on(Arc::clone(&store) as SharedStore, guard, |_| {}).await;
    let client = app.client.clone();
    let url = app.url("/v1/allocate");
    let in_flight = tokio::spawn(async move {
        client
            .post(url)
            .bearer_auth(crate::helpers::TRACK_TOKEN)
            .header("X-Instruqt-Sandbox-ID", "stu")
            .send()
            .await
    });
    store.entered.notified().await;

    app.begin_shutdown();
    store.gate.add_permits(1);

    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request was answered");
    let body = json_of(response, StatusCode::CREATED).await;
    assert!(body["name"].as_str().unwrap().starts_with("lab-"), "{body}");
    let server = app.server.take().unwrap();
    server.await.unwrap().expect("the server stopped cleanly");
    let late = reqwest::Client::new().get(app.url("/healthz")).send().await;
    assert!(
        late.is_err(),
        "a stopped server must not accept new requests"
    );
}
