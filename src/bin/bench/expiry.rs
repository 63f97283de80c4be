//! The expiry scenario: steady allocation, first alone and then while `POST
//! /v1/admin/expire` (the expiry job's own run) releases 100,000 ended allocations, on the
//! same server in the same run. A job finds its rows on a snapshot and writes them in
//! bounded batches, so the two rounds' p99 and max should match.
//! `cargo run --release --bin bench -- --scenario expiry --levels 100 --seconds 4`

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::Request;
use sandbox_broker::config::StoreKind;
use sandbox_broker::domain::time::EpochSecs;
use sandbox_broker::domain::{HolderKey, NamePrefix};
use sandbox_broker::store::{AllocationKey, AllocationRequest, SharedStore};

use crate::{
    Args, admin_send, pool, pool_size, print_header, print_row, runtime, seeded_embedded, serve,
    students_for,
};

/// Ended allocations the expiry releases.
const ENDED: u64 = 100_000;

/// Runs the scenario and prints its tables.
pub(crate) fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.store != StoreKind::Embedded {
        return Err("the expiry scenario measures the embedded store's writer".into());
    }
    let students = args.levels.first().copied().unwrap_or(100);
    let dir = tempfile::tempdir()?;
    let server_runtime = runtime("server")?;
    let store = seeded_embedded(&server_runtime, dir.path(), pool_size(args))?;
    let seeded = Instant::now();
    server_runtime.block_on(end_allocations(&store, ENDED))?;
    eprintln!(
        "seeded {ENDED} allocations that ended a day ago in {:.1} s",
        seeded.elapsed().as_secs_f64()
    );
    // Both rounds finish before the scheduled jobs' first runs, 10 s after the start.
    let (address, shutdown) = serve(&server_runtime, dir.path(), store)?;
    let client_runtime = runtime("client")?;
    let duration = Duration::from_secs(args.seconds.min(4));
    print_header();
    let mut expiry = None;
    for (round, expiring) in [(0, false), (1, true)] {
        let first_worker = round * 1_000_000;
        let (figures, run) = client_runtime.block_on(async move {
            let expirer = expiring.then(|| {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    expire(address).await
                })
            });
            let figures = students_for(address, students, first_worker, duration).await;
            let run = match expirer {
                Some(expirer) => expirer.await.ok().flatten(),
                None => None,
            };
            (figures, run)
        });
        let what = if expiring {
            "allocation during expiry of 100,000"
        } else {
            "allocation, no job"
        };
        print_row(what, &figures);
        if expiring {
            expiry = run;
        }
    }
    println!();
    match expiry {
        Some((body, took)) => println!(
            "expiry run: {body} in {:.2} s (POST /v1/admin/expire)",
            took.as_secs_f64()
        ),
        None => println!("expiry run: did not answer 200"),
    }
    shutdown.cancel();
    server_runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}

/// Imports `count` rows named `ended-…` and allocates each of them to a student whose lab
/// (an hour long) started a day ago, 256 at a time.
async fn end_allocations(
    store: &SharedStore,
    count: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let rows = pool("ended-", 9_000_000, count)?;
    for chunk in rows.chunks(10_000) {
        store
            .admin
            .import(chunk.to_vec(), EpochSecs::new(0))
            .await?;
    }
    let a_day_ago = EpochSecs::new(
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs(),
        )? - 86_400,
    );
    let prefix = NamePrefix::parse("name_prefix", "ended-")?;
    let workers: Vec<_> = (0..256u64)
        .map(|worker| {
            let (store, prefix) = (store.clone(), prefix.clone());
            tokio::spawn(async move {
                let mut n = worker;
                while n < count {
                    let request = AllocationRequest {
                        key: AllocationKey {
                            holder: HolderKey::parse("holder", &format!("ended-{n}"))?,
                            idempotency_key: None,
                        },
                        lab: None,
                        name_prefix: Some(prefix.clone()),
                        lab_duration_hours: 1,
                        now: a_day_ago,
                        token: None,
                        reservation: None,
                    };
                    store
                        .allocation
                        .allocate(request)
                        .await?
                        .map_err(|refused| format!("seeding allocation refused: {refused:?}"))?;
                    n += 256;
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .collect();
    for worker in workers {
        worker.await?.map_err(|err| err.to_string())?;
    }
    Ok(())
}

/// `POST /v1/admin/expire`: its body and how long it took, when it answered 200.
async fn expire(address: std::net::SocketAddr) -> Option<(String, Duration)> {
    let started = Instant::now();
    let request = Request::post(format!("http://{address}/v1/admin/expire"));
    let response = admin_send(address, request).await?;
    let ok = response.status() == hyper::StatusCode::OK;
    let body = response.into_body().collect().await.ok()?.to_bytes();
    ok.then(|| {
        (
            String::from_utf8_lossy(&body).into_owned(),
            started.elapsed(),
        )
    })
}
