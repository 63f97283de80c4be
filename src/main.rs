//! `sandbox-broker`: parse the command line, start telemetry, open the store, serve until signalled.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use sandbox_broker::app::{Application, shutdown_signal};
use sandbox_broker::config::{Cli, Command, Config, StoreKind, TokenList};
use sandbox_broker::domain::now_epoch;
use sandbox_broker::store::dynamo::{self, DynamoStore};
use sandbox_broker::store::embedded::EmbeddedStore;
use sandbox_broker::store::{SharedStore, Store};
use sandbox_broker::telemetry::error_chain;
use sandbox_broker::{demo, telemetry};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    // A missing .env is normal; a present one fills variables not already set.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => return fail(&format!("cannot start the async runtime: {err}")),
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => fail(&reason),
    }
}

fn fail(reason: &str) -> ExitCode {
    eprintln!("sandbox-broker: {reason}");
    ExitCode::FAILURE
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve(config) => {
            telemetry::init(&config.log_level, config.log_format)?;
            config.validate_for_serve().map_err(|err| err.to_string())?;
            let store = open_store(&config).await?;
            serve(config, store).await
        }
        Command::Demo(config) => demo_run(config).await,
        Command::InitTable(config) => {
            telemetry::init(&config.log_level, config.log_format)?;
            init_table(&config).await
        }
    }
}

async fn open_store(config: &Config) -> Result<SharedStore, String> {
    match config.store {
        StoreKind::Embedded => EmbeddedStore::open(&config.data_dir)
            .map(|store| Arc::new(store) as SharedStore)
            .map_err(|err| format!("BROKER_DATA_DIR: {err}")),
        StoreKind::Dynamodb => {
            let settings = config.dynamo_settings();
            let store = DynamoStore::new(dynamo::client(&settings).await, &settings);
            // Refuse to start against a table we cannot reach, rather than serve 503s.
            store.ping().await.map_err(|err| {
                format!(
                    "DDB_TABLE_NAME: table {} is unreachable ({}); run `sandbox-broker init-table` if it does not exist",
                    settings.table,
                    error_chain(&err)
                )
            })?;
            Ok(Arc::new(store))
        }
    }
}

async fn init_table(config: &Config) -> Result<(), String> {
    let settings = config.dynamo_settings();
    let client = dynamo::client(&settings).await;
    let report = dynamo::schema::ensure_table(&client, &settings.table)
        .await
        .map_err(|err| {
            format!(
                "DDB_TABLE_NAME: cannot prepare table {}: {}",
                settings.table,
                error_chain(&err)
            )
        })?;
    if report.created_table {
        println!("created table {} with its indexes", settings.table);
    } else if report.added_indexes.is_empty() {
        println!(
            "table {} already has every index; nothing to do",
            settings.table
        );
    } else {
        println!(
            "table {}: added {}",
            settings.table,
            report.added_indexes.join(", ")
        );
    }
    Ok(())
}

async fn serve(config: Config, store: SharedStore) -> Result<(), String> {
    let app = Application::build(config, store)
        .await
        .map_err(|err| err.to_string())?;
    tracing::info!(address = %app.local_addr(), "sandbox-broker listening");
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal received; draining in-flight requests");
        signal.cancel();
    });
    app.run_until_stopped(shutdown)
        .await
        .map_err(|err| format!("HTTP server failed: {err}"))?;
    tracing::info!("sandbox-broker stopped cleanly");
    Ok(())
}

/// `serve` on a scratch embedded store with a demo pool and printed tokens.
async fn demo_run(mut config: Config) -> Result<(), String> {
    telemetry::init(&config.log_level, config.log_format)?;
    let scratch = tempfile::Builder::new()
        .prefix("sandbox-broker-demo-")
        .tempdir()
        .map_err(|err| format!("cannot create a scratch directory: {err}"))?;
    config.data_dir = scratch.path().to_owned();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let track = config
        .api_token
        .get_or_insert_with(|| demo_tokens(&format!("demo-track-{suffix}")))
        .tokens()
        .next()
        .unwrap_or_default()
        .to_owned();
    let admin = config
        .admin_token
        .get_or_insert_with(|| demo_tokens(&format!("demo-admin-{suffix}")))
        .tokens()
        .next()
        .unwrap_or_default()
        .to_owned();
    config.store = StoreKind::Embedded;
    let store = open_store(&config).await?;
    let pool = demo::demo_pool();
    let size = pool.len();
    store
        .import(pool, now_epoch())
        .await
        .map_err(|err| format!("cannot seed the demo pool: {err}"))?;
    let port = config.listen_addr.port();
    let base = config.api_base_path.clone();
    println!(
        "\nsandbox-broker demo — NOT for production (scratch data in {dir})\n\
         demo pool: {size} sandboxes, prefixes {prefixes}\n\
         track token: {track}\n\
         admin token: {admin}\n\n\
         allocate a sandbox:\n  \
         curl -s -X POST http://127.0.0.1:{port}{base}/allocate -H 'Authorization: Bearer {track}' -H 'X-Instruqt-Sandbox-ID: student-1' -H 'X-Sandbox-Name-Prefix: lab-dns-'\n\
         pool stats:\n  \
         curl -s http://127.0.0.1:{port}{base}/admin/stats -H 'Authorization: Bearer {admin}'\n\
         API docs: http://127.0.0.1:{port}{base}/docs\n",
        dir = scratch.path().display(),
        prefixes = demo::DEMO_PREFIXES.join(", "),
    );
    let result = serve(config, store).await;
    drop(scratch);
    result
}

fn demo_tokens(token: &str) -> TokenList {
    match TokenList::parse(token) {
        Ok(list) => list,
        Err(err) => unreachable!("generated demo tokens are valid: {err}"),
    }
}
