//! The auditor: checks the pool and reports what is wrong, repairing nothing.
//!
//! Rule: one run reads the store's audit facts once, folds them with
//! `domain::audit::audit`, and keeps the report in the store, so every instance of a
//! fleet answers `GET /v1/admin/audit` and reports the same `broker_audit_violations`.

use std::time::Instant;

use super::{Fence, JobError};
use crate::domain::audit::{self, AuditReport, AuditRules, Check};
use crate::domain::time::EpochSecs;
use crate::store::{LifecycleStore, allocation_key_of_row};

/// Audits the pool now and keeps the report; returns it.
pub async fn run_once(
    store: &dyn LifecycleStore,
    rules: AuditRules,
    fence: &Fence,
    now: EpochSecs,
) -> Result<AuditReport, JobError> {
    let started = Instant::now();
    let facts = store.audit_facts().await?;
    let violations = audit::audit(&facts, rules, now, allocation_key_of_row);
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let report = AuditReport::new(now, duration_ms, violations);
    for violation in report.violations.iter().take(20) {
        tracing::warn!(
            check = violation.check.as_str(),
            sandbox.id = violation.sandbox_id.as_deref().unwrap_or_default(),
            detail = %violation.detail,
            "audit violation"
        );
    }
    fence.check()?;
    store.save_audit(&report).await?;
    Ok(report)
}

/// The counts of `report` in [`Check::ALL`]'s order.
pub fn counts_of(report: &AuditReport) -> [u64; Check::ALL.len()] {
    Check::ALL.map(|check| report.counts.get(check.as_str()).copied().unwrap_or(0))
}
