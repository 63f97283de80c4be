//! The store: every durable operation the broker performs, named after its use case and
//! grouped by role (`roles.rs`).
//!
//! Rule: an `Ok` from any mutating method means the change is durable; a store never
//! acknowledges a write it could lose, and each method is atomic on its own.

mod action_log;
mod allocation_key;
pub mod backup;
pub mod config;
mod counts;
pub mod embedded;
mod job_records;
mod list;
mod open;
mod roles;

pub use self::action_log::{decode_action_cursor, encode_action_cursor, new_action_key};
pub use self::allocation_key::{AllocationKey, allocation_key_of_row, encode_allocation_key};
pub use self::counts::{ImportSummary, PoolStats, SyncSummary};
pub use self::job_records::{JobOutcome, JobRecord, LeaseOutcome};
pub use self::list::{ListCursor, ListQuery, SandboxPage};
pub use self::open::{OpenFailure, open};
pub use self::roles::{
    ActionLog, AdminStore, AllocationStore, AnalyticsStore, BackupStore, DeletionClaim,
    FinishedDeletion, HealthStore, JobStore, LeaseRequest, LifecycleStore, OutboxStore,
    ReleaseOutcome, ReleaseRequest, ReservationStore, Store, TokenStore, WebhookStore,
};
pub use crate::domain::deletion::{DeletionOutcome, finished_change};

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::domain::lifecycle::{RowActionRefused, SyncStep};
use crate::domain::time::EpochSecs;
use crate::domain::{
    HolderKey, IdempotencyKey, LabName, NamePrefix, Sandbox, SandboxId, SandboxStatus, SearchText,
    ValidationError,
};

/// What the rules refused: an answer the caller is given, never a failure of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No sandbox has this id.
    #[error("sandbox not found")]
    SandboxNotFound,
    /// The sandbox exists but the caller does not hold it.
    #[error("sandbox is held by another student")]
    NotHolder,
    /// Nothing matching the request is available.
    #[error("no sandboxes available")]
    NoneAvailable,
    /// An admin's change does not apply to the row as it is.
    #[error(transparent)]
    RowAction(#[from] RowActionRefused),
    /// The lab token already holds its `max_active` sandboxes.
    #[error("the lab token holds its cap of sandboxes")]
    QuotaExceeded,
    /// A new lab token is not kept.
    #[error(transparent)]
    Token(#[from] crate::domain::tokens::TokenRefused),
}

/// A store's answer to a request the rules may refuse: `Ok(Ok(_))` done, `Ok(Err(_))` what
/// the rules refused, `Err(_)` the store failed. `??` hands each to its own `From`.
pub type Outcome<T> = Result<Result<T, Refusal>, StoreError>;

/// What can go wrong in the store itself; the HTTP layer maps each variant once.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
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

/// A validated allocation request, with the time and lab duration the rules apply.
#[derive(Debug, Clone)]
pub struct AllocationRequest {
    /// Who allocates.
    pub key: AllocationKey,
    /// Stored on the row for per-lab analytics.
    pub lab: Option<LabName>,
    /// Only names starting with this qualify.
    pub name_prefix: Option<NamePrefix>,
    /// Stored on the row so `expires_at` is fixed at allocation.
    pub lab_duration_hours: u32,
    /// When it is allocated.
    pub now: EpochSecs,
    /// The lab token it is made under (`None`: the static track token).
    pub token: Option<TokenGrant>,
    /// The reservation it draws on first (its lab's, holding now), if any.
    pub reservation: Option<String>,
}

/// What an allocation under a lab token carries: the token, and its cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// The token's id, stored on the row.
    pub id: String,
    /// Sandboxes held under it at once, at most: a new allocation beyond it is refused
    /// ([`Refusal::QuotaExceeded`]); a replay never is.
    pub max_active: Option<u32>,
}

impl AllocationRequest {
    /// What this request grants the sandbox it gets.
    pub fn grant(&self) -> crate::domain::lifecycle::Grant<'_> {
        crate::domain::lifecycle::Grant {
            holder: self.key.holder.as_str(),
            idempotency_key: self.key.stored_idempotency_key(),
            lab: self.lab.as_ref().map(LabName::as_str),
            lab_duration_hours: self.lab_duration_hours,
            now: self.now,
            token_id: self.token.as_ref().map(|token| token.id.as_str()),
            reservation: self.reservation.as_deref(),
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

/// The store the service runs on, one handle per role: a caller takes the role it
/// uses, and a test stands a double in for one role and keeps the real store's others.
#[derive(Clone)]
pub struct SharedStore {
    /// What the lab routes do.
    pub allocation: Arc<dyn AllocationStore>,
    /// What the lifecycle jobs do.
    pub lifecycle: Arc<dyn LifecycleStore>,
    /// The jobs' leases and records.
    pub jobs: Arc<dyn JobStore>,
    /// What an admin changes.
    pub admin: Arc<dyn AdminStore>,
    /// The admins' action log.
    pub action_log: Arc<dyn ActionLog>,
    /// What dashboards and `/metrics` read.
    pub analytics: Arc<dyn AnalyticsStore>,
    /// Readiness and the store's own metrics.
    pub health: Arc<dyn HealthStore>,
    /// Exports and restores.
    pub backup: Arc<dyn BackupStore>,
    /// Scoped lab tokens.
    pub tokens: Arc<dyn TokenStore>,
    /// Reservations for scheduled classes.
    pub reservations: Arc<dyn ReservationStore>,
    /// Webhook endpoints.
    pub webhooks: Arc<dyn WebhookStore>,
    /// The webhook outbox and deliveries.
    pub outbox: Arc<dyn OutboxStore>,
}

impl SharedStore {
    /// Every role served by `store`.
    pub fn new(store: impl Store) -> Self {
        Self::of(Arc::new(store))
    }

    /// Every role served by the store behind `store`.
    pub fn of<S: Store>(store: Arc<S>) -> Self {
        Self {
            allocation: store.clone(),
            lifecycle: store.clone(),
            jobs: store.clone(),
            admin: store.clone(),
            action_log: store.clone(),
            analytics: store.clone(),
            health: store.clone(),
            backup: store.clone(),
            tokens: store.clone(),
            reservations: store.clone(),
            webhooks: store.clone(),
            outbox: store,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NewSandbox;

    /// A row held by `student`, carrying `idempotency_key`.
    fn held_row(holder: &str, idempotency_key: Option<&str>) -> Sandbox {
        let mut row = NewSandbox {
            sandbox_id: SandboxId::parse("id", "1").unwrap(),
            name: crate::domain::SandboxName::parse("n", "lab-1").unwrap(),
            external_id: crate::domain::ExternalId::parse("e", "x").unwrap(),
            sfdc_account_id: None,
        }
        .into_available_row(EpochSecs::new(0));
        row.holder = Some(holder.to_owned());
        row.idempotency_key = idempotency_key.map(str::to_owned);
        row
    }

    #[test]
    fn rows_store_the_student_key_for_no_idempotency_key_and_read_back_to_the_same_key() {
        let holder = || HolderKey::parse("s", "stu").unwrap();
        let idem = |k: &str| Some(IdempotencyKey::parse("k", k).unwrap());
        assert_eq!(
            AllocationKey::new(holder(), idem("stu")),
            AllocationKey::new(holder(), None),
            "an Idempotency-Key equal to the student key is none"
        );
        let plain = AllocationKey::new(holder(), None);
        let keyed = AllocationKey::new(holder(), idem("lab-2"));
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
        let key = |holder: &str, idem: Option<&str>| AllocationKey {
            holder: HolderKey::parse("s", holder).unwrap(),
            idempotency_key: idem.map(|k| IdempotencyKey::parse("k", k).unwrap()),
        };
        let python_row = |holder: &str, idem: &str| {
            let mut row = held_row(holder, Some(idem));
            row.status = SandboxStatus::Allocated;
            row.allocated_at = Some(EpochSecs::new(100));
            row.lab_duration_hours = Some(4);
            row
        };
        // Without a header the Python service stored the holder key as idempotency_key.
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
        let holder = HolderKey::parse("s", "stu").unwrap();
        let plain = AllocationKey {
            holder: holder.clone(),
            idempotency_key: None,
        };
        let keyed = AllocationKey {
            holder,
            idempotency_key: Some(IdempotencyKey::parse("k", "stu").unwrap()),
        };
        assert_ne!(plain.encoded(), keyed.encoded());
    }
}
