//! Allocation benchmark: durable allocations per second and latency percentiles over
//! loopback HTTP, on the embedded store, at several numbers of concurrent students.
//!
//! `cargo run --release --bin bench -- --levels 1,10,100,500 --seconds 5`
//!
//! The server (the real router, store and middleware, JSON access logs formatted into a
//! sink) runs on its own 2-thread runtime; the client is a separate 2-thread runtime of
//! raw hyper HTTP/1 connections, one keep-alive connection per student worker. Each
//! request is a new student key, so every one is a real, durably committed allocation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use sandbox_broker::app::Application;
use sandbox_broker::config::Config;
use sandbox_broker::domain::{ExternalId, NewSandbox, SandboxId, SandboxName};
use sandbox_broker::store::SharedStore;
use sandbox_broker::store::embedded::EmbeddedStore;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const TRACK_TOKEN: &str = "bench-track-token";
const ADMIN_TOKEN: &str = "bench-admin-token";

/// Benchmark options.
#[derive(Debug, Parser)]
struct Args {
    /// Concurrent students per run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,500")]
    levels: Vec<usize>,
    /// Seconds each level runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Sandboxes seeded per level (must exceed what a level can allocate).
    #[arg(long, default_value_t = 300_000)]
    pool: u64,
    /// Turn the JSON access log off (it is on, formatted into a sink, by default).
    #[arg(long)]
    no_logs: bool,
}

/// One level's figures.
struct Figures {
    students: usize,
    allocations: usize,
    failures: usize,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl Figures {
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let rank = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies_us[rank]) / 1000.0
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if !args.no_logs {
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(std::io::sink)
            .init();
    }
    println!(
        "| students | allocations | seconds | allocations/s | p50 ms | p95 ms | p99 ms | failed |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &students in &args.levels {
        let figures = run_level(&args, students)?;
        println!(
            "| {} | {} | {:.1} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            figures.students,
            figures.allocations,
            figures.elapsed.as_secs_f64(),
            figures.allocations as f64 / figures.elapsed.as_secs_f64(),
            figures.percentile_ms(0.50),
            figures.percentile_ms(0.95),
            figures.percentile_ms(0.99),
            figures.failures,
        );
    }
    Ok(())
}

fn pool(count: u64) -> Result<Vec<NewSandbox>, sandbox_broker::domain::ValidationError> {
    (0..count)
        .map(|n| {
            Ok(NewSandbox {
                sandbox_id: SandboxId::parse("id", &format!("{}", 3_000_000 + n))?,
                name: SandboxName::parse("name", &format!("bench-{n:07}"))?,
                external_id: ExternalId::parse("ext", &format!("identity/accounts/bench-{n}"))?,
                sfdc_account_id: None,
            })
        })
        .collect()
}

fn run_level(args: &Args, students: usize) -> Result<Figures, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("server")
        .enable_all()
        .build()?;
    let store: SharedStore = Arc::new(EmbeddedStore::open(dir.path())?);
    let seed = pool(args.pool)?;
    server_runtime.block_on(async {
        for chunk in seed.chunks(10_000) {
            store.import(chunk.to_vec(), 0).await?;
        }
        Ok::<_, sandbox_broker::store::StoreError>(())
    })?;
    let config = Config::for_tests(dir.path().to_owned(), TRACK_TOKEN, ADMIN_TOKEN);
    let app = server_runtime.block_on(Application::build(config, store))?;
    let address = app.local_addr();
    let shutdown = CancellationToken::new();
    server_runtime.spawn(app.run_until_stopped(shutdown.clone()));

    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("client")
        .enable_all()
        .build()?;
    let duration = Duration::from_secs(args.seconds);
    let figures = client_runtime.block_on(async move {
        let started = Instant::now();
        let deadline = started + duration;
        let workers: Vec<_> = (0..students)
            .map(|worker| tokio::spawn(student_worker(address, worker, deadline)))
            .collect();
        let mut figures = Figures {
            students,
            allocations: 0,
            failures: 0,
            elapsed: Duration::ZERO,
            latencies_us: Vec::new(),
        };
        for worker in workers {
            let (latencies, failures) = worker.await.unwrap_or_default();
            figures.failures += failures;
            figures.latencies_us.extend(latencies);
        }
        figures.elapsed = started.elapsed();
        figures.allocations = figures.latencies_us.len();
        figures.latencies_us.sort_unstable();
        figures
    });
    shutdown.cancel();
    server_runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(figures)
}

/// Allocates with a fresh student key per request until `deadline`; returns the latency of
/// each 201 in microseconds and how many requests failed.
async fn student_worker(
    address: std::net::SocketAddr,
    worker: usize,
    deadline: Instant,
) -> (Vec<u32>, usize) {
    let mut latencies = Vec::new();
    let mut failures = 0;
    let Ok(stream) = TcpStream::connect(address).await else {
        return (latencies, 1);
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await
    else {
        return (latencies, 1);
    };
    tokio::spawn(connection);
    let authorization = format!("Bearer {TRACK_TOKEN}");
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let request = Request::post(format!("http://{address}/v1/allocate"))
            .header("host", "127.0.0.1")
            .header("authorization", &authorization)
            .header("content-type", "application/json")
            .header("x-instruqt-sandbox-id", format!("bench-{worker}-{n}"))
            .body(Empty::new());
        let Ok(request) = request else {
            failures += 1;
            continue;
        };
        let sent = Instant::now();
        let Ok(response) = sender.send_request(request).await else {
            failures += 1;
            break;
        };
        let status = response.status();
        let drained = response.into_body().collect().await.is_ok();
        if status == hyper::StatusCode::CREATED && drained {
            latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
        } else {
            failures += 1;
            if status == hyper::StatusCode::CONFLICT {
                break;
            }
        }
    }
    (latencies, failures)
}
