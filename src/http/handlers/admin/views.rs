//! The JSON shapes of the admin routes (docs/api.md, *Admin routes*), each an OpenAPI schema.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::time::EpochSecs;
use crate::domain::usage::LabStats;
use crate::http::handlers::jobs::views::RunStatus;
use crate::http::handlers::lab::views::SandboxView;
use crate::store::{ImportSummary, PoolStats};

/// One row of the admin list: the GET shape, plus what only operators need (additive).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AdminSandboxView {
    /// The GET shape.
    #[serde(flatten)]
    pub sandbox: SandboxView,
    /// The `Idempotency-Key` of the allocation holding it.
    pub idempotency_key: Option<String>,
    /// Epoch seconds the broker first stored it.
    pub created_at: i64,
    /// Epoch seconds of its last change.
    pub updated_at: i64,
    /// Epoch seconds of the last sync that saw it at the provider.
    pub last_synced: Option<i64>,
    /// Epoch seconds the provider confirmed its deletion.
    pub deleted_at: Option<i64>,
    /// Permanent provider refusals of its deletion so far.
    pub deletion_retry_count: u32,
    /// What the provider said the last time deleting it failed.
    pub last_deletion_error: Option<String>,
    /// When the NIOSXaaS hook finished cleaning it.
    pub niosxaas_cleaned_at: Option<i64>,
    /// Whether the hook deleted nothing in it; null before the hook ran.
    pub niosxaas_cleanup_skipped: Option<bool>,
    /// Why the hook failed in it, if it did.
    pub niosxaas_cleanup_failed_reason: Option<String>,
    /// Universal services the hook matched in it; null before the hook ran.
    pub niosxaas_services_matched: Option<u32>,
}

impl AdminSandboxView {
    /// The admin view of `row`, its lab ending as `lab` says.
    pub fn new(row: &crate::domain::Sandbox, lab: crate::domain::LabPolicy) -> Self {
        let hook = row.niosxaas.as_ref();
        Self {
            sandbox: SandboxView::new(row, lab),
            idempotency_key: row.idempotency_key.clone(),
            created_at: row.created_at.get(),
            updated_at: row.updated_at.get(),
            last_synced: row.last_synced.map(EpochSecs::get),
            deleted_at: row.deleted_at.map(EpochSecs::get),
            deletion_retry_count: row.deletion_retry_count,
            last_deletion_error: row.last_deletion_error.clone(),
            niosxaas_cleaned_at: (hook.and_then(|h| h.niosxaas_cleaned_at)).map(EpochSecs::get),
            niosxaas_cleanup_skipped: hook.map(|h| h.niosxaas_cleanup_skipped),
            niosxaas_cleanup_failed_reason: hook
                .and_then(|h| h.niosxaas_cleanup_failed_reason.clone()),
            niosxaas_services_matched: hook.map(|h| h.niosxaas_services_matched),
        }
    }
}

/// `GET /admin/sandboxes` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SandboxListView {
    /// This page's rows.
    pub sandboxes: Vec<AdminSandboxView>,
    /// Rows on this page.
    pub count: usize,
    /// Pass as `cursor` for the next page; null on the last page.
    pub cursor: Option<String>,
}

/// `GET /admin/stats` answer: exact counts over the whole pool.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatsView {
    /// Every row, tombstones included.
    pub total: u64,
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
    /// Rows an admin `quarantined` (additive).
    pub quarantined: u64,
    /// Rows `reserved` for reservations (additive).
    pub reserved: u64,
    /// Rows `deleted`.
    pub deleted: u64,
}

impl From<PoolStats> for StatsView {
    fn from(stats: PoolStats) -> Self {
        Self {
            total: stats.total(),
            available: stats.available,
            allocated: stats.allocated,
            pending_deletion: stats.pending_deletion,
            stale: stats.stale,
            deletion_failed: stats.deletion_failed,
            quarantined: stats.quarantined,
            reserved: stats.reserved,
            deleted: stats.deleted,
        }
    }
}

/// One lab's counts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LabView {
    /// The lab slug.
    #[serde(rename = "track_name")]
    pub lab: String,
    /// Rows now `allocated`.
    pub allocated: u64,
    /// Rows now `pending_deletion`.
    pub pending_deletion: u64,
    /// Rows now `deleted`.
    pub deleted: u64,
    /// Every row of this lab.
    pub total: u64,
    /// Rows its students (or expiry) released, whatever happened to them after.
    pub released: u64,
    /// Mean seconds a released sandbox of this lab was held; null before any release.
    pub mean_held_seconds: Option<u64>,
    /// Median seconds from an allocation request of this lab to its sandbox (waiting
    /// included), over its last 1,000 on the instance answering; null before any.
    pub time_to_sandbox_p50: Option<f64>,
    /// 95th percentile of the same.
    pub time_to_sandbox_p95: Option<f64>,
    /// 99th percentile of the same.
    pub time_to_sandbox_p99: Option<f64>,
    /// Its allocation requests answered 409 on the instance answering, since it started.
    pub exhausted: u64,
}

impl From<LabStats> for LabView {
    fn from(t: LabStats) -> Self {
        Self {
            mean_held_seconds: t.mean_held_seconds(),
            released: t.released,
            lab: t.lab,
            allocated: t.allocated,
            pending_deletion: t.pending_deletion,
            deleted: t.deleted,
            total: t.total,
            time_to_sandbox_p50: None,
            time_to_sandbox_p95: None,
            time_to_sandbox_p99: None,
            exhausted: 0,
        }
    }
}

impl LabView {
    /// Adds this instance's service levels of the lab.
    pub fn with_levels(mut self, levels: Option<&crate::metrics::LabLevels>) -> Self {
        if let Some(levels) = levels {
            let [p50, p95, p99] = levels.time_to_sandbox.map_or([None; 3], |p| p.map(Some));
            (
                self.time_to_sandbox_p50,
                self.time_to_sandbox_p95,
                self.time_to_sandbox_p99,
            ) = (p50, p95, p99);
            self.exhausted = levels.exhausted;
        }
        self
    }

    /// A lab known only from its requests (every one answered 409, say).
    pub fn of_levels(levels: &crate::metrics::LabLevels) -> Self {
        Self::from(LabStats {
            lab: levels.lab.clone(),
            ..LabStats::default()
        })
        .with_levels(Some(levels))
    }
}

/// `GET /admin/tracks` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LabsView {
    /// Per-lab counts, sorted by track name.
    #[serde(rename = "tracks")]
    pub labs: Vec<LabView>,
}

/// `POST /admin/sandboxes` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ImportRequest {
    /// At most 1000 rows.
    pub sandboxes: Vec<ImportRow>,
}

/// A string, or a number sent where a string id was meant (`"sandbox_id": 2012224`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TextOrNumber {
    /// Sent as a string.
    Text(String),
    /// Sent as an integer.
    Number(u64),
}

impl TextOrNumber {
    /// The value as text.
    pub fn into_text(self) -> String {
        match self {
            Self::Text(text) => text,
            Self::Number(number) => number.to_string(),
        }
    }
}

/// One sandbox to import.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ImportRow {
    /// The sandbox's id (`csp_id` for CSP sandboxes).
    #[schema(value_type = String)]
    pub sandbox_id: TextOrNumber,
    /// Display name.
    pub name: String,
    /// The provider's id, e.g. `identity/accounts/<uuid>`.
    pub external_id: String,
    /// Salesforce account id, if known.
    #[serde(default)]
    pub sfdc_account_id: Option<String>,
}

/// `POST /admin/sandboxes` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportView {
    /// Rows created or refreshed as `available`.
    pub imported: u64,
    /// Rows left alone because they exist in another status.
    pub skipped: u64,
}

impl From<ImportSummary> for ImportView {
    fn from(s: ImportSummary) -> Self {
        Self {
            imported: s.imported,
            skipped: s.skipped,
        }
    }
}

/// Answer of the admin operations that remove rows.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BulkDeleteView {
    /// Always `completed`.
    pub status: RunStatus,
    /// Rows removed.
    pub deleted: u64,
    /// Time taken.
    pub duration_ms: u64,
}

/// What the NIOSXaaS pre-delete hook did for a sandbox: its `NIOSXAAS#` history item, with
/// the attribute names the Python service's dashboards read.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NiosxaasHistoryView {
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
    /// Epoch seconds the hook finished cleaning; null in shadow mode or after a failure.
    pub niosxaas_cleaned_at: Option<i64>,
    /// Nothing was deleted: no service matched, or shadow mode.
    pub niosxaas_cleanup_skipped: bool,
    /// Why the hook failed, if it did.
    pub niosxaas_cleanup_failed_reason: Option<String>,
    /// Universal services it matched (deleted unless in shadow mode).
    pub niosxaas_services_matched: u32,
    /// Whether it ran in shadow mode.
    pub niosxaas_shadow_mode: bool,
    /// Epoch seconds the sandbox was deleted at the provider; null when deletion was given up.
    pub deleted_at: Option<i64>,
    /// Epoch seconds after which the item is dropped.
    pub ttl: i64,
}

impl From<crate::domain::NiosxaasHistory> for NiosxaasHistoryView {
    fn from(history: crate::domain::NiosxaasHistory) -> Self {
        Self {
            sandbox_id: history.sandbox_id,
            sandbox_name: history.sandbox_name,
            external_id: history.external_id,
            lab: history.lab,
            holder: history.holder,
            niosxaas_cleaned_at: history.cleanup.niosxaas_cleaned_at.map(EpochSecs::get),
            niosxaas_cleanup_skipped: history.cleanup.niosxaas_cleanup_skipped,
            niosxaas_cleanup_failed_reason: history.cleanup.niosxaas_cleanup_failed_reason,
            niosxaas_services_matched: history.cleanup.niosxaas_services_matched,
            niosxaas_shadow_mode: history.cleanup.niosxaas_shadow_mode,
            deleted_at: history.deleted_at.map(EpochSecs::get),
            ttl: history.ttl.get(),
        }
    }
}
