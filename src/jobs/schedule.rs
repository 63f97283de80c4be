//! The fleet's schedule and a run's hold on its lease: when each instance wakes for each
//! job, whether a scheduled run is due (judged under the job's lease from the shared job
//! record), and the renewals that fence a run which lost its lease.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{JobError, JobName, Jobs};
use crate::domain::clock::{SharedClock, millis};
use crate::domain::lease;
use crate::domain::time::EpochMillis;
use crate::store::{JobRecord, LeaseOutcome, LeaseRequest};

/// Delay of a job's first scheduled run after start (or its interval, if shorter).
const FIRST_RUN_DELAY: Duration = Duration::from_secs(10);
/// The most a scheduled wake-up is moved at random, so a fleet's instances fall out of step.
const MAX_JITTER_MS: i64 = 1_000;

/// A run's hold on its lease as the run itself knows it: held until the last take or
/// renewal plus a lease, unless a renewal found another holder. The jobs ask it before
/// each write ([`Fence::check`]), so a run that lost its lease — taken over, or run out
/// while the store could not renew it (a long pause) — stops before its next write, not
/// only at its next renewal.
pub struct Fence {
    job: &'static str,
    clock: SharedClock,
    held_until_ms: AtomicI64,
    lost: AtomicBool,
}

impl Fence {
    /// The fence of a run that took `job`'s lease until `held_until`.
    pub(super) fn until(job: JobName, clock: SharedClock, held_until: EpochMillis) -> Self {
        Self {
            job: job.as_str(),
            clock,
            held_until_ms: AtomicI64::new(held_until.get()),
            lost: AtomicBool::new(false),
        }
    }

    /// The fence of a run without a lease (`Jobs::run_once`, stepped by tests): never lost.
    pub fn unbounded(job: JobName, clock: SharedClock) -> Self {
        Self::until(job, clock, EpochMillis::new(i64::MAX))
    }

    /// `Ok` while the run still holds its lease; [`JobError::LeaseLost`] once it does not.
    pub fn check(&self) -> Result<(), JobError> {
        let held = lease::is_running(
            EpochMillis::new(self.held_until_ms.load(Ordering::Acquire)),
            self.clock.now_ms(),
        );
        if held && !self.lost.load(Ordering::Acquire) {
            return Ok(());
        }
        Err(JobError::LeaseLost {
            job: self.job,
            instance: "another instance (or none: the lease ran out)".to_owned(),
        })
    }
}

impl Jobs {
    /// A scheduled run that took the lease but finds the job finished (on any instance)
    /// less than an interval ago gives the lease back, its record unchanged, and says when
    /// the job falls due ([`lease::scheduled_run_due_at`]). Checked under the lease, so two
    /// instances waking together never both run it.
    pub(super) async fn skip_unless_due(
        &self,
        job: JobName,
        now: EpochMillis,
    ) -> Result<(), JobError> {
        let record = self
            .store
            .jobs
            .job_records()
            .await?
            .into_iter()
            .find(|record| record.job == job.as_str());
        let last_finished_at = record.as_ref().and_then(|record| record.last_finished_at);
        let interval_ms = millis(self.interval(job));
        let Some(due_at_ms) = lease::scheduled_run_due_at(last_finished_at, interval_ms, now)
        else {
            return Ok(());
        };
        let unchanged = record.unwrap_or_else(|| JobRecord {
            job: job.as_str().to_owned(),
            ..JobRecord::default()
        });
        self.store
            .jobs
            .finish_job_run(unchanged, &self.instance)
            .await?;
        Err(JobError::NotDue {
            job: job.as_str(),
            due_at_ms,
        })
    }

    /// Runs every enabled job on its interval until `shutdown` fires.
    pub fn spawn_schedules(self: &Arc<Self>, shutdown: &CancellationToken) {
        for job in JobName::ALL {
            if job.needs_provider() && self.provider.is_none() {
                tracing::info!(job = job.as_str(), "job is off: CSP_API_TOKEN is not set");
                continue;
            }
            if job == JobName::Webhooks && self.dispatch.is_none() {
                continue;
            }
            let jobs = Arc::clone(self);
            let shutdown = shutdown.clone();
            // The first run comes soon after start (so a fresh deployment fills its pool),
            // not at once (so start-up and an admin's first trigger don't collide); then
            // an interval after each run, never as a burst of catch-ups. Each instance
            // wakes up to a tenth of the interval (at most a second) off its due time, so a
            // fleet started together falls out of step; whichever wakes first runs the job,
            // and the others find it done (`skip_unless_due`) and sleep until it is due.
            let interval_ms = millis(jobs.interval(job));
            let jitter = move || rand::random_range(0..=(interval_ms / 10).min(MAX_JITTER_MS));
            let first_delay_ms = millis(jobs.interval(job).min(FIRST_RUN_DELAY));
            let mut next = jobs.clock.now_ms() + (first_delay_ms - jitter()).max(0);
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = jobs.clock.sleep_until(next) => {}
                    }
                    next = match jobs.run_scheduled(job).await {
                        Err(JobError::NotDue { due_at_ms, .. }) => due_at_ms,
                        // Due again an interval after this run (`skip_unless_due` counts
                        // from the end of the second it finished in). A run that did not
                        // complete has already logged its error line.
                        _ => jobs.clock.now_ms() + interval_ms + 1000,
                    } + jitter();
                }
            });
        }
    }

    /// Renews the `lease_ms` lease while it is polled: a third of a lease after the last
    /// renewal, the first a third after `taken_at_ms` (when the lease was taken), on the
    /// jobs' clock. Ends — fencing the run — when another holder has the lease, or when the
    /// lease ran out while the store could not renew it (someone else may hold it now);
    /// returns who holds it.
    pub(super) async fn renew_while_running(
        &self,
        job: JobName,
        taken_at: EpochMillis,
        lease: Duration,
        fence: &Fence,
    ) -> String {
        let mut renew_at = taken_at.after(lease / 3);
        loop {
            self.clock.sleep_until(renew_at).await;
            let now = self.clock.now_ms();
            renew_at = now.after(lease / 3);
            match self
                .store
                .jobs
                .acquire_lease(LeaseRequest {
                    job: job.as_str(),
                    instance: &self.instance,
                    now,
                    ttl: lease,
                })
                .await
            {
                Ok(LeaseOutcome::Acquired) => {
                    let held_until = now.after(lease);
                    fence
                        .held_until_ms
                        .store(held_until.get(), Ordering::Release);
                }
                Ok(LeaseOutcome::Held { instance, .. }) => {
                    fence.lost.store(true, Ordering::Release);
                    return instance;
                }
                Err(err) => {
                    tracing::warn!(job = job.as_str(), error = %crate::telemetry::error_chain(&err), "could not renew the job lease");
                    let held_until_ms = fence.held_until_ms.load(Ordering::Acquire);
                    if !lease::is_running(EpochMillis::new(held_until_ms), now) {
                        return "unknown".to_owned();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::clock::{Clock, ManualClock};

    #[test]
    fn a_fence_holds_until_its_lease_runs_out_or_is_lost() {
        let clock = Arc::new(ManualClock::starting_now());
        let start = clock.now_ms();
        let fence = Fence::until(JobName::Sync, clock.clone(), start + 1_000);
        assert!(fence.check().is_ok());
        clock.advance(Duration::from_millis(999));
        assert!(fence.check().is_ok());
        clock.advance(Duration::from_millis(1));
        assert!(
            matches!(fence.check(), Err(JobError::LeaseLost { .. })),
            "ran out"
        );
        fence
            .held_until_ms
            .store((start + 60_000).get(), Ordering::Release);
        assert!(fence.check().is_ok(), "renewed");
        fence.lost.store(true, Ordering::Release);
        assert!(fence.check().is_err(), "taken over");
        assert!(Fence::unbounded(JobName::Sync, clock).check().is_ok());
    }
}
