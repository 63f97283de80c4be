//! Sandbox rows and the validated values that may reach the store.
//!
//! Rule: every value from the outside world is parsed into one of these types at
//! the edge, so the store and the allocation rules never see an unchecked string.

pub mod clock;
pub mod lease;
pub mod lifecycle;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a sandbox is in its lifecycle (contract §2); the strings are the wire and table form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxStatus {
    /// In the pool, free to allocate.
    Available,
    /// Held by a student.
    Allocated,
    /// Released by its owner or expired; waiting for deletion at the provider.
    PendingDeletion,
    /// Deleted at the provider; kept as a tombstone until its `ttl`.
    Deleted,
    /// The provider refused to delete it too often; needs an operator.
    DeletionFailed,
    /// Was available but the provider no longer lists it.
    Stale,
}

impl SandboxStatus {
    /// Every status, in the order stats report them.
    pub const ALL: [Self; 6] = [
        Self::Available,
        Self::Allocated,
        Self::PendingDeletion,
        Self::Stale,
        Self::DeletionFailed,
        Self::Deleted,
    ];

    /// The contract's string for this status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Allocated => "allocated",
            Self::PendingDeletion => "pending_deletion",
            Self::Deleted => "deleted",
            Self::DeletionFailed => "deletion_failed",
            Self::Stale => "stale",
        }
    }
}

impl fmt::Display for SandboxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SandboxStatus {
    type Err = ValidationError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
            .ok_or_else(|| {
                ValidationError::new(
                    "status",
                    "must be one of available, allocated, pending_deletion, stale, deletion_failed, deleted",
                )
            })
    }
}

/// The statuses `bulk-delete` may remove; anything else is refused so a typo never wipes live rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletableStatus(SandboxStatus);

impl DeletableStatus {
    /// Accepts `available`, `stale`, `deletion_failed` and `deleted` only.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        const ERR: &str = "must be one of available, stale, deletion_failed, deleted";
        match SandboxStatus::from_str(value) {
            Ok(
                status @ (SandboxStatus::Available
                | SandboxStatus::Stale
                | SandboxStatus::DeletionFailed
                | SandboxStatus::Deleted),
            ) => Ok(Self(status)),
            _ => Err(ValidationError::new("status", ERR)),
        }
    }

    /// The status whose rows are removed.
    pub fn status(self) -> SandboxStatus {
        self.0
    }
}

/// A value from a header, path, query or body that broke the contract's input rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct ValidationError {
    /// The header, parameter or field at fault, as the client spelled it.
    pub field: String,
    /// What is wrong with it, phrased to follow the field name.
    pub reason: String,
}

impl ValidationError {
    /// Builds an error for `field` that `reason` explains.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Strips the optional whitespace HTTP allows around a value (spaces and tabs only), so a
/// control character such as a newline is rejected rather than silently trimmed away.
pub fn trim_blanks(raw: &str) -> &str {
    raw.trim_matches([' ', '\t'])
}

/// Checks the contract's text rule: trimmed, `1..=max` printable ASCII characters.
fn parse_text(field: &str, raw: &str, max: usize) -> Result<String, ValidationError> {
    let value = trim_blanks(raw);
    if value.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(ValidationError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ValidationError::new(
            field,
            "must contain printable ASCII characters only",
        ));
    }
    Ok(value.to_owned())
}

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, max = $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Longest accepted value, in characters.
            pub const MAX_LEN: usize = $max;

            /// Trims `raw` and checks the contract's length and character rules; `field`
            /// names the header or parameter in the error.
            pub fn parse(field: &str, raw: &str) -> Result<Self, ValidationError> {
                parse_text(field, raw, Self::MAX_LEN).map(Self)
            }

            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_type!(
    /// Who holds a sandbox: `X-Instruqt-Sandbox-ID`, or the legacy `X-Track-ID`.
    StudentKey, max = 256
);
text_type!(
    /// The lab slug from `X-Instruqt-Track-ID`.
    TrackName, max = 256
);
text_type!(
    /// A client's `Idempotency-Key`: a second key from one student is a second allocation.
    IdempotencyKey, max = 256
);
text_type!(
    /// Only sandboxes whose `name` starts with this (case-sensitive) are allocated.
    NamePrefix, max = 128
);
text_type!(
    /// A sandbox's id: the provider's `csp_id` as a decimal string, or an imported id.
    SandboxId, max = 256
);
text_type!(
    /// A sandbox's display name, as imported or synced.
    SandboxName, max = 256
);
text_type!(
    /// The provider's id of a sandbox, e.g. `identity/accounts/<uuid>`.
    ExternalId, max = 512
);

/// One sandbox row as the store keeps it (contract §5 attribute names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    /// Primary key.
    pub sandbox_id: String,
    /// Display name; prefix filters match on it.
    pub name: String,
    /// The provider's id, e.g. `identity/accounts/<uuid>`.
    pub external_id: String,
    /// Lifecycle state.
    pub status: SandboxStatus,
    /// The student key holding it, once allocated.
    #[serde(default)]
    pub allocated_to_track: Option<String>,
    /// Epoch seconds of allocation; `None` while never allocated.
    #[serde(default)]
    pub allocated_at: Option<i64>,
    /// Lab duration in force when it was allocated, so a config change does not move
    /// `expires_at` — trusted only on allocations this service made ([`Self::allocated_by`]).
    #[serde(default)]
    pub lab_duration_hours: Option<u32>,
    /// Who made the allocation the row holds: [`ALLOCATED_BY_BROKER`] when this service did.
    /// Absent on the Python service's allocations, whose `lab_duration_hours` is its sync's
    /// model default (4), not a lab duration.
    #[serde(default)]
    pub allocated_by: Option<String>,
    /// Epoch seconds when its owner (or expiry) released it.
    #[serde(default)]
    pub deletion_requested_at: Option<i64>,
    /// Permanent provider refusals so far.
    #[serde(default)]
    pub deletion_retry_count: u32,
    /// Epoch seconds of the last sync that saw it at the provider.
    #[serde(default)]
    pub last_synced: Option<i64>,
    /// The `Idempotency-Key` of the allocation holding it, if any.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The lab slug it was allocated for.
    #[serde(default)]
    pub track_name: Option<String>,
    /// Epoch seconds the broker first stored it.
    pub created_at: i64,
    /// Epoch seconds of the last change.
    pub updated_at: i64,
    /// Salesforce account id, when the provider or import knows it.
    #[serde(default)]
    pub sfdc_account_id: Option<String>,
    /// Epoch seconds the provider confirmed deletion.
    #[serde(default)]
    pub deleted_at: Option<i64>,
    /// Epoch seconds after which a tombstone may be dropped.
    #[serde(default)]
    pub ttl: Option<i64>,
    /// Epoch seconds before which cleanup does not retry a failed deletion (backoff).
    #[serde(default)]
    pub next_deletion_attempt_at: Option<i64>,
    /// The cleanup runner deleting it right now, if any.
    #[serde(default)]
    pub deletion_claimed_by: Option<String>,
    /// Epoch seconds that claim runs out.
    #[serde(default)]
    pub deletion_claimed_until: Option<i64>,
    /// Epoch seconds of the first transient failure of the current streak.
    #[serde(default)]
    pub first_deletion_failure_at: Option<i64>,
    /// Transient failures in a row (connection, timeout, 429, 5xx); drives the backoff.
    #[serde(default)]
    pub deletion_transient_failures: u32,
    /// What the provider said the last time deleting failed.
    #[serde(default)]
    pub last_deletion_error: Option<String>,
    /// What the NIOSXaaS pre-delete hook did in this account, once it ran.
    #[serde(default)]
    pub niosxaas: Option<NiosxaasCleanup>,
}

/// What the NIOSXaaS pre-delete hook found and did in one sandbox account. The first three
/// fields carry the Python service's attribute names (contract §5); the last two are additive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NiosxaasCleanup {
    /// Epoch seconds the hook finished removing the account's services (or found none to
    /// remove); absent in shadow mode and after a failure, when nothing was cleaned.
    #[serde(default)]
    pub niosxaas_cleaned_at: Option<i64>,
    /// Nothing was deleted: no service matched, or shadow mode only looked.
    #[serde(default)]
    pub niosxaas_cleanup_skipped: bool,
    /// Why the hook failed, if it did.
    #[serde(default)]
    pub niosxaas_cleanup_failed_reason: Option<String>,
    /// Universal services named `NIOSXAAS_SERVICE_NAME` that it found (and, outside shadow
    /// mode, deleted).
    #[serde(default)]
    pub niosxaas_services_matched: u32,
    /// The hook ran in shadow mode: it listed, logged and counted, and deleted nothing.
    #[serde(default)]
    pub niosxaas_shadow_mode: bool,
}

/// How long a NIOSXaaS history item is kept (contract §5: `ttl` = now + 30 days).
pub const NIOSXAAS_HISTORY_TTL_SECS: i64 = 30 * 86_400;

/// A `NIOSXAAS#<sandbox_id>` history item (contract §5): what the pre-delete hook did for a
/// sandbox that is gone (or given up), kept for dashboards after its row is purged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NiosxaasHistory {
    /// The sandbox.
    pub sandbox_id: String,
    /// Its name.
    pub sandbox_name: String,
    /// Its provider id.
    pub external_id: String,
    /// The lab it was last allocated for.
    pub track_name: Option<String>,
    /// The student key that last held it.
    pub allocated_to_track: Option<String>,
    /// The hook's result.
    #[serde(flatten)]
    pub cleanup: NiosxaasCleanup,
    /// Epoch seconds the provider deleted the sandbox; absent when deletion was given up.
    pub deleted_at: Option<i64>,
    /// Epoch seconds after which the item may be dropped.
    pub ttl: i64,
}

impl NiosxaasHistory {
    /// The history item of `row` (after its outcome was applied), or `None` when the hook
    /// never ran for it.
    pub fn of(row: &Sandbox, now: i64) -> Option<Self> {
        Some(Self {
            sandbox_id: row.sandbox_id.clone(),
            sandbox_name: row.name.clone(),
            external_id: row.external_id.clone(),
            track_name: row.track_name.clone(),
            allocated_to_track: row.allocated_to_track.clone(),
            cleanup: row.niosxaas.clone()?,
            deleted_at: row.deleted_at,
            ttl: now + NIOSXAAS_HISTORY_TTL_SECS,
        })
    }
}

/// The `allocated_by` value of allocations this service makes.
pub const ALLOCATED_BY_BROKER: &str = "sandbox-broker";

/// How long allocations last (contract §2): the rule expiry and `expires_at` share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabPolicy {
    /// `LAB_DURATION_HOURS`: the lab duration of allocations this service did not record.
    pub lab_duration_hours: u32,
    /// `GRACE_PERIOD_MINUTES`, in seconds: how long after its lab ends an allocation is kept.
    pub grace_secs: i64,
}

impl LabPolicy {
    /// The lab duration governing `row`'s allocation: the one this service recorded when it
    /// made it, else (the Python service's allocations, or a row without a recorded value)
    /// the configured one — as the Python service itself expired them.
    pub fn lab_duration_hours(&self, row: &Sandbox) -> u32 {
        match row.lab_duration_hours {
            Some(hours) if row.allocated_here() => hours,
            _ => self.lab_duration_hours,
        }
    }

    /// When `row`'s lab ends, or `None` while never allocated.
    pub fn expires_at(&self, row: &Sandbox) -> Option<i64> {
        let hours = i64::from(self.lab_duration_hours(row));
        row.allocated_at.map(|at| at + hours * 3600)
    }

    /// Whether `row` is an allocation whose lab, and the grace after it, ended before `now`.
    pub fn expired(&self, row: &Sandbox, now: i64) -> bool {
        row.status == SandboxStatus::Allocated
            && self
                .expires_at(row)
                .is_some_and(|expires| expires + self.grace_secs < now)
    }
}

impl Sandbox {
    /// Whether this service made the allocation the row holds.
    pub fn allocated_here(&self) -> bool {
        self.allocated_by.as_deref() == Some(ALLOCATED_BY_BROKER)
    }

    /// Whether `student` holds this sandbox (in any status after allocation).
    pub fn is_held_by(&self, student: &StudentKey) -> bool {
        self.allocated_to_track.as_deref() == Some(student.as_str())
    }
}

/// A sandbox offered to the pool by an import (or, later, a provider sync).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSandbox {
    /// Primary key.
    pub sandbox_id: SandboxId,
    /// Display name.
    pub name: SandboxName,
    /// The provider's id.
    pub external_id: ExternalId,
    /// Salesforce account id, if known.
    pub sfdc_account_id: Option<String>,
}

impl NewSandbox {
    /// The row this becomes when it first enters the pool at `now`.
    pub fn into_available_row(self, now: i64) -> Sandbox {
        Sandbox {
            sandbox_id: self.sandbox_id.0,
            name: self.name.0,
            external_id: self.external_id.0,
            status: SandboxStatus::Available,
            allocated_to_track: None,
            allocated_at: None,
            lab_duration_hours: None,
            allocated_by: None,
            deletion_requested_at: None,
            deletion_retry_count: 0,
            last_synced: None,
            idempotency_key: None,
            track_name: None,
            created_at: now,
            updated_at: now,
            sfdc_account_id: self.sfdc_account_id,
            deleted_at: None,
            ttl: None,
            next_deletion_attempt_at: None,
            deletion_claimed_by: None,
            deletion_claimed_until: None,
            first_deletion_failure_at: None,
            deletion_transient_failures: 0,
            last_deletion_error: None,
            niosxaas: None,
        }
    }
}

/// One sandbox as the provider lists it, already filtered and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSandbox {
    /// `csp_id` as a decimal string.
    pub sandbox_id: SandboxId,
    /// The account's name.
    pub name: SandboxName,
    /// The provider's `id`, e.g. `identity/accounts/<uuid>`, unchanged.
    pub external_id: ExternalId,
    /// Salesforce account id, when the provider has one.
    pub sfdc_account_id: Option<String>,
    /// Epoch seconds the provider created it, when it says.
    pub created_at: Option<i64>,
}

impl From<ProviderSandbox> for NewSandbox {
    fn from(sandbox: ProviderSandbox) -> Self {
        Self {
            sandbox_id: sandbox.sandbox_id,
            name: sandbox.name,
            external_id: sandbox.external_id,
            sfdc_account_id: sandbox.sfdc_account_id,
        }
    }
}

/// The current time in epoch seconds; all timestamps in the contract are integers.
pub fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

/// Milliseconds since the Unix epoch (0 if the clock is before it), for job leases.
pub fn now_epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(
            StudentKey::parse("h", "  stu-1 ").map(|k| k.0),
            Ok("stu-1".into())
        );
        assert!(StudentKey::parse("h", "   ").is_err());
        assert!(StudentKey::parse("h", &"a".repeat(257)).is_err());
        assert!(StudentKey::parse("h", &"a".repeat(256)).is_ok());
        assert!(NamePrefix::parse("h", &"a".repeat(129)).is_err());
    }

    #[test]
    fn control_and_non_ascii_characters_are_rejected() {
        for bad in ["a\u{7}b", "a\u{7f}", "caf\u{e9}", "a\tb"] {
            assert!(SandboxId::parse("id", bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn bulk_delete_accepts_only_the_contract_statuses() {
        for ok in ["available", "stale", "deletion_failed", "deleted"] {
            assert!(DeletableStatus::parse(ok).is_ok(), "{ok} refused");
        }
        for bad in ["allocated", "pending_deletion", "", "ALL", "Available"] {
            assert!(DeletableStatus::parse(bad).is_err(), "{bad} accepted");
        }
    }

    fn allocated(hours: Option<u32>, by: Option<&str>, at: i64) -> Sandbox {
        let mut row = NewSandbox {
            sandbox_id: SandboxId::parse("id", "1").unwrap(),
            name: SandboxName::parse("n", "lab-1").unwrap(),
            external_id: ExternalId::parse("e", "identity/accounts/x").unwrap(),
            sfdc_account_id: None,
        }
        .into_available_row(10);
        row.status = SandboxStatus::Allocated;
        row.allocated_at = Some(at);
        row.lab_duration_hours = hours;
        row.allocated_by = by.map(str::to_owned);
        row
    }

    /// `LAB_DURATION_HOURS` 48, `GRACE_PERIOD_MINUTES` 30.
    const POLICY: LabPolicy = LabPolicy {
        lab_duration_hours: 48,
        grace_secs: 1800,
    };

    #[test]
    fn a_lab_ends_by_the_duration_this_service_recorded_else_by_the_configured_one() {
        let hour = 3600;
        let ours = Some(ALLOCATED_BY_BROKER);
        // (lab_duration_hours, allocated_by, expected expires_at for allocated_at = 0)
        let table = [
            (Some(2), ours, 2 * hour),
            (Some(0), ours, 0),
            // This service's allocation from before it recorded a duration.
            (None, ours, 48 * hour),
            // The Python service's rows: its sync writes 4 on every row; it expired by 48.
            (Some(4), None, 48 * hour),
            (None, None, 48 * hour),
            (Some(4), Some("someone-else"), 48 * hour),
        ];
        for (hours, by, expected) in table {
            let row = allocated(hours, by, 0);
            assert_eq!(POLICY.expires_at(&row), Some(expected), "{hours:?} {by:?}");
        }
        let mut never = allocated(Some(2), ours, 0);
        never.allocated_at = None;
        assert_eq!(POLICY.expires_at(&never), None);
    }

    #[test]
    fn python_allocations_expire_after_the_global_duration_and_grace() {
        let now = 1_000_000_000;
        let hour = 3600;
        let python = |hours_ago: i64| allocated(Some(4), None, now - hours_ago * hour);
        assert!(!POLICY.expired(&python(5), now), "5 h into a 48 h lab");
        assert!(!POLICY.expired(&python(48), now), "within the grace");
        assert!(POLICY.expired(&python(49), now));
        let ours =
            |hours_ago: i64| allocated(Some(4), Some(ALLOCATED_BY_BROKER), now - hours_ago * hour);
        assert!(!POLICY.expired(&ours(4), now));
        assert!(
            POLICY.expired(&ours(5), now),
            "this service's 4 h lab, 30 min grace"
        );
        let mut released = python(49);
        released.status = SandboxStatus::PendingDeletion;
        assert!(!POLICY.expired(&released, now), "only allocations expire");
    }
}
