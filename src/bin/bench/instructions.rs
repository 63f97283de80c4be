//! The instructions scenario: how many CPU instructions the service spends on one durable
//! allocation, counted by valgrind's callgrind (instructions, not seconds, so the count
//! repeats on a busy or a different machine of the same architecture). The release
//! `sandbox-broker serve` runs under callgrind on a seeded store (embedded, or a fresh
//! DynamoDB Local table with `--store dynamodb`), with counting
//! off while it starts and its first scheduled jobs run; counting is then switched on for
//! `--seconds` of allocations at the first `--levels` concurrency (the same client as
//! `steady`), switched off, and the total divided by the allocations made.
//! `cargo build --release && cargo run --release --bin bench -- --scenario instructions --levels 100 --seconds 10 [--store dynamodb]`

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use sandbox_broker::config::StoreKind;
use tokio::net::TcpStream;

use crate::{
    ADMIN_TOKEN, Args, LAB_TOKEN, pool, pool_size, runtime, seeded_embedded, students_for,
};

/// Runs the scenario and prints its figure.
pub(crate) fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let broker = service_binary()?;
    let students = args.levels.first().copied().unwrap_or(100);
    let dir = tempfile::tempdir()?;
    let seed_runtime = runtime("seed")?;
    let store_env: Vec<(&str, String)> = match args.store {
        StoreKind::Embedded => {
            // Seeded in this process, then closed so the service can open it.
            drop(seeded_embedded(&seed_runtime, dir.path(), pool_size(args))?);
            vec![("BROKER_STORE", "embedded".into())]
        }
        StoreKind::Dynamodb => {
            let rows = pool("bench-", 3_000_000, pool_size(args))?;
            let (_, settings) =
                seed_runtime.block_on(crate::dynamo_bench::seeded_table(args, &rows))?;
            vec![
                ("BROKER_STORE", "dynamodb".into()),
                ("DDB_TABLE_NAME", settings.table.clone()),
                (
                    "DDB_ENDPOINT_URL",
                    settings.endpoint_url.unwrap_or_default(),
                ),
                ("DDB_MAX_CONCURRENCY", args.ddb_max_concurrency.to_string()),
                (
                    "DDB_LATENCY_TARGET_MS",
                    args.ddb_latency_target_ms.to_string(),
                ),
                ("AWS_REGION", "us-east-1".into()),
                ("AWS_ACCESS_KEY_ID", "bench".into()),
                ("AWS_SECRET_ACCESS_KEY", "bench".into()),
            ]
        }
    };
    let port = sandbox_broker::store::dynamo::local::free_port()?;
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let profile = dir.path().join("callgrind.out");
    let mut service = Command::new("valgrind")
        .args(["--tool=callgrind", "--instr-atstart=no"])
        .arg(format!("--callgrind-out-file={}", profile.display()))
        .arg(&broker)
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BROKER_LISTEN_ADDR", address.to_string())
        .envs(store_env)
        .env("BROKER_DATA_DIR", dir.path())
        .env("BROKER_API_TOKEN", LAB_TOKEN)
        .env("BROKER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("LOG_FORMAT", "json")
        .env("RATE_LIMIT_PER_SEC", "1000000")
        .env("RATE_LIMIT_BURST", "1000000")
        .env("RATE_LIMIT_PER_ADDRESS_PER_SEC", "1000000")
        .env("RATE_LIMIT_PER_ADDRESS_BURST", "1000000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|err| format!("cannot start valgrind (apt-get install valgrind): {err}"))?;
    let started = Instant::now();
    let client_runtime = runtime("client")?;
    let counted = client_runtime.block_on(async {
        wait_until_listening(address, Duration::from_secs(120)).await?;
        // The first scheduled job runs are 10 s after the start; let them pass.
        tokio::time::sleep(Duration::from_secs(15).saturating_sub(started.elapsed())).await;
        callgrind_control(service.id(), "on")?;
        let figures = students_for(address, students, 0, Duration::from_secs(args.seconds)).await;
        callgrind_control(service.id(), "off")?;
        Ok::<_, Box<dyn std::error::Error>>(figures)
    });
    // SIGTERM: the service drains and exits, and callgrind writes its counts.
    let _ = Command::new("kill").arg(service.id().to_string()).status();
    let exited = service.wait();
    let figures = counted?;
    exited?;
    let total = counted_instructions(&profile)?;
    // Kept for `callgrind_annotate`, beside the binaries.
    let kept = broker.with_file_name(format!("callgrind.{}.out", store_name(args.store)));
    std::fs::copy(&profile, &kept)?;
    eprintln!(
        "profile: {} (callgrind_annotate --inclusive=yes it)",
        kept.display()
    );
    println!(
        "| what | concurrency | allocations | instructions counted | instructions per allocation |"
    );
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| allocation over HTTP under callgrind ({}) | {students} | {} | {total} | {:.0} |",
        store_name(args.store),
        figures.allocations,
        total as f64 / figures.allocations.max(1) as f64
    );
    Ok(())
}

/// The store's `--store` name (`embedded`, `dynamodb`).
fn store_name(store: StoreKind) -> String {
    store
        .to_possible_value()
        .map_or_else(|| format!("{store:?}"), |value| value.get_name().to_owned())
}

/// The release `sandbox-broker` binary beside this one.
fn service_binary() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let bench = std::env::current_exe()?;
    let broker = bench.with_file_name("sandbox-broker");
    if !broker.exists() {
        return Err(format!(
            "{} is missing: run `cargo build --release` first",
            broker.display()
        )
        .into());
    }
    Ok(broker)
}

/// Waits until `address` accepts connections.
async fn wait_until_listening(
    address: std::net::SocketAddr,
    patience: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let until = Instant::now() + patience;
    while TcpStream::connect(address).await.is_err() {
        if Instant::now() > until {
            return Err("the service under callgrind did not start listening".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Switches callgrind's instrumentation of process `pid` on or off.
fn callgrind_control(pid: u32, switch: &str) -> Result<(), Box<dyn std::error::Error>> {
    let status = Command::new("callgrind_control")
        .args(["-i", switch, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("callgrind_control -i {switch} failed: {status}").into());
    }
    Ok(())
}

/// The instructions a callgrind profile counted (its `totals:` line).
fn counted_instructions(profile: &Path) -> Result<u64, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(profile)?;
    text.lines()
        .find_map(|line| line.strip_prefix("totals:"))
        .and_then(|total| total.trim().parse().ok())
        .ok_or_else(|| format!("{} has no totals line", profile.display()).into())
}
