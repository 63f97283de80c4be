//! The log lines' way out: loggers append to a shared buffer, and a `log-writer` thread
//! writes what has gathered to the output every [`FLUSH_EVERY`].
//!
//! Rule: a logger never wakes the thread and never makes a system call, unless the
//! buffer holds [`FLUSH_AT`] bytes; then that logger writes them out itself, so memory
//! stays bounded and no line is dropped. Lines go out in the order they were logged.
//!
//! Why not `tracing-appender`'s non-blocking writer, used before: its channel wakes the
//! writer thread for each line when it waits, and the thread spins with `sched_yield`
//! before it sleeps. At a few hundred requests a second (the DynamoDB store's rate on one
//! emulator) the thread was 7 % of the service's CPU.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a line may wait in the buffer: a log line is read by people and log shippers,
/// for whom 10 ms is nothing.
const FLUSH_EVERY: Duration = Duration::from_millis(10);
/// Buffered bytes at which the logger that reaches them writes them out itself.
const FLUSH_AT: usize = 1 << 20;

/// What loggers and the thread share.
struct Shared<W> {
    /// Lines logged and not yet handed to `out`.
    pending: Mutex<Vec<u8>>,
    /// The output; holding it while taking `pending` keeps lines in order.
    out: Mutex<W>,
    /// Set when the guard is dropped.
    stopping: Mutex<bool>,
    stop: Condvar,
}

impl<W: Write> Shared<W> {
    /// Writes everything pending to the output.
    fn flush(&self) -> io::Result<()> {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let lines =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        if lines.is_empty() {
            return Ok(());
        }
        out.write_all(&lines)?;
        out.flush()
    }
}

/// Where the subscriber writes each formatted line (a [`tracing_subscriber`] `MakeWriter`).
pub(super) struct LineWriter<W>(Arc<Shared<W>>);

impl<W> Clone for LineWriter<W> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

/// Keeps the `log-writer` thread running; dropping it writes out every line logged.
pub(super) struct LineGuard<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the `log-writer` thread on `out`.
pub(super) fn spawn<W: Write + Send + 'static>(
    out: W,
) -> io::Result<(LineWriter<W>, LineGuard<W>)> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Vec::with_capacity(64 * 1024)),
        out: Mutex::new(out),
        stopping: Mutex::new(false),
        stop: Condvar::new(),
    });
    let thread = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                let mut stopping = shared
                    .stopping
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                while !*stopping {
                    (stopping, _) = shared
                        .stop
                        .wait_timeout(stopping, FLUSH_EVERY)
                        .unwrap_or_else(PoisonError::into_inner);
                    // Nowhere to report a failed write of the log itself.
                    let _ = shared.flush();
                }
            })?
    };
    let guard = LineGuard {
        shared: Arc::clone(&shared),
        thread: Some(thread),
    };
    Ok((LineWriter(shared), guard))
}

impl<W: Write + Send + 'static> Drop for LineGuard<W> {
    fn drop(&mut self) {
        *self
            .shared
            .stopping
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.shared.stop.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = self.shared.flush();
    }
}

impl<W: Write> Write for LineWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let full = {
            let mut pending = self
                .0
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            pending.extend_from_slice(bytes);
            pending.len() >= FLUSH_AT
        };
        if full {
            self.0.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Lines are written out by the thread; `LineGuard` flushes the rest.
        Ok(())
    }
}

impl<'a, W: Write + Send + 'static> tracing_subscriber::fmt::MakeWriter<'a> for LineWriter<W> {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output whose bytes the test can read.
    #[derive(Clone, Default)]
    struct Collected(Arc<Mutex<Vec<u8>>>);

    impl Write for Collected {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_from_many_threads_come_out_whole_in_each_threads_order_and_all_by_the_guards_drop() {
        let collected = Collected::default();
        let (writer, guard) = spawn(collected.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let mut writer = writer.clone();
                std::thread::spawn(move || {
                    // 4 × 20,000 lines of 64 bytes: loggers also pass `FLUSH_AT` themselves.
                    for n in 0..20_000 {
                        let line = format!("t{thread} {n:<56}\n");
                        writer.write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        drop(guard);
        let text = String::from_utf8(collected.0.lock().unwrap().clone()).unwrap();
        let mut next = [0; 4];
        for line in text.lines() {
            let (thread, n) = line.split_once(' ').unwrap();
            let thread: usize = thread[1..].parse().unwrap();
            assert_eq!(
                n.trim_end().parse::<usize>().unwrap(),
                next[thread],
                "{line}"
            );
            next[thread] += 1;
        }
        assert_eq!(next, [20_000; 4], "every line, once");
    }

    #[test]
    fn a_line_goes_out_within_the_interval_without_a_flush() {
        let collected = Collected::default();
        let (mut writer, _guard) = spawn(collected.clone()).unwrap();
        writer.write_all(b"one\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while collected.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(*collected.0.lock().unwrap(), b"one\n");
    }
}
