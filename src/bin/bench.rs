//! Allocation benchmark: allocations per second and latency percentiles over loopback
//! HTTP at several numbers of concurrent students, on the embedded store (durable) or on
//! DynamoDB, where it first measures the raw ceiling of single conditional `UpdateItem`
//! calls at the same concurrency, in the same run.
//!
//! `cargo run --release --bin bench -- --levels 1,10,100,500 --seconds 5`
//! `cargo run --release --bin bench -- --store dynamodb --ddb-endpoint http://127.0.0.1:8000 --levels 100`
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
use sandbox_broker::config::{Config, StoreKind};
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
    /// Which store to measure.
    #[arg(long, value_enum, default_value = "embedded")]
    store: StoreKind,
    /// DynamoDB endpoint (e.g. DynamoDB Local) for `--store dynamodb`.
    #[arg(long)]
    ddb_endpoint: Option<String>,
    /// The store's `DDB_MAX_CONCURRENCY`.
    #[arg(long, default_value_t = 128)]
    ddb_max_concurrency: usize,
}

/// One level's figures.
struct Figures {
    students: usize,
    allocations: usize,
    failures: usize,
    elapsed: Duration,
    latencies_us: Vec<u32>,
    /// `broker_allocate_conflicts_total` after the run (candidates lost to a race).
    conflicts: u64,
}

/// A worker's result: the latency of each success in microseconds, and its failures.
type WorkerResult = (Vec<u32>, usize);

impl Figures {
    /// Waits for every worker and sums up their results since `started`.
    async fn collect(
        concurrency: usize,
        started: Instant,
        workers: Vec<tokio::task::JoinHandle<WorkerResult>>,
    ) -> Self {
        let mut figures = Self {
            students: concurrency,
            allocations: 0,
            failures: 0,
            elapsed: Duration::ZERO,
            latencies_us: Vec::new(),
            conflicts: 0,
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
    }

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
        "| what | concurrency | operations | seconds | per second | p50 ms | p95 ms | p99 ms | failed | lost races |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    if args.store == StoreKind::Dynamodb {
        for &students in &args.levels {
            let ceiling = dynamo_bench::raw_ceiling(&args, students)?;
            print_row("raw conditional UpdateItem", &ceiling);
        }
    }
    for &students in &args.levels {
        let figures = run_level(&args, students)?;
        print_row("allocation over HTTP", &figures);
    }
    Ok(())
}

fn print_row(what: &str, figures: &Figures) {
    println!(
        "| {what} | {} | {} | {:.1} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |",
        figures.students,
        figures.allocations,
        figures.elapsed.as_secs_f64(),
        figures.allocations as f64 / figures.elapsed.as_secs_f64(),
        figures.percentile_ms(0.50),
        figures.percentile_ms(0.95),
        figures.percentile_ms(0.99),
        figures.failures,
        figures.conflicts,
    );
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
    let store: SharedStore = match args.store {
        StoreKind::Embedded => {
            let store: SharedStore = Arc::new(EmbeddedStore::open(dir.path())?);
            let seed = pool(args.pool)?;
            server_runtime.block_on(async {
                for chunk in seed.chunks(10_000) {
                    store.import(chunk.to_vec(), 0).await?;
                }
                Ok::<_, sandbox_broker::store::StoreError>(())
            })?;
            store
        }
        StoreKind::Dynamodb => server_runtime.block_on(dynamo_bench::seeded_store(args))?,
    };
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
        Figures::collect(students, started, workers).await
    });
    let mut figures = figures;
    figures.conflicts = client_runtime.block_on(conflicts_reported(address));
    shutdown.cancel();
    server_runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(figures)
}

/// Reads `broker_allocate_conflicts_total` from the server's `/metrics`.
async fn conflicts_reported(address: std::net::SocketAddr) -> u64 {
    let Ok(stream) = TcpStream::connect(address).await else {
        return 0;
    };
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await
    else {
        return 0;
    };
    tokio::spawn(connection);
    let Ok(request) = Request::get(format!("http://{address}/metrics"))
        .header("host", "127.0.0.1")
        .body(Empty::new())
    else {
        return 0;
    };
    let Ok(response) = sender.send_request(request).await else {
        return 0;
    };
    let Ok(body) = response.into_body().collect().await else {
        return 0;
    };
    String::from_utf8_lossy(&body.to_bytes())
        .lines()
        .find_map(|line| line.strip_prefix("broker_allocate_conflicts_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// The DynamoDB side: a seeded table, and the raw `UpdateItem` ceiling.
mod dynamo_bench {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use aws_sdk_dynamodb::Client;
    use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
    use sandbox_broker::config::Config;
    use sandbox_broker::store::SharedStore;
    use sandbox_broker::store::dynamo::{self, DynamoSettings, DynamoStore};

    use super::{Args, Figures};

    type BenchError = Box<dyn std::error::Error>;

    fn settings(args: &Args, table: &str) -> Result<DynamoSettings, BenchError> {
        let endpoint = args
            .ddb_endpoint
            .clone()
            .ok_or("--store dynamodb needs --ddb-endpoint")?;
        let config = Config::for_tests("unused".into(), "t", "a");
        Ok(DynamoSettings {
            table: table.to_owned(),
            endpoint_url: Some(endpoint),
            // The emulator shares the machine with client and server: time out generously.
            operation_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(2),
            max_concurrency: args.ddb_max_concurrency,
            ..config.dynamo_settings()
        })
    }

    /// A fresh table holding `count` available sandboxes, written with `BatchWriteItem`.
    async fn seeded_table(args: &Args, count: u64) -> Result<(Client, DynamoSettings), BenchError> {
        let table = format!("bench_{}", uuid::Uuid::new_v4().simple());
        let settings = settings(args, &table)?;
        let client = dynamo::client(&settings).await;
        dynamo::schema::ensure_table(&client, &table).await?;
        let s = |v: String| AttributeValue::S(v);
        let n = |v: u64| AttributeValue::N(v.to_string());
        let ids: Vec<u64> = (0..count).collect();
        for chunk in ids.chunks(25) {
            let mut writes = Vec::new();
            for id in chunk {
                let item = HashMap::from([
                    ("PK".to_owned(), s(format!("SBX#{}", 3_000_000 + id))),
                    ("SK".to_owned(), s("META".into())),
                    ("sandbox_id".to_owned(), s(format!("{}", 3_000_000 + id))),
                    ("name".to_owned(), s(format!("bench-{id:07}"))),
                    (
                        "external_id".to_owned(),
                        s(format!("identity/accounts/bench-{id}")),
                    ),
                    ("status".to_owned(), s("available".into())),
                    ("allocated_at".to_owned(), n(0)),
                    ("created_at".to_owned(), n(0)),
                    ("updated_at".to_owned(), n(0)),
                ]);
                writes.push(
                    WriteRequest::builder()
                        .put_request(PutRequest::builder().set_item(Some(item)).build()?)
                        .build(),
                );
            }
            let mut pending = HashMap::from([(table.clone(), writes)]);
            while !pending.values().all(Vec::is_empty) {
                let out = client
                    .batch_write_item()
                    .set_request_items(Some(pending))
                    .send()
                    .await?;
                pending = out.unprocessed_items.unwrap_or_default();
            }
        }
        Ok((client, settings))
    }

    /// A store on a freshly seeded table.
    pub(super) async fn seeded_store(args: &Args) -> Result<SharedStore, BenchError> {
        let (client, settings) = seeded_table(args, args.pool).await?;
        Ok(Arc::new(DynamoStore::new(client, &settings)))
    }

    /// `concurrency` tasks each claiming its own rows with the allocation's conditional
    /// `UpdateItem` (available → allocated), for `--seconds`.
    pub(super) fn raw_ceiling(args: &Args, concurrency: usize) -> Result<Figures, BenchError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let (client, settings) = seeded_table(args, args.pool).await?;
            let deadline = Instant::now() + Duration::from_secs(args.seconds);
            let started = Instant::now();
            let workers: Vec<_> = (0..concurrency)
                .map(|worker| {
                    let client = client.clone();
                    let table = settings.table.clone();
                    let pool = args.pool;
                    tokio::spawn(async move {
                        let mut latencies = Vec::new();
                        let mut failures = 0;
                        let mut id = worker as u64;
                        while Instant::now() < deadline && id < pool {
                            let sent = Instant::now();
                            let result = client
                                .update_item()
                                .table_name(&table)
                                .key("PK", AttributeValue::S(format!("SBX#{}", 3_000_000 + id)))
                                .key("SK", AttributeValue::S("META".into()))
                                .update_expression("SET #s = :allocated, allocated_to_track = :who, allocated_at = :now, updated_at = :now")
                                .condition_expression("#s = :available")
                                .expression_attribute_names("#s", "status")
                                .expression_attribute_values(":allocated", AttributeValue::S("allocated".into()))
                                .expression_attribute_values(":available", AttributeValue::S("available".into()))
                                .expression_attribute_values(":who", AttributeValue::S(format!("raw-{worker}")))
                                .expression_attribute_values(":now", AttributeValue::N("1".into()))
                                .send()
                                .await;
                            match result {
                                Ok(_) => latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX)),
                                Err(_) => failures += 1,
                            }
                            id += concurrency as u64;
                        }
                        (latencies, failures)
                    })
                })
                .collect();
            Ok(Figures::collect(concurrency, started, workers).await)
        })
    }
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
