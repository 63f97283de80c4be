//! The auditor: what is wrong with the pool, said plainly and repaired never.
//!
//! Rule: an audit reads what the stores hold (the rows that were handed out, the ids of
//! the tombstones, and the last complete provider listing a sync applied) and folds them
//! into violations of five checks, each with the sandbox and student it concerns and a
//! sentence an operator can act on. Every check appears in the counts, zero or not.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{Sandbox, SandboxStatus};
use crate::domain::time::EpochSecs;

/// The audit job's name in leases, job records and metrics.
pub const AUDIT_JOB: &str = "audit";

/// One of the auditor's checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// One student or allocation key holds more than one allocated sandbox.
    KeyHoldsSeveral,
    /// An allocated sandbox the last complete provider listing did not contain.
    AllocatedMissingAtProvider,
    /// Pending deletion for longer than `DELETION_OVERDUE_MINUTES`.
    DeletionOverdue,
    /// A sandbox whose deletion was given up.
    DeletionFailed,
    /// A sandbox the provider reported deleted but still lists.
    DeletedStillListed,
}

impl Check {
    /// Every check: the closed label set of `broker_audit_violations{check}`.
    pub const ALL: [Self; 5] = [
        Self::KeyHoldsSeveral,
        Self::AllocatedMissingAtProvider,
        Self::DeletionOverdue,
        Self::DeletionFailed,
        Self::DeletedStillListed,
    ];

    /// The name in reports, job counts and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeyHoldsSeveral => "key_holds_several",
            Self::AllocatedMissingAtProvider => "allocated_missing_at_provider",
            Self::DeletionOverdue => "deletion_overdue",
            Self::DeletionFailed => "deletion_failed",
            Self::DeletedStillListed => "deleted_still_listed",
        }
    }
}

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Which check found it.
    pub check: Check,
    /// The sandbox, when it concerns one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<String>,
    /// The student holding it, when one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(rename = "student")]
    pub holder: Option<String>,
    /// What is wrong, for an operator.
    pub detail: String,
}

/// The provider's ids as the last complete listing a sync applied showed them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingSnapshot {
    /// Epoch seconds the sync applied it.
    pub taken_at: EpochSecs,
    /// Every sandbox id it listed.
    pub ids: Vec<String>,
}

/// What an audit reads from a store.
#[derive(Debug, Clone, Default)]
pub struct AuditFacts {
    /// Every row `allocated`, `pending_deletion` or `deletion_failed`.
    pub held: Vec<Sandbox>,
    /// The ids of the `deleted` rows (tombstones).
    pub deleted_ids: Vec<String>,
    /// The last complete listing a sync applied, if one was recorded.
    pub listing: Option<ListingSnapshot>,
}

/// What the auditor's rules need besides the facts.
#[derive(Debug, Clone, Copy)]
pub struct AuditRules {
    /// `DELETION_OVERDUE_MINUTES`, in seconds.
    pub deletion_overdue_secs: i64,
}

/// An audit's result, as `GET /v1/admin/audit` shows it and the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    /// Epoch seconds the audit read the store.
    pub checked_at: EpochSecs,
    /// How long it took.
    pub duration_ms: u64,
    /// What it found (at most [`KEPT_VIOLATIONS`] of them; `counts` counts them all).
    pub violations: Vec<Violation>,
    /// Violations per check, every check present.
    pub counts: BTreeMap<String, u64>,
}

/// Violations a report keeps; the counts go on counting past them.
pub const KEPT_VIOLATIONS: usize = 1_000;

/// Folds `facts` into violations. `allocation_key` names the allocation key a row is
/// held under (the store's one rule for it).
pub fn audit(
    facts: &AuditFacts,
    rules: AuditRules,
    now: EpochSecs,
    allocation_key: impl Fn(&Sandbox) -> Option<String>,
) -> Vec<Violation> {
    let mut found = Vec::new();
    let allocated = || {
        facts
            .held
            .iter()
            .filter(|row| row.status == SandboxStatus::Allocated)
    };
    let mut by_key: HashMap<String, Vec<&Sandbox>> = HashMap::new();
    for row in allocated() {
        if let Some(key) = allocation_key(row) {
            by_key.entry(key).or_default().push(row);
        }
    }
    let mut several: Vec<(&String, &Vec<&Sandbox>)> =
        by_key.iter().filter(|(_, rows)| rows.len() > 1).collect();
    several.sort_by(|a, b| a.0.cmp(b.0));
    for (key, rows) in several {
        let ids: Vec<&str> = rows.iter().map(|row| row.sandbox_id.as_str()).collect();
        for row in rows {
            found.push(Violation {
                check: Check::KeyHoldsSeveral,
                sandbox_id: Some(row.sandbox_id.clone()),
                holder: row.holder.clone(),
                detail: format!(
                    "allocation key {key:?} holds {} allocated sandboxes: {}",
                    rows.len(),
                    ids.join(", ")
                ),
            });
        }
    }
    if let Some(listing) = &facts.listing {
        let listed: HashSet<&str> = listing.ids.iter().map(String::as_str).collect();
        for row in allocated().filter(|row| !listed.contains(row.sandbox_id.as_str())) {
            found.push(Violation {
                check: Check::AllocatedMissingAtProvider,
                sandbox_id: Some(row.sandbox_id.clone()),
                holder: row.holder.clone(),
                detail: format!(
                    "allocated, but the provider's listing applied at {} does not contain it",
                    listing.taken_at
                ),
            });
        }
        for id in facts
            .deleted_ids
            .iter()
            .filter(|id| listed.contains(id.as_str()))
        {
            found.push(Violation {
                check: Check::DeletedStillListed,
                sandbox_id: Some(id.clone()),
                holder: None,
                detail: format!(
                    "the provider reported it deleted, but its listing applied at {} still contains it",
                    listing.taken_at
                ),
            });
        }
    }
    for row in &facts.held {
        match row.status {
            SandboxStatus::PendingDeletion => {
                let since = row.deletion_requested_at.unwrap_or(row.updated_at);
                let waited = now - since;
                if waited > rules.deletion_overdue_secs {
                    found.push(Violation {
                        check: Check::DeletionOverdue,
                        sandbox_id: Some(row.sandbox_id.clone()),
                        holder: row.holder.clone(),
                        detail: format!(
                            "pending deletion for {} minutes (since {since}){}",
                            waited / 60,
                            last_error(row)
                        ),
                    });
                }
            }
            SandboxStatus::DeletionFailed => found.push(Violation {
                check: Check::DeletionFailed,
                sandbox_id: Some(row.sandbox_id.clone()),
                holder: row.holder.clone(),
                detail: format!(
                    "deletion given up {} minutes ago after {} refusals{}",
                    (now - row.updated_at).max(0) / 60,
                    row.deletion_retry_count,
                    last_error(row)
                ),
            }),
            _ => {}
        }
    }
    found
}

fn last_error(row: &Sandbox) -> String {
    row.last_deletion_error
        .as_deref()
        .map(|error| format!("; last error: {error}"))
        .unwrap_or_default()
}

impl AuditReport {
    /// The report of `violations` found at `checked_at` in `duration_ms`: every check
    /// counted, the first [`KEPT_VIOLATIONS`] kept.
    pub fn new(checked_at: EpochSecs, duration_ms: u64, mut violations: Vec<Violation>) -> Self {
        let mut counts: BTreeMap<String, u64> = Check::ALL
            .iter()
            .map(|check| (check.as_str().to_owned(), 0))
            .collect();
        for violation in &violations {
            *counts
                .entry(violation.check.as_str().to_owned())
                .or_default() += 1;
        }
        violations.truncate(KEPT_VIOLATIONS);
        Self {
            checked_at,
            duration_ms,
            violations,
            counts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::tests::row;

    const RULES: AuditRules = AuditRules {
        deletion_overdue_secs: 3600,
    };

    fn sandbox(id: &str, status: SandboxStatus, holder: Option<&str>) -> Sandbox {
        let mut sandbox = row(status, holder);
        sandbox.sandbox_id = id.to_owned();
        sandbox.idempotency_key = holder.map(str::to_owned);
        sandbox
    }

    fn key(row: &Sandbox) -> Option<String> {
        row.holder.clone()
    }

    fn checks(violations: &[Violation]) -> Vec<(Check, Option<&str>)> {
        violations
            .iter()
            .map(|v| (v.check, v.sandbox_id.as_deref()))
            .collect()
    }

    #[test]
    fn each_check_finds_its_violation_and_only_it() {
        let mut overdue = sandbox("4", SandboxStatus::PendingDeletion, Some("stu-c"));
        overdue.deletion_requested_at = Some(EpochSecs::new(10_000 - 3601));
        let mut recent = sandbox("5", SandboxStatus::PendingDeletion, Some("stu-d"));
        recent.deletion_requested_at = Some(EpochSecs::new(10_000 - 3600));
        let mut failed = sandbox("6", SandboxStatus::DeletionFailed, Some("stu-e"));
        failed.last_deletion_error = Some("HTTP 400".into());
        let facts = AuditFacts {
            held: vec![
                sandbox("1", SandboxStatus::Allocated, Some("stu-a")),
                sandbox("2", SandboxStatus::Allocated, Some("stu-a")),
                sandbox("3", SandboxStatus::Allocated, Some("stu-b")),
                overdue,
                recent,
                failed,
            ],
            deleted_ids: vec!["7".into(), "8".into()],
            listing: Some(ListingSnapshot {
                taken_at: EpochSecs::new(9_000),
                ids: ["1", "2", "4", "5", "6", "7"].map(String::from).into(),
            }),
        };
        let found = audit(&facts, RULES, EpochSecs::new(10_000), key);
        assert_eq!(
            checks(&found),
            [
                (Check::KeyHoldsSeveral, Some("1")),
                (Check::KeyHoldsSeveral, Some("2")),
                (Check::AllocatedMissingAtProvider, Some("3")),
                (Check::DeletedStillListed, Some("7")),
                (Check::DeletionOverdue, Some("4")),
                (Check::DeletionFailed, Some("6")),
            ]
        );
        assert_eq!(found[0].holder.as_deref(), Some("stu-a"));
        assert!(
            found[0]
                .detail
                .contains("holds 2 allocated sandboxes: 1, 2")
        );
        assert!(found[5].detail.ends_with("last error: HTTP 400"));

        let report = AuditReport::new(EpochSecs::new(10_000), 5, found);
        assert_eq!(report.counts.len(), Check::ALL.len(), "every check counted");
        assert_eq!(report.counts["key_holds_several"], 2);
        assert_eq!(report.counts["deleted_still_listed"], 1);
    }

    #[test]
    fn without_a_listing_the_provider_checks_find_nothing_and_a_report_keeps_a_bounded_list() {
        let facts = AuditFacts {
            held: vec![sandbox("1", SandboxStatus::Allocated, Some("stu-a"))],
            deleted_ids: vec!["7".into()],
            listing: None,
        };
        assert!(audit(&facts, RULES, EpochSecs::new(10_000), key).is_empty());
        let many = vec![
            Violation {
                check: Check::DeletionFailed,
                sandbox_id: None,
                holder: None,
                detail: String::new(),
            };
            KEPT_VIOLATIONS + 5
        ];
        let report = AuditReport::new(EpochSecs::new(0), 0, many);
        assert_eq!(report.violations.len(), KEPT_VIOLATIONS);
        assert_eq!(
            report.counts["deletion_failed"],
            (KEPT_VIOLATIONS + 5) as u64
        );
        assert_eq!(report.counts["key_holds_several"], 0);
    }
}
