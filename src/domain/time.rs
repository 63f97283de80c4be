//! Points in time as the layers hand them to each other: epoch seconds (the API's and the
//! table's timestamps) and epoch milliseconds (leases, schedules) are different types, so
//! one is never passed where the other is meant.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Whole seconds since the Unix epoch.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct EpochSecs(i64);

/// Milliseconds since the Unix epoch.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct EpochMillis(i64);

impl EpochSecs {
    /// The time `secs` seconds after the epoch.
    pub const fn new(secs: i64) -> Self {
        Self(secs)
    }

    /// The seconds since the epoch, as rows and the API store them.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// The same instant in milliseconds.
    pub const fn millis(self) -> EpochMillis {
        EpochMillis(self.0.saturating_mul(1000))
    }

    /// `duration` later, in whole seconds (saturating).
    pub fn after(self, duration: Duration) -> Self {
        let secs = i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(secs))
    }

    /// The instant in RFC 3339, UTC (`2026-12-06T09:00:00Z`), as webhook events carry it.
    pub fn rfc3339(self) -> String {
        // Howard Hinnant's days-to-civil: the proleptic Gregorian date of a day count.
        let (days, secs) = (self.0.div_euclid(86_400), self.0.rem_euclid(86_400));
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        )
    }
}

impl EpochMillis {
    /// The time `millis` milliseconds after the epoch.
    pub const fn new(millis: i64) -> Self {
        Self(millis)
    }

    /// The milliseconds since the epoch.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// The whole second this instant falls in.
    pub const fn secs(self) -> EpochSecs {
        EpochSecs(self.0.div_euclid(1000))
    }

    /// `duration` later (saturating).
    pub fn after(self, duration: Duration) -> Self {
        Self(self.0.saturating_add(super::clock::millis(duration)))
    }
}

/// Seconds later.
impl Add<i64> for EpochSecs {
    type Output = Self;

    fn add(self, secs: i64) -> Self {
        Self(self.0.saturating_add(secs))
    }
}

/// Seconds earlier.
impl Sub<i64> for EpochSecs {
    type Output = Self;

    fn sub(self, secs: i64) -> Self {
        Self(self.0.saturating_sub(secs))
    }
}

/// Milliseconds later.
impl Add<i64> for EpochMillis {
    type Output = Self;

    fn add(self, millis: i64) -> Self {
        Self(self.0.saturating_add(millis))
    }
}

/// Milliseconds earlier.
impl Sub<i64> for EpochMillis {
    type Output = Self;

    fn sub(self, millis: i64) -> Self {
        Self(self.0.saturating_sub(millis))
    }
}

/// The seconds from `earlier` to this instant (negative when `earlier` is later): a span,
/// not an instant.
impl Sub for EpochSecs {
    type Output = i64;

    fn sub(self, earlier: Self) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// The milliseconds from `earlier` to this instant.
impl Sub for EpochMillis {
    type Output = i64;

    fn sub(self, earlier: Self) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for EpochSecs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for EpochMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_print_as_rfc_3339() {
        assert_eq!(EpochSecs::new(0).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(
            EpochSecs::new(951_782_400).rfc3339(),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            EpochSecs::new(1_614_265_330).rfc3339(),
            "2021-02-25T15:02:10Z"
        );
        assert_eq!(
            EpochSecs::new(1_796_547_600).rfc3339(),
            "2026-12-06T09:00:00Z"
        );
    }

    #[test]
    fn seconds_and_milliseconds_convert_at_whole_seconds() {
        let at = EpochMillis::new(1_800_000_000_999);
        assert_eq!(at.secs(), EpochSecs::new(1_800_000_000));
        assert_eq!(EpochMillis::new(-1).secs(), EpochSecs::new(-1), "floors");
        assert_eq!(at.secs().millis(), EpochMillis::new(1_800_000_000_000));
        assert_eq!(at.secs() + 5 - 2, EpochSecs::new(1_800_000_003));
        assert_eq!(
            EpochSecs::new(10).after(Duration::from_millis(2_900)),
            EpochSecs::new(12),
            "whole seconds"
        );
        assert_eq!(EpochSecs::new(i64::MAX) + 1, EpochSecs::new(i64::MAX));
        assert_eq!(
            EpochSecs::new(100) - EpochSecs::new(40),
            60,
            "a span in seconds"
        );
        assert_eq!(
            serde_json::to_string(&EpochSecs::new(7)).unwrap(),
            "7",
            "stored as the number"
        );
    }
}
