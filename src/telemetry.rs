//! Logging through `tracing`: text for people, one JSON object per line for machines.
//!
//! Rule: fields are flat and dotted (`http.route`, `duration_ms`), the per-request event
//! carries `request_id`, `action`, `outcome` and `latency_ms`, and nothing logs a token
//! or a raw client address.

mod json;
mod lines;

pub use self::json::JsonLines;

use clap::Args;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for CloudWatch and friends.
    Json,
}

/// How much is logged, and in which format.
#[derive(Debug, Clone, Args)]
pub struct LogConfig {
    /// Log filter: a level, any case, Python's names included (`DEBUG`, `INFO`,
    /// `WARNING`, `ERROR`, `CRITICAL`), or `tracing` directives (`sandbox_broker=debug,info`).
    #[arg(
        long,
        env = "LOG_LEVEL",
        value_name = "LOG_LEVEL",
        default_value = "info",
        value_parser = parse_log_level
    )]
    pub log_level: String,

    /// Log line format. Unset: `json` for `serve` and `init-table` (as the Python service,
    /// so CloudWatch filters match), `text` for `demo`.
    #[arg(long, env = "LOG_FORMAT", value_name = "LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// `LOG_LEVEL` as a `tracing` filter; refuses one that would not parse, at start-up.
fn parse_log_level(raw: &str) -> Result<String, String> {
    let filter = filter_directives(raw)?;
    EnvFilter::try_new(&filter)
        .map(|_| filter)
        .map_err(|err| format!("not a valid filter: {err}"))
}

impl LogConfig {
    /// Installs the global subscriber at `LOG_LEVEL`, in `LOG_FORMAT` or else `default`
    /// (the command's own: JSON for `serve`, text for `demo`). Hold the guard until the
    /// command ends.
    pub fn init(&self, default: LogFormat) -> Result<LogGuard, LoggingError> {
        init(&self.log_level, self.log_format.unwrap_or(default))
    }
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `LOG_LEVEL` is not a filter `tracing` reads.
    #[error("LOG_LEVEL: {0}")]
    Level(#[from] tracing_subscriber::filter::ParseError),
    /// A global subscriber was installed already.
    #[error("cannot install the logger: {0}")]
    Install(String),
    /// The `log-writer` thread could not start.
    #[error("cannot start the log writer: {0}")]
    Writer(#[source] std::io::Error),
}

/// Keeps the log writer's thread running. Dropping it writes out every line still queued,
/// so a command holds it until it ends.
#[must_use = "dropping it stops the log writer"]
pub struct LogGuard {
    _writer: lines::LineGuard<std::io::Stdout>,
}

/// Installs the global subscriber. `level` is `LOG_LEVEL`: a level or filter directives.
///
/// Lines are formatted where they are logged and written to stdout by a `log-writer`
/// thread every 10 ms, whatever has gathered in one `write`: one system call per request,
/// or one wake-up of a thread per line, was a visible part of a request's cost
/// (`lines.rs`). It never drops a line.
pub fn init(level: &str, format: LogFormat) -> Result<LogGuard, LoggingError> {
    let filter = EnvFilter::try_new(level)?;
    let (writer, guard) = lines::spawn(std::io::stdout()).map_err(LoggingError::Writer)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::NONE)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    installed.map_err(|err| LoggingError::Install(err.to_string()))?;
    Ok(LogGuard { _writer: guard })
}

/// A `LOG_LEVEL` as `tracing` filter directives: a bare level in any case, with the
/// Python logging names the old service's environment uses (`WARNING`, `CRITICAL`,
/// `FATAL`), becomes the `tracing` level; a value with `=` or `,` is taken as directives.
/// A bare word that is no level (`INF0`) is refused: `tracing` would read it as a target
/// name and quietly log almost nothing.
pub fn filter_directives(level: &str) -> Result<String, String> {
    let trimmed = level.trim();
    let mapped = match trimmed.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "critical" | "fatal" => "error",
        "off" => "off",
        // Python's NOTSET defers to the root logger, whose default is INFO here.
        "notset" => "info",
        _ if trimmed.contains(['=', ',']) => return Ok(trimmed.to_owned()),
        _ => {
            return Err(format!(
                "{trimmed:?} is not a level (DEBUG, INFO, WARNING, ERROR, CRITICAL) nor filter directives"
            ));
        }
    };
    Ok(mapped.to_owned())
}

/// For tests: logs only when `TEST_LOG` is set, and never fails when called twice.
pub fn init_for_test() {
    if std::env::var_os("TEST_LOG").is_some()
        && let Ok(guard) = init("info", LogFormat::Text)
    {
        // The test process ends without dropping it; its lines are written as they come.
        std::mem::forget(guard);
    }
}

/// An error and all its causes on one line, for logs: SDK errors only say "service error"
/// until their sources are shown.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_level_names_in_any_case_become_tracing_levels() {
        for (given, expected) in [
            ("DEBUG", "debug"),
            ("INFO", "info"),
            ("Warning", "warn"),
            ("WARNING", "warn"),
            ("warn", "warn"),
            ("ERROR", "error"),
            ("CRITICAL", "error"),
            ("critical", "error"),
            (" info ", "info"),
            ("sandbox_broker=debug,info", "sandbox_broker=debug,info"),
        ] {
            assert_eq!(filter_directives(given).as_deref(), Ok(expected), "{given}");
        }
        for typo in ["INF0", "LOUD", "", "verbose"] {
            assert!(filter_directives(typo).is_err(), "{typo:?} accepted");
        }
    }
}
