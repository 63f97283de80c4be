//! Per-lab service levels: time to sandbox (waiting included), 409s, and release to
//! deletion at the provider, per lab, with a bounded `lab` label.
//!
//! Rule: a lab gets its own label while it is among the `LAB_METRICS_MAX` labs whose
//! students allocated most recently; a new lab takes the place (and the series) of the one
//! seen longest ago. A cleanup of a lab not among them is observed as `other`, and a request
//! without a lab as `none`. This instance also keeps each tracked lab's last
//! [`SAMPLES_KEPT`] times to sandbox and its 409 count, for `GET /v1/admin/tracks`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Registry};

use super::counter_vec;

/// Times to sandbox kept per lab for the percentiles of `/v1/admin/tracks`.
const SAMPLES_KEPT: usize = 1000;
/// The label of a request without a lab.
const NO_LAB: &str = "none";
/// The label of a lab outside the most recent ones.
const OTHER: &str = "other";
/// Time to sandbox, in seconds: from a few milliseconds to a full minute's wait.
const TIME_TO_SANDBOX_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Release to deletion at the provider, in seconds: a minute to a day.
const CLEANUP_BUCKETS: &[f64] = &[
    60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21_600.0, 86_400.0,
];

#[derive(Default)]
struct Seen {
    last: u64,
    samples: VecDeque<f64>,
    exhausted: u64,
}

#[derive(Default)]
struct Labs {
    tick: u64,
    seen: HashMap<String, Seen>,
}

/// One lab's service levels as this instance saw them.
#[derive(Debug, Clone, PartialEq)]
pub struct LabLevels {
    /// The lab.
    pub lab: String,
    /// Median, 95th and 99th percentile of its last times to sandbox, in seconds.
    pub time_to_sandbox: Option<[f64; 3]>,
    /// Its 409s since this instance started (or since it last became tracked).
    pub exhausted: u64,
}

/// The per-lab series and what this instance keeps of them.
#[derive(Clone)]
pub struct LabSlo {
    max: Arc<Mutex<usize>>,
    labs: Arc<Mutex<Labs>>,
    time_to_sandbox: HistogramVec,
    exhausted: IntCounterVec,
    cleanup: HistogramVec,
}

impl LabSlo {
    /// Registers the series in `r`, tracking 50 labs until told otherwise.
    pub(super) fn register(r: &Registry) -> prometheus::Result<Self> {
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let metric = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                &["lab"],
            )?;
            r.register(Box::new(metric.clone()))?;
            Ok::<_, prometheus::Error>(metric)
        };
        Ok(Self {
            max: Arc::new(Mutex::new(50)),
            labs: Arc::default(),
            time_to_sandbox: histogram(
                "broker_lab_time_to_sandbox_seconds",
                "Time from an allocation request to its sandbox, waiting included, by lab",
                TIME_TO_SANDBOX_BUCKETS,
            )?,
            exhausted: counter_vec(
                r,
                "broker_lab_exhausted_total",
                "Allocation requests answered 409 (nothing available), by lab",
                &["lab"],
            )?,
            cleanup: histogram(
                "broker_lab_cleanup_seconds",
                "Time from a sandbox's release to its deletion at the provider, by lab",
                CLEANUP_BUCKETS,
            )?,
        })
    }

    /// `LAB_METRICS_MAX`: labs with a label of their own.
    pub fn set_max_labs(&self, max: usize) {
        *self.max.lock().unwrap_or_else(PoisonError::into_inner) = max.max(1);
    }

    /// The label `lab` is counted under now that its students allocate: tracking it,
    /// and letting go of the lab seen longest ago when too many are tracked.
    fn admit(&self, labs: &mut Labs, lab: Option<&str>) -> String {
        let Some(lab) = lab else {
            return NO_LAB.to_owned();
        };
        labs.tick += 1;
        let tick = labs.tick;
        if let Some(seen) = labs.seen.get_mut(lab) {
            seen.last = tick;
            return lab.to_owned();
        }
        let max = *self.max.lock().unwrap_or_else(PoisonError::into_inner);
        while labs.seen.len() >= max {
            let Some(oldest) = labs
                .seen
                .iter()
                .min_by_key(|(_, seen)| seen.last)
                .map(|(name, _)| name.clone())
            else {
                break;
            };
            labs.seen.remove(&oldest);
            let _ = self.time_to_sandbox.remove_label_values(&[&oldest]);
            let _ = self.exhausted.remove_label_values(&[&oldest]);
            let _ = self.cleanup.remove_label_values(&[&oldest]);
        }
        labs.seen.insert(
            lab.to_owned(),
            Seen {
                last: tick,
                ..Seen::default()
            },
        );
        lab.to_owned()
    }

    /// A request of `lab` got its sandbox after `seconds`.
    pub fn allocated(&self, lab: Option<&str>, seconds: f64) {
        let mut labs = self.labs.lock().unwrap_or_else(PoisonError::into_inner);
        let label = self.admit(&mut labs, lab);
        if let Some(seen) = labs.seen.get_mut(&label) {
            if seen.samples.len() == SAMPLES_KEPT {
                seen.samples.pop_front();
            }
            seen.samples.push_back(seconds);
        }
        self.time_to_sandbox
            .with_label_values(&[&label])
            .observe(seconds);
    }

    /// A request of `lab` was answered 409.
    pub fn exhausted(&self, lab: Option<&str>) {
        let mut labs = self.labs.lock().unwrap_or_else(PoisonError::into_inner);
        let label = self.admit(&mut labs, lab);
        if let Some(seen) = labs.seen.get_mut(&label) {
            seen.exhausted += 1;
        }
        self.exhausted.with_label_values(&[&label]).inc();
    }

    /// A sandbox of `lab` was deleted at the provider `seconds` after its release.
    pub fn cleaned_up(&self, lab: Option<&str>, seconds: f64) {
        let labs = self.labs.lock().unwrap_or_else(PoisonError::into_inner);
        let label = match lab {
            None => NO_LAB,
            Some(lab) if labs.seen.contains_key(lab) => lab,
            Some(_) => OTHER,
        };
        self.cleanup.with_label_values(&[label]).observe(seconds);
    }

    /// Every tracked lab's levels.
    pub fn levels(&self) -> Vec<LabLevels> {
        let labs = self.labs.lock().unwrap_or_else(PoisonError::into_inner);
        labs.seen
            .iter()
            .map(|(lab, seen)| {
                let mut sorted: Vec<f64> = seen.samples.iter().copied().collect();
                sorted.sort_by(f64::total_cmp);
                let at = |p: f64| {
                    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
                    sorted[rank]
                };
                LabLevels {
                    lab: lab.clone(),
                    time_to_sandbox: (!sorted.is_empty()).then(|| [at(0.50), at(0.95), at(0.99)]),
                    exhausted: seen.exhausted,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_recent_labs_keep_their_label_and_the_rest_fold_away() {
        let slo = LabSlo::register(&Registry::new()).unwrap();
        slo.set_max_labs(2);
        slo.allocated(Some("a"), 0.1);
        slo.allocated(Some("b"), 0.2);
        slo.exhausted(Some("a"));
        slo.allocated(Some("c"), 0.3); // b was seen longest ago: it goes
        let mut labs: Vec<String> = slo.levels().into_iter().map(|l| l.lab).collect();
        labs.sort();
        assert_eq!(labs, ["a", "c"]);
        assert!(
            slo.time_to_sandbox
                .get_metric_with_label_values(&["a"])
                .is_ok()
        );
        slo.cleaned_up(Some("b"), 60.0);
        assert_eq!(
            slo.cleanup.with_label_values(&[OTHER]).get_sample_count(),
            1,
            "a lab no longer tracked is other"
        );
        slo.allocated(None, 0.5);
        assert_eq!(
            slo.time_to_sandbox
                .with_label_values(&[NO_LAB])
                .get_sample_count(),
            1
        );
        let a = slo.levels().into_iter().find(|l| l.lab == "a").unwrap();
        assert_eq!((a.exhausted, a.time_to_sandbox), (1, Some([0.1, 0.1, 0.1])));
    }
}
