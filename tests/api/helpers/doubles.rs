//! Test doubles: each stands in for one role of a real store and keeps its others.

use std::sync::Arc;

use async_trait::async_trait;
use sandbox_broker::domain::actions::{ActionPage, AdminAction};
use sandbox_broker::domain::{Sandbox, SandboxId};
use sandbox_broker::store::{
    ActionLog, Allocation, AllocationRequest, AllocationStore, Outcome, ReleaseOutcome,
    ReleaseRequest, SharedStore, StoreError,
};
use tokio::sync::{Notify, Semaphore};

/// Stands in for a real store's allocation and action log: holds each allocation until
/// the test releases it (`gate`), and refuses every action-log entry when
/// `refuse_actions` is set. The other roles are the real store's.
pub struct GatedStore {
    pub inner: SharedStore,
    pub entered: Notify,
    pub gate: Semaphore,
    pub refuse_actions: bool,
}

impl GatedStore {
    /// `inner` with this store's gate and action log in front of it.
    pub fn shared(self: &Arc<Self>) -> SharedStore {
        SharedStore {
            allocation: self.clone(),
            action_log: self.clone(),
            ..self.inner.clone()
        }
    }
}

#[async_trait]
impl AllocationStore for GatedStore {
    async fn allocate(&self, request: AllocationRequest) -> Outcome<Allocation> {
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
    async fn release(&self, request: ReleaseRequest) -> Outcome<ReleaseOutcome> {
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
