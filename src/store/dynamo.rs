//! The DynamoDB store: one table shared by a fleet of instances (and, during a migration,
//! by the Python service), laid out as docs/dynamodb.md says.
//!
//! Rule: every state change is a conditional write on the state it starts from, every read
//! a decision depends on is strongly consistent, and allocation spends at most two
//! single-item conditional writes on its happy path (see `allocate.rs`). Timeouts and
//! retries are chosen so an unreachable table answers 503 in well under two seconds.

mod admission;
mod allocate;
mod analytics;
mod audit;
mod backup;
mod calls;
mod candidates;
mod config;
mod cordons;
mod deletion;
mod error;
mod expiry;
mod foreign;
mod health;
mod item;
mod jobs;
mod limit;
mod list;
pub mod local;
mod outbox;
mod pages;
mod release;
mod removal;
mod reservations;
pub mod schema;
mod sync;
mod tokens;
mod update;
mod webhooks;
mod wire;

pub use self::config::{DynamoConfig, DynamoSettings, LIST_EVALUATE_PER_REQUEST, client};
pub use self::item::ItemError;

use std::collections::HashMap;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::StalledStreamProtectionConfig;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;

use self::calls::{Budget, Calls};
use self::candidates::CandidatePool;
use self::error::DynamoError;
use self::item::{Item, niosxaas_history_key, s, sandbox_key};
use super::backup::{BackupItem, Export, RestoreMarker, Restored};
use super::{
    ActionLog, AdminStore, Allocation, AllocationRequest, AllocationStore, AnalyticsStore,
    BackupStore, DeletionClaim, FinishedDeletion, HealthStore, ImportSummary, LifecycleStore,
    ListQuery, OutboxStore, Outcome, PoolStats, ReleaseOutcome, ReleaseRequest, ReservationStore,
    SandboxPage, StoreError, SyncSummary, TokenStore, WebhookStore,
};
use crate::domain::actions::{ActionPage, AdminAction};
use crate::domain::audit::{AuditFacts, AuditReport};
use crate::domain::cordon::Cordon;
use crate::domain::lifecycle::{ListingRefused, RowAction, SyncRules};
use crate::domain::reservations::{Reservation, ReservationCounts};
use crate::domain::time::{EpochMillis, EpochSecs};
use crate::domain::tokens::{LabToken, TokenUse};
use crate::domain::usage::AllocationFacts;
use crate::domain::webhooks::outbox::{Delivery, OutboxEvent};
use crate::domain::webhooks::{DeliveryState, WebhookEndpoint, WebhookUse};
use crate::domain::{
    DeletableStatus, LabPolicy, NamePrefix, NewSandbox, NiosxaasHistory, Sandbox, SandboxId,
    SandboxStatus,
};

/// Writes in flight at once for imports, syncs and bulk deletes.
const BULK_CONCURRENCY: usize = 16;

/// The DynamoDB-backed [`Store`](super::Store).
pub struct DynamoStore {
    /// Shared with reads that run in the background (a candidate queue refilled ahead).
    calls: std::sync::Arc<Calls>,
    table: String,
    candidates: CandidatePool,
    /// Candidates set aside for reservations, one queue per reservation.
    reserved_candidates: CandidatePool,
    k_candidates: usize,
    list_evaluate_max: usize,
    abandoned: allocate::Abandoned,
    foreign: foreign::ForeignWatch,
    /// Whether the fleet has a webhook endpoint, as last read (see `webhooks.rs`).
    endpoints_seen: std::sync::Arc<webhooks::EndpointsSeen>,
}

/// A snapshot of the store's admission control, for the benchmark and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionSnapshot {
    /// The adaptive concurrency limit now.
    pub limit: usize,
    /// The most operations ever queued at once.
    pub peak_queue_depth: usize,
    /// Whether the table is considered down.
    pub down: bool,
}

impl DynamoStore {
    /// A store on `settings.table` through `client`, whose own retries and whole-call
    /// timeouts are replaced by the store's (see `calls.rs`). Single-item calls and queries
    /// go the lean way (`wire.rs`): with the region and credentials chain that `settings`
    /// and the environment give (as [`client`] builds them), to `settings.endpoint_url` or
    /// the region's endpoint. Fails when there is no region or the endpoint has a path.
    pub async fn new(client: &Client, settings: &DynamoSettings) -> Result<Self, StoreError> {
        let wire = wire::Wire::new(
            &config::sdk_config(settings).await,
            settings.endpoint_url.as_deref(),
            settings.connect_timeout,
        )
        .map_err(|err| StoreError::Unavailable(Box::new(err)))?;
        let config = client
            .config()
            .to_builder()
            .retry_config(RetryConfig::disabled())
            // The store's own attempt timeout and stall watch cover a stalled answer; the
            // SDK's body watcher would only add a timer to every small JSON call.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(settings.connect_timeout)
                    .build(),
            )
            .build();
        Ok(Self {
            calls: std::sync::Arc::new(Calls::new(Client::from_conf(config), wire, settings)),
            table: settings.table.clone(),
            candidates: CandidatePool::new(settings.candidate_prefixes),
            reserved_candidates: CandidatePool::new(settings.candidate_prefixes),
            k_candidates: settings.k_candidates.max(1),
            list_evaluate_max: settings.list_evaluate_max.max(1),
            abandoned: allocate::Abandoned::default(),
            foreign: foreign::ForeignWatch::default(),
            endpoints_seen: std::sync::Arc::default(),
        })
    }

    /// How many name prefixes this instance keeps candidate queues for now (at most
    /// `DDB_CANDIDATE_PREFIXES`).
    pub fn candidate_prefixes(&self) -> usize {
        self.candidates.prefixes()
    }

    /// The adaptive limit, the deepest queue so far, and whether the table is down.
    pub fn admission(&self) -> AdmissionSnapshot {
        AdmissionSnapshot {
            limit: self.calls.limit(),
            peak_queue_depth: self.calls.peak_queue_depth(),
            down: self.calls.is_down(),
        }
    }

    fn client(&self) -> &Client {
        &self.calls.client
    }

    /// The item at `key`, read consistently.
    async fn consistent_item(
        &self,
        budget: &Budget,
        key: Item,
    ) -> Result<Option<Item>, StoreError> {
        let get = self
            .client()
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true);
        let got = self
            .calls
            .send(budget, || self.calls.wire.send(&get))
            .await
            .map_err(DynamoError::into_store_error)?;
        Ok(got.item)
    }

    /// Puts `item` only if no item has its key; a refusal hands back the item the table
    /// holds instead (when the table returns it), so the caller can recognise its own
    /// earlier attempt.
    async fn put_new_item(
        &self,
        budget: &Budget,
        item: Item,
    ) -> (Result<(), DynamoError>, Option<Item>) {
        let put = self
            .client()
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let (sent, found) = self
            .calls
            .send_keeping(
                budget,
                || self.calls.wire.send(&put),
                item::item_a_put_found,
            )
            .await;
        (sent.map(drop), found)
    }

    /// The row `id`, read consistently.
    async fn row(&self, budget: &Budget, id: &str) -> Result<Option<Sandbox>, StoreError> {
        self.consistent_item(budget, sandbox_key(id))
            .await?
            .map(|item| Sandbox::try_from(&item).map_err(|err| StoreError::Internal(Box::new(err))))
            .transpose()
    }

    /// A `StatusIndex` query of the rows in `status`.
    fn in_status(&self, status: SandboxStatus) -> QueryFluentBuilder {
        self.client()
            .query()
            .table_name(&self.table)
            .index_name(schema::STATUS_INDEX)
            .key_condition_expression("#s = :s")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":s", s(status.as_str()))
    }
}

// Each role's operations are done by inherent methods in the use-case files (`deletion.rs`,
// `sync.rs`, …), named apart from the trait's methods so a renamed helper can never turn a
// forward into a call to itself (`tests/api/layers.rs` checks the names stay apart).

#[async_trait]
impl AllocationStore for DynamoStore {
    async fn allocate(&self, request: AllocationRequest) -> Outcome<Allocation> {
        let budget = self.calls.budget();
        let _turn = self.calls.turn(&budget).await?;
        self.allocate_within(&budget, &request).await
    }

    async fn get(&self, id: &SandboxId) -> Result<Option<Sandbox>, StoreError> {
        let budget = self.calls.budget();
        let _turn = self.calls.turn(&budget).await?;
        self.row(&budget, id.as_str()).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(sandbox.id = %request.id))]
    async fn release(&self, request: ReleaseRequest) -> Outcome<ReleaseOutcome> {
        let budget = self.calls.budget();
        let _turn = self.calls.turn(&budget).await?;
        self.release_within(&budget, &request).await
    }

    async fn held_by(&self, request: &AllocationRequest) -> Result<Option<Sandbox>, StoreError> {
        let budget = self.calls.budget();
        let _turn = self.calls.turn(&budget).await?;
        self.held_by_within(&budget, request).await
    }
}

#[async_trait]
impl LifecycleStore for DynamoStore {
    async fn sync_provider(
        &self,
        listing: Vec<crate::domain::ProviderSandbox>,
        rules: SyncRules,
        now: EpochSecs,
    ) -> Result<Result<SyncSummary, ListingRefused>, StoreError> {
        self.apply_listing(listing, &rules, now).await
    }

    async fn expire_allocations(
        &self,
        now: EpochSecs,
        policy: LabPolicy,
    ) -> Result<Vec<Sandbox>, StoreError> {
        self.expire_ended(now, policy).await
    }

    async fn delete_stale(
        &self,
        stale_since: EpochSecs,
        now: EpochSecs,
    ) -> Result<u64, StoreError> {
        self.remove_stale(stale_since, now).await
    }

    async fn deletions_due(
        &self,
        now: EpochSecs,
        ignore_backoff: bool,
    ) -> Result<Vec<Sandbox>, StoreError> {
        self.due_deletions(now, ignore_backoff).await
    }

    async fn claim_deletion(
        &self,
        claim: DeletionClaim<'_>,
    ) -> Result<Option<Sandbox>, StoreError> {
        self.claim_row_for_deletion(&claim).await
    }

    async fn finish_deletion(&self, finished: FinishedDeletion<'_>) -> Result<(), StoreError> {
        self.record_deletion(finished).await
    }

    async fn purge_tombstones(&self, now: EpochSecs) -> Result<u64, StoreError> {
        self.purge_expired_tombstones(now).await
    }

    async fn audit_facts(&self) -> Result<AuditFacts, StoreError> {
        self.read_audit_facts().await
    }

    async fn save_audit(&self, report: &AuditReport) -> Result<(), StoreError> {
        self.keep_audit(report).await
    }

    async fn last_audit(&self) -> Result<Option<AuditReport>, StoreError> {
        self.read_last_audit().await
    }
}

#[async_trait]
impl AdminStore for DynamoStore {
    async fn import(
        &self,
        rows: Vec<NewSandbox>,
        now: EpochSecs,
    ) -> Result<ImportSummary, StoreError> {
        self.import_rows(rows, now).await
    }

    async fn list(&self, query: ListQuery) -> Result<SandboxPage, StoreError> {
        self.list_page(&query).await
    }

    async fn bulk_delete(
        &self,
        status: DeletableStatus,
        now: EpochSecs,
    ) -> Result<u64, StoreError> {
        self.remove_in_status(status, now).await
    }

    async fn change_row(
        &self,
        id: &SandboxId,
        action: RowAction,
        now: EpochSecs,
    ) -> Outcome<Sandbox> {
        self.change_row_as_decided(id, &action, now).await
    }

    async fn cordons(&self) -> Result<Vec<Cordon>, StoreError> {
        self.read_cordons().await
    }

    async fn add_cordon(&self, cordon: &Cordon) -> Result<(), StoreError> {
        self.put_cordon(cordon).await
    }

    async fn remove_cordon(&self, id: &str) -> Result<Option<Cordon>, StoreError> {
        self.delete_cordon(id).await
    }
}

#[async_trait]
impl ActionLog for DynamoStore {
    async fn record_action(&self, action: &AdminAction) -> Result<(), StoreError> {
        self.append_action(action).await
    }

    async fn actions(&self, limit: usize, cursor: Option<&str>) -> Result<ActionPage, StoreError> {
        self.action_page(limit, cursor).await
    }
}

#[async_trait]
impl AnalyticsStore for DynamoStore {
    async fn stats(&self) -> Result<PoolStats, StoreError> {
        self.pool_stats().await
    }

    async fn allocation_facts(&self) -> Result<Vec<AllocationFacts>, StoreError> {
        self.scan_allocation_facts().await
    }

    async fn available_by_prefix(&self, prefixes: &[NamePrefix]) -> Result<Vec<u64>, StoreError> {
        self.count_available_by_prefix(prefixes).await
    }

    async fn niosxaas_history(
        &self,
        id: &SandboxId,
        now: EpochSecs,
    ) -> Result<Option<NiosxaasHistory>, StoreError> {
        let budget = self.calls.budget();
        let Some(item) = self
            .consistent_item(&budget, niosxaas_history_key(id.as_str()))
            .await?
        else {
            return Ok(None);
        };
        let history =
            NiosxaasHistory::try_from(&item).map_err(|err| StoreError::Internal(Box::new(err)))?;
        // DynamoDB's TTL sweep lags; an expired item reads as gone, like on the embedded store.
        Ok((history.ttl > now).then_some(history))
    }

    async fn niosxaas_histories(&self, now: EpochSecs) -> Result<Vec<NiosxaasHistory>, StoreError> {
        self.scan_niosxaas_histories(now).await
    }
}

#[async_trait]
impl BackupStore for DynamoStore {
    async fn export(&self, now: EpochSecs) -> Result<Export, StoreError> {
        self.scan_export(now).await
    }

    async fn restore_items(
        &self,
        items: Vec<BackupItem>,
        now: EpochSecs,
    ) -> Result<Vec<Restored>, StoreError> {
        self.put_restored(items, now).await
    }

    async fn any_item(&self) -> Result<Option<String>, StoreError> {
        self.first_item().await
    }

    async fn restore_marker(&self) -> Result<Option<RestoreMarker>, StoreError> {
        self.read_restore_marker().await
    }

    async fn set_restore_marker(&self, marker: Option<RestoreMarker>) -> Result<(), StoreError> {
        self.write_restore_marker(marker).await
    }
}

#[async_trait]
impl TokenStore for DynamoStore {
    async fn add_token(&self, token: &LabToken, limit: usize, now: EpochSecs) -> Outcome<()> {
        self.put_token(token, limit, now).await
    }

    async fn tokens(&self) -> Result<Vec<TokenUse>, StoreError> {
        self.read_tokens().await
    }

    async fn revoke_token(&self, id: &str, now: EpochSecs) -> Result<Option<LabToken>, StoreError> {
        self.revoke_stored_token(id, now).await
    }

    async fn touch_token(&self, id: &str, at: EpochSecs) -> Result<(), StoreError> {
        self.record_token_use(id, at).await
    }
}

#[async_trait]
impl ReservationStore for DynamoStore {
    async fn add_reservation(&self, reservation: &Reservation) -> Result<(), StoreError> {
        self.put_reservation(reservation).await
    }

    async fn reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        self.read_reservations().await
    }

    async fn remove_reservation(&self, id: &str) -> Result<Option<Reservation>, StoreError> {
        self.delete_reservation(id).await
    }

    async fn reservation_counts(&self) -> Result<HashMap<String, ReservationCounts>, StoreError> {
        self.count_reservation_rows().await
    }

    async fn held_rows(&self) -> Result<HashMap<String, u64>, StoreError> {
        self.count_held_rows().await
    }

    async fn reservable(&self, prefix: &str) -> Result<u64, StoreError> {
        self.count_reservable(prefix).await
    }

    async fn hold_rows(
        &self,
        reservation: &Reservation,
        count: u64,
        now: EpochSecs,
    ) -> Result<u64, StoreError> {
        self.hold_available(reservation, count, now).await
    }

    async fn return_rows(&self, id: &str, now: EpochSecs) -> Result<u64, StoreError> {
        self.return_reserved(id, now).await
    }
}

#[async_trait]
impl WebhookStore for DynamoStore {
    async fn add_webhook(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError> {
        self.put_webhook(endpoint).await
    }

    async fn webhooks(&self) -> Result<Vec<WebhookUse>, StoreError> {
        self.read_webhooks().await
    }

    async fn replace_webhook(&self, endpoint: &WebhookEndpoint) -> Result<bool, StoreError> {
        self.rewrite_webhook(endpoint).await
    }

    async fn remove_webhook(&self, id: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
        self.delete_webhook(id).await
    }

    async fn record_delivery(&self, id: &str, state: &DeliveryState) -> Result<(), StoreError> {
        self.write_delivery_state(id, state).await
    }
}

#[async_trait]
impl OutboxStore for DynamoStore {
    async fn fan_out(
        &self,
        endpoints: &[WebhookEndpoint],
        limit: usize,
        now: EpochMillis,
    ) -> Result<u64, StoreError> {
        self.fan_out_events(endpoints, limit, now).await
    }

    async fn deliveries(&self, endpoint: &str, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        self.read_deliveries(endpoint, limit).await
    }

    async fn settle_delivery(
        &self,
        delivery: &Delivery,
        next: Option<&Delivery>,
    ) -> Result<(), StoreError> {
        self.write_settled(delivery, next).await
    }

    async fn announce(&self, event: &OutboxEvent) -> Result<(), StoreError> {
        self.put_event(event).await
    }

    async fn outbox_backlog(&self) -> Result<(u64, Option<EpochSecs>), StoreError> {
        self.count_backlog().await
    }

    async fn drop_deliveries(&self, endpoint: &str) -> Result<u64, StoreError> {
        self.delete_deliveries(endpoint).await
    }
}

#[async_trait]
impl HealthStore for DynamoStore {
    async fn ping(&self) -> Result<(), StoreError> {
        // A consistent read of a key that never exists: proves the table answers, costs
        // little, and never queues behind a burst (a health check must not time out
        // because students are busy).
        let get = self
            .client()
            .get_item()
            .table_name(&self.table)
            .key("PK", s("HEALTH#ping"))
            .key("SK", s("PING"))
            .consistent_read(true);
        self.calls
            .send(&self.calls.budget(), || self.calls.wire.send(&get))
            .await
            .map(drop)
            .map_err(DynamoError::into_store_error)
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        self.calls.collectors()
    }

    fn backend(&self) -> Option<&'static str> {
        Some("dynamodb")
    }
}
