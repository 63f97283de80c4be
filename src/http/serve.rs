//! The accept loop, with the connection hygiene a public listener needs.
//!
//! Rule: each connection is in one of three phases — reading a request head, being served,
//! or idle between requests — and only the phase decides when it is closed: a head that
//! takes longer than `HEADER_READ_TIMEOUT_SEC` from its first byte (or from the accept)
//! is cut off, an idle keep-alive connection is closed after `KEEP_ALIVE_TIMEOUT_SEC`, and
//! a request being served is never cut short here (`REQUEST_TIMEOUT_SEC` bounds it).
//! Beyond `MAX_CONNECTIONS` open connections a new one is answered 503 (the envelope)
//! and closed, so a flood costs a short write rather than a slot.

use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::metrics::Metrics;

/// Most connections being answered 503 at once; beyond it they are simply closed.
const MAX_SHEDDING: usize = 256;
/// How long a shed connection's request is waited for before the 503 is written anyway.
const SHED_READ_WAIT: Duration = Duration::from_millis(200);
/// How long a shed connection is given to take the 503.
const SHED_TIMEOUT: Duration = Duration::from_secs(1);

/// When connections are closed, and how many may be open.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// From a head's first byte (or the accept) to its end.
    pub header_read_timeout: Duration,
    /// Idle time between requests on a keep-alive connection.
    pub keep_alive_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

/// A connection's phase, with the time it began.
struct Phase {
    state: AtomicU8,
    /// Milliseconds from the connection's accept to the phase's start.
    since_ms: AtomicU64,
    accepted: Instant,
}

const READING_HEAD: u8 = 0;
const SERVING: u8 = 1;
const IDLE: u8 = 2;

/// What the watch says a connection should do now.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Nothing yet; look again at this instant.
    WaitUntil(Instant),
    /// The head is too slow: drop the connection.
    CutOff,
    /// Idle too long: close it between requests.
    CloseIdle,
}

impl Phase {
    fn new(accepted: Instant) -> Self {
        Self {
            state: AtomicU8::new(READING_HEAD),
            since_ms: AtomicU64::new(0),
            accepted,
        }
    }

    fn enter(&self, state: u8, now: Instant) {
        let ms = now.saturating_duration_since(self.accepted).as_millis();
        self.since_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.state.store(state, Ordering::Release);
    }

    /// Bytes arrived: an idle connection is now reading a head.
    fn bytes_read(&self, now: Instant) {
        if self.state.load(Ordering::Acquire) == IDLE {
            self.enter(READING_HEAD, now);
        }
    }

    fn verdict(&self, limits: &ConnectionLimits, now: Instant) -> Verdict {
        let since = self.accepted + Duration::from_millis(self.since_ms.load(Ordering::Relaxed));
        let (limit, verdict) = match self.state.load(Ordering::Acquire) {
            READING_HEAD => (limits.header_read_timeout, Verdict::CutOff),
            IDLE => (limits.keep_alive_timeout, Verdict::CloseIdle),
            // Served requests are bounded by the request timeout; look again later.
            _ => return Verdict::WaitUntil(now + limits.header_read_timeout),
        };
        let deadline = since + limit;
        if now >= deadline {
            verdict
        } else {
            Verdict::WaitUntil(deadline)
        }
    }
}

/// Marks a connection as serving until the response is produced.
struct Serving(Arc<Phase>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.enter(IDLE, Instant::now());
    }
}

/// The socket, telling the phase when bytes arrive.
struct Watched {
    stream: TcpStream,
    phase: Arc<Phase>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.phase.bytes_read(Instant::now());
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Serves `router` on `listener` until `shutdown`, then waits for every open connection
/// to finish its request and close.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let max_connections = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max_connections));
    let shedding = Arc::new(Semaphore::new(MAX_SHEDDING));
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, say: pause instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Responses are written whole, but small ones must not wait on Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                let connection = Connection {
                    router: router.clone(),
                    limits,
                    metrics: metrics.clone(),
                    shutdown: shutdown.clone(),
                };
                tokio::spawn(connection.run(stream, peer, slot));
            }
            Err(_) => {
                metrics.http.connections_shed_total.inc();
                if let Ok(permit) = Arc::clone(&shedding).try_acquire_owned() {
                    tokio::spawn(shed(stream, permit));
                }
            }
        }
    }
    drop(listener);
    // Every slot back means every connection has closed.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

/// What one connection task needs.
struct Connection {
    router: Router,
    limits: ConnectionLimits,
    metrics: Metrics,
    shutdown: CancellationToken,
}

impl Connection {
    async fn run(self, stream: TcpStream, peer: SocketAddr, slot: OwnedSemaphorePermit) {
        let _slot = slot;
        let _open = crate::metrics::InFlightGuard::new(&self.metrics.http.connections_open);
        let phase = Arc::new(Phase::new(Instant::now()));
        let io = TokioIo::new(Watched {
            stream,
            phase: Arc::clone(&phase),
        });
        let router = self.router;
        let service_phase = Arc::clone(&phase);
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            service_phase.enter(SERVING, Instant::now());
            let serving = Serving(Arc::clone(&service_phase));
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await;
                drop(serving);
                response
            }
        });
        let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
        let mut connection = pin!(connection);
        let mut closing = false;
        loop {
            let verdict = phase.verdict(&self.limits, Instant::now());
            let wake = match verdict {
                Verdict::WaitUntil(at) => at,
                Verdict::CutOff => {
                    tracing::debug!(%peer, "connection closed: request head too slow");
                    return;
                }
                Verdict::CloseIdle if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                    continue;
                }
                // Already closing: only a slow head can still need cutting off.
                Verdict::CloseIdle => Instant::now() + self.limits.header_read_timeout,
            };
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(err) = served {
                        tracing::debug!(%peer, error = %err, "connection ended with an error");
                    }
                    return;
                }
                () = self.shutdown.cancelled(), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

/// The 503 a connection beyond `MAX_CONNECTIONS` gets, in the error envelope (docs/api.md, *Errors*).
fn shed_response() -> Vec<u8> {
    let request_id = uuid::Uuid::new_v4();
    let body = serde_json::json!({"detail": {
        "code": "SERVICE_UNAVAILABLE",
        "message": "The service has too many open connections; try again shortly",
        "request_id": request_id.to_string(),
    }})
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nx-request-id: {request_id}\r\n\
         cache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers 503 and closes: reads what the client has sent first (closing with unread
/// bytes would reset the answer away before the client reads it), but does not wait long
/// for a client that sends nothing.
async fn shed(mut stream: TcpStream, _permit: OwnedSemaphorePermit) {
    let mut request = [0u8; 4096];
    let _ = tokio::time::timeout(SHED_READ_WAIT, stream.read(&mut request)).await;
    let _ = tokio::time::timeout(SHED_TIMEOUT, async {
        stream.write_all(&shed_response()).await?;
        stream.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(10),
        keep_alive_timeout: Duration::from_secs(75),
        max_connections: 1,
    };

    #[test]
    fn each_phase_has_its_own_deadline() {
        let start = Instant::now();
        let phase = Phase::new(start);
        let at = |secs| start + Duration::from_secs(secs);
        assert_eq!(phase.verdict(&LIMITS, at(9)), Verdict::WaitUntil(at(10)));
        assert_eq!(phase.verdict(&LIMITS, at(10)), Verdict::CutOff);

        phase.enter(SERVING, at(1));
        assert!(matches!(
            phase.verdict(&LIMITS, at(500)),
            Verdict::WaitUntil(_)
        ));

        phase.enter(IDLE, at(2));
        assert_eq!(phase.verdict(&LIMITS, at(20)), Verdict::WaitUntil(at(77)));
        assert_eq!(phase.verdict(&LIMITS, at(77)), Verdict::CloseIdle);

        // The next request's first byte starts the head clock again.
        phase.bytes_read(at(30));
        assert_eq!(phase.verdict(&LIMITS, at(35)), Verdict::WaitUntil(at(40)));
        assert_eq!(phase.verdict(&LIMITS, at(40)), Verdict::CutOff);
    }

    #[test]
    fn the_shed_answer_is_a_complete_503_envelope() {
        let response = String::from_utf8(shed_response()).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["detail"]["code"], "SERVICE_UNAVAILABLE");
    }
}
