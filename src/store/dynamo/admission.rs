//! The queue in front of the table: a burst waits here, in memory and in arrival order,
//! instead of piling onto DynamoDB until everything times out.
//!
//! Rule: an operation that students or bulk jobs generate (an allocation, a release, a
//! sandbox read, one row of an import or sync) takes a [`Turn`] for its whole duration,
//! so the first students to arrive are the first served. There are as many turns as the
//! adaptive limit allows (see `limit.rs`); the queue is tokio's fair semaphore. Waiting ends
//! with a turn, with the operation's deadline (503, nothing was sent), or at once when the
//! table goes down (503).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntGauge};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::health::Health;
use super::limit::{AdaptiveLimit, Sample};
use crate::store::StoreError;

/// The adaptive, fair queue.
pub(super) struct Gate {
    semaphore: Arc<Semaphore>,
    control: Mutex<Control>,
    waiting: AtomicUsize,
    peak_waiting: AtomicUsize,
    metrics: GateMetrics,
}

/// The gate's Prometheus series (registered by the store).
#[derive(Clone)]
pub(super) struct GateMetrics {
    /// Operations waiting for a turn.
    pub(super) queue_depth: IntGauge,
    /// Operations holding a turn.
    pub(super) in_flight: IntGauge,
    /// The current limit.
    pub(super) limit: IntGauge,
    /// Time operations spent queued.
    pub(super) queue_wait: Histogram,
}

#[derive(Debug)]
struct Control {
    limit: AdaptiveLimit,
    /// Permits the semaphore was created with or given since, minus those forgotten.
    permits: usize,
}

/// One operation's right to talk to the table; given back when dropped.
pub(super) struct Turn {
    _permit: Option<OwnedSemaphorePermit>,
    in_flight: IntGauge,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

/// Counts a waiter for as long as it waits, however the wait ends.
struct Waiting<'a>(&'a Gate);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.queue_depth.dec();
    }
}

impl Gate {
    /// A gate whose limit adapts up to `ceiling` (`DDB_MAX_CONCURRENCY`), shrinking when
    /// calls take longer than `latency_target` (`DDB_LATENCY_TARGET_MS`).
    pub(super) fn new(ceiling: usize, latency_target: Duration, metrics: GateMetrics) -> Self {
        let limit = AdaptiveLimit::new(ceiling, latency_target);
        let permits = limit.limit();
        metrics
            .limit
            .set(i64::try_from(permits).unwrap_or(i64::MAX));
        Self {
            semaphore: Arc::new(Semaphore::new(permits)),
            control: Mutex::new(Control { limit, permits }),
            waiting: AtomicUsize::new(0),
            peak_waiting: AtomicUsize::new(0),
            metrics,
        }
    }

    /// Waits for a turn until `deadline`, or until the table goes down.
    pub(super) async fn enter(
        &self,
        deadline: Instant,
        health: &Health,
    ) -> Result<Turn, StoreError> {
        let depth = self.waiting.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak_waiting.fetch_max(depth, Ordering::AcqRel);
        self.metrics.queue_depth.inc();
        let waiting = Waiting(self);
        let queued = Instant::now();
        let permit = tokio::select! {
            biased;
            permit = Arc::clone(&self.semaphore).acquire_owned() => {
                permit.map_err(|err| StoreError::Internal(Box::new(err)))?
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                return Err(StoreError::Unavailable(
                    "the request's deadline (ALLOCATE_DEADLINE_SEC) ran out while it was queued for DynamoDB".into(),
                ));
            }
            () = health.went_down() => {
                return Err(StoreError::Unavailable("DynamoDB is not answering".into()));
            }
        };
        drop(waiting);
        self.metrics
            .queue_wait
            .observe(queued.elapsed().as_secs_f64());
        self.metrics.in_flight.inc();
        Ok(Turn {
            _permit: Some(permit),
            in_flight: self.metrics.in_flight.clone(),
        })
    }

    /// A turn outside the queue, for when the table is down and nothing should wait.
    pub(super) fn bypass(&self) -> Turn {
        self.metrics.in_flight.inc();
        Turn {
            _permit: None,
            in_flight: self.metrics.in_flight.clone(),
        }
    }

    /// Feeds one finished call's latency to the limit and resizes the queue's capacity.
    pub(super) fn observe(&self, latency: Duration, overloaded: bool) {
        let mut control = self.control.lock().unwrap_or_else(PoisonError::into_inner);
        let in_flight = control
            .permits
            .saturating_sub(self.semaphore.available_permits());
        let sample = Sample {
            latency,
            overloaded,
            in_flight,
        };
        let Some(limit) = control.limit.observe(sample, Instant::now()) else {
            return;
        };
        if limit > control.permits {
            self.semaphore.add_permits(limit - control.permits);
            control.permits = limit;
        } else if limit < control.permits {
            // Only idle permits can be taken back now; the rest go on later windows.
            control.permits -= self.semaphore.forget_permits(control.permits - limit);
        }
        self.metrics
            .limit
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    /// The current limit.
    pub(super) fn limit(&self) -> usize {
        self.control
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .limit
            .limit()
    }

    /// The most operations ever seen waiting at once.
    pub(super) fn peak_queue_depth(&self) -> usize {
        self.peak_waiting.load(Ordering::Acquire)
    }
}
