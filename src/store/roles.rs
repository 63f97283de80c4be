//! The store's operations, one trait per role: what the lab routes need, what the
//! lifecycle jobs need, the job leases, the admin's tools, the action log, analytics and
//! health. A caller asks for the role it uses ([`super::SharedStore`] holds one handle per
//! role), and a test double stands in for one role without touching the others.
//!
//! Rule: an `Ok` from any mutating method means the change is durable; a store never
//! acknowledges a write it could lose, and each method is atomic on its own. An operation
//! takes its subject, at most one rule or request value and the time; anything more is one
//! request struct (below), so a signature is written once.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

#[cfg(doc)]
use super::Refusal;
use super::backup::{BackupItem, Export, RestoreMarker, Restored};
use super::{
    Allocation, AllocationRequest, DeletionOutcome, ImportSummary, JobRecord, LeaseOutcome,
    ListQuery, Outcome, PoolStats, SandboxPage, StoreError, SyncSummary,
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
    DeletableStatus, HolderKey, LabPolicy, NamePrefix, NewSandbox, NiosxaasCleanup,
    NiosxaasHistory, ProviderSandbox, Sandbox, SandboxId,
};

/// A holder's release of the sandbox they hold.
#[derive(Debug, Clone)]
pub struct ReleaseRequest {
    /// The sandbox.
    pub id: SandboxId,
    /// Who releases it: only its holder may.
    pub holder: HolderKey,
    /// When the holder released it.
    pub now: EpochSecs,
    /// The lab token the holder calls with: only its own allocations are theirs to release.
    pub token: Option<String>,
}

/// The sandbox a release left behind.
#[derive(Debug, Clone)]
pub struct ReleaseOutcome {
    /// The row after the call.
    pub sandbox: Sandbox,
    /// `false` when it had already been released (the call was a repeat).
    pub newly_released: bool,
}

/// A request for a job's lease.
#[derive(Debug, Clone, Copy)]
pub struct LeaseRequest<'a> {
    /// The job (`sync`, `cleanup`, …).
    pub job: &'a str,
    /// The instance asking.
    pub instance: &'a str,
    /// Now.
    pub now: EpochMillis,
    /// How long the lease lasts from now.
    pub ttl: Duration,
}

/// A runner's claim on one `pending_deletion` row.
#[derive(Debug, Clone, Copy)]
pub struct DeletionClaim<'a> {
    /// The row.
    pub id: &'a SandboxId,
    /// The runner claiming it.
    pub runner: &'a str,
    /// Now.
    pub now: EpochSecs,
    /// When the claim runs out.
    pub until: EpochSecs,
}

/// How a runner's claimed deletion ended.
#[derive(Debug, Clone)]
pub struct FinishedDeletion<'a> {
    /// The row as the claim returned it.
    pub claimed: &'a Sandbox,
    /// The runner holding the claim.
    pub runner: &'a str,
    /// What happened at the provider.
    pub outcome: DeletionOutcome,
    /// What the NIOSXaaS pre-delete hook did this time, if it ran.
    pub niosxaas: Option<NiosxaasCleanup>,
    /// Now.
    pub now: EpochSecs,
}

/// What the lab routes do: allocate, read, release.
#[async_trait]
pub trait AllocationStore: Send + Sync + 'static {
    /// Gives the request's key its active sandbox, or allocates a new matching one;
    /// [`Refusal::NoneAvailable`] only when nothing matches.
    async fn allocate(&self, request: AllocationRequest) -> Outcome<Allocation>;

    /// The row with this id, in any status.
    async fn get(&self, id: &SandboxId) -> Result<Option<Sandbox>, StoreError>;

    /// Releases the holder's sandbox to `pending_deletion`; repeating it changes nothing.
    /// [`Refusal::SandboxNotFound`] or [`Refusal::NotHolder`] otherwise.
    async fn release(&self, request: ReleaseRequest) -> Outcome<ReleaseOutcome>;

    /// The sandbox `request`'s allocation key holds now, if any — what a replay would
    /// answer — without allocating anything.
    async fn held_by(&self, request: &AllocationRequest) -> Result<Option<Sandbox>, StoreError>;
}

/// What the lifecycle jobs do: sync, expiry, stale removal, deletion, tombstones, audit.
#[async_trait]
pub trait LifecycleStore: Send + Sync + 'static {
    /// Applies a complete provider listing as `rules` say (`domain::lifecycle::sync_listed`):
    /// its sandboxes become (or stay) `available` unless the broker holds them in another
    /// status or handed them out before, `deleted` rows it still lists past the grace are
    /// retried, and `available` rows it no longer lists become `stale`. Every change is
    /// conditional on the status it starts from. A listing that would mark more of the pool
    /// stale than `rules` allow changes nothing and is refused.
    async fn sync_provider(
        &self,
        listing: Vec<ProviderSandbox>,
        rules: SyncRules,
        now: EpochSecs,
    ) -> Result<Result<SyncSummary, ListingRefused>, StoreError>;

    /// Releases every allocation `policy` says has expired at `now` to `pending_deletion`,
    /// conditional on it still being that allocation, and frees its allocation key.
    /// Returns the rows it released.
    async fn expire_allocations(
        &self,
        now: EpochSecs,
        policy: LabPolicy,
    ) -> Result<Vec<Sandbox>, StoreError>;

    /// Removes `stale` rows that became stale at or before `stale_since` (their
    /// `updated_at`), each only if it is still stale. Returns how many. A row that was
    /// handed out leaves its used-account marker (stamped `now`).
    async fn delete_stale(&self, stale_since: EpochSecs, now: EpochSecs)
    -> Result<u64, StoreError>;

    /// `pending_deletion` rows whose next attempt is due at `now` (every one of them when
    /// `ignore_backoff`, as an admin-triggered cleanup wants).
    async fn deletions_due(
        &self,
        now: EpochSecs,
        ignore_backoff: bool,
    ) -> Result<Vec<Sandbox>, StoreError>;

    /// Claims a `pending_deletion` row for its runner until `claim.until`, unless another
    /// runner's claim is still running; `None` when it is not claimable (any more).
    async fn claim_deletion(&self, claim: DeletionClaim<'_>)
    -> Result<Option<Sandbox>, StoreError>;

    /// Records how a claimed deletion ended; no-op unless its runner still holds the
    /// claim. When the outcome is final (deleted or given up) and the NIOSXaaS hook ever
    /// ran for the row, the `NIOSXAAS#` history item is written in the same atomic step.
    async fn finish_deletion(&self, finished: FinishedDeletion<'_>) -> Result<(), StoreError>;

    /// Drops `deleted` tombstones whose `ttl` has passed (and, where the store keeps them
    /// itself, expired NIOSXaaS history items); returns how many tombstones.
    async fn purge_tombstones(&self, now: EpochSecs) -> Result<u64, StoreError>;

    /// What an audit reads: every row that was handed out and is not deleted, the ids of
    /// the tombstones, and the last complete listing a sync applied (which
    /// [`Self::sync_provider`] records whenever it applies one).
    async fn audit_facts(&self) -> Result<AuditFacts, StoreError>;

    /// Keeps `report` as the last audit, for every instance to answer.
    async fn save_audit(&self, report: &AuditReport) -> Result<(), StoreError>;

    /// The last audit kept, if any ran.
    async fn last_audit(&self) -> Result<Option<AuditReport>, StoreError>;
}

/// The background jobs' leases and records, shared by a fleet.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Takes (or renews) the lease of `request.job` for its instance until `now + ttl`,
    /// unless another holder's lease is still running.
    async fn acquire_lease(&self, request: LeaseRequest<'_>) -> Result<LeaseOutcome, StoreError>;

    /// Ends `holder`'s lease of `job` and records the run; no-op on the lease if another
    /// holder took it meanwhile (the run is recorded anyway).
    async fn finish_job_run(&self, record: JobRecord, instance: &str) -> Result<(), StoreError>;

    /// Every job's lease and last run.
    async fn job_records(&self) -> Result<Vec<JobRecord>, StoreError>;
}

/// What an admin changes: imports, listings, removals, single rows, cordons.
#[async_trait]
pub trait AdminStore: Send + Sync + 'static {
    /// Upserts rows as `available`, never touching a row in another status.
    async fn import(
        &self,
        rows: Vec<NewSandbox>,
        now: EpochSecs,
    ) -> Result<ImportSummary, StoreError>;

    /// One page of rows matching `query`, in `sandbox_id` order.
    async fn list(&self, query: ListQuery) -> Result<SandboxPage, StoreError>;

    /// Removes every row in `status` from the broker (never from the provider); returns how
    /// many. A row that was handed out leaves its used-account marker (stamped `now`).
    async fn bulk_delete(&self, status: DeletableStatus, now: EpochSecs)
    -> Result<u64, StoreError>;

    /// Applies an admin's `action` to the row `id` as `domain::lifecycle::decide_row_action`
    /// decides on the row as it is, conditional on its status; the row as it became.
    /// [`Refusal::SandboxNotFound`], or [`Refusal::RowAction`] when the rule refuses it.
    async fn change_row(
        &self,
        id: &SandboxId,
        action: RowAction,
        now: EpochSecs,
    ) -> Outcome<Sandbox>;

    /// Every cordon in place.
    async fn cordons(&self) -> Result<Vec<Cordon>, StoreError>;

    /// Puts `cordon` in place.
    async fn add_cordon(&self, cordon: &Cordon) -> Result<(), StoreError>;

    /// Lifts the cordon `id`; the cordon it lifted, `None` when there was none.
    async fn remove_cordon(&self, id: &str) -> Result<Option<Cordon>, StoreError>;
}

/// The admins' action log.
#[async_trait]
pub trait ActionLog: Send + Sync + 'static {
    /// Appends `action` to the log.
    async fn record_action(&self, action: &AdminAction) -> Result<(), StoreError>;

    /// Up to `limit` entries of the log, newest first, older than `cursor` (a page's
    /// `next`); [`StoreError::InvalidCursor`] for a cursor this store did not issue.
    async fn actions(&self, limit: usize, cursor: Option<&str>) -> Result<ActionPage, StoreError>;
}

/// What the dashboards and `/metrics` read.
#[async_trait]
pub trait AnalyticsStore: Send + Sync + 'static {
    /// Exact counts per status over the whole pool.
    async fn stats(&self) -> Result<PoolStats, StoreError>;

    /// The allocation facts of every sandbox row that carries a lab or an allocation
    /// time, in no particular order: what per-lab stats and usage series are folded from
    /// ([`crate::domain::usage`]).
    async fn allocation_facts(&self) -> Result<Vec<AllocationFacts>, StoreError>;

    /// How many sandboxes are available whose name starts with each of `prefixes`, in
    /// their order: what an allocation with that `X-Sandbox-Name-Prefix` can still get
    /// (the per-prefix pool gauges).
    async fn available_by_prefix(&self, prefixes: &[NamePrefix]) -> Result<Vec<u64>, StoreError>;

    /// The `NIOSXAAS#` history item of a sandbox, if one was written and has not expired
    /// by `now`.
    async fn niosxaas_history(
        &self,
        id: &SandboxId,
        now: EpochSecs,
    ) -> Result<Option<NiosxaasHistory>, StoreError>;

    /// Every `NIOSXAAS#` history item not expired by `now`, in no particular order.
    async fn niosxaas_histories(&self, now: EpochSecs) -> Result<Vec<NiosxaasHistory>, StoreError>;
}

/// Whether the store can work, and what it reports about itself.
#[async_trait]
pub trait HealthStore: Send + Sync + 'static {
    /// Succeeds when the store can serve reads and writes now.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The store's own Prometheus series (its queue, its calls), registered by the app
    /// beside the service's metrics. None by default.
    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        Vec::new()
    }

    /// The external database behind the store, named as `/readyz` reports it beside
    /// `checks.store` (`dynamodb`, the key the Python service used); `None` in-process.
    fn backend(&self) -> Option<&'static str> {
        None
    }
}

/// Backups: every item out, items back in, and the marker of a restore under way
/// (docs/operations.md).
#[async_trait]
pub trait BackupStore: Send + Sync + 'static {
    /// Every item the store holds, taken at `now`. The embedded store reads one snapshot
    /// while it keeps serving; DynamoDB reads one consistent scan, which is not a snapshot
    /// (the header says which).
    async fn export(&self, now: EpochSecs) -> Result<Export, StoreError>;

    /// Writes each of `items` whose key the store does not hold (at `now`, for what
    /// records when it was written), each write atomic and durable on its own; answers, in order, what became of each. An item already held is
    /// left as it is, so running the same items again writes nothing twice.
    async fn restore_items(
        &self,
        items: Vec<BackupItem>,
        now: EpochSecs,
    ) -> Result<Vec<Restored>, StoreError>;

    /// The key of some item the store holds, or `None` when it holds none. Derived records
    /// (the last listing and audit) and a restore marker do not count.
    async fn any_item(&self) -> Result<Option<String>, StoreError>;

    /// The marker of a restore under way, if one is.
    async fn restore_marker(&self) -> Result<Option<RestoreMarker>, StoreError>;

    /// Writes (`Some`) or removes (`None`) the marker of a restore under way.
    async fn set_restore_marker(&self, marker: Option<RestoreMarker>) -> Result<(), StoreError>;
}

/// Scoped lab tokens: minted, listed with their use, revoked (docs/api.md, *Lab tokens*).
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Keeps a newly minted `token`, unless `limit` live tokens exist at `now` or a live one
    /// has its name (refused).
    async fn add_token(&self, token: &LabToken, limit: usize, now: EpochSecs) -> Outcome<()>;

    /// Every token, revoked and expired ones included, with the sandboxes held under each.
    async fn tokens(&self) -> Result<Vec<TokenUse>, StoreError>;

    /// Revokes the token `id` at `now` (a repeat keeps the first time); the token as it is
    /// now, or `None` when there is no such token.
    async fn revoke_token(&self, id: &str, now: EpochSecs) -> Result<Option<LabToken>, StoreError>;

    /// Records that the token `id` was presented at `at`.
    async fn touch_token(&self, id: &str, at: EpochSecs) -> Result<(), StoreError>;
}

/// Reservations for scheduled classes, and the rows they hold (docs/api.md, *Reservations*).
/// What to hold or return is decided by `domain::reservations`; a store only keeps the
/// records, counts the rows and moves them.
#[async_trait]
pub trait ReservationStore: Send + Sync + 'static {
    /// Keeps a new reservation.
    async fn add_reservation(&self, reservation: &Reservation) -> Result<(), StoreError>;

    /// Every reservation kept, ended ones included.
    async fn reservations(&self) -> Result<Vec<Reservation>, StoreError>;

    /// Forgets the reservation `id` (the rows it holds stay `reserved` until the
    /// reservations job returns them); what it was, or `None` when there is none.
    async fn remove_reservation(&self, id: &str) -> Result<Option<Reservation>, StoreError>;

    /// What each reservation holds and has used, counted from the rows, by reservation id
    /// (ids whose record is gone included, while rows name them).
    async fn reservation_counts(&self) -> Result<HashMap<String, ReservationCounts>, StoreError>;

    /// How many rows are set aside per reservation id: [`Self::reservation_counts`]'s
    /// `held` alone, read from the `reserved` rows only (on DynamoDB a status-index query,
    /// not a scan), for when no reservation is holding and only returns may be due.
    async fn held_rows(&self) -> Result<HashMap<String, u64>, StoreError>;

    /// Rows `available` or `reserved` whose name starts with `prefix`: what reservations
    /// at that prefix share.
    async fn reservable(&self, prefix: &str) -> Result<u64, StoreError>;

    /// Sets up to `count` `available` rows at `reservation`'s name prefix aside for it
    /// (`lifecycle::reserve`); how many it set aside (fewer when the pool has fewer).
    async fn hold_rows(
        &self,
        reservation: &Reservation,
        count: u64,
        now: EpochSecs,
    ) -> Result<u64, StoreError>;

    /// Returns every row set aside for the reservation `id` to the pool
    /// (`lifecycle::unreserve`); how many.
    async fn return_rows(&self, id: &str, now: EpochSecs) -> Result<u64, StoreError>;
}

/// Webhook endpoints and how their deliveries have gone (docs/webhooks.md).
#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Keeps a new endpoint (its delivery state empty).
    async fn add_webhook(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError>;

    /// Every endpoint, with its delivery state.
    async fn webhooks(&self) -> Result<Vec<WebhookUse>, StoreError>;

    /// Replaces the endpoint with `endpoint`'s id (a rotation), keeping its delivery
    /// state; `false` when there is no such endpoint.
    async fn replace_webhook(&self, endpoint: &WebhookEndpoint) -> Result<bool, StoreError>;

    /// Removes the endpoint `id`; what it was, or `None` when there is none.
    async fn remove_webhook(&self, id: &str) -> Result<Option<WebhookEndpoint>, StoreError>;

    /// Records the endpoint `id`'s delivery state (nothing when it is gone).
    async fn record_delivery(&self, id: &str, state: &DeliveryState) -> Result<(), StoreError>;
}

/// The webhook outbox: events each row change announced, written with the change, and
/// their deliveries to each endpoint (docs/webhooks.md). What an event is and how a
/// delivery is retried is `domain::webhooks::outbox`'s; a store only keeps them.
#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// Moves up to `limit` announced events, oldest first, into one delivery per endpoint
    /// of `endpoints` that wants it (an event nobody wants is dropped), each event's data
    /// from its sandbox as read now and its place from `now` (`outbox::sequence`); how
    /// many events it moved.
    async fn fan_out(
        &self,
        endpoints: &[WebhookEndpoint],
        limit: usize,
        now: EpochMillis,
    ) -> Result<u64, StoreError>;

    /// The deliveries to `endpoint` not yet delivered (failed ones included), in event
    /// order, at most `limit`.
    async fn deliveries(&self, endpoint: &str, limit: usize) -> Result<Vec<Delivery>, StoreError>;

    /// Records an attempt at `delivery`: `None`, it was delivered (and is removed);
    /// `Some(next)`, its state now.
    async fn settle_delivery(
        &self,
        delivery: &Delivery,
        next: Option<&Delivery>,
    ) -> Result<(), StoreError>;

    /// Puts an event about no sandbox (a job's failure, the auditor's findings, the pool,
    /// the provider) in the outbox. Announced twice, it may be delivered twice, with the
    /// same id (at least once: receivers de-duplicate on `webhook-id`).
    async fn announce(&self, event: &OutboxEvent) -> Result<(), StoreError>;

    /// Events announced and not yet fanned out: how many, and the oldest one's time.
    async fn outbox_backlog(&self) -> Result<(u64, Option<EpochSecs>), StoreError>;

    /// Removes every delivery to `endpoint` (it was removed); how many.
    async fn drop_deliveries(&self, endpoint: &str) -> Result<u64, StoreError>;
}

/// A whole store: every role. Both stores are one.
pub trait Store:
    AllocationStore
    + LifecycleStore
    + JobStore
    + AdminStore
    + ActionLog
    + AnalyticsStore
    + HealthStore
    + BackupStore
    + TokenStore
    + ReservationStore
    + WebhookStore
    + OutboxStore
{
}

impl<T> Store for T where
    T: AllocationStore
        + LifecycleStore
        + JobStore
        + AdminStore
        + ActionLog
        + AnalyticsStore
        + HealthStore
        + BackupStore
        + TokenStore
        + ReservationStore
        + WebhookStore
        + OutboxStore
{
}
