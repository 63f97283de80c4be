//! The `class-start` scenario: N students at once for a pool of M, on one or more
//! instances sharing the store.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use sandbox_broker::config::StoreKind;
use sandbox_broker::domain::time::EpochSecs;
use sandbox_broker::store::SharedStore;
use sandbox_broker::store::dynamo::DynamoStore;
use sandbox_broker::store::embedded::EmbeddedStore;
use tokio::net::TcpStream;

use super::{Args, LAB_TOKEN, dynamo_bench, pool, pool_size};

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
    let server = super::runtime("server")?;
    let mut rows = pool("lab-", 4_000_000, pool_size)?;
    rows.extend(pool("idle-", 5_000_000, IDLE_PROBES * 2)?);
    if args.store == StoreKind::Dynamodb {
        // Warms the emulator (a cold JVM is about half as fast) and measures its
        // ceiling at this concurrency, in this run.
        let ceiling = dynamo_bench::raw_ceiling(args, at_once.min(100), 3, super::RawShape::Claim)?;
        println!(
            "emulator ceiling: {:.0} conditional UpdateItem/s at {} in flight (p99 {:.1} ms)",
            ceiling.allocations as f64 / ceiling.elapsed.as_secs_f64(),
            ceiling.students,
            ceiling.percentile_ms(0.99)
        );
    }
    let (stores, dynamo): (Vec<SharedStore>, Vec<Arc<DynamoStore>>) = match args.store {
        StoreKind::Embedded => {
            let store = SharedStore::new(EmbeddedStore::open(dir.path())?);
            server.block_on(store.admin.import(rows, EpochSecs::new(0)))?;
            ((0..instances).map(|_| store.clone()).collect(), Vec::new())
        }
        StoreKind::Dynamodb => {
            let (stores, _) =
                server.block_on(dynamo_bench::seeded_stores(args, &rows, instances))?;
            let shared = stores
                .iter()
                .map(|store| SharedStore::of(Arc::clone(store)))
                .collect();
            (shared, stores)
        }
    };
    let (addresses, shutdown) = super::serve_fleet(&server, dir.path(), stores)?;
    let client = super::runtime("client")?;
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
    let percentile = |p: f64| super::percentile_ms(&served, p);
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
            allocate(&mut sender, address, &student, Some("idle-"), None).await
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

pub(super) type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// A keep-alive HTTP/1 connection to `address`, `None` when it cannot be opened.
pub(super) async fn connect(address: SocketAddr) -> Option<Sender> {
    let stream = TcpStream::connect(address).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(connection);
    Some(sender)
}

/// One `POST /v1/allocate` (for `lab`, when given); its status and latency, `None` when
/// the connection failed.
pub(super) async fn allocate(
    sender: &mut Sender,
    address: SocketAddr,
    student: &str,
    prefix: Option<&str>,
    lab: Option<&str>,
) -> Option<(u16, Duration)> {
    let mut request = Request::post(format!("http://{address}/v1/allocate"))
        .header("host", "127.0.0.1")
        .header("authorization", format!("Bearer {LAB_TOKEN}"))
        .header("content-type", "application/json")
        .header("x-instruqt-sandbox-id", student);
    if let Some(prefix) = prefix {
        request = request.header("x-sandbox-name-prefix", prefix);
    }
    if let Some(lab) = lab {
        request = request.header("x-instruqt-track-id", lab);
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
            Some(sender) => allocate(sender, address, &student, Some("lab-"), None).await,
            None => None,
        };
        let (status, latency) = answer.unwrap_or((0, Duration::ZERO));
        if status == 0 {
            sender = connect(address).await;
        }
        answers.push(Answer { status, latency });
    }
}
