//! Logging through `tracing`: text for people, one JSON object per line for machines.
//!
//! Rule: fields are flat and dotted (`http.route`, `duration_ms`), the per-request event
//! carries `request_id`, `action`, `outcome` and `latency_ms`, and nothing logs a token
//! or a raw client address.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::LogFormat;

/// Installs the global subscriber. `level` is `LOG_LEVEL`: a level or filter directives.
pub fn init(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = EnvFilter::try_new(level).map_err(|err| format!("LOG_LEVEL: {err}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::NONE)
        .with_writer(std::io::stdout);
    let installed = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    installed.map_err(|err| format!("cannot install the logger: {err}"))
}

/// For tests: logs only when `TEST_LOG` is set, and never fails when called twice.
pub fn init_for_test() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = init("info", LogFormat::Text);
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
