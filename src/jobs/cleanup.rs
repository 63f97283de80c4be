//! Cleanup: `pending_deletion` sandboxes are deleted at the provider, throttled, and become
//! `deleted` tombstones; failures follow these rules.
//!
//! Rule: what a failure means for the sandbox is `domain::deletion::DeletionPolicy`'s to
//! decide (a transient failure never counts against it; refusals do, up to
//! `DELETION_RETRY_MAX_ATTEMPTS`); the provider says which kind it met
//! (`ProviderError::attempt_failure`). An open circuit breaker stops the run and marks
//! nothing. Each row is claimed first, so two runners
//! never delete the same sandbox twice. When enabled, the NIOSXaaS pre-delete hook runs
//! first; in enforce mode its failure is decided by the same policy, and the account is
//! not deleted.

use std::time::{Duration, Instant};

use super::{Fence, JobError, Trigger};
use crate::domain::clock::Clock;
use crate::domain::deletion::DeletionPolicy;
use crate::domain::{NiosxaasCleanup, Sandbox, SandboxId};
use crate::metrics::Metrics;
use crate::provider::niosxaas::{HookFailure, PreDeleteHook};
use crate::provider::{ProviderClient, ProviderError};
use crate::store::{DeletionClaim, DeletionOutcome, FinishedDeletion, LifecycleStore};

/// How long a runner's claim on a row lasts: far longer than one delete call.
const CLAIM_SECS: i64 = 300;

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
    pub store: &'a dyn LifecycleStore,
    /// Where runs are counted.
    pub metrics: &'a Metrics,
    /// Batches, delays and the deletion policy.
    pub settings: &'a CleanupSettings,
    /// This instance's name on the claims it takes.
    pub runner: &'a str,
    /// The time claims, backoff and tombstones are reckoned in.
    pub clock: &'a dyn Clock,
    /// The run's hold on its lease, asked before each sandbox.
    pub fence: &'a Fence,
}

impl Cleanup<'_> {
    /// One run. An admin's run tries every pending row now; a scheduled one respects each
    /// row's retry backoff.
    pub async fn run_once(&self, trigger: Trigger) -> Result<CleanupCounts, JobError> {
        let started = Instant::now();
        let result = self.delete_due(trigger != Trigger::Scheduled).await;
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
            runner,
            clock,
            fence,
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
                fence.check()?;
                let Ok(id) = SandboxId::parse("sandbox_id", &row.sandbox_id) else {
                    tally.skipped += 1;
                    continue;
                };
                let now = clock.now();
                let Some(row) = store
                    .claim_deletion(DeletionClaim {
                        id: &id,
                        runner,
                        now,
                        until: now + CLAIM_SECS,
                    })
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
                            .finish_deletion(FinishedDeletion {
                                claimed: &row,
                                runner,
                                outcome: DeletionOutcome::Released,
                                niosxaas,
                                now: clock.now(),
                            })
                            .await?;
                        tally.postponed += 1 + remaining;
                        break 'batches;
                    }
                };
                match &outcome {
                    DeletionOutcome::Deleted { .. } => {
                        tally.deleted += 1;
                        metrics.jobs.cleanup_deleted_total.inc();
                        if let Some(released) = row.deletion_requested_at {
                            let seconds = (clock.now() - released).max(0);
                            metrics
                                .lab_slo
                                .cleaned_up(row.lab.as_deref(), seconds as f64);
                        }
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
                        tracing::info!(sandbox.id = %row.sandbox_id, error = %error, next_attempt_at = next_attempt_at.get(), "deletion will be retried");
                    }
                    DeletionOutcome::Released => {}
                }
                store
                    .finish_deletion(FinishedDeletion {
                        claimed: &row,
                        runner,
                        outcome,
                        niosxaas,
                        now: clock.now(),
                    })
                    .await?;
            }
        }
        fence.check()?;
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
                let outcome = settings.policy.decide(
                    row,
                    failure.error.attempt_failure(),
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
        Err(err) => Step::Finished(settings.policy.decide(
            row,
            err.attempt_failure(),
            err.to_string(),
            clock.now(),
        )),
    };
    (step, niosxaas)
}
