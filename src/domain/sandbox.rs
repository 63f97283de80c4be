//! Sandbox rows, what the provider and imports offer, and the lab policy.

use serde::{Deserialize, Serialize};

use super::time::EpochSecs;
use super::*;

/// One sandbox row as the store keeps it (attribute names of docs/dynamodb.md).
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
    /// The holder key holding it, once allocated.
    #[serde(default)]
    #[serde(rename = "allocated_to_track")]
    pub holder: Option<String>,
    /// Epoch seconds of allocation; `None` while never allocated.
    #[serde(default)]
    pub allocated_at: Option<EpochSecs>,
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
    pub deletion_requested_at: Option<EpochSecs>,
    /// Permanent provider refusals so far.
    #[serde(default)]
    pub deletion_retry_count: u32,
    /// Epoch seconds of the last sync that saw it at the provider.
    #[serde(default)]
    pub last_synced: Option<EpochSecs>,
    /// The `Idempotency-Key` of the allocation holding it, if any.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The lab slug it was allocated for.
    #[serde(default)]
    #[serde(rename = "track_name")]
    pub lab: Option<String>,
    /// Epoch seconds the broker first stored it.
    pub created_at: EpochSecs,
    /// Epoch seconds of the last change.
    pub updated_at: EpochSecs,
    /// Salesforce account id, when the provider or import knows it.
    #[serde(default)]
    pub sfdc_account_id: Option<String>,
    /// Epoch seconds the provider confirmed deletion.
    #[serde(default)]
    pub deleted_at: Option<EpochSecs>,
    /// Epoch seconds after which a tombstone may be dropped.
    #[serde(default)]
    pub ttl: Option<EpochSecs>,
    /// Epoch seconds before which cleanup does not retry a failed deletion (backoff).
    #[serde(default)]
    pub next_deletion_attempt_at: Option<EpochSecs>,
    /// The cleanup runner deleting it right now, if any.
    #[serde(default)]
    pub deletion_claimed_by: Option<String>,
    /// Epoch seconds that claim runs out.
    #[serde(default)]
    pub deletion_claimed_until: Option<EpochSecs>,
    /// Epoch seconds of the first transient failure of the current streak.
    #[serde(default)]
    pub first_deletion_failure_at: Option<EpochSecs>,
    /// Transient failures in a row (connection, timeout, 429, 5xx); drives the backoff.
    #[serde(default)]
    pub deletion_transient_failures: u32,
    /// What the provider said the last time deleting failed.
    #[serde(default)]
    pub last_deletion_error: Option<String>,
    /// What the NIOSXaaS pre-delete hook did in this account, once it ran.
    #[serde(default)]
    pub niosxaas: Option<NiosxaasCleanup>,
    /// Why an admin quarantined it, while it is `quarantined`.
    #[serde(default)]
    pub quarantine_reason: Option<String>,
    /// The lab token it was allocated under (`None`: the static track token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// The reservation it is set aside for (`reserved`), or was allocated from (kept after,
    /// so a reservation counts what it used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_for: Option<String>,
}

/// What the NIOSXaaS pre-delete hook found and did in one sandbox account. The first three
/// fields carry the Python service's attribute names (docs/dynamodb.md); the last two are additive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NiosxaasCleanup {
    /// Epoch seconds the hook finished removing the account's services (or found none to
    /// remove); absent in shadow mode and after a failure, when nothing was cleaned.
    #[serde(default)]
    pub niosxaas_cleaned_at: Option<EpochSecs>,
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

/// How long a NIOSXaaS history item is kept (docs/dynamodb.md: `ttl` = now + 30 days).
pub const NIOSXAAS_HISTORY_TTL_SECS: i64 = 30 * 86_400;

/// A `NIOSXAAS#<sandbox_id>` history item (docs/dynamodb.md): what the pre-delete hook did for a
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
    #[serde(rename = "track_name")]
    pub lab: Option<String>,
    /// The holder key that last held it.
    #[serde(rename = "allocated_to_track")]
    pub holder: Option<String>,
    /// The hook's result.
    #[serde(flatten)]
    pub cleanup: NiosxaasCleanup,
    /// Epoch seconds the provider deleted the sandbox; absent when deletion was given up.
    pub deleted_at: Option<EpochSecs>,
    /// Epoch seconds after which the item may be dropped.
    pub ttl: EpochSecs,
}

impl NiosxaasHistory {
    /// The history item of `row` (after its outcome was applied), or `None` when the hook
    /// never ran for it.
    pub fn of(row: &Sandbox, now: EpochSecs) -> Option<Self> {
        Some(Self {
            sandbox_id: row.sandbox_id.clone(),
            sandbox_name: row.name.clone(),
            external_id: row.external_id.clone(),
            lab: row.lab.clone(),
            holder: row.holder.clone(),
            cleanup: row.niosxaas.clone()?,
            deleted_at: row.deleted_at,
            ttl: now + NIOSXAAS_HISTORY_TTL_SECS,
        })
    }
}

/// The `allocated_by` value of allocations this service makes.
pub const ALLOCATED_BY_BROKER: &str = "sandbox-broker";

/// How long allocations last (docs/api.md): the rule expiry and `expires_at` share.
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
    pub fn expires_at(&self, row: &Sandbox) -> Option<EpochSecs> {
        let hours = i64::from(self.lab_duration_hours(row));
        row.allocated_at.map(|at| at + hours * 3600)
    }

    /// Whether `row` is an allocation whose lab, and the grace after it, ended before `now`.
    pub fn expired(&self, row: &Sandbox, now: EpochSecs) -> bool {
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

    /// Whether a request under the lab token `token` (`None`: the static track token, which
    /// may act on any row) may act on this row: it was allocated under that token.
    pub fn allocated_under(&self, token: Option<&str>) -> bool {
        token.is_none_or(|token| self.token_id.as_deref() == Some(token))
    }

    /// Whether `student` holds this sandbox (in any status after allocation).
    pub fn is_held_by(&self, holder: &HolderKey) -> bool {
        self.holder.as_deref() == Some(holder.as_str())
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
    pub fn into_available_row(self, now: EpochSecs) -> Sandbox {
        Sandbox {
            sandbox_id: self.sandbox_id.0,
            name: self.name.0,
            external_id: self.external_id.0,
            status: SandboxStatus::Available,
            holder: None,
            allocated_at: None,
            lab_duration_hours: None,
            allocated_by: None,
            deletion_requested_at: None,
            deletion_retry_count: 0,
            last_synced: None,
            idempotency_key: None,
            lab: None,
            created_at: now,
            updated_at: now,
            sfdc_account_id: self.sfdc_account_id,
            token_id: None,
            reserved_for: None,
            deleted_at: None,
            ttl: None,
            next_deletion_attempt_at: None,
            deletion_claimed_by: None,
            deletion_claimed_until: None,
            first_deletion_failure_at: None,
            deletion_transient_failures: 0,
            last_deletion_error: None,
            niosxaas: None,
            quarantine_reason: None,
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
