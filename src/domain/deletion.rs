//! How a claimed deletion ends, and the row it leaves (one rule for both stores).

mod retry;

pub use self::retry::{AttemptFailure, DeletionPolicy};
use super::lifecycle::{Change, Expect};
use super::{NiosxaasCleanup, Sandbox, SandboxStatus};
use crate::domain::time::EpochSecs;

/// Recording a claimed deletion's outcome: the row [`finished_row`] leaves, applied only
/// while the row is still pending and claimed by `holder` (a late runner never overwrites
/// a newer result). One rule for both stores.
pub fn finished_change(
    claimed: &Sandbox,
    runner: &str,
    outcome: &DeletionOutcome,
    niosxaas: Option<NiosxaasCleanup>,
    now: EpochSecs,
) -> Change {
    Change {
        by_expiry: false,
        row: finished_row(claimed, outcome, niosxaas, now),
        expect: Expect {
            status: SandboxStatus::PendingDeletion,
            held_by: None,
            claimed_by: Some(runner.to_owned()),
            allocated_at: None,
            reserved_for: None,
        },
    }
}

/// The row a claimed deletion leaves behind: claim released, `outcome` applied and the
/// hook's result (if it ran this time) recorded.
fn finished_row(
    claimed: &Sandbox,
    outcome: &DeletionOutcome,
    niosxaas: Option<NiosxaasCleanup>,
    now: EpochSecs,
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
        ttl: EpochSecs,
    },
    /// Try again at `next_attempt_at`.
    Retry {
        /// When.
        next_attempt_at: EpochSecs,
        /// New `deletion_retry_count` (permanent refusals so far).
        attempts: u32,
        /// New count of transient failures in a row.
        transient_failures: u32,
        /// Start of the current transient streak, if one is running.
        first_transient_failure_at: Option<EpochSecs>,
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
    use crate::domain::lifecycle::tests::row;

    fn claimed() -> Sandbox {
        let mut claimed = row(SandboxStatus::PendingDeletion, None);
        claimed.deletion_claimed_by = Some("runner-a".into());
        claimed.deletion_claimed_until = Some(EpochSecs::new(900));
        claimed.last_deletion_error = Some("HTTP 503".into());
        claimed
    }

    #[test]
    fn each_outcome_leaves_its_row_and_only_the_claims_holder_may_write_it() {
        let retry = DeletionOutcome::Retry {
            next_attempt_at: EpochSecs::new(1_060),
            attempts: 1,
            transient_failures: 0,
            first_transient_failure_at: None,
            error: "HTTP 400".into(),
        };
        let failed = DeletionOutcome::Failed {
            attempts: 3,
            error: "HTTP 400".into(),
        };
        let table = [
            (
                DeletionOutcome::Deleted {
                    ttl: EpochSecs::new(5_000),
                },
                SandboxStatus::Deleted,
                None,
            ),
            (retry, SandboxStatus::PendingDeletion, Some("HTTP 400")),
            (failed, SandboxStatus::DeletionFailed, Some("HTTP 400")),
            (
                DeletionOutcome::Released,
                SandboxStatus::PendingDeletion,
                Some("HTTP 503"),
            ),
        ];
        for (outcome, status, error) in table {
            let change = finished_change(
                &claimed(),
                "runner-a",
                &outcome,
                None,
                EpochSecs::new(1_000),
            );
            let after = &change.row;
            assert_eq!(after.status, status, "{outcome:?}");
            assert_eq!(after.last_deletion_error.as_deref(), error, "{outcome:?}");
            assert_eq!(
                (after.deletion_claimed_by.as_deref(), after.updated_at),
                (None, EpochSecs::new(1_000)),
                "the claim is released: {outcome:?}"
            );
            assert_eq!(
                (change.expect.status, change.expect.claimed_by.as_deref()),
                (SandboxStatus::PendingDeletion, Some("runner-a")),
                "a late runner never overwrites a newer result: {outcome:?}"
            );
            assert_eq!(outcome.is_final(), status != SandboxStatus::PendingDeletion);
        }
        let deleted = finished_change(
            &claimed(),
            "runner-a",
            &DeletionOutcome::Deleted {
                ttl: EpochSecs::new(5_000),
            },
            None,
            EpochSecs::new(1_000),
        )
        .row;
        assert_eq!(
            (deleted.deleted_at, deleted.ttl),
            (Some(EpochSecs::new(1_000)), Some(EpochSecs::new(5_000)))
        );
    }
}
