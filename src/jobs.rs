//! Background jobs: provider sync, cleanup, auto-expiry, stale removal and the audit, each run by
//! one instance of a fleet at a time.
//!
//! Rule: a run first takes the job's lease in the store (a conditional write with an
//! expiry) and renews it while it works, so a second instance — or an admin trigger
//! elsewhere — is refused with `JOB_ALREADY_RUNNING` instead of running twice, and an
//! instance that dies loses its lease after `JOB_LEASE_SEC`. Each job's `run_once` is
//! plain async code that tests call directly.

pub mod audit;
pub mod cleanup;
pub mod expiry;
mod report;
pub mod reservations;
mod schedule;

pub use self::schedule::Fence;
pub mod config;
pub mod stale;
pub mod sync;
pub mod webhooks;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use self::cleanup::CleanupCounts;
use self::report::log_run;
pub use self::report::{
    AuditCounts, ExpiryCounts, HoldingCounts, JobName, JobReport, RunCounts, StaleCounts,
    SyncCounts, Trigger,
};
use crate::domain::LabPolicy;
use crate::domain::audit::AuditRules;
use crate::domain::clock::{SharedClock, SystemClock};
use crate::domain::lifecycle::SyncRules;
use crate::metrics::Metrics;
use crate::provider::niosxaas::PreDeleteHook;
use crate::provider::{ProviderClient, ProviderError};
use crate::store::{JobOutcome, JobRecord, LeaseOutcome, LeaseRequest, SharedStore, StoreError};

/// How often each job runs, and the expiry's grace.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// `SYNC_INTERVAL_SEC`.
    pub sync: Duration,
    /// `AUTO_EXPIRY_INTERVAL_SEC`.
    pub expiry: Duration,
    /// `LAB_DURATION_HOURS` and `GRACE_PERIOD_MINUTES`: when allocations expire.
    pub lab_policy: LabPolicy,
    /// `CLEANUP_INTERVAL_SEC`.
    pub cleanup: Duration,
    /// `AUTO_DELETE_STALE_INTERVAL_SEC`.
    pub stale: Duration,
    /// `AUTO_DELETE_STALE_GRACE_HOURS`: how long a row stays stale before it is removed.
    pub stale_grace: Duration,
    /// Throttling and retries of the cleanup.
    pub cleanup_settings: cleanup::CleanupSettings,
    /// How a sync applies a listing (`force` is set per run, by an admin).
    pub sync_rules: SyncRules,
    /// `AUDIT_INTERVAL_SEC`.
    pub audit: Duration,
    /// The auditor's thresholds.
    pub audit_rules: AuditRules,
    /// `RESERVATIONS_INTERVAL_SEC`.
    pub reservations: Duration,
    /// `RESERVATION_LEAD_MINUTES`, in seconds: how long before a class its sandboxes are held.
    pub reservation_lead_secs: i64,
}

/// Why a job run did not complete.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Another instance (or another run here) holds the lease.
    #[error("job {job} is already running on {instance}")]
    AlreadyRunning {
        /// The job.
        job: &'static str,
        /// Who runs it.
        instance: String,
    },
    /// No provider is configured (`CSP_API_TOKEN` unset).
    #[error("no provider is configured (CSP_API_TOKEN)")]
    NoProvider,
    /// The webhook dispatcher is not set up on these jobs.
    #[error("webhooks are not set up")]
    NoWebhooks,
    /// The provider failed; transient failures postpone the work.
    #[error("provider call failed")]
    Provider(#[from] ProviderError),
    /// The store failed.
    #[error("store failed")]
    Store(#[from] StoreError),
    /// A sync refused the provider's listing as unbelievable: nothing was changed.
    #[error(transparent)]
    ListingRefused(#[from] crate::domain::lifecycle::ListingRefused),
    /// A scheduled run found the job run (on some instance) less than an interval ago.
    #[error("job {job} ran less than an interval ago; next due at {due_at_ms} ms")]
    NotDue {
        /// The job.
        job: &'static str,
        /// When it falls due (epoch milliseconds).
        due_at_ms: crate::domain::time::EpochMillis,
    },
    /// The run lost its lease while it worked (another instance took it over, or the
    /// lease ran out while the store could not renew it): it stopped, and recorded nothing.
    #[error("job {job} lost its lease to {instance} and stopped")]
    LeaseLost {
        /// The job.
        job: &'static str,
        /// Who holds it now (`unknown` when the store could not say).
        instance: String,
    },
}

/// What the jobs need.
pub struct Jobs {
    store: SharedStore,
    provider: Option<Arc<dyn ProviderClient>>,
    pre_delete: Option<Arc<PreDeleteHook>>,
    metrics: Metrics,
    instance: String,
    lease: Duration,
    schedule: Schedule,
    clock: SharedClock,
    dispatch: Option<webhooks::Dispatch>,
    running: [tokio::sync::Mutex<()>; JobName::ALL.len()],
}

impl Jobs {
    /// Jobs on `store` and `provider` (none: the provider jobs are off), as `holder`.
    pub fn new(
        store: SharedStore,
        provider: Option<Arc<dyn ProviderClient>>,
        metrics: Metrics,
        instance: String,
        lease: Duration,
        schedule: Schedule,
    ) -> Self {
        Self {
            store,
            provider,
            pre_delete: None,
            metrics,
            instance,
            lease,
            schedule,
            clock: Arc::new(SystemClock),
            dispatch: None,
            running: Default::default(),
        }
    }

    /// Reads `clock` for leases, backoff, expiry and every run, instead of the system's.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Runs `hook` (the NIOSXaaS cleanup) before each deletion at the provider.
    pub fn with_pre_delete_hook(mut self, hook: Option<Arc<PreDeleteHook>>) -> Self {
        self.pre_delete = hook;
        self
    }

    /// Delivers webhooks with `dispatch` (without it the dispatcher is off).
    pub fn with_webhooks(mut self, dispatch: webhooks::Dispatch) -> Self {
        self.dispatch = Some(dispatch);
        self
    }

    /// This instance's name in leases.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn interval(&self, job: JobName) -> Duration {
        match job {
            JobName::Sync => self.schedule.sync,
            JobName::Cleanup => self.schedule.cleanup,
            JobName::Expiry => self.schedule.expiry,
            JobName::AutoDeleteStale => self.schedule.stale,
            JobName::Audit => self.schedule.audit,
            JobName::Reservations => self.schedule.reservations,
            JobName::Webhooks => self
                .dispatch
                .as_ref()
                .map_or(Duration::from_secs(1), |dispatch| dispatch.interval),
        }
    }

    fn provider(&self) -> Result<&dyn ProviderClient, JobError> {
        self.provider.as_deref().ok_or(JobError::NoProvider)
    }

    /// Syncs now, under the lease, as an admin asked. Refused if a sync runs here or
    /// elsewhere.
    pub async fn sync(&self) -> Result<JobReport<SyncCounts>, JobError> {
        self.sync_as(Trigger::Admin).await
    }

    /// Syncs now, as [`Self::sync`], applying the provider's listing even when it would
    /// mark more of the pool stale than `SYNC_MAX_STALE_FRACTION` allows.
    pub async fn force_sync(&self) -> Result<JobReport<SyncCounts>, JobError> {
        self.sync_as(Trigger::Forced).await
    }

    /// Cleans up now, as an admin asked: every pending row is tried regardless of backoff.
    pub async fn cleanup(&self) -> Result<JobReport<CleanupCounts>, JobError> {
        self.cleanup_as(Trigger::Admin).await
    }

    /// Releases ended allocations now, as an admin asked.
    pub async fn expire(&self) -> Result<JobReport<ExpiryCounts>, JobError> {
        self.expire_as(Trigger::Admin).await
    }

    /// Removes stale rows past their grace now.
    pub async fn remove_stale(&self) -> Result<JobReport<StaleCounts>, JobError> {
        self.remove_stale_as(Trigger::Admin).await
    }

    /// Audits now, as an admin asked; the report is kept for every instance.
    pub async fn audit(&self) -> Result<JobReport<AuditCounts>, JobError> {
        self.audit_as(Trigger::Admin).await
    }

    /// Holds and returns reservations' sandboxes now (after a reservation is made or
    /// deleted, so it need not wait for the schedule).
    pub async fn hold_reservations(&self) -> Result<JobReport<HoldingCounts>, JobError> {
        self.hold_reservations_as(Trigger::Admin).await
    }

    /// A scheduled run of `job`.
    async fn run_scheduled(&self, job: JobName) -> Result<(), JobError> {
        let trigger = Trigger::Scheduled;
        match job {
            JobName::Sync => self.sync_as(trigger).await.map(drop),
            JobName::Cleanup => self.cleanup_as(trigger).await.map(drop),
            JobName::Expiry => self.expire_as(trigger).await.map(drop),
            JobName::AutoDeleteStale => self.remove_stale_as(trigger).await.map(drop),
            JobName::Audit => self.audit_as(trigger).await.map(drop),
            JobName::Reservations => self.hold_reservations_as(trigger).await.map(drop),
            JobName::Webhooks => self.dispatch_webhooks_as(trigger).await.map(drop),
        }
    }

    async fn sync_as(&self, trigger: Trigger) -> Result<JobReport<SyncCounts>, JobError> {
        let rules = SyncRules {
            force: trigger == Trigger::Forced,
            ..self.schedule.sync_rules
        };
        self.leased(JobName::Sync, trigger, async |fence: &Fence| {
            let (summary, skipped) = sync::run_once(
                self.provider()?,
                &*self.store.lifecycle,
                &self.metrics,
                fence,
                rules,
                self.clock.now(),
            )
            .await?;
            Ok(SyncCounts { summary, skipped })
        })
        .await
    }

    async fn cleanup_as(&self, trigger: Trigger) -> Result<JobReport<CleanupCounts>, JobError> {
        self.leased(JobName::Cleanup, trigger, async |fence: &Fence| {
            let cleanup = cleanup::Cleanup {
                provider: self.provider()?,
                hook: self.pre_delete.as_deref(),
                store: &*self.store.lifecycle,
                metrics: &self.metrics,
                settings: &self.schedule.cleanup_settings,
                runner: &self.instance,
                clock: &*self.clock,
                fence,
            };
            cleanup.run_once(trigger).await
        })
        .await
    }

    async fn expire_as(&self, trigger: Trigger) -> Result<JobReport<ExpiryCounts>, JobError> {
        self.leased(JobName::Expiry, trigger, async |_: &Fence| {
            let expired = expiry::run_once(
                &*self.store.lifecycle,
                &self.metrics,
                self.schedule.lab_policy,
                self.clock.now(),
            )
            .await?;
            Ok(ExpiryCounts { expired })
        })
        .await
    }

    async fn remove_stale_as(&self, trigger: Trigger) -> Result<JobReport<StaleCounts>, JobError> {
        self.leased(JobName::AutoDeleteStale, trigger, async |_: &Fence| {
            let deleted = stale::run_once(
                &*self.store.lifecycle,
                &self.metrics,
                self.schedule.stale_grace,
                self.clock.now(),
            )
            .await?;
            Ok(StaleCounts { deleted })
        })
        .await
    }

    async fn hold_reservations_as(
        &self,
        trigger: Trigger,
    ) -> Result<JobReport<HoldingCounts>, JobError> {
        self.leased(JobName::Reservations, trigger, async |fence: &Fence| {
            reservations::run_once(
                &*self.store.reservations,
                &self.metrics,
                fence,
                self.schedule.reservation_lead_secs,
                self.clock.now(),
            )
            .await
        })
        .await
    }

    /// Fans out and delivers webhook events now.
    pub async fn dispatch_webhooks(&self) -> Result<JobReport<webhooks::WebhookCounts>, JobError> {
        self.dispatch_webhooks_as(Trigger::Admin).await
    }

    async fn dispatch_webhooks_as(
        &self,
        trigger: Trigger,
    ) -> Result<JobReport<webhooks::WebhookCounts>, JobError> {
        let dispatch = self.dispatch.as_ref().ok_or(JobError::NoWebhooks)?;
        self.leased(JobName::Webhooks, trigger, async |fence: &Fence| {
            let stores = webhooks::Stores {
                webhooks: Arc::clone(&self.store.webhooks),
                outbox: Arc::clone(&self.store.outbox),
                analytics: Arc::clone(&self.store.analytics),
            };
            webhooks::run_once(
                stores,
                dispatch,
                &self.metrics,
                fence,
                Arc::clone(&self.clock),
            )
            .await
        })
        .await
    }

    async fn audit_as(&self, trigger: Trigger) -> Result<JobReport<AuditCounts>, JobError> {
        self.leased(JobName::Audit, trigger, async |fence: &Fence| {
            let previous = self.store.lifecycle.last_audit().await.ok().flatten();
            let report = audit::run_once(
                &*self.store.lifecycle,
                self.schedule.audit_rules,
                fence,
                self.clock.now(),
            )
            .await?;
            if let Some(event) =
                crate::domain::webhooks::outbox::audit_event(previous.as_ref(), &report)
            {
                self.announce(&event).await;
            }
            Ok(AuditCounts {
                violations: audit::counts_of(&report),
            })
        })
        .await
    }

    /// Runs `work` for `job` under the job's lease, renewing it while the work runs, and
    /// records the run. A scheduled run first checks that the job is due fleet-wide.
    async fn leased<C: RunCounts>(
        &self,
        job: JobName,
        trigger: Trigger,
        work: impl AsyncFnOnce(&Fence) -> Result<C, JobError>,
    ) -> Result<JobReport<C>, JobError> {
        let Ok(_local) = self.running[job as usize].try_lock() else {
            return Err(JobError::AlreadyRunning {
                job: job.as_str(),
                instance: self.instance.clone(),
            });
        };
        let taken_at = self.clock.now_ms();
        let lease = self
            .store
            .jobs
            .acquire_lease(LeaseRequest {
                job: job.as_str(),
                instance: &self.instance,
                now: taken_at,
                ttl: self.lease,
            })
            .await
            .map_err(JobError::from);
        match lease {
            Err(err) => {
                log_run(job, JobOutcome::Failed, Duration::ZERO, &Err(&err));
                return Err(err);
            }
            Ok(LeaseOutcome::Acquired) => {}
            Ok(LeaseOutcome::Held { instance, .. }) => {
                return Err(JobError::AlreadyRunning {
                    job: job.as_str(),
                    instance,
                });
            }
        }
        if trigger == Trigger::Scheduled {
            self.skip_unless_due(job, taken_at).await?;
        }
        let started_at = self.clock.now();
        let started = Instant::now();
        let fence = Fence::until(job, Arc::clone(&self.clock), taken_at.after(self.lease));
        let renewing = self.renew_while_running(job, taken_at, self.lease, &fence);
        let result = tokio::select! {
            result = async {
                fence.check()?;
                work(&fence).await
            } => result,
            instance = renewing => {
                // Fenced: stop now, and leave the job's record to the run that holds it.
                let lost = JobError::LeaseLost { job: job.as_str(), instance };
                log_run(job, JobOutcome::Failed, started.elapsed(), &Err(&lost));
                return Err(lost);
            }
        };
        let duration = started.elapsed();
        let (outcome, counts) = match &result {
            Ok(counts) => (JobOutcome::Completed, counts.named()),
            Err(JobError::Provider(err)) if err.is_transient() => {
                (JobOutcome::Postponed, BTreeMap::new())
            }
            Err(JobError::ListingRefused(_)) => (JobOutcome::Refused, BTreeMap::new()),
            Err(_) => (JobOutcome::Failed, BTreeMap::new()),
        };
        // What the job's last run was, for the provider's events (read before this run's
        // record replaces it; only the jobs that call the provider need it).
        let previous = if job.needs_provider() {
            match self.store.jobs.job_records().await {
                Ok(records) => records
                    .into_iter()
                    .find(|r| r.job == job.as_str())
                    .and_then(|r| r.last_outcome),
                Err(_) => None,
            }
        } else {
            None
        };
        let record = JobRecord {
            job: job.as_str().to_owned(),
            last_started_at: Some(started_at),
            last_finished_at: Some(self.clock.now()),
            last_outcome: Some(outcome.as_str().to_owned()),
            last_counts: counts.clone(),
            next_run_at: Some(self.clock.now().after(self.interval(job))),
            ..JobRecord::default()
        };
        if let Err(err) = self.store.jobs.finish_job_run(record, &self.instance).await {
            tracing::warn!(job = job.as_str(), error = %crate::telemetry::error_chain(&err), "could not record the job run");
        }
        log_run(job, outcome, duration, &result.as_ref().map(|_| &counts));
        let error = result
            .as_ref()
            .err()
            .map(|err| crate::telemetry::error_chain(err));
        for event in crate::domain::webhooks::outbox::job_events(
            job.as_str(),
            job.needs_provider(),
            previous.as_deref(),
            outcome.as_str(),
            error.as_deref(),
            self.clock.now(),
        ) {
            self.announce(&event).await;
        }
        result.map(|counts| JobReport { counts, duration })
    }

    /// Puts `event` in the webhook outbox; a store that cannot take it is logged, and the
    /// run's own outcome stands.
    async fn announce(&self, event: &crate::domain::webhooks::outbox::OutboxEvent) {
        if let Err(err) = self.store.outbox.announce(event).await {
            tracing::warn!(event = event.kind.as_str(), error = %crate::telemetry::error_chain(&err), "a webhook event could not be put in the outbox");
        }
    }

    /// Every job's lease and last run, plus whether it is enabled here and its interval.
    pub async fn records(
        &self,
    ) -> Result<Vec<(JobName, bool, Duration, Option<JobRecord>)>, StoreError> {
        let records = self.store.jobs.job_records().await?;
        Ok(JobName::ALL
            .into_iter()
            .map(|job| {
                let enabled = (!job.needs_provider() || self.provider.is_some())
                    && (job != JobName::Webhooks || self.dispatch.is_some());
                let record = records.iter().find(|r| r.job == job.as_str()).cloned();
                (job, enabled, self.interval(job), record)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SyncSummary;

    #[test]
    fn a_runs_counts_keep_the_names_job_records_and_the_api_show() {
        let sync = SyncCounts {
            summary: SyncSummary {
                synced: 3,
                added: 1,
                restored: 1,
                untouched: 2,
                marked_stale: 4,
                kept_out: 6,
                unverified: 7,
            },
            skipped: 5,
        };
        let names: Vec<(String, u64)> = sync.named().into_iter().collect();
        assert_eq!(
            names,
            [
                ("added".to_owned(), 1),
                ("kept_out".to_owned(), 6),
                ("marked_stale".to_owned(), 4),
                ("restored".to_owned(), 1),
                ("skipped".to_owned(), 5),
                ("synced".to_owned(), 3),
                ("untouched".to_owned(), 2),
                ("unverified".to_owned(), 7),
            ]
        );
        let cleanup = CleanupCounts {
            deleted: 2,
            purged: 1,
            ..Default::default()
        };
        assert_eq!(cleanup.named()["deleted"], 2);
        assert_eq!(cleanup.named().len(), 6);
        assert_eq!(ExpiryCounts { expired: 7 }.named()["expired"], 7);
        assert_eq!(StaleCounts { deleted: 8 }.named()["deleted"], 8);
    }
}
