//! The `reservation` scenario: a pool of 450, 300 of them reserved for lab A; then 300
//! students of lab A and 300 of lab B arrive at once (on one or more instances sharing the
//! store). Every A student must be served, and B must get exactly the 150 not set aside
//! and 150 × 409. Reports each lab's counts and time-to-sandbox, how long the reservations
//! job took to set the 300 aside, and the same run's ceiling: DynamoDB Local's raw
//! conditional `UpdateItem` rate, or the disk's `fdatasync` rate for the embedded store.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sandbox_broker::config::StoreKind;
use sandbox_broker::domain::time::EpochSecs;
use sandbox_broker::store::SharedStore;
use sandbox_broker::store::embedded::EmbeddedStore;
use serde_json::{Value, json};

use super::class_start::{allocate, connect};
use super::{ADMIN_TOKEN, Args, dynamo_bench, pool};

type BenchError = Box<dyn std::error::Error>;

/// The figures: the pool, the reservation, and each lab's class.
const POOL: u64 = 450;
const RESERVED: u64 = 300;
const CLASS: usize = 300;

pub(super) fn run(args: &Args) -> Result<(), BenchError> {
    let instances = args.instances.max(1);
    let dir = tempfile::tempdir()?;
    let server = super::runtime("server")?;
    let rows = pool("lab-", 6_000_000, POOL)?;
    let ceiling = match args.store {
        StoreKind::Dynamodb => {
            let ceiling = dynamo_bench::raw_ceiling(args, 100, 3, super::RawShape::Claim)?;
            format!(
                "emulator ceiling {:.0} conditional UpdateItem/s at 100 in flight",
                ceiling.allocations as f64 / ceiling.elapsed.as_secs_f64()
            )
        }
        StoreKind::Embedded => format!(
            "disk ceiling {:.0} fdatasync/s (one writer)",
            fdatasync_rate(dir.path())?
        ),
    };
    let stores: Vec<SharedStore> = match args.store {
        StoreKind::Embedded => {
            let store = SharedStore::new(EmbeddedStore::open(dir.path())?);
            server.block_on(store.admin.import(rows, EpochSecs::new(0)))?;
            (0..instances).map(|_| store.clone()).collect()
        }
        StoreKind::Dynamodb => {
            let (stores, _) =
                server.block_on(dynamo_bench::seeded_stores(args, &rows, instances))?;
            stores.into_iter().map(SharedStore::of).collect()
        }
    };
    let (addresses, shutdown) = super::serve_fleet(&server, dir.path(), stores)?;
    let client = super::runtime("client")?;
    let outcome = client.block_on(async {
        let held_in = reserve(addresses[0]).await?;
        let started = Instant::now();
        let students: Vec<_> = (0..2 * CLASS)
            .map(|n| {
                // A and B interleaved, spread over the instances.
                let lab = if n % 2 == 0 { "lab-a" } else { "lab-b" };
                let address = addresses[n % addresses.len()];
                tokio::spawn(async move {
                    let mut sender = connect(address).await?;
                    let student = format!("{lab}-student-{n:04}");
                    let answer = allocate(&mut sender, address, &student, None, Some(lab)).await?;
                    Some((lab, answer))
                })
            })
            .collect();
        let mut answers = Vec::new();
        for student in students {
            answers.push(student.await.ok().flatten());
        }
        let burst = started.elapsed();
        Ok::<_, BenchError>((held_in, burst, answers))
    });
    shutdown.cancel();
    server.shutdown_timeout(Duration::from_secs(5));
    let (held_in, burst, answers) = outcome?;
    report(args, instances, &ceiling, held_in, burst, &answers)
}

/// Reserves 300 of the pool for `lab-a` (its class starts in a minute) and waits until the
/// reservations job has set them aside; how long that took.
async fn reserve(address: SocketAddr) -> Result<Duration, BenchError> {
    let client = reqwest::Client::new();
    let base = format!("http://{address}/v1/admin/reservations");
    let now = sandbox_broker::domain::now_epoch();
    let started = Instant::now();
    let made: Value = client
        .post(&base)
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"track_name": "lab-a", "count": RESERVED, "starts_at": now + 60, "ends_at": now + 3600}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = made["id"].as_str().ok_or("no reservation id")?.to_owned();
    while started.elapsed() < Duration::from_secs(60) {
        let listed: Value = client
            .get(&base)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?
            .json()
            .await?;
        let held = listed["reservations"]
            .as_array()
            .and_then(|all| all.iter().find(|r| r["id"] == id.as_str()))
            .and_then(|r| r["held"].as_u64());
        if held == Some(RESERVED) {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err("the reservations job did not set 300 aside within a minute".into())
}

/// `fdatasync` calls a second on a small file in `dir` (what a group commit waits for).
fn fdatasync_rate(dir: &std::path::Path) -> Result<f64, BenchError> {
    let mut file = std::fs::File::create(dir.join("fdatasync-probe"))?;
    let started = Instant::now();
    let mut calls = 0u32;
    while started.elapsed() < Duration::from_secs(1) {
        file.write_all(&[0u8; 512])?;
        file.sync_data()?;
        calls += 1;
    }
    Ok(f64::from(calls) / started.elapsed().as_secs_f64())
}

fn report(
    args: &Args,
    instances: usize,
    ceiling: &str,
    held_in: Duration,
    burst: Duration,
    answers: &[Option<(&str, (u16, Duration))>],
) -> Result<(), BenchError> {
    let failed = answers.iter().filter(|a| a.is_none()).count();
    let mut per_lab: BTreeMap<&str, (BTreeMap<u16, usize>, Vec<Duration>)> = BTreeMap::new();
    for (lab, (status, latency)) in answers.iter().flatten() {
        let (statuses, served) = per_lab.entry(lab).or_default();
        *statuses.entry(*status).or_default() += 1;
        if *status == 201 {
            served.push(*latency);
        }
    }
    println!(
        "{ceiling}; 300 of 450 set aside in {:.2} s; burst {:.2} s",
        held_in.as_secs_f64(),
        burst.as_secs_f64()
    );
    println!(
        "| store | instances | lab | students | 201 | 409 | other | time-to-sandbox p50 / p99 ms |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---|");
    let mut exact = failed == 0;
    for (lab, (statuses, served)) in &mut per_lab {
        served.sort_unstable();
        let percentile = |p: f64| super::percentile_ms(served, p);
        let count = |status: u16| statuses.get(&status).copied().unwrap_or(0);
        let students: usize = statuses.values().sum();
        let other = students - count(201) - count(409);
        println!(
            "| {:?} | {instances} | {lab} | {students} | {} | {} | {other} | {:.0} / {:.0} |",
            args.store,
            count(201),
            count(409),
            percentile(0.50),
            percentile(0.99),
        );
        let expected = if *lab == "lab-a" {
            (300, 0)
        } else {
            (150, 150)
        };
        exact &= (count(201), count(409), other) == (expected.0, expected.1, 0);
    }
    if exact {
        println!("exact: every lab-a student served; lab-b got exactly 150 × 201 and 150 × 409");
        Ok(())
    } else {
        Err(format!("the counts are not the issue's ({failed} requests failed to connect)").into())
    }
}
