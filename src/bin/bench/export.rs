//! The export scenario: allocations served while `GET /v1/admin/export` streams every
//! item of a 100,000-row embedded store, against the same allocations with no export, in
//! the same run on the same server.
//! `cargo run --release --bin bench -- --scenario export --levels 100 --seconds 2`

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::Request;
use sandbox_broker::config::StoreKind;

use crate::{
    Args, admin_send, pool_size, print_header, print_row, runtime, seeded_embedded, serve,
    students_for,
};

/// One export read to its end.
struct ExportRun {
    lines: u64,
    bytes: u64,
    elapsed: Duration,
}

/// Runs the scenario and prints its tables.
pub(crate) fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.store != StoreKind::Embedded {
        return Err("the export scenario measures the embedded store's snapshot export".into());
    }
    let dir = tempfile::tempdir()?;
    let server_runtime = runtime("server")?;
    let store = seeded_embedded(&server_runtime, dir.path(), pool_size(args))?;
    let (address, shutdown) = serve(&server_runtime, dir.path(), store)?;
    let client_runtime = runtime("client")?;
    let duration = Duration::from_secs(args.seconds);
    print_header();
    let mut exports = Vec::new();
    for (level, &students) in args.levels.iter().enumerate() {
        for (round, exporting) in [(0, false), (1, true)] {
            // Fresh holder keys every round, so every allocation is a new one.
            let first_worker = (level * 2 + round) * 100_000;
            let (figures, runs) = client_runtime.block_on(async move {
                let deadline = Instant::now() + duration;
                let exporter = exporting.then(|| tokio::spawn(export_until(address, deadline)));
                let figures = students_for(address, students, first_worker, duration).await;
                let runs = match exporter {
                    Some(exporter) => exporter.await.unwrap_or_default(),
                    None => Vec::new(),
                };
                (figures, runs)
            });
            let what = if exporting {
                "allocation during export"
            } else {
                "allocation, no export"
            };
            print_row(what, &figures);
            exports.extend(runs);
        }
    }
    println!();
    println!("| export | lines | MB | seconds | lines per second |");
    println!("|---|---:|---:|---:|---:|");
    for (n, run) in exports.iter().enumerate() {
        println!(
            "| {} | {} | {:.1} | {:.2} | {:.0} |",
            n + 1,
            run.lines,
            run.bytes as f64 / 1e6,
            run.elapsed.as_secs_f64(),
            run.lines as f64 / run.elapsed.as_secs_f64()
        );
    }
    shutdown.cancel();
    server_runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}

/// Reads whole exports, one after another, until `deadline` (the last one to its end).
async fn export_until(address: std::net::SocketAddr, deadline: Instant) -> Vec<ExportRun> {
    let mut runs = Vec::new();
    while Instant::now() < deadline {
        match export_once(address).await {
            Some(run) => runs.push(run),
            None => break,
        }
    }
    runs
}

async fn export_once(address: std::net::SocketAddr) -> Option<ExportRun> {
    let started = Instant::now();
    let request = Request::get(format!("http://{address}/v1/admin/export"));
    let response = admin_send(address, request).await?;
    if response.status() != hyper::StatusCode::OK {
        return None;
    }
    let mut body = response.into_body();
    let (mut lines, mut bytes) = (0u64, 0u64);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            bytes += data.len() as u64;
            lines += data.iter().filter(|b| **b == b'\n').count() as u64;
        }
    }
    Some(ExportRun {
        lines,
        bytes,
        elapsed: started.elapsed(),
    })
}
