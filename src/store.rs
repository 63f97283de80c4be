//! The store: every durable operation the broker performs, named after its use case.
//!
//! Rule: an `Ok` from any mutating method means the change is durable; a store never
//! acknowledges a write it could lose, and each method is atomic on its own.

mod action_log;
mod allocation_key;
mod counts;
pub mod embedded;
mod job_records;
mod list;
pub mod settings;

pub use self::action_log::{decode_action_cursor, encode_action_cursor, new_action_key};
pub use self::allocation_key::{AllocationKey, allocation_key_of_row, encode_allocation_key};
pub use self::counts::{ImportSummary, PoolStats, SyncSummary};
pub use self::job_records::{JobOutcome, JobRecord, LeaseOutcome};
pub use self::list::{ListCursor, ListQuery, SandboxPage};
pub use crate::domain::deletion::{DeletionOutcome, finished_change};

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::domain::actions::{ActionPage, AdminAction};
use crate::domain::audit::{AuditFacts, AuditReport};
use crate::domain::cordon::Cordon;
use crate::domain::lifecycle::{ListingRefused, RowAction, RowActionRefused, SyncRules, SyncStep};
use crate::domain::usage::AllocationFacts;
use crate::domain::{
    DeletableStatus, IdempotencyKey, LabPolicy, NamePrefix, NewSandbox, NiosxaasCleanup,
    NiosxaasHistory, Sandbox, SandboxId, SandboxStatus, SearchText, StudentKey, TrackName,
    ValidationError,
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
    /// An admin's change does not apply to the row as it is.
    #[error(transparent)]
    RowActionRefused(#[from] RowActionRefused),
    /// A provider listing was not applied: it would have marked too much of the pool stale.
    #[error(transparent)]
    ListingRefused(#[from] ListingRefused),
}

pub mod dynamo;

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

impl AllocationRequest {
    /// What this request grants the sandbox it gets.
    pub fn grant(&self) -> crate::domain::lifecycle::Grant<'_> {
        crate::domain::lifecycle::Grant {
            student: self.key.student.as_str(),
            idempotency_key: self.key.stored_idempotency_key(),
            track_name: self.track_name.as_ref().map(TrackName::as_str),
            lab_duration_hours: self.lab_duration_hours,
            now: self.now,
        }
    }
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

/// Result of a mark-for-deletion.
#[derive(Debug, Clone)]
pub struct MarkOutcome {
    /// The row after the call.
    pub sandbox: Sandbox,
    /// `false` when it had already been released (the call was a repeat).
    pub newly_marked: bool,
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

    /// The allocation facts of every sandbox row that carries a lab or an allocation
    /// time, in no particular order: what per-lab stats and usage series are folded from
    /// ([`crate::domain::usage`]).
    async fn allocation_facts(&self) -> Result<Vec<AllocationFacts>, StoreError>;

    /// How many sandboxes are available whose name starts with each of `prefixes`, in
    /// their order: what an allocation with that `X-Sandbox-Name-Prefix` can still get
    /// (the per-prefix pool gauges).
    async fn available_by_prefix(&self, prefixes: &[NamePrefix]) -> Result<Vec<u64>, StoreError>;

    /// Removes every row in `status` from the broker (never from the provider); returns how
    /// many. A row that was handed out leaves its used-account marker (stamped `now`).
    async fn bulk_delete(&self, status: DeletableStatus, now: i64) -> Result<u64, StoreError>;

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

    /// Applies a complete provider listing as `rules` say (`domain::lifecycle::sync_listed`):
    /// its sandboxes become (or stay) `available` unless the broker holds them in another
    /// status or handed them out before, `deleted` rows it still lists past the grace are
    /// retried, and `available` rows it no longer lists become `stale`. Every change is
    /// conditional on the status it starts from. A listing that would mark more of the pool
    /// stale than `rules` allow changes nothing: [`StoreError::ListingRefused`].
    async fn sync_provider(
        &self,
        listing: Vec<crate::domain::ProviderSandbox>,
        rules: SyncRules,
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
    /// `updated_at`), each only if it is still stale. Returns how many. A row that was
    /// handed out leaves its used-account marker (stamped `now`).
    async fn delete_stale(&self, stale_since: i64, now: i64) -> Result<u64, StoreError>;

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

    /// Every `NIOSXAAS#` history item not expired by `now`, in no particular order.
    async fn niosxaas_histories(&self, now: i64) -> Result<Vec<NiosxaasHistory>, StoreError>;

    /// What an audit reads: every row that was handed out and is not deleted, the ids of
    /// the tombstones, and the last complete listing a sync applied (which
    /// [`Self::sync_provider`] records whenever it applies one).
    async fn audit_facts(&self) -> Result<AuditFacts, StoreError>;

    /// Keeps `report` as the last audit, for every instance to answer.
    async fn save_audit(&self, report: &AuditReport) -> Result<(), StoreError>;

    /// The last audit kept, if any ran.
    async fn last_audit(&self) -> Result<Option<AuditReport>, StoreError>;

    /// Applies an admin's `action` to the row `id` as `domain::lifecycle::decide_row_action`
    /// decides on the row as it is, conditional on its status; the row as it became.
    async fn change_row(
        &self,
        id: &SandboxId,
        action: RowAction,
        now: i64,
    ) -> Result<Sandbox, StoreError>;

    /// The sandbox `request`'s allocation key holds now, if any — what a replay would
    /// answer — without allocating anything.
    async fn held_by(&self, request: &AllocationRequest) -> Result<Option<Sandbox>, StoreError>;

    /// Every cordon in place.
    async fn cordons(&self) -> Result<Vec<Cordon>, StoreError>;

    /// Puts `cordon` in place.
    async fn add_cordon(&self, cordon: &Cordon) -> Result<(), StoreError>;

    /// Lifts the cordon `id`; the cordon it lifted, `None` when there was none.
    async fn remove_cordon(&self, id: &str) -> Result<Option<Cordon>, StoreError>;

    /// Appends `action` to the admins' action log.
    async fn record_action(&self, action: &AdminAction) -> Result<(), StoreError>;

    /// Up to `limit` entries of the action log, newest first, older than `cursor` (a
    /// page's `next`); [`StoreError::InvalidCursor`] for a cursor this store did not issue.
    async fn actions(&self, limit: usize, cursor: Option<&str>) -> Result<ActionPage, StoreError>;
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
