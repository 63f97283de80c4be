//! Lab usage: per-lab counts and hold times, allocations and releases over time, and
//! lab-duration statistics, all folded from each row's [`AllocationFacts`]. Both stores
//! hand over the same facts, so every number here is computed once, in one place.

use super::{NiosxaasCleanup, Sandbox, SandboxStatus, ValidationError};
use crate::domain::time::EpochSecs;

/// What one sandbox row says about its allocation: all usage analytics read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationFacts {
    /// The lab it was allocated for.
    pub lab: Option<String>,
    /// Its status.
    pub status: SandboxStatus,
    /// Epoch seconds it was allocated.
    pub allocated_at: Option<i64>,
    /// Epoch seconds its owner (or expiry) released it.
    pub released_at: Option<i64>,
    /// Its name (what a name prefix selects).
    pub name: String,
}

impl AllocationFacts {
    /// The facts of `row`, or `None` when it carries neither a lab nor an allocation time
    /// (a sandbox never handed out counts nowhere in usage).
    pub fn of(row: &Sandbox) -> Option<Self> {
        (row.lab.is_some() || row.allocated_at.is_some()).then(|| Self {
            lab: row.lab.clone(),
            status: row.status,
            allocated_at: row.allocated_at.map(EpochSecs::get),
            released_at: row.deletion_requested_at.map(EpochSecs::get),
            name: row.name.clone(),
        })
    }

    /// Seconds the sandbox was held, once it was allocated and released (never negative,
    /// whatever clock skew wrote the two times).
    pub fn held_seconds(&self) -> Option<u64> {
        let (from, to) = (self.allocated_at?, self.released_at?);
        Some(u64::try_from(to.saturating_sub(from)).unwrap_or(0))
    }
}

/// Per-lab counts over rows that carry a `track_name`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabStats {
    /// The lab slug.
    pub lab: String,
    /// Rows of this lab now `allocated`.
    pub allocated: u64,
    /// Rows of this lab now `pending_deletion`.
    pub pending_deletion: u64,
    /// Rows of this lab now `deleted`.
    pub deleted: u64,
    /// Every row of this lab.
    pub total: u64,
    /// Rows of this lab its students (or expiry) released, whatever happened after.
    pub released: u64,
    /// Seconds those released rows were held, summed.
    pub held_seconds_total: u64,
}

impl LabStats {
    /// The mean hold time of the lab's released sandboxes, if any was released.
    pub fn mean_held_seconds(&self) -> Option<u64> {
        (self.released > 0).then(|| self.held_seconds_total / self.released)
    }
}

/// Per-lab counts tallied row by row.
#[derive(Debug, Default)]
pub struct LabTally(std::collections::BTreeMap<String, LabStats>);

impl LabTally {
    /// Counts one row; rows without a lab are not a lab's.
    pub fn count(&mut self, facts: &AllocationFacts) {
        let Some(name) = &facts.lab else {
            return;
        };
        let lab = self.0.entry(name.clone()).or_insert_with(|| LabStats {
            lab: name.clone(),
            allocated: 0,
            pending_deletion: 0,
            deleted: 0,
            total: 0,
            released: 0,
            held_seconds_total: 0,
        });
        lab.total += 1;
        match facts.status {
            SandboxStatus::Allocated => lab.allocated += 1,
            SandboxStatus::PendingDeletion => lab.pending_deletion += 1,
            SandboxStatus::Deleted => lab.deleted += 1,
            _ => {}
        }
        if let Some(held) = facts.held_seconds() {
            lab.released += 1;
            lab.held_seconds_total += held;
        }
    }

    /// The labs in name order.
    pub fn into_stats(self) -> Vec<LabStats> {
        self.0.into_values().collect()
    }
}

/// Per-lab stats of `facts`, in lab-name order.
pub fn lab_stats(facts: &[AllocationFacts]) -> Vec<LabStats> {
    let mut tally = LabTally::default();
    facts.iter().for_each(|f| tally.count(f));
    tally.into_stats()
}

/// Longest window a usage series covers: 30 days.
pub const MAX_WINDOW_HOURS: u32 = 720;
/// Most buckets one series holds, so an answer stays small.
pub const MAX_BUCKETS: u32 = 1000;

/// The time a usage series covers: `buckets` buckets of `bucket_secs`, the last one
/// holding `now`, the first starting at least the asked hours before it. Bucket edges are multiples of the bucket size, so two refreshes a few
/// seconds apart draw the same bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageWindow {
    /// Epoch seconds the first bucket starts.
    pub start: i64,
    /// Seconds per bucket.
    pub bucket_secs: i64,
    /// How many buckets.
    pub buckets: u32,
}

impl UsageWindow {
    /// The window of at least `hours` hours in buckets of `bucket_minutes`, ending with
    /// the bucket that holds `now`.
    pub fn ending_now(
        now: EpochSecs,
        hours: u32,
        bucket_minutes: u32,
    ) -> Result<Self, ValidationError> {
        if !(1..=MAX_WINDOW_HOURS).contains(&hours) {
            return Err(ValidationError::new(
                "hours",
                format!("must be an integer from 1 to {MAX_WINDOW_HOURS}"),
            ));
        }
        if !(1..=1440).contains(&bucket_minutes) {
            return Err(ValidationError::new(
                "bucket_minutes",
                "must be an integer from 1 to 1440",
            ));
        }
        // One bucket more than the hours need: the current one is partial, and the window
        // still reaches `hours` back from `now`.
        let buckets = (hours * 60).div_ceil(bucket_minutes) + 1;
        if buckets > MAX_BUCKETS {
            return Err(ValidationError::new(
                "bucket_minutes",
                format!("makes {buckets} buckets; at most {MAX_BUCKETS} fit one answer"),
            ));
        }
        let bucket_secs = i64::from(bucket_minutes) * 60;
        let current = now.get().div_euclid(bucket_secs) * bucket_secs;
        Ok(Self {
            start: current - (i64::from(buckets) - 1) * bucket_secs,
            bucket_secs,
            buckets,
        })
    }

    /// Epoch seconds the window ends (exclusive): the end of the current bucket.
    pub fn end(&self) -> i64 {
        self.start + i64::from(self.buckets) * self.bucket_secs
    }

    /// The bucket holding `at`, if the window covers it.
    fn bucket_of(&self, at: i64) -> Option<usize> {
        (self.start..self.end())
            .contains(&at)
            .then(|| usize::try_from((at - self.start) / self.bucket_secs).unwrap_or(0))
    }
}

/// Hold-time statistics of a set of released sandboxes (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DurationStats {
    /// How many.
    pub count: u64,
    /// Mean seconds (0 when none).
    pub mean_seconds: u64,
    /// Median seconds.
    pub p50_seconds: u64,
    /// 90th percentile seconds.
    pub p90_seconds: u64,
    /// Longest seconds.
    pub max_seconds: u64,
}

impl DurationStats {
    /// The stats of `seconds` (any order).
    pub fn of(mut seconds: Vec<u64>) -> Self {
        seconds.sort_unstable();
        let Some(&max_seconds) = seconds.last() else {
            return Self::default();
        };
        let count = seconds.len();
        let rank = |p: usize| seconds[(count * p).div_ceil(100).saturating_sub(1)];
        Self {
            count: count as u64,
            mean_seconds: seconds.iter().sum::<u64>() / count as u64,
            p50_seconds: rank(50),
            p90_seconds: rank(90),
            max_seconds,
        }
    }
}

/// Allocations and releases per bucket of a window, and how long the sandboxes released
/// in it were held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSeries {
    /// The window.
    pub window: UsageWindow,
    /// Allocations per bucket.
    pub allocated: Vec<u64>,
    /// Releases per bucket.
    pub released: Vec<u64>,
    /// Hold times of the sandboxes released in the window.
    pub lab_duration: DurationStats,
    /// Sandboxes allocated now.
    pub held_now: u64,
}

/// The usage series of `facts` over `window`.
pub fn usage_series(facts: &[AllocationFacts], window: UsageWindow) -> UsageSeries {
    let buckets = usize::try_from(window.buckets).unwrap_or(0);
    let mut allocated = vec![0; buckets];
    let mut released = vec![0; buckets];
    let mut held = Vec::new();
    let mut held_now = 0;
    for row in facts {
        if let Some(i) = row.allocated_at.and_then(|at| window.bucket_of(at)) {
            allocated[i] += 1;
        }
        if let Some(i) = row.released_at.and_then(|at| window.bucket_of(at)) {
            released[i] += 1;
            held.extend(row.held_seconds());
        }
        if row.status == SandboxStatus::Allocated {
            held_now += 1;
        }
    }
    UsageSeries {
        window,
        allocated,
        released,
        lab_duration: DurationStats::of(held),
        held_now,
    }
}

/// How the NIOSXaaS pre-delete hook's finished runs ended, counted from their records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NiosxaasTally {
    /// Runs that removed the account's matching services.
    pub cleaned: u64,
    /// Runs that deleted nothing: no service matched, or shadow mode only looked.
    pub skipped: u64,
    /// Runs that failed (the reason is on the record).
    pub failed: u64,
}

impl NiosxaasTally {
    /// Counts one run. A failure counts as failed whatever else the record says; a run
    /// that deleted nothing as skipped.
    pub fn count(&mut self, cleanup: &NiosxaasCleanup) {
        if cleanup
            .niosxaas_cleanup_failed_reason
            .as_deref()
            .is_some_and(|reason| !reason.is_empty())
        {
            self.failed += 1;
        } else if cleanup.niosxaas_cleanup_skipped || cleanup.niosxaas_cleaned_at.is_none() {
            self.skipped += 1;
        } else {
            self.cleaned += 1;
        }
    }
}

/// How long the allocation rate of a forecast looks back.
pub const FORECAST_WINDOW_SECS: i64 = 15 * 60;

/// Allocations per second of sandboxes named `prefix…` over the [`FORECAST_WINDOW_SECS`]
/// before `now`, from the handed-out rows' facts.
pub fn allocation_rate(facts: &[AllocationFacts], prefix: &str, now: EpochSecs) -> f64 {
    let since = now.get() - FORECAST_WINDOW_SECS;
    let allocated = facts
        .iter()
        .filter(|fact| fact.name.starts_with(prefix))
        .filter(|fact| {
            fact.allocated_at
                .is_some_and(|at| at > since && at <= now.get())
        })
        .count();
    allocated as f64 / FORECAST_WINDOW_SECS as f64
}

/// Seconds until `available` sandboxes are gone at `rate` a second: infinite while none
/// are being taken.
pub fn time_to_empty(available: u64, rate: f64) -> f64 {
    if rate > 0.0 {
        available as f64 / rate
    } else {
        f64::INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forecast_divides_what_is_left_by_the_last_quarter_hours_rate() {
        let now = EpochSecs::new(10_000);
        let mut rows = vec![
            facts("lab", SandboxStatus::Allocated, 10_000 - 60, None),
            facts(
                "lab",
                SandboxStatus::PendingDeletion,
                10_000 - 899,
                Some(9_999),
            ),
            facts("lab", SandboxStatus::Allocated, 10_000 - 901, None),
            facts("aws", SandboxStatus::Allocated, 10_000 - 60, None),
        ];
        rows[0].name = "lab-7".into();
        let rate = allocation_rate(&rows, "lab-", now);
        assert!(
            (rate - 2.0 / 900.0).abs() < 1e-12,
            "two in the window: {rate}"
        );
        assert!((time_to_empty(30, rate) - 13_500.0).abs() < 1e-6);
        assert_eq!(time_to_empty(30, 0.0), f64::INFINITY);
        assert_eq!(allocation_rate(&rows, "nios-", now), 0.0);
    }

    fn facts(lab: &str, status: SandboxStatus, at: i64, released: Option<i64>) -> AllocationFacts {
        AllocationFacts {
            lab: Some(lab.into()),
            status,
            allocated_at: Some(at),
            released_at: released,
            name: format!("{lab}-1"),
        }
    }

    #[test]
    fn tracks_count_statuses_releases_and_hold_time() {
        let rows = [
            facts("a", SandboxStatus::Allocated, 100, None),
            facts("a", SandboxStatus::PendingDeletion, 100, Some(400)),
            facts("a", SandboxStatus::Deleted, 100, Some(200)),
            facts("b", SandboxStatus::DeletionFailed, 50, Some(40)),
            AllocationFacts {
                lab: None,
                status: SandboxStatus::Allocated,
                allocated_at: Some(1),
                released_at: None,
                name: "x-1".into(),
            },
        ];
        let stats = lab_stats(&rows);
        assert_eq!(stats.len(), 2);
        let a = &stats[0];
        assert_eq!(
            (a.lab.as_str(), a.allocated, a.pending_deletion),
            ("a", 1, 1)
        );
        assert_eq!((a.deleted, a.total, a.released), (1, 3, 2));
        assert_eq!(
            (a.held_seconds_total, a.mean_held_seconds()),
            (400, Some(200))
        );
        // A release stamped before its allocation (clock skew) counts as held 0 s.
        let b = &stats[1];
        assert_eq!((b.total, b.released, b.held_seconds_total), (1, 1, 0));
    }

    #[test]
    fn windows_align_to_bucket_edges_and_end_with_the_current_bucket() {
        let window = UsageWindow::ending_now(EpochSecs::new(10_000), 1, 15).unwrap();
        assert_eq!((window.bucket_secs, window.buckets), (900, 5));
        assert_eq!(window.end(), 10_800);
        assert_eq!(window.start, 6_300);
        assert!(window.start <= 10_000 - 3_600);
        assert_eq!(window.bucket_of(6_300), Some(0));
        assert_eq!(window.bucket_of(10_799), Some(4));
        assert_eq!(window.bucket_of(6_299), None);
        assert_eq!(window.bucket_of(10_800), None);
        // A bucket size that does not divide the window rounds the window up.
        assert_eq!(
            UsageWindow::ending_now(EpochSecs::new(0), 1, 25)
                .unwrap()
                .buckets,
            4
        );
    }

    #[test]
    fn windows_refuse_out_of_range_values() {
        for (hours, minutes) in [(0, 60), (721, 60), (24, 0), (24, 1441), (720, 1)] {
            assert!(
                UsageWindow::ending_now(EpochSecs::new(0), hours, minutes).is_err(),
                "{hours} h / {minutes} min"
            );
        }
        assert!(UsageWindow::ending_now(EpochSecs::new(0), 720, 60).is_ok());
    }

    #[test]
    fn a_series_buckets_allocations_and_releases_and_times_releases_in_the_window() {
        let window = UsageWindow::ending_now(EpochSecs::new(20_000), 2, 60).unwrap(); // [10800, 21600)
        let rows = [
            facts("a", SandboxStatus::Allocated, 10_800, None),
            facts("a", SandboxStatus::Deleted, 10_900, Some(18_100)),
            facts("a", SandboxStatus::Deleted, 100, Some(10_900)), // allocated before the window
            facts("a", SandboxStatus::Deleted, 100, Some(200)),    // entirely before it
        ];
        let series = usage_series(&rows, window);
        assert_eq!(series.allocated, vec![2, 0, 0]);
        assert_eq!(series.released, vec![1, 0, 1]);
        assert_eq!(series.held_now, 1);
        assert_eq!(series.lab_duration.count, 2);
        assert_eq!(series.lab_duration.max_seconds, 10_800);
        assert_eq!(series.lab_duration.p50_seconds, 7_200);
        assert_eq!(series.lab_duration.mean_seconds, 9_000);
    }

    #[test]
    fn niosxaas_runs_count_as_failed_then_skipped_then_cleaned() {
        let mut tally = NiosxaasTally::default();
        let cleaned = NiosxaasCleanup {
            niosxaas_cleaned_at: Some(EpochSecs::new(5)),
            niosxaas_services_matched: 2,
            ..NiosxaasCleanup::default()
        };
        tally.count(&cleaned);
        tally.count(&NiosxaasCleanup {
            niosxaas_cleanup_skipped: true,
            niosxaas_cleaned_at: Some(EpochSecs::new(5)),
            ..NiosxaasCleanup::default()
        });
        tally.count(&NiosxaasCleanup {
            niosxaas_shadow_mode: true,
            niosxaas_cleanup_skipped: true,
            ..NiosxaasCleanup::default()
        });
        tally.count(&NiosxaasCleanup {
            niosxaas_cleanup_failed_reason: Some("sign-in refused".into()),
            niosxaas_cleanup_skipped: true,
            ..NiosxaasCleanup::default()
        });
        assert_eq!(
            tally,
            NiosxaasTally {
                cleaned: 1,
                skipped: 2,
                failed: 1
            }
        );
    }

    #[test]
    fn duration_percentiles_are_nearest_rank() {
        let stats = DurationStats::of((1..=10).rev().collect());
        assert_eq!((stats.count, stats.mean_seconds), (10, 5));
        assert_eq!(
            (stats.p50_seconds, stats.p90_seconds, stats.max_seconds),
            (5, 9, 10)
        );
        assert_eq!(DurationStats::of(vec![]), DurationStats::default());
        assert_eq!(DurationStats::of(vec![7]).p90_seconds, 7);
    }
}
