//! The lab rules: allocate, look up and release a holder's sandbox, counting each outcome.
//!
//! Rule: the store decides atomically; these functions build its requests, check
//! ownership for reads, and record the documented metrics (docs/metrics.md), so handlers stay thin.

pub mod waiting;

use std::time::Instant;

use crate::domain::time::EpochSecs;
use crate::domain::{HolderKey, IdempotencyKey, LabName, NamePrefix, Sandbox, SandboxId};
use crate::metrics::Metrics;
use crate::store::{
    Allocation, AllocationKey, AllocationRequest, AllocationStore, Outcome, Refusal,
    ReleaseOutcome, ReleaseRequest, StoreError,
};

/// What an allocation request ended as; also the `outcome` label of `broker_allocate_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocateOutcome {
    /// A new sandbox was allocated.
    Success,
    /// The key's existing sandbox was returned.
    Idempotent,
    /// Nothing matching was available.
    NoSandboxes,
    /// The store failed.
    Error,
}

impl AllocateOutcome {
    /// The metric label and log `outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Idempotent => "idempotent",
            Self::NoSandboxes => "no_sandboxes",
            Self::Error => "error",
        }
    }

    fn of(result: &Outcome<Allocation>) -> Self {
        match result {
            Ok(Ok(allocation)) if allocation.newly_allocated => Self::Success,
            Ok(Ok(_)) => Self::Idempotent,
            Ok(Err(_)) => Self::NoSandboxes,
            Err(_) => Self::Error,
        }
    }
}

/// Everything an allocation request carries, already validated.
#[derive(Debug, Clone)]
pub struct AllocateInput {
    /// The student asking.
    pub holder: HolderKey,
    /// `X-Instruqt-Track-ID`.
    pub lab: Option<LabName>,
    /// `X-Sandbox-Name-Prefix`.
    pub name_prefix: Option<NamePrefix>,
    /// `Idempotency-Key`.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl AllocateInput {
    /// The store request at `now` with the configured lab duration.
    pub fn into_request(self, lab_duration_hours: u32, now: EpochSecs) -> AllocationRequest {
        AllocationRequest {
            key: AllocationKey::new(self.holder, self.idempotency_key),
            lab: self.lab,
            name_prefix: self.name_prefix,
            lab_duration_hours,
            now,
            token: None,
            reservation: None,
        }
    }
}

/// Allocates (or replays) and records `broker_allocate_*` and the allocation latency.
pub async fn allocate(
    store: &dyn AllocationStore,
    metrics: &Metrics,
    request: AllocationRequest,
) -> (AllocateOutcome, Outcome<Allocation>) {
    let started = Instant::now();
    let result = store.allocate(request).await;
    counted(metrics, result, started)
}

/// [`allocate`] for a request that waits and tries again: a try that finds nothing is
/// not counted (the request is counted once, when it is served or finally refused).
pub async fn try_again(
    store: &dyn AllocationStore,
    metrics: &Metrics,
    request: AllocationRequest,
) -> (AllocateOutcome, Outcome<Allocation>) {
    let started = Instant::now();
    let result = store.allocate(request).await;
    if matches!(result, Ok(Err(Refusal::NoneAvailable))) {
        return (AllocateOutcome::NoSandboxes, result);
    }
    counted(metrics, result, started)
}

/// Counts a waiting request refused in the end (its tries were not counted, see
/// [`try_again`]): once, as any 409.
pub fn refused_after_waiting(metrics: &Metrics) {
    metrics
        .lab
        .allocate_total
        .with_label_values(&[AllocateOutcome::NoSandboxes.as_str()])
        .inc();
}

/// Counts an allocation that failed before it reached the store's allocation (the
/// cordons it must check could not be read), as any other failed allocation; hands the
/// error back.
pub fn failed_early(metrics: &Metrics, err: StoreError) -> StoreError {
    match counted(metrics, Err(err), Instant::now()) {
        (_, Err(err)) => err,
        (_, Ok(_)) => StoreError::Internal("a failed allocation was counted as done".into()),
    }
}

/// Records `broker_allocate_*` and the latency of `result`, begun at `started`.
fn counted(
    metrics: &Metrics,
    result: Outcome<Allocation>,
    started: Instant,
) -> (AllocateOutcome, Outcome<Allocation>) {
    let outcome = AllocateOutcome::of(&result);
    metrics
        .lab
        .allocate_total
        .with_label_values(&[outcome.as_str()])
        .inc();
    if outcome == AllocateOutcome::Idempotent {
        metrics.lab.allocate_idempotent_hits_total.inc();
    }
    if let Ok(Ok(allocation)) = &result {
        metrics
            .lab
            .allocate_conflicts_total
            .inc_by(u64::from(allocation.conflicts));
    }
    metrics
        .lab
        .allocation_latency_seconds
        .with_label_values(&[outcome.as_str()])
        .observe(started.elapsed().as_secs_f64());
    (outcome, result)
}

/// The sandbox `id` if `student` holds it (under the lab token `token`, when the request
/// came with one); refused when it does not exist or another holds it.
pub async fn owned_sandbox(
    store: &dyn AllocationStore,
    id: &SandboxId,
    holder: &HolderKey,
    token: Option<&str>,
) -> Outcome<Sandbox> {
    Ok(match store.get(id).await? {
        None => Err(Refusal::SandboxNotFound),
        Some(sandbox) if sandbox.is_held_by(holder) && sandbox.allocated_under(token) => {
            Ok(sandbox)
        }
        Some(_) => Err(Refusal::NotHolder),
    })
}

/// The `outcome` of `broker_deletion_marked_total`, in the Python service's values: a
/// repeat is `not_allocated` (the sandbox is no longer allocated), another student's
/// sandbox `not_owner`.
pub fn release_outcome(result: &Outcome<ReleaseOutcome>) -> &'static str {
    match result {
        Ok(Ok(release)) if release.newly_released => "success",
        Ok(Ok(_)) => "not_allocated",
        Ok(Err(Refusal::SandboxNotFound)) => "not_found",
        Ok(Err(_)) => "not_owner",
        Err(_) => "error",
    }
}

/// Releases the student's sandbox and records `broker_deletion_marked_total{outcome}`.
pub async fn release(
    store: &dyn AllocationStore,
    metrics: &Metrics,
    request: ReleaseRequest,
) -> Outcome<ReleaseOutcome> {
    let result = store.release(request).await;
    let outcome = release_outcome(&result);
    metrics
        .lab
        .deletion_marked_total
        .with_label_values(&[outcome])
        .inc();
    result
}
