//! What every settings type shares: the error that names a variable, and the value
//! parsers of durations.
//!
//! Rule: each adapter and job declares its own settings (a `clap::Args` struct beside its
//! code) and `config` flattens them into one command line; this module sits below all of
//! them, so an owner never depends on `config` and `config` never builds an owner's
//! settings for it.

use std::time::Duration;

/// Why a configuration cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required secret is not set.
    #[error("{0} must be set (one or more comma-separated tokens)")]
    Missing(&'static str),
    /// A setting is invalid in combination with another.
    #[error("{variable}: {reason}")]
    Invalid {
        /// The variable at fault.
        variable: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Whole milliseconds, at least 1.
pub fn parse_millis(raw: &str) -> Result<Duration, String> {
    let millis: u64 = raw.parse().map_err(|err| format!("{err}"))?;
    if millis == 0 {
        return Err("must be at least 1".into());
    }
    Ok(Duration::from_millis(millis))
}

/// Seconds with fractions, 0 to an hour; `Duration::try_from_secs_f64` never panics.
pub fn parse_fractional_seconds(raw: &str) -> Result<Duration, String> {
    let seconds: f64 = raw.trim().parse().map_err(|err| format!("{err}"))?;
    if !(0.0..=3600.0).contains(&seconds) {
        return Err("must be a number of seconds from 0 to 3600".into());
    }
    Duration::try_from_secs_f64(seconds).map_err(|err| err.to_string())
}

/// Whole seconds, at least 1.
pub fn parse_seconds(raw: &str) -> Result<Duration, String> {
    let seconds: u64 = raw.parse().map_err(|err| format!("{err}"))?;
    if seconds == 0 {
        return Err("must be at least 1".into());
    }
    Ok(Duration::from_secs(seconds))
}

/// A `u32` setting as a `usize` (saturating on a 16-bit target, which this never runs on).
pub fn as_usize(value: u32) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_refuse_zero_where_zero_means_nothing() {
        assert_eq!(parse_seconds("5"), Ok(Duration::from_secs(5)));
        assert!(parse_seconds("0").is_err());
        assert_eq!(parse_millis("25"), Ok(Duration::from_millis(25)));
        assert!(parse_millis("0").is_err());
        assert_eq!(parse_fractional_seconds("0.0"), Ok(Duration::ZERO));
        assert_eq!(
            parse_fractional_seconds("2.5"),
            Ok(Duration::from_millis(2500))
        );
        for bad in ["-1", "3601", "NaN", "x"] {
            assert!(parse_fractional_seconds(bad).is_err(), "{bad} accepted");
        }
    }
}
