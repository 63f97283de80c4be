//! The JSON log line, written straight into the line buffer.
//!
//! Rule: the same bytes as `tracing_subscriber`'s JSON format with `flatten_event(true)`
//! and no spans (`timestamp`, `level`, the event's fields in order, `target`), which the
//! unit test checks field by field. That format serialises each field through serde and an
//! io→fmt adaptor that validates UTF-8 on every small write: about 26,000 instructions a
//! request, an eighth of an allocation's (docs/benchmarks.md). This one escapes as it goes.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::domain::time::EpochSecs;

/// One JSON object per line, fields flattened (see the module doc).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Events bridged from the `log` crate carry their real target in their fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer, std::time::SystemTime::now())?;
        write!(writer, "\",\"level\":\"{}\"", meta.level())?;
        let mut fields = JsonFields {
            out: &mut writer,
            state: Ok(()),
        };
        event.record(&mut fields);
        fields.state?;
        writer.write_str(",\"target\":")?;
        write_json_str(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

thread_local! {
    /// The second a thread last stamped, and its text up to the fraction
    /// (`2026-12-06T18:40:22`): a thread logs many lines a second.
    static SECOND: std::cell::RefCell<(u64, String)> = const {
        std::cell::RefCell::new((u64::MAX, String::new()))
    };
}

/// `at` as `SystemTime` formats it (RFC 3339, UTC, microseconds: `2026-12-06T18:40:22.244845Z`),
/// with the date and time of day formatted once a second instead of on every line.
fn write_timestamp(out: &mut impl fmt::Write, at: std::time::SystemTime) -> fmt::Result {
    let Ok(since) = at.duration_since(std::time::UNIX_EPOCH) else {
        // Before 1970: a clock this wrong is rare enough for the slow path.
        return SystemTime.format_time(&mut Writer::new(out));
    };
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != secs {
            let stamp = i64::try_from(secs).map(|secs| EpochSecs::new(secs).rfc3339());
            *text = stamp.map_err(|_| fmt::Error)?;
            text.pop(); // its `Z`
            *second = secs;
        }
        out.write_str(text)
    })?;
    let mut fraction = *b".000000Z";
    let mut micros = since.subsec_micros();
    for digit in fraction[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    // Only ASCII digits went in.
    out.write_str(std::str::from_utf8(&fraction).map_err(|_| fmt::Error)?)
}

/// Writes each field as `,"name":value`, as `tracing_serde` would serialise it.
struct JsonFields<'a, W> {
    out: &'a mut W,
    state: fmt::Result,
}

impl<W: fmt::Write> JsonFields<'_, W> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.state.is_ok() {
            self.state = self
                .out
                .write_char(',')
                .and_then(|()| write_json_str(self.out, field.name()))
                .and_then(|()| self.out.write_char(':'))
                .and_then(|()| value(self.out));
        }
    }
}

impl<W: fmt::Write> Visit for JsonFields<'_, W> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json's own float text (and `null` for NaN and infinities).
        self.entry(field, |out| {
            out.write_str(&serde_json::to_string(&value).map_err(|_| fmt::Error)?)
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |out| write_json_str(out, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |out| {
            out.write_char('"')?;
            write!(Escaping(&mut *out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

/// `value` as a JSON string.
fn write_json_str(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaping(&mut *out).write_str(value)?;
    out.write_char('"')
}

/// Escapes what is written through it as the inside of a JSON string, as serde_json does:
/// `"` and `\`, the short forms of the usual control characters, `\u00XX` for the others.
struct Escaping<'a, W>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Almost every value needs no escaping; this scan vectorises.
        if !text
            .bytes()
            .any(|byte| byte < 0x20 || byte == b'"' || byte == b'\\')
        {
            return self.0.write_str(text);
        }
        let mut start = 0;
        for (at, byte) in text.bytes().enumerate() {
            let escaped = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0x00..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&text[start..at])?;
            if escaped.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escaped)?;
            }
            start = at + 1;
        }
        self.0.write_str(&text[start..])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// A writer collecting what the subscriber writes.
    #[derive(Clone, Default)]
    struct Collected(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Collected {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Collected {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    #[derive(Debug)]
    #[expect(dead_code, reason = "read through its Debug output")]
    struct Shape {
        name: &'static str,
        sides: u8,
    }

    fn events() {
        let error = std::io::Error::other("disk \"full\"\nsorry");
        tracing::info!(
            request_id = "b00207c7",
            latency_ms = 2_u64,
            delta = -3_i64,
            ok = true,
            ratio = 1.5_f64,
            nothing = f64::NAN,
            shape = ?Shape { name: "tri\tangle", sides: 3 },
            shown = %"a \u{1} b ü",
            error = &error as &(dyn std::error::Error + 'static),
            "http.status" = 201_u16,
            "POST /v1/allocate - {}", 201
        );
        tracing::warn!(path = "C:\\temp\\\"x\"", "a \"quoted\" \u{7f} message");
        tracing::error!(big = 18_446_744_073_709_551_615_u64, "ends\r\n");
    }

    /// The lines each formatter writes for [`events`], timestamps blanked out.
    fn lines(ours: bool) -> Vec<String> {
        let collected = Collected::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(collected.clone())
            .with_max_level(tracing::Level::TRACE);
        if ours {
            let subscriber = builder.event_format(JsonLines).finish();
            tracing::subscriber::with_default(subscriber, events);
        } else {
            let subscriber = builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .finish();
            tracing::subscriber::with_default(subscriber, events);
        }
        let bytes = collected.0.lock().unwrap().clone();
        let stamp = r#"{"timestamp":"2026-12-06T18:40:22.244845Z""#;
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| {
                let (head, rest) = line.split_at(stamp.len());
                assert!(
                    head.starts_with(r#"{"timestamp":""#) && head.ends_with("Z\""),
                    "{head}"
                );
                serde_json::from_str::<serde_json::Value>(line).unwrap();
                format!("<timestamp>{rest}")
            })
            .collect()
    }

    #[test]
    fn lines_are_byte_for_byte_tracing_subscribers_json() {
        let (ours, theirs) = (lines(true), lines(false));
        assert_eq!(ours.len(), 3);
        assert_eq!(ours, theirs);
        assert!(
            ours[0].contains(r#""message":"POST /v1/allocate - 201""#),
            "{}",
            ours[0]
        );
    }

    #[test]
    fn timestamps_are_tracing_subscribers_to_the_microsecond() {
        use std::time::{Duration, UNIX_EPOCH};
        let instants = [
            UNIX_EPOCH + Duration::new(1_796_587_222, 244_845_123),
            UNIX_EPOCH + Duration::new(1_796_587_222, 999_999_999),
            UNIX_EPOCH + Duration::new(1_796_587_223, 5_000),
            UNIX_EPOCH + Duration::new(951_782_400, 0), // 2000-02-29
            UNIX_EPOCH + Duration::new(4_102_444_799, 1_000), // 2099-12-31T23:59:59
        ];
        for at in instants {
            let mut ours = String::new();
            write_timestamp(&mut ours, at).unwrap();
            // `SystemTime` stamps the present; the same text from the same parts:
            let since = at.duration_since(UNIX_EPOCH).unwrap();
            let secs = EpochSecs::new(since.as_secs() as i64).rfc3339();
            let expected = format!("{}.{:06}Z", &secs[..19], since.subsec_micros());
            assert_eq!(ours, expected);
        }
        // And the present, stamped between two of `SystemTime`'s (the same form sorts by time).
        let theirs = || {
            let mut text = String::new();
            SystemTime.format_time(&mut Writer::new(&mut text)).unwrap();
            text
        };
        let before = theirs();
        let mut ours = String::new();
        write_timestamp(&mut ours, std::time::SystemTime::now()).unwrap();
        let after = theirs();
        assert_eq!(ours.len(), before.len(), "{ours} {before}");
        assert!(before <= ours && ours <= after, "{before} {ours} {after}");
    }

    #[test]
    fn escaping_matches_serde_json_for_every_ascii_byte_and_beyond() {
        let mut text: String = (0u8..=0x7f).map(char::from).collect();
        text.push_str("ü€😀");
        let mut ours = String::new();
        write_json_str(&mut ours, &text).unwrap();
        assert_eq!(ours, serde_json::to_string(&text).unwrap());
    }
}
