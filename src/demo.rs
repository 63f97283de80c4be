//! The demo: a few hundred sandboxes under several name prefixes (some with an SFDC id)
//! at a simulated provider, and job intervals short enough to watch them work; and the
//! `demo` and `simulate-provider` commands that run them.

use std::sync::Arc;
use std::time::Duration;

use crate::app::{Server, StartupError, shutdown_signal};
use crate::config::{Config, LogFormat, StoreKind, TokenList};
use crate::provider::ProviderSandbox;
use crate::provider::simulated::server::{self, SimulatorConfig};
use crate::provider::simulated::{SimulatedProvider, account};

/// Name prefixes of the demo pool, so `X-Sandbox-Name-Prefix` can be tried at once.
pub const DEMO_PREFIXES: [&str; 3] = ["lab-adventure-", "lab-dns-", "lab-security-"];
/// Sandboxes per prefix.
pub const DEMO_PER_PREFIX: u64 = 100;

/// The simulated provider's starting accounts: ids from 2 000 000, every other one with an
/// SFDC id.
pub fn demo_accounts() -> Vec<ProviderSandbox> {
    let mut accounts = Vec::new();
    for (p, prefix) in (0u64..).zip(DEMO_PREFIXES) {
        for n in 1..=DEMO_PER_PREFIX {
            let id = 2_000_000 + p * 1000 + n;
            let sfdc = (n % 2 == 0).then(|| format!("001DEMO{id:08}"));
            accounts.extend(account(id, &format!("{prefix}{n:04}"), sfdc));
        }
    }
    accounts
}

/// Job intervals for the demo: short, so sync, cleanup and expiry visibly happen.
pub fn speed_up_jobs(config: &mut Config) {
    config.jobs.sync_interval = Duration::from_secs(30);
    config.jobs.cleanup_interval = Duration::from_secs(15);
    config.jobs.auto_expiry_interval = Duration::from_secs(30);
    config.jobs.cleanup_batch_delay = Duration::from_millis(500);
}

/// The `demo` command: `serve` on a scratch embedded store, its jobs running against a
/// simulated provider whose first sync fills the pool, with printed tokens.
pub async fn run(mut config: Config) -> Result<(), StartupError> {
    let _log = config.log.init(LogFormat::Text)?;
    let scratch = tempfile::Builder::new()
        .prefix("sandbox-broker-demo-")
        .tempdir()
        .map_err(|source| StartupError::Io {
            what: "creating a scratch directory",
            source,
        })?;
    config.store.data_dir = scratch.path().to_owned();
    config.store.store = Some(StoreKind::Embedded);
    speed_up_jobs(&mut config);
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let lab = first_token(
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
    let config = config.validate()?;
    let store = crate::store::open(&config.store).await?;
    let provider = Arc::new(SimulatedProvider::new(demo_accounts()));
    let port_base = config.http.api_base_path.clone();
    let app = Server::build_with_provider(config, store, provider).await?;
    let first_sync = app.jobs().sync().await.map_err(StartupError::DemoSync)?;
    let port = app.port();
    let base = port_base;
    println!(
        "\nsandbox-broker demo — NOT for production (scratch data in {dir})\n\
         demo pool: {synced} sandboxes synced from a simulated provider, prefixes {prefixes}\n\
         jobs: sync every 30 s (the provider adds one sandbox and drops one each time: watch it go stale),\n      \
         cleanup every 15 s (released sandboxes are deleted), expiry every 30 s\n\
         track token: {lab}\n\
         admin token: {admin}\n\n\
         allocate a sandbox:\n  \
         curl -s -X POST http://127.0.0.1:{port}{base}/allocate -H 'Authorization: Bearer {lab}' -H 'X-Instruqt-Sandbox-ID: student-1' -H 'X-Sandbox-Name-Prefix: lab-dns-'\n\
         pool stats and jobs:\n  \
         curl -s http://127.0.0.1:{port}{base}/admin/stats -H 'Authorization: Bearer {admin}'\n  \
         curl -s http://127.0.0.1:{port}{base}/admin/jobs -H 'Authorization: Bearer {admin}'\n\
         API docs: http://127.0.0.1:{port}{base}/docs    dashboard: http://127.0.0.1:{port}/dashboard\n",
        dir = scratch.path().display(),
        synced = first_sync.counts.summary.synced,
        prefixes = DEMO_PREFIXES.join(", "),
    );
    let result = app.run_until_signalled().await;
    drop(scratch);
    result
}

/// The `simulate-provider` command: the demo pool at a simulated CSP accounts API, until
/// SIGTERM or SIGINT.
pub async fn simulate_provider(config: SimulatorConfig) -> Result<(), StartupError> {
    let _log = crate::telemetry::init("info", LogFormat::Json)?;
    let provider = Arc::new(SimulatedProvider::new(demo_accounts()));
    server::run(config, provider, shutdown_signal())
        .await
        .map_err(|source| StartupError::Io {
            what: "the simulated provider",
            source,
        })
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
