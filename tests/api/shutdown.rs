//! Graceful shutdown: a request in flight when shutdown begins still gets its answer.

use std::sync::Arc;

use async_trait::async_trait;
use reqwest::StatusCode;
use sandbox_broker::domain::actions::{ActionPage, AdminAction};
use sandbox_broker::domain::{Sandbox, SandboxId};
use sandbox_broker::store::{
    ActionLog, Allocation, AllocationRequest, AllocationStore, ReleaseOutcome, ReleaseRequest,
    SharedStore, StoreError,
};
use tokio::sync::{Notify, Semaphore};

use crate::helpers::{fresh_store, json_of, sandboxes, spawn_app_on};

/// Stands in for a real store's allocation and action log: holds each allocation until
/// the test releases it (`gate`), and refuses every action-log entry when
/// `refuse_actions` is set. The other roles are the real store's.
pub(crate) struct GatedStore {
    pub(crate) inner: SharedStore,
    pub(crate) entered: Notify,
    pub(crate) gate: Semaphore,
    pub(crate) refuse_actions: bool,
}

impl GatedStore {
    /// `inner` with this store's gate and action log in front of it.
    pub(crate) fn shared(self: &Arc<Self>) -> SharedStore {
        SharedStore {
            allocation: self.clone(),
            action_log: self.clone(),
            ..self.inner.clone()
        }
    }
}

#[async_trait]
impl AllocationStore for GatedStore {
    async fn allocate(&self, request: AllocationRequest) -> Result<Allocation, StoreError> {
        self.entered.notify_one();
        let _permit = self
            .gate
            .acquire()
            .await
            .map_err(|e| StoreError::Internal(Box::new(e)))?;
        self.inner.allocation.allocate(request).await
    }
    async fn get(&self, id: &SandboxId) -> Result<Option<Sandbox>, StoreError> {
        self.inner.allocation.get(id).await
    }
    async fn release(&self, request: ReleaseRequest) -> Result<ReleaseOutcome, StoreError> {
        self.inner.allocation.release(request).await
    }
    async fn held_by(&self, request: &AllocationRequest) -> Result<Option<Sandbox>, StoreError> {
        self.inner.allocation.held_by(request).await
    }
}

#[async_trait]
impl ActionLog for GatedStore {
    async fn record_action(&self, action: &AdminAction) -> Result<(), StoreError> {
        if self.refuse_actions {
            return Err(StoreError::Unavailable("the action log is down".into()));
        }
        self.inner.action_log.record_action(action).await
    }
    async fn actions(&self, limit: usize, cursor: Option<&str>) -> Result<ActionPage, StoreError> {
        self.inner.action_log.actions(limit, cursor).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_a_request_in_flight_and_then_stops_serving() {
    let (inner, guard) = fresh_store().await;
    inner
        .admin
        .import(sandboxes("lab-", 0, 3), 0)
        .await
        .unwrap();
    let store = Arc::new(GatedStore {
        inner,
        entered: Notify::new(),
        gate: Semaphore::new(0),
        refuse_actions: false,
    });
    let mut app = spawn_app_on(store.shared(), guard, |_| {}).await;
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
