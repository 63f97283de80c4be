//! Cleanup: `pending_deletion` sandboxes are deleted at the provider, throttled, and become
//! `deleted` tombstones; failures follow contract §4.
//!
//! Rule: a transient failure (connection, timeout, 429, 5xx) never counts against the
//! sandbox — it is retried with a doubling backoff and only given up after
//! `DELETION_GIVE_UP_HOURS` of failing; a permanent refusal (another 4xx) counts, and
//! `DELETION_RETRY_MAX_ATTEMPTS` of them make it `deletion_failed`. An open circuit
//! breaker stops the run and marks nothing. Each row is claimed first, so two runners
//! never delete the same sandbox twice. When enabled, the NIOSXaaS pre-delete hook runs
//! first; in enforce mode its failure is decided by the same policy, and the account is
//! not deleted.

use std::time::{Duration, Instant};

use crate::domain::clock::Clock;
use crate::domain::{NiosxaasCleanup, Sandbox, SandboxId};
use crate::metrics::Metrics;
use crate::provider::niosxaas::{HookFailure, PreDeleteHook};
use crate::provider::{ProviderClient, ProviderError};
use crate::store::{DeletionOutcome, Store};

use super::{JobError, Trigger};

/// Longest backoff between two attempts.
const MAX_BACKOFF_SECS: i64 = 3600;
/// How long a runner's claim on a row lasts: far longer than one delete call.
const CLAIM_SECS: i64 = 300;

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

    /// What a failed deletion of `row` at `now` means for it.
    pub fn decide(&self, row: &Sandbox, error: &ProviderError, now: i64) -> DeletionOutcome {
        self.decide_described(row, error, error.to_string(), now)
    }

    /// [`Self::decide`], recording `message` as the row's deletion error.
    pub fn decide_described(
        &self,
        row: &Sandbox,
        error: &ProviderError,
        message: String,
        now: i64,
    ) -> DeletionOutcome {
        // A refused credential is our configuration, not the sandbox: like an outage, it
        // must not burn the pool, so it retries until the give-up deadline.
        let transient = error.is_transient() || matches!(error, ProviderError::Unauthorized(_));
        if transient {
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
            if let ProviderError::RateLimited {
                retry_after: Some(after),
            } = error
            {
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

/// The cleanup job's settings.
#[derive(Debug, Clone, Copy)]
pub struct CleanupSettings {
    /// `CLEANUP_BATCH_SIZE`.
    pub batch_size: usize,
    /// `CLEANUP_BATCH_DELAY_SEC`.
    pub batch_delay: Duration,
    /// `CLEANUP_PER_SANDBOX_DELAY_SEC`.
    pub per_sandbox_delay: Duration,
    /// Retries and tombstones.
    pub policy: DeletionPolicy,
}

/// What one cleanup run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupCounts {
    /// Sandboxes deleted at the provider.
    pub deleted: u64,
    /// Sandboxes whose deletion was given up (`deletion_failed`).
    pub failed: u64,
    /// Sandboxes whose deletion will be retried.
    pub retrying: u64,
    /// Sandboxes not tried because a circuit breaker is open.
    pub postponed: u64,
    /// Rows another runner had claimed (or with an unusable id).
    pub skipped: u64,
    /// Tombstones past their ttl, dropped.
    pub purged: u64,
}

/// What a cleanup run works with.
pub struct Cleanup<'a> {
    /// Where sandboxes are deleted.
    pub provider: &'a dyn ProviderClient,
    /// The NIOSXaaS pre-delete hook, when enabled.
    pub hook: Option<&'a PreDeleteHook>,
    /// The pool.
    pub store: &'a dyn Store,
    /// Where runs are counted.
    pub metrics: &'a Metrics,
    /// Batches, delays and the deletion policy.
    pub settings: &'a CleanupSettings,
    /// This instance's name on the claims it takes.
    pub holder: &'a str,
    /// The time claims, backoff and tombstones are reckoned in.
    pub clock: &'a dyn Clock,
}

impl Cleanup<'_> {
    /// One run. An admin's run tries every pending row now; a scheduled one respects each
    /// row's retry backoff.
    pub async fn run_once(&self, trigger: Trigger) -> Result<CleanupCounts, JobError> {
        let started = Instant::now();
        let result = self.delete_due(trigger == Trigger::Admin).await;
        let outcome = match &result {
            Ok(counts) if counts.postponed > 0 => "postponed",
            Ok(_) => "success",
            Err(_) => "error",
        };
        self.metrics
            .jobs
            .cleanup_total
            .with_label_values(&[outcome])
            .inc();
        self.metrics
            .jobs
            .cleanup_duration_seconds
            .observe(started.elapsed().as_secs_f64());
        result
    }

    async fn delete_due(&self, ignore_backoff: bool) -> Result<CleanupCounts, JobError> {
        let Self {
            provider,
            hook,
            store,
            metrics,
            settings,
            holder,
            clock,
        } = *self;
        let due = store.deletions_due(clock.now(), ignore_backoff).await?;
        let mut tally = CleanupCounts::default();
        let mut remaining = due.len() as u64;
        'batches: for (number, batch) in due.chunks(settings.batch_size.max(1)).enumerate() {
            if number > 0 {
                clock.sleep(settings.batch_delay).await;
            }
            for (position, row) in batch.iter().enumerate() {
                if position > 0 {
                    clock.sleep(settings.per_sandbox_delay).await;
                }
                remaining -= 1;
                let Ok(id) = SandboxId::parse("sandbox_id", &row.sandbox_id) else {
                    tally.skipped += 1;
                    continue;
                };
                let now = clock.now();
                let Some(row) = store
                    .claim_deletion(&id, holder, now, now + CLAIM_SECS)
                    .await?
                else {
                    tally.skipped += 1;
                    continue;
                };
                let (step, niosxaas) = attempt(provider, hook, settings, clock, &row).await;
                let outcome = match step {
                    Step::Finished(outcome) => outcome,
                    Step::Postponed => {
                        store
                            .finish_deletion(
                                &row,
                                holder,
                                DeletionOutcome::Released,
                                niosxaas,
                                clock.now(),
                            )
                            .await?;
                        tally.postponed += 1 + remaining;
                        break 'batches;
                    }
                };
                match &outcome {
                    DeletionOutcome::Deleted { .. } => {
                        tally.deleted += 1;
                        metrics.jobs.cleanup_deleted_total.inc();
                        tracing::info!(sandbox.id = %row.sandbox_id, "deleted at the provider");
                    }
                    DeletionOutcome::Failed { error, .. } => {
                        tally.failed += 1;
                        metrics.jobs.cleanup_failed_total.inc();
                        tracing::warn!(sandbox.id = %row.sandbox_id, error = %error, "deletion failed for good");
                    }
                    DeletionOutcome::Retry {
                        error,
                        next_attempt_at,
                        ..
                    } => {
                        tally.retrying += 1;
                        tracing::info!(sandbox.id = %row.sandbox_id, error = %error, next_attempt_at, "deletion will be retried");
                    }
                    DeletionOutcome::Released => {}
                }
                store
                    .finish_deletion(&row, holder, outcome, niosxaas, clock.now())
                    .await?;
            }
        }
        tally.purged = store.purge_tombstones(clock.now()).await?;
        Ok(tally)
    }
}

/// What became of one claimed row.
enum Step {
    /// The policy's verdict on it.
    Finished(DeletionOutcome),
    /// A circuit breaker is open: nothing was decided, and the rest of the run waits too.
    Postponed,
}

/// The pre-delete hook (when due), then the deletion at the provider; with the hook's
/// record to keep on the row.
async fn attempt(
    provider: &dyn ProviderClient,
    hook: Option<&PreDeleteHook>,
    settings: &CleanupSettings,
    clock: &dyn Clock,
    row: &Sandbox,
) -> (Step, Option<NiosxaasCleanup>) {
    let mut niosxaas = None;
    if let Some(hook) = hook.filter(|hook| hook.is_due(row)) {
        let (record, failure) = hook.run(row, clock.now()).await;
        match failure {
            None => niosxaas = Some(record),
            Some(failure) if hook.shadow_mode() => {
                tracing::warn!(sandbox.id = %row.sandbox_id, error = %failure, "NIOSXaaS shadow mode: the check failed; deleting anyway");
                niosxaas = Some(record);
            }
            // Enforce mode: the account still has its services, so it is not deleted yet.
            Some(HookFailure {
                error: ProviderError::CircuitOpen,
                ..
            }) => return (Step::Postponed, None),
            Some(failure) => {
                tracing::warn!(sandbox.id = %row.sandbox_id, error = %failure, "NIOSXaaS cleanup failed; the sandbox is not deleted yet");
                let outcome = settings.policy.decide_described(
                    row,
                    &failure.error,
                    failure.to_string(),
                    clock.now(),
                );
                return (Step::Finished(outcome), Some(record));
            }
        }
    }
    let step = match provider.delete_sandbox(&row.external_id).await {
        Ok(()) => Step::Finished(DeletionOutcome::Deleted {
            ttl: clock.now() + settings.policy.tombstone_ttl_secs,
        }),
        Err(ProviderError::CircuitOpen) => Step::Postponed,
        Err(err) => Step::Finished(settings.policy.decide(row, &err, clock.now())),
    };
    (step, niosxaas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ExternalId, NewSandbox, SandboxName};

    const POLICY: DeletionPolicy = DeletionPolicy {
        max_attempts: 3,
        backoff_base_secs: 60,
        give_up_secs: 24 * 3600,
        tombstone_ttl_secs: 86_400,
    };

    fn pending() -> Sandbox {
        let mut row = NewSandbox {
            sandbox_id: SandboxId::parse("i", "1").unwrap(),
            name: SandboxName::parse("n", "lab-1").unwrap(),
            external_id: ExternalId::parse("e", "identity/accounts/u").unwrap(),
            sfdc_account_id: None,
        }
        .into_available_row(0);
        row.status = crate::domain::SandboxStatus::PendingDeletion;
        row
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
        let down = ProviderError::Unavailable("503".into());
        for hour in 0..24 {
            let outcome = POLICY.decide(&row, &down, hour * 3600);
            assert!(
                matches!(outcome, DeletionOutcome::Retry { attempts: 0, .. }),
                "hour {hour}: {outcome:?}"
            );
            apply(&mut row, &outcome);
        }
        assert!(matches!(
            POLICY.decide(&row, &down, 24 * 3600),
            DeletionOutcome::Failed { attempts: 0, .. }
        ));
    }

    #[test]
    fn permanent_refusals_count_and_the_third_one_fails_the_sandbox() {
        let mut row = pending();
        let refused = ProviderError::Other("HTTP 400".into());
        for expected in 1..3 {
            let outcome = POLICY.decide(&row, &refused, 0);
            assert!(
                matches!(outcome, DeletionOutcome::Retry { attempts, .. } if attempts == expected),
                "{outcome:?}"
            );
            apply(&mut row, &outcome);
        }
        assert!(matches!(
            POLICY.decide(&row, &refused, 0),
            DeletionOutcome::Failed { attempts: 3, .. }
        ));
    }

    #[test]
    fn a_rate_limit_waits_at_least_as_long_as_the_provider_asks() {
        let limited = ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(900)),
        };
        assert!(matches!(
            POLICY.decide(&pending(), &limited, 0),
            DeletionOutcome::Retry {
                next_attempt_at: 900,
                ..
            }
        ));
    }
}
