//! What a failed deletion attempt means for its sandbox (docs/api.md, *Outbound calls* and cleanup), decided without I/O.
//!
//! Rule: a transient failure never counts against the sandbox — it is retried with a
//! doubling backoff (at least as long as the provider asked) and given up only after
//! `DELETION_GIVE_UP_HOURS` of failing; a refusal counts, and
//! `DELETION_RETRY_MAX_ATTEMPTS` of them make it `deletion_failed`.

use std::time::Duration;

use super::DeletionOutcome;
use crate::domain::Sandbox;
use crate::domain::time::EpochSecs;

/// Longest backoff between two attempts.
const MAX_BACKOFF_SECS: i64 = 3600;

/// A failed deletion attempt, as the retry rules see it (the provider says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptFailure {
    /// Not the sandbox's fault (an outage, a timeout, a rate limit, a refused
    /// credential): retried, for at least `retry_after` when the provider asked for it.
    Transient {
        /// The provider's requested wait, if any.
        retry_after: Option<Duration>,
    },
    /// The provider refused this sandbox: counts as an attempt.
    Refused,
}

/// How failures are retried, and how long tombstones stay.
#[derive(Debug, Clone, Copy)]
pub struct DeletionPolicy {
    /// `DELETION_RETRY_MAX_ATTEMPTS`.
    pub max_attempts: u32,
    /// `DELETION_RETRY_BACKOFF_SEC`.
    pub backoff_base_secs: i64,
    /// `DELETION_GIVE_UP_HOURS`, in seconds.
    pub give_up_secs: i64,
    /// `DELETED_TTL_DAYS`, in seconds.
    pub tombstone_ttl_secs: i64,
}

impl DeletionPolicy {
    /// The backoff before try number `tries + 1`: base × 2^(tries−1), at most an hour.
    pub fn backoff(&self, tries: u32) -> i64 {
        let doublings = tries.saturating_sub(1).min(20);
        self.backoff_base_secs
            .saturating_mul(1_i64 << doublings)
            .min(MAX_BACKOFF_SECS)
    }

    /// What a deletion attempt on `row` that failed at `now` means for it; `message`
    /// becomes the row's deletion error.
    pub fn decide(
        &self,
        row: &Sandbox,
        failure: AttemptFailure,
        message: String,
        now: EpochSecs,
    ) -> DeletionOutcome {
        if let AttemptFailure::Transient { retry_after } = failure {
            let first = row.first_deletion_failure_at.unwrap_or(now);
            if now - first >= self.give_up_secs {
                return DeletionOutcome::Failed {
                    attempts: row.deletion_retry_count,
                    error: format!(
                        "still failing after {} hours: {message}",
                        self.give_up_secs / 3600
                    ),
                };
            }
            let tries = row.deletion_transient_failures + 1;
            let mut wait = self.backoff(tries);
            if let Some(after) = retry_after {
                wait = wait.max(i64::try_from(after.as_secs()).unwrap_or(MAX_BACKOFF_SECS));
            }
            return DeletionOutcome::Retry {
                next_attempt_at: now + wait,
                attempts: row.deletion_retry_count,
                transient_failures: tries,
                first_transient_failure_at: Some(first),
                error: message,
            };
        }
        let attempts = row.deletion_retry_count + 1;
        if attempts >= self.max_attempts {
            return DeletionOutcome::Failed {
                attempts,
                error: message,
            };
        }
        DeletionOutcome::Retry {
            next_attempt_at: now + self.backoff(attempts),
            attempts,
            transient_failures: 0,
            first_transient_failure_at: None,
            error: message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SandboxStatus;

    const POLICY: DeletionPolicy = DeletionPolicy {
        max_attempts: 3,
        backoff_base_secs: 60,
        give_up_secs: 24 * 3600,
        tombstone_ttl_secs: 86_400,
    };

    /// A released row, from the lifecycle tests' one row builder.
    fn pending() -> Sandbox {
        crate::domain::lifecycle::tests::row(SandboxStatus::PendingDeletion, None)
    }

    fn apply(row: &mut Sandbox, outcome: &DeletionOutcome) {
        if let DeletionOutcome::Retry {
            attempts,
            transient_failures,
            first_transient_failure_at,
            ..
        } = outcome
        {
            row.deletion_retry_count = *attempts;
            row.deletion_transient_failures = *transient_failures;
            row.first_deletion_failure_at = *first_transient_failure_at;
        }
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let waits: Vec<i64> = (1..=8).map(|n| POLICY.backoff(n)).collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
    }

    #[test]
    fn an_outage_never_counts_as_an_attempt_and_gives_up_only_after_the_deadline() {
        let mut row = pending();
        let down = AttemptFailure::Transient { retry_after: None };
        for hour in 0..24 {
            let outcome = POLICY.decide(&row, down, "failed".into(), EpochSecs::new(hour * 3600));
            assert!(
                matches!(outcome, DeletionOutcome::Retry { attempts: 0, .. }),
                "hour {hour}: {outcome:?}"
            );
            apply(&mut row, &outcome);
        }
        assert!(matches!(
            POLICY.decide(&row, down, "failed".into(), EpochSecs::new(24 * 3600)),
            DeletionOutcome::Failed { attempts: 0, .. }
        ));
    }

    #[test]
    fn permanent_refusals_count_and_the_third_one_fails_the_sandbox() {
        let mut row = pending();
        let refused = AttemptFailure::Refused;
        for expected in 1..3 {
            let outcome = POLICY.decide(&row, refused, "failed".into(), EpochSecs::new(0));
            assert!(
                matches!(outcome, DeletionOutcome::Retry { attempts, .. } if attempts == expected),
                "{outcome:?}"
            );
            apply(&mut row, &outcome);
        }
        assert!(matches!(
            POLICY.decide(&row, refused, "failed".into(), EpochSecs::new(0)),
            DeletionOutcome::Failed { attempts: 3, .. }
        ));
    }

    #[test]
    fn a_rate_limit_waits_at_least_as_long_as_the_provider_asks() {
        let limited = AttemptFailure::Transient {
            retry_after: Some(Duration::from_secs(900)),
        };
        assert!(matches!(
            POLICY.decide(&pending(), limited, "failed".into(), EpochSecs::new(0)),
            DeletionOutcome::Retry {
                next_attempt_at,
                ..
            } if next_attempt_at == EpochSecs::new(900)
        ));
    }
}
