//! The store: every durable operation the broker performs, named after its use case.
//!
//! Rule: an `Ok` from any mutating method means the change is durable; a store never
//! acknowledges a write it could lose, and each method is atomic on its own.

pub mod embedded;

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::domain::lifecycle::{Change, Expect, SyncStep};
use crate::domain::{
    DeletableStatus, IdempotencyKey, LabPolicy, NamePrefix, NewSandbox, NiosxaasCleanup,
    NiosxaasHistory, Sandbox, SandboxId, SandboxStatus, StudentKey, TrackName, ValidationError,
};

/// A shared handle to whichever store the service runs on.
pub type SharedStore = Arc<dyn Store>;

/// What can go wrong in the store layer; the HTTP layer maps each variant once.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No sandbox has this id.
    #[error("sandbox not found")]
    SandboxNotFound,
    /// The sandbox exists but the caller does not hold it.
    #[error("sandbox is held by another student")]
    NotOwner,
    /// Nothing matching the request is available.
    #[error("no sandboxes available")]
    NoSandboxAvailable,
    /// The storage backend cannot be reached or refused to work; retrying later may succeed.
    #[error("store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored row or internal invariant is broken.
    #[error("store internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The list cursor does not belong to this store or these filters.
    #[error("the cursor does not belong to this listing")]
    InvalidCursor,
}

pub mod dynamo;

/// Who asks for a sandbox: the same key always gets the same active allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AllocationKey {
    /// The student.
    pub student: StudentKey,
    /// Separates several allocations of one student.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl AllocationKey {
    /// The key of a request. An `Idempotency-Key` equal to the student key is the same as
    /// none: the Python service stored exactly that for allocations without the header, so
    /// on a row the two cannot be told apart.
    pub fn new(student: StudentKey, idempotency_key: Option<IdempotencyKey>) -> Self {
        let idempotency_key = idempotency_key.filter(|key| key.as_str() != student.as_str());
        Self {
            student,
            idempotency_key,
        }
    }

    /// The `idempotency_key` a row holding this key's allocation carries, whichever
    /// service made it: the `Idempotency-Key`, or the student key when there was none (the
    /// Python service's rule, so it finds this service's allocations after a rollback).
    pub fn stored_idempotency_key(&self) -> &str {
        self.idempotency_key
            .as_ref()
            .map_or(self.student.as_str(), IdempotencyKey::as_str)
    }

    /// Whether `row` was allocated for this key: its holder is the student and it carries
    /// [`Self::stored_idempotency_key`] — or none at all, for a key without an
    /// `Idempotency-Key`, as this service's rows from before it stored one do.
    pub fn holds(&self, row: &Sandbox) -> bool {
        row.is_held_by(&self.student)
            && match row.idempotency_key.as_deref() {
                Some(stored) => stored == self.stored_idempotency_key(),
                None => self.idempotency_key.is_none(),
            }
    }

    /// Whether `row` is this key's allocation made by another service on the same table
    /// (the Python one): it has no allocation-key item, only the row's holder and
    /// `idempotency_key` say whose it is.
    pub fn holds_foreign(&self, row: &Sandbox) -> bool {
        row.status == SandboxStatus::Allocated && !row.allocated_here() && self.holds(row)
    }

    /// One string per key; the separator cannot occur in either (printable ASCII) part.
    pub fn encoded(&self) -> String {
        encode_allocation_key(
            self.student.as_str(),
            self.idempotency_key.as_ref().map(IdempotencyKey::as_str),
        )
    }
}

/// The encoded key of the allocation `row` holds, read back from its `allocated_to_track`
/// and `idempotency_key` (the student key there means "no `Idempotency-Key`").
pub fn allocation_key_of_row(row: &Sandbox) -> Option<String> {
    let student = row.allocated_to_track.as_deref()?;
    let idempotency_key = row.idempotency_key.as_deref().filter(|key| *key != student);
    Some(encode_allocation_key(student, idempotency_key))
}

/// The string form of an allocation key, from a request or from a stored row's
/// `allocated_to_track` and `idempotency_key`.
pub fn encode_allocation_key(student: &str, idempotency_key: Option<&str>) -> String {
    match idempotency_key {
        Some(key) => format!("{student}\u{1f}{key}"),
        None => student.to_owned(),
    }
}

/// A validated allocation request, with the time and lab duration the rules apply.
#[derive(Debug, Clone)]
pub struct AllocationRequest {
    /// Who allocates.
    pub key: AllocationKey,
    /// Stored on the row for per-lab analytics.
    pub track_name: Option<TrackName>,
    /// Only names starting with this qualify.
    pub name_prefix: Option<NamePrefix>,
    /// Stored on the row so `expires_at` is fixed at allocation.
    pub lab_duration_hours: u32,
    /// Epoch seconds of the allocation.
    pub now: i64,
}

/// The sandbox a request got.
#[derive(Debug, Clone)]
pub struct Allocation {
    /// The row, as allocated.
    pub sandbox: Sandbox,
    /// `false` when this key already held it (a replay).
    pub newly_allocated: bool,
    /// Candidates lost to concurrent requests on the way (shared stores only).
    pub conflicts: u32,
}

/// Totals per status over the whole pool, `NIOSXAAS` history and other non-sandbox rows excluded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Rows `available`.
    pub available: u64,
    /// Rows `allocated`.
    pub allocated: u64,
    /// Rows `pending_deletion`.
    pub pending_deletion: u64,
    /// Rows `stale`.
    pub stale: u64,
    /// Rows `deletion_failed`.
    pub deletion_failed: u64,
    /// Rows `deleted` (tombstones).
    pub deleted: u64,
}

impl PoolStats {
    /// Every row, whatever its status.
    pub fn total(&self) -> u64 {
        SandboxStatus::ALL.iter().map(|s| self.get(*s)).sum()
    }

    /// The count for one status.
    pub fn get(&self, status: SandboxStatus) -> u64 {
        *self.slot(status)
    }

    /// Adds `delta` rows to `status`, saturating so a bug can never wrap to huge numbers.
    pub fn adjust(&mut self, status: SandboxStatus, delta: i64) {
        let slot = self.slot_mut(status);
        *slot = slot.saturating_add_signed(delta);
    }

    fn slot(&self, status: SandboxStatus) -> &u64 {
        match status {
            SandboxStatus::Available => &self.available,
            SandboxStatus::Allocated => &self.allocated,
            SandboxStatus::PendingDeletion => &self.pending_deletion,
            SandboxStatus::Stale => &self.stale,
            SandboxStatus::DeletionFailed => &self.deletion_failed,
            SandboxStatus::Deleted => &self.deleted,
        }
    }

    fn slot_mut(&mut self, status: SandboxStatus) -> &mut u64 {
        match status {
            SandboxStatus::Available => &mut self.available,
            SandboxStatus::Allocated => &mut self.allocated,
            SandboxStatus::PendingDeletion => &mut self.pending_deletion,
            SandboxStatus::Stale => &mut self.stale,
            SandboxStatus::DeletionFailed => &mut self.deletion_failed,
            SandboxStatus::Deleted => &mut self.deleted,
        }
    }
}

/// Per-lab counts over rows that carry a `track_name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackStats {
    /// The lab slug.
    pub track_name: String,
    /// Rows of this lab now `allocated`.
    pub allocated: u64,
    /// Rows of this lab now `pending_deletion`.
    pub pending_deletion: u64,
    /// Rows of this lab now `deleted`.
    pub deleted: u64,
    /// Every row of this lab.
    pub total: u64,
}

/// Per-lab counts tallied row by row, the same way on both stores.
#[derive(Debug, Default)]
pub struct TrackTally(std::collections::BTreeMap<String, TrackStats>);

impl TrackTally {
    /// Counts one row of lab `track_name` in `status` (`None`: a status this service does
    /// not know, counted in the total only).
    pub fn count(&mut self, track_name: &str, status: Option<SandboxStatus>) {
        let track = self
            .0
            .entry(track_name.to_owned())
            .or_insert_with(|| TrackStats {
                track_name: track_name.to_owned(),
                allocated: 0,
                pending_deletion: 0,
                deleted: 0,
                total: 0,
            });
        track.total += 1;
        match status {
            Some(SandboxStatus::Allocated) => track.allocated += 1,
            Some(SandboxStatus::PendingDeletion) => track.pending_deletion += 1,
            Some(SandboxStatus::Deleted) => track.deleted += 1,
            _ => {}
        }
    }

    /// The labs in name order.
    pub fn into_stats(self) -> Vec<TrackStats> {
        self.0.into_values().collect()
    }
}

/// Result of an import.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Rows created or refreshed as `available`.
    pub imported: u64,
    /// Rows left alone because they exist in another status.
    pub skipped: u64,
}

/// Result of a mark-for-deletion.
#[derive(Debug, Clone)]
pub struct MarkOutcome {
    /// The row after the call.
    pub sandbox: Sandbox,
    /// `false` when it had already been released (the call was a repeat).
    pub newly_marked: bool,
}

/// Filters and position of one page of the admin list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only rows in this status.
    pub status: Option<SandboxStatus>,
    /// Only rows whose name starts with this.
    pub name_prefix: Option<NamePrefix>,
    /// Only rows held by this student.
    pub student: Option<StudentKey>,
    /// Only rows of this lab.
    pub track_name: Option<TrackName>,
    /// Page size, 1..=100.
    pub limit: usize,
    /// Where the previous page stopped.
    pub cursor: Option<ListCursor>,
}

impl ListQuery {
    /// Whether `row` passes every filter.
    pub fn matches(&self, row: &Sandbox) -> bool {
        self.status.is_none_or(|s| row.status == s)
            && self
                .name_prefix
                .as_ref()
                .is_none_or(|p| row.name.starts_with(p.as_str()))
            && self
                .student
                .as_ref()
                .is_none_or(|s| row.allocated_to_track.as_deref() == Some(s.as_str()))
            && self
                .track_name
                .as_ref()
                .is_none_or(|t| row.track_name.as_deref() == Some(t.as_str()))
    }
}

/// One page of the admin list, in `sandbox_id` order.
#[derive(Debug, Clone)]
pub struct SandboxPage {
    /// The matching rows of this page.
    pub sandboxes: Vec<Sandbox>,
    /// Where to continue, or `None` when every matching row was returned.
    pub next: Option<ListCursor>,
}

/// An opaque list position: the last row returned (its `sandbox_id`, and its `allocated_at`
/// where the listing is ordered by it), versioned and base64url-encoded so clients treat it
/// as a token and a mangled one is detected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    /// Continue strictly after this id.
    pub after_sandbox_id: String,
    /// The last row's `allocated_at` (0 if never allocated), for listings ordered by it.
    pub after_allocated_at: Option<i64>,
}

impl ListCursor {
    const PREFIX: &'static str = "v1:";

    /// A position after the row `sandbox_id`.
    pub fn after(sandbox_id: &str) -> Self {
        Self {
            after_sandbox_id: sandbox_id.to_owned(),
            after_allocated_at: None,
        }
    }

    /// The token clients send back.
    pub fn encode(&self) -> String {
        let at = self
            .after_allocated_at
            .map_or_else(String::new, |at| at.to_string());
        URL_SAFE_NO_PAD.encode(format!("{}{at}:{}", Self::PREFIX, self.after_sandbox_id))
    }

    /// Parses a token from [`Self::encode`]; anything else is a validation error.
    pub fn decode(token: &str) -> Result<Self, ValidationError> {
        let invalid = || ValidationError::new("cursor", "is not a cursor this service issued");
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let rest = text.strip_prefix(Self::PREFIX).ok_or_else(invalid)?;
        let (at, id) = rest.split_once(':').ok_or_else(invalid)?;
        let after_allocated_at = match at {
            "" => None,
            digits => Some(digits.parse::<i64>().map_err(|_| invalid())?),
        };
        let id = SandboxId::parse("cursor", id).map_err(|_| invalid())?;
        Ok(Self {
            after_sandbox_id: id.as_str().to_owned(),
            after_allocated_at,
        })
    }
}

/// What a sync changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncSummary {
    /// Provider sandboxes now `available` in the broker (new, refreshed or returned).
    pub synced: u64,
    /// Of those, rows that were new to the broker.
    pub added: u64,
    /// Of those, rows that were `stale` and came back.
    pub restored: u64,
    /// Provider sandboxes left alone because the broker holds them in another status
    /// (allocated, pending deletion, deleted, failed): never resurrected.
    pub untouched: u64,
    /// `available` rows the provider no longer lists, now `stale`.
    pub marked_stale: u64,
}

impl SyncSummary {
    /// Counts one listed sandbox's step.
    pub fn record(&mut self, step: SyncStep) {
        match step {
            SyncStep::Added => (self.added, self.synced) = (self.added + 1, self.synced + 1),
            SyncStep::Restored => {
                (self.restored, self.synced) = (self.restored + 1, self.synced + 1);
            }
            SyncStep::Refreshed => self.synced += 1,
            SyncStep::Untouched => self.untouched += 1,
        }
    }
}

/// A job's lease and its last run, as `GET /v1/admin/jobs` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobRecord {
    /// The job (`sync`, `cleanup`, `expiry`).
    pub job: String,
    /// The instance holding the lease, if one does.
    pub holder: Option<String>,
    /// Epoch milliseconds the lease runs out.
    pub lease_expires_at_ms: i64,
    /// Epoch seconds the last run started.
    pub last_started_at: Option<i64>,
    /// Epoch seconds the last run ended.
    pub last_finished_at: Option<i64>,
    /// `completed`, `failed` or `postponed`.
    pub last_outcome: Option<String>,
    /// The last run's counts, e.g. `{"synced": 12}`.
    pub last_counts: std::collections::BTreeMap<String, u64>,
    /// Epoch seconds of the next scheduled run.
    pub next_run_at: Option<i64>,
}

/// Whether a lease was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// This holder has the lease until the given epoch milliseconds.
    Acquired,
    /// Another holder has it.
    Held {
        /// Who holds it.
        holder: String,
        /// Until when (epoch milliseconds).
        until_ms: i64,
    },
}

/// The broker's durable state, shaped by what the service does with it.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Gives the request's key its active sandbox, or allocates a new matching one.
    /// Errors with [`StoreError::NoSandboxAvailable`] only when nothing matches.
    async fn allocate(&self, request: AllocationRequest) -> Result<Allocation, StoreError>;

    /// The row with this id, in any status.
    async fn get(&self, id: &SandboxId) -> Result<Option<Sandbox>, StoreError>;

    /// Releases `student`'s sandbox to `pending_deletion`; repeating it changes nothing.
    async fn mark_for_deletion(
        &self,
        id: &SandboxId,
        student: &StudentKey,
        now: i64,
    ) -> Result<MarkOutcome, StoreError>;

    /// Upserts rows as `available`, never touching a row in another status.
    async fn import(&self, rows: Vec<NewSandbox>, now: i64) -> Result<ImportSummary, StoreError>;

    /// One page of rows matching `query`, in `sandbox_id` order.
    async fn list(&self, query: ListQuery) -> Result<SandboxPage, StoreError>;

    /// Exact counts per status over the whole pool.
    async fn stats(&self) -> Result<PoolStats, StoreError>;

    /// Per-lab counts, sorted by track name.
    async fn track_stats(&self) -> Result<Vec<TrackStats>, StoreError>;

    /// Removes every row in `status` from the broker (never from the provider); returns how many.
    async fn bulk_delete(&self, status: DeletableStatus) -> Result<u64, StoreError>;

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

    /// Applies a complete provider listing: its sandboxes become (or stay) `available`
    /// unless the broker holds them in another status, and `available` rows it no longer
    /// lists become `stale`. Every change is conditional on the status it starts from.
    async fn sync_provider(
        &self,
        listing: Vec<crate::domain::ProviderSandbox>,
        now: i64,
    ) -> Result<SyncSummary, StoreError>;

    /// Takes (or renews) the lease of `job` for `holder` until `now_ms + ttl_ms`, unless
    /// another holder's lease is still running.
    async fn acquire_lease(
        &self,
        job: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<LeaseOutcome, StoreError>;

    /// Ends `holder`'s lease of `job` and records the run; no-op on the lease if another
    /// holder took it meanwhile (the run is recorded anyway).
    async fn finish_job_run(&self, record: JobRecord, holder: &str) -> Result<(), StoreError>;

    /// Every job's lease and last run.
    async fn job_records(&self) -> Result<Vec<JobRecord>, StoreError>;

    /// Releases every allocation `policy` says has expired at `now` to `pending_deletion`,
    /// conditional on it still being that allocation, and frees its allocation key.
    /// Returns the rows it released.
    async fn expire_allocations(
        &self,
        now: i64,
        policy: LabPolicy,
    ) -> Result<Vec<Sandbox>, StoreError>;

    /// Removes `stale` rows that became stale at or before `stale_since` (their
    /// `updated_at`), each only if it is still stale. Returns how many.
    async fn delete_stale(&self, stale_since: i64) -> Result<u64, StoreError>;

    /// `pending_deletion` rows whose next attempt is due at `now` (every one of them when
    /// `ignore_backoff`, as an admin-triggered cleanup wants).
    async fn deletions_due(
        &self,
        now: i64,
        ignore_backoff: bool,
    ) -> Result<Vec<Sandbox>, StoreError>;

    /// Claims a `pending_deletion` row for `holder` until `until`, unless another runner's
    /// claim is still running; `None` when it is not claimable (any more).
    async fn claim_deletion(
        &self,
        id: &SandboxId,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<Option<Sandbox>, StoreError>;

    /// Records how `holder`'s claimed deletion of `claimed` ended, with what the NIOSXaaS
    /// pre-delete hook did this time (if it ran); no-op unless `holder` still holds the
    /// claim. When the outcome is final (deleted or given up) and the hook ever ran for the
    /// row, the `NIOSXAAS#` history item is written in the same atomic step.
    async fn finish_deletion(
        &self,
        claimed: &Sandbox,
        holder: &str,
        outcome: DeletionOutcome,
        niosxaas: Option<NiosxaasCleanup>,
        now: i64,
    ) -> Result<(), StoreError>;

    /// Drops `deleted` tombstones whose `ttl` has passed (and, where the store keeps them
    /// itself, expired NIOSXaaS history items); returns how many tombstones.
    async fn purge_tombstones(&self, now: i64) -> Result<u64, StoreError>;

    /// The `NIOSXAAS#` history item of a sandbox, if one was written and has not expired
    /// by `now`.
    async fn niosxaas_history(
        &self,
        id: &SandboxId,
        now: i64,
    ) -> Result<Option<NiosxaasHistory>, StoreError>;
}

/// Recording a claimed deletion's outcome: the row [`finished_row`] leaves, applied only
/// while the row is still pending and claimed by `holder` (a late runner never overwrites
/// a newer result). One rule for both stores.
pub fn finished_change(
    claimed: &Sandbox,
    holder: &str,
    outcome: &DeletionOutcome,
    niosxaas: Option<NiosxaasCleanup>,
    now: i64,
) -> Change {
    Change {
        row: finished_row(claimed, outcome, niosxaas, now),
        expect: Expect {
            status: SandboxStatus::PendingDeletion,
            held_by: None,
            claimed_by: Some(holder.to_owned()),
            allocated_at: None,
        },
    }
}

/// The row a claimed deletion leaves behind: claim released, `outcome` applied and the
/// hook's result (if it ran this time) recorded.
fn finished_row(
    claimed: &Sandbox,
    outcome: &DeletionOutcome,
    niosxaas: Option<NiosxaasCleanup>,
    now: i64,
) -> Sandbox {
    let mut row = claimed.clone();
    row.deletion_claimed_by = None;
    row.deletion_claimed_until = None;
    row.updated_at = now;
    if niosxaas.is_some() {
        row.niosxaas = niosxaas;
    }
    match outcome {
        DeletionOutcome::Deleted { ttl } => {
            row.status = SandboxStatus::Deleted;
            row.deleted_at = Some(now);
            row.ttl = Some(*ttl);
            row.next_deletion_attempt_at = None;
            row.last_deletion_error = None;
        }
        DeletionOutcome::Retry {
            next_attempt_at,
            attempts,
            transient_failures,
            first_transient_failure_at,
            error,
        } => {
            row.next_deletion_attempt_at = Some(*next_attempt_at);
            row.deletion_retry_count = *attempts;
            row.deletion_transient_failures = *transient_failures;
            row.first_deletion_failure_at = *first_transient_failure_at;
            row.last_deletion_error = Some(error.clone());
        }
        DeletionOutcome::Failed { attempts, error } => {
            row.status = SandboxStatus::DeletionFailed;
            row.deletion_retry_count = *attempts;
            row.last_deletion_error = Some(error.clone());
        }
        DeletionOutcome::Released => {}
    }
    row
}

impl DeletionOutcome {
    /// Whether the sandbox leaves `pending_deletion` for good (deleted or given up).
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Deleted { .. } | Self::Failed { .. })
    }
}

/// How a claimed deletion ended, as the cleanup policy decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeletionOutcome {
    /// The provider deleted it: a `deleted` tombstone until `ttl`.
    Deleted {
        /// Epoch seconds after which the tombstone may be dropped.
        ttl: i64,
    },
    /// Try again at `next_attempt_at`.
    Retry {
        /// When.
        next_attempt_at: i64,
        /// New `deletion_retry_count` (permanent refusals so far).
        attempts: u32,
        /// New count of transient failures in a row.
        transient_failures: u32,
        /// Start of the current transient streak, if one is running.
        first_transient_failure_at: Option<i64>,
        /// What the provider said.
        error: String,
    },
    /// Give up: `deletion_failed`, for an operator.
    Failed {
        /// New `deletion_retry_count`.
        attempts: u32,
        /// What the provider said.
        error: String,
    },
    /// Not tried after all (the provider's circuit breaker is open): just release the claim.
    Released,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row held by `student`, carrying `idempotency_key`.
    fn held_row(student: &str, idempotency_key: Option<&str>) -> Sandbox {
        let mut row = NewSandbox {
            sandbox_id: SandboxId::parse("id", "1").unwrap(),
            name: crate::domain::SandboxName::parse("n", "lab-1").unwrap(),
            external_id: crate::domain::ExternalId::parse("e", "x").unwrap(),
            sfdc_account_id: None,
        }
        .into_available_row(0);
        row.allocated_to_track = Some(student.to_owned());
        row.idempotency_key = idempotency_key.map(str::to_owned);
        row
    }

    #[test]
    fn rows_store_the_student_key_for_no_idempotency_key_and_read_back_to_the_same_key() {
        let student = || StudentKey::parse("s", "stu").unwrap();
        let idem = |k: &str| Some(IdempotencyKey::parse("k", k).unwrap());
        assert_eq!(
            AllocationKey::new(student(), idem("stu")),
            AllocationKey::new(student(), None),
            "an Idempotency-Key equal to the student key is none"
        );
        let plain = AllocationKey::new(student(), None);
        let keyed = AllocationKey::new(student(), idem("lab-2"));
        assert_eq!(plain.stored_idempotency_key(), "stu");
        assert_eq!(keyed.stored_idempotency_key(), "lab-2");
        let mut row = held_row("stu", None);
        for (stored, holder) in [
            (Some("stu"), &plain),
            (Some("lab-2"), &keyed),
            (None, &plain),
        ] {
            row.idempotency_key = stored.map(str::to_owned);
            assert_eq!(
                allocation_key_of_row(&row).as_deref(),
                Some(holder.encoded().as_str()),
                "{stored:?}"
            );
            assert!(holder.holds(&row), "{stored:?}");
        }
        row.idempotency_key = Some("stu".into());
        assert!(!keyed.holds(&row));
        row.idempotency_key = None;
        assert!(
            !keyed.holds(&row),
            "a row without one is only a plain key's"
        );
    }

    #[test]
    fn a_python_allocation_belongs_to_the_key_whose_idempotency_key_it_stored() {
        let key = |student: &str, idem: Option<&str>| AllocationKey {
            student: StudentKey::parse("s", student).unwrap(),
            idempotency_key: idem.map(|k| IdempotencyKey::parse("k", k).unwrap()),
        };
        let python_row = |student: &str, idem: &str| {
            let mut row = held_row(student, Some(idem));
            row.status = SandboxStatus::Allocated;
            row.allocated_at = Some(100);
            row.lab_duration_hours = Some(4);
            row
        };
        // Without a header the Python service stored the student key as idempotency_key.
        assert!(key("stu", None).holds_foreign(&python_row("stu", "stu")));
        assert!(key("stu", Some("k1")).holds_foreign(&python_row("stu", "k1")));
        assert!(!key("stu", None).holds_foreign(&python_row("stu", "k1")));
        assert!(!key("stu", Some("k1")).holds_foreign(&python_row("stu", "stu")));
        // The Python service matched the idempotency key alone; a student is not another's.
        assert!(!key("other", Some("k1")).holds_foreign(&python_row("stu", "k1")));
        let mut released = python_row("stu", "stu");
        released.status = SandboxStatus::PendingDeletion;
        assert!(!key("stu", None).holds_foreign(&released));
        let mut ours = python_row("stu", "stu");
        ours.allocated_by = Some(crate::domain::ALLOCATED_BY_BROKER.to_owned());
        assert!(
            !key("stu", None).holds_foreign(&ours),
            "this service's allocations are found through their key item"
        );
    }

    #[test]
    fn cursor_round_trips_and_rejects_foreign_tokens() {
        let cursor = ListCursor::after("2012224");
        assert_eq!(ListCursor::decode(&cursor.encode()), Ok(cursor));
        let ordered = ListCursor {
            after_sandbox_id: "a:b".into(),
            after_allocated_at: Some(1_728_054_123),
        };
        assert_eq!(ListCursor::decode(&ordered.encode()), Ok(ordered));
        for bad in [
            "",
            "abc",
            "!!!",
            &URL_SAFE_NO_PAD.encode("v2:1"),
            &URL_SAFE_NO_PAD.encode("v1:"),
        ] {
            assert!(ListCursor::decode(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn allocation_keys_of_different_shapes_never_collide() {
        let student = StudentKey::parse("s", "stu").unwrap();
        let plain = AllocationKey {
            student: student.clone(),
            idempotency_key: None,
        };
        let keyed = AllocationKey {
            student,
            idempotency_key: Some(IdempotencyKey::parse("k", "stu").unwrap()),
        };
        assert_ne!(plain.encoded(), keyed.encoded());
    }
}
