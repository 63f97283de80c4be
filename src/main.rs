//! `sandbox-broker`: parse the command line, start telemetry, open the store, serve until signalled.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use sandbox_broker::app::{Application, shutdown_signal};
use sandbox_broker::config::{Cli, Command, Config, LogFormat, StoreKind, TokenList};
use sandbox_broker::jobs::JobName;
use sandbox_broker::provider::simulated::{SimulatedProvider, server};
use sandbox_broker::store::dynamo::{self, DynamoStore};
use sandbox_broker::store::embedded::EmbeddedStore;
use sandbox_broker::store::{HealthStore, SharedStore};
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
            telemetry::init(
                &config.log.log_level,
                config.log.log_format.unwrap_or(LogFormat::Json),
            )?;
            config.validate_for_serve().map_err(|err| err.to_string())?;
            let (kind, why) = config.store_choice();
            tracing::info!(store = ?kind, reason = why, "store selected");
            let store = open_store(&config).await?;
            serve(config, store).await
        }
        Command::Demo(config) => demo_run(config).await,
        Command::SimulateProvider(config) => {
            telemetry::init("info", LogFormat::Json)?;
            let provider = Arc::new(SimulatedProvider::new(demo::demo_accounts()));
            server::run(config, provider, shutdown_signal())
                .await
                .map_err(|err| format!("the simulated provider stopped: {err}"))
        }
        Command::InitTable(config) => {
            telemetry::init(
                &config.log.log_level,
                config.log.log_format.unwrap_or(LogFormat::Json),
            )?;
            config
                .dynamo
                .validate_index_names()
                .map_err(|err| err.to_string())?;
            init_table(&config).await
        }
    }
}

async fn open_store(config: &Config) -> Result<SharedStore, String> {
    match config.store_kind() {
        StoreKind::Embedded => EmbeddedStore::open(&config.store.data_dir)
            .map(SharedStore::new)
            .map_err(|err| format!("BROKER_DATA_DIR: {err}")),
        StoreKind::Dynamodb => {
            let settings = config.dynamo.settings();
            let client = dynamo::client(&settings).await;
            let store = DynamoStore::new(&client, &settings);
            // Refuse to start against a table we cannot reach, rather than serve 503s.
            store.ping().await.map_err(|err| {
                format!(
                    "DDB_TABLE_NAME: table {} is unreachable ({}); run `sandbox-broker init-table` if it does not exist",
                    settings.table,
                    error_chain(&err)
                )
            })?;
            let missing = dynamo::schema::missing_indexes(&client, &settings.table)
                .await
                .map_err(|err| {
                    format!(
                        "DDB_TABLE_NAME: cannot describe table {} ({})",
                        settings.table,
                        error_chain(&err)
                    )
                })?;
            if !missing.is_empty() {
                return Err(format!(
                    "DDB_TABLE_NAME: table {} lacks the index(es) {}; run `sandbox-broker init-table` (additive, safe on a live table) first",
                    settings.table,
                    missing.join(", ")
                ));
            }
            Ok(SharedStore::new(store))
        }
    }
}

async fn init_table(config: &Config) -> Result<(), String> {
    let settings = config.dynamo.settings();
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
    run_app(app).await
}

/// Serves `app` until SIGTERM/SIGINT, then drains.
async fn run_app(app: Application) -> Result<(), String> {
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

/// `serve` on a scratch embedded store, its jobs running against a simulated provider
/// whose first sync fills the pool, with printed tokens.
async fn demo_run(mut config: Config) -> Result<(), String> {
    telemetry::init(
        &config.log.log_level,
        config.log.log_format.unwrap_or(LogFormat::Text),
    )?;
    let scratch = tempfile::Builder::new()
        .prefix("sandbox-broker-demo-")
        .tempdir()
        .map_err(|err| format!("cannot create a scratch directory: {err}"))?;
    config.store.data_dir = scratch.path().to_owned();
    config.store.store = Some(StoreKind::Embedded);
    demo::speed_up_jobs(&mut config);
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let track = first_token(
        config
            .auth
            .api_token
            .get_or_insert_with(|| demo_tokens(&format!("demo-track-{suffix}"))),
    );
    let admin = first_token(
        config
            .auth
            .admin_token
            .get_or_insert_with(|| demo_tokens(&format!("demo-admin-{suffix}"))),
    );
    let store = open_store(&config).await?;
    let provider = Arc::new(SimulatedProvider::new(demo::demo_accounts()));
    let app = Application::build_with_provider(config.clone(), store, provider)
        .await
        .map_err(|err| err.to_string())?;
    let first_sync = app
        .jobs()
        .run(JobName::Sync)
        .await
        .map_err(|err| format!("the demo's first sync failed: {}", error_chain(&err)))?;
    let port = app.port();
    let base = config.http.api_base_path.clone();
    println!(
        "\nsandbox-broker demo — NOT for production (scratch data in {dir})\n\
         demo pool: {synced} sandboxes synced from a simulated provider, prefixes {prefixes}\n\
         jobs: sync every 30 s (the provider adds one sandbox and drops one each time: watch it go stale),\n      \
         cleanup every 15 s (released sandboxes are deleted), expiry every 30 s\n\
         track token: {track}\n\
         admin token: {admin}\n\n\
         allocate a sandbox:\n  \
         curl -s -X POST http://127.0.0.1:{port}{base}/allocate -H 'Authorization: Bearer {track}' -H 'X-Instruqt-Sandbox-ID: student-1' -H 'X-Sandbox-Name-Prefix: lab-dns-'\n\
         pool stats and jobs:\n  \
         curl -s http://127.0.0.1:{port}{base}/admin/stats -H 'Authorization: Bearer {admin}'\n  \
         curl -s http://127.0.0.1:{port}{base}/admin/jobs -H 'Authorization: Bearer {admin}'\n\
         API docs: http://127.0.0.1:{port}{base}/docs    dashboard: http://127.0.0.1:{port}/dashboard\n",
        dir = scratch.path().display(),
        synced = match first_sync.counts {
            sandbox_broker::jobs::JobCounts::Sync { summary, .. } => summary.synced,
            _ => 0,
        },
        prefixes = demo::DEMO_PREFIXES.join(", "),
    );
    let result = run_app(app).await;
    drop(scratch);
    result
}

fn first_token(list: &TokenList) -> String {
    list.tokens().next().unwrap_or_default().to_owned()
}

fn demo_tokens(token: &str) -> TokenList {
    match TokenList::parse(token) {
        Ok(list) => list,
        Err(err) => unreachable!("generated demo tokens are valid: {err}"),
    }
}
