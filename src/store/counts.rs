//! What the store counts: the pool by status, labs, and what an import or a sync changed.

use super::*;

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
    /// Rows `quarantined` by an admin.
    pub quarantined: u64,
    /// Rows `reserved` for a reservation's class.
    pub reserved: u64,
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
            SandboxStatus::Quarantined => &self.quarantined,
            SandboxStatus::Reserved => &self.reserved,
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
            SandboxStatus::Quarantined => &mut self.quarantined,
            SandboxStatus::Reserved => &mut self.reserved,
        }
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
    /// Listed accounts the broker handed out before (or saw deleted): kept out of the pool.
    pub kept_out: u64,
    /// `deleted` rows the provider still lists past `DELETION_VERIFY_GRACE_SEC`: their
    /// deletion is retried.
    pub unverified: u64,
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
            SyncStep::KeptOut => self.kept_out += 1,
            SyncStep::Unverified => self.unverified += 1,
        }
    }
}
