//! The application: its shared state and the builder that owns the listener.
//!
//! Rule: `Server::build` binds first (port 0 allowed) and reports the port, so tests
//! and the benchmark never guess when the server is up; `run_until_stopped` serves until
//! the shutdown token fires and then drains in-flight requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, ExportConfig, LogFormat, RestoreConfig, ValidConfig};
use crate::domain::clock::{SharedClock, SystemClock};
use crate::http::auth::Auth;
use crate::http::recent::Recent;
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::provider::breaker::GuardedProvider;
use crate::provider::client::CspClient;
use crate::provider::instrumented::Instrumented;
use crate::provider::niosxaas::PreDeleteHook;
use crate::provider::{ProviderClient, ProviderError};
use crate::ratelimit::failures::FailureThrottle;
use crate::store::{OpenFailure, SharedStore, StoreError};
use crate::telemetry::LoggingError;

/// How long a readiness answer is reused: load balancers poll every few seconds, and a
/// stranger polling faster must not become table reads.
const READINESS_REUSE: Duration = Duration::from_secs(1);

/// How often idle rate-limit buckets are forgotten.
const RATE_LIMIT_JANITOR_PERIOD: Duration = Duration::from_secs(60);

pub use crate::http::state::{AppState, Services};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The configuration cannot serve.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The metrics registry refused a metric (a programming error).
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The provider client could not be built.
    #[error("CSP_BASE_URL: cannot build the provider client: {0}")]
    Provider(#[from] ProviderError),
    /// The NIOSXaaS hook's client could not be built.
    #[error("NIOSXAAS_BASE_URL: cannot build the NIOSXaaS client: {0}")]
    Niosxaas(#[source] ProviderError),
    /// The webhook client could not be built.
    #[error("cannot build the webhook client: {0}")]
    Webhooks(#[source] reqwest::Error),
    /// Logging could not start.
    #[error(transparent)]
    Logging(#[from] LoggingError),
    /// The configured store could not be opened.
    #[error(transparent)]
    Store(#[from] OpenFailure),
    /// `init-table` could not prepare the table.
    #[error("DDB_TABLE_NAME: cannot prepare table {table}")]
    Table {
        /// The table.
        table: String,
        /// What DynamoDB answered.
        #[source]
        source: StoreError,
    },
    /// The async runtime, or a server once started, failed.
    #[error("{what} failed")]
    Io {
        /// What failed: "the async runtime", "the HTTP server", ….
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An export or a restore failed.
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
    /// A restore into the store was begun and not finished.
    #[error(
        "{store} holds an unfinished restore (begun at epoch {started_at}); finish it with `sandbox-broker restore --from FILE` before serving, or students could be handed a sandbox the restore has not yet recorded as taken"
    )]
    RestoreUnfinished {
        /// The store.
        store: String,
        /// When the restore began.
        started_at: i64,
    },
    /// The demo's first sync, which fills its pool, failed.
    #[error("the demo's first sync failed")]
    DemoSync(#[source] crate::jobs::JobError),
}

impl AppState {
    /// Builds the state on `store` with `provider` (when given; the demo's simulated one,
    /// say) behind the circuit breaker, every rule reading `clock`.
    pub fn with_clock(
        config: ValidConfig,
        store: SharedStore,
        provider: Option<Arc<dyn ProviderClient>>,
        clock: SharedClock,
    ) -> Result<Self, StartupError> {
        let config = config.into_inner();
        let auth = Auth::from_config(&config.auth)?;
        let rate_limiter = config.rate_limit.limiter();
        let address_limiter = config.rate_limit.address_limiter();
        let auth_failures = FailureThrottle::new(
            config.auth.auth_failure_limit,
            config.auth.auth_failure_window,
            config.rate_limit.max_callers(),
        );
        let pool_counts = Recent::new(config.http.metrics_pool_refresh);
        let readiness = Recent::new(READINESS_REUSE);
        let allocation_facts = Recent::new(config.http.analytics_cache);
        let niosxaas_histories = Recent::new(config.http.analytics_cache);
        let cordons = Recent::new(crate::http::state::CORDONS_REFRESH);
        let lab_tokens = Recent::new(crate::http::auth::LAB_TOKENS_REFRESH);
        let reservations = Recent::new(crate::http::state::RESERVATIONS_REFRESH);
        let reservation_lead_secs = config.jobs.reservation_lead_secs();
        let deliverer = crate::webhooks::Deliverer::new(
            config.webhooks.webhook_timeout,
            config.csp.allow_http_upstreams,
            config.webhooks.allow_private_webhooks,
        )
        .map_err(StartupError::Webhooks)?;
        let max_webhooks = crate::config_values::as_usize(config.webhooks.max_webhooks);
        let metrics = Metrics::new()?;
        metrics
            .lab_slo
            .set_max_labs(crate::config_values::as_usize(config.http.lab_metrics_max));
        metrics.register_store(store.health.as_ref())?;
        let breaker = provider.map(|provider| {
            Arc::new(GuardedProvider::new(
                Arc::new(Instrumented::new(provider, metrics.clone())),
                config.csp.circuit_breaker_threshold,
                config.csp.circuit_breaker_timeout,
                Arc::clone(&clock),
            ))
        });
        let provider = breaker.clone().map(|b| b as Arc<dyn ProviderClient>);
        let pre_delete = match config.niosxaas.settings(&config.csp)? {
            Some(settings) => Some(Arc::new(
                PreDeleteHook::new(settings, metrics.clone(), Arc::clone(&clock))
                    .map_err(StartupError::Niosxaas)?,
            )),
            None => None,
        };
        let lab = config.lab.policy();
        let (wait_queue_max, sync_min_gap) = (config.http.wait_queue_max, config.jobs.sync_min_gap);
        let jobs = Arc::new(
            Jobs::new(
                store.clone(),
                provider,
                metrics.clone(),
                config.jobs.instance_name(),
                config.jobs.job_lease,
                config.jobs.schedule(lab),
            )
            .with_pre_delete_hook(pre_delete.clone())
            .with_webhooks(crate::jobs::webhooks::Dispatch {
                deliverer: deliverer.clone(),
                policy: config.webhooks.retry_policy(),
                interval: config.webhooks.webhook_dispatch_interval,
                watermarks: config.http.pool_low_watermarks.0.clone(),
                levels: Arc::default(),
                workers: Arc::default(),
            })
            .with_clock(Arc::clone(&clock)),
        );
        Ok(Self(Arc::new(Services {
            store,
            metrics,
            http: Arc::new(config.http),
            lab_policy: lab,
            clock,
            rate_limiter,
            address_limiter,
            auth,
            auth_failures,
            pool_counts,
            readiness,
            allocation_facts,
            niosxaas_histories,
            cordons,
            lab_tokens,
            reservations,
            reservation_lead_secs,
            deliverer,
            max_webhooks,
            lab_token_touches: std::sync::Mutex::default(),
            token_rates: crate::ratelimit::TokenRates::default(),
            waiting: crate::allocation::waiting::WaitingRoom::new(crate::config_values::as_usize(
                wait_queue_max,
            )),
            sync_min_gap,
            exhaustion_sync: std::sync::Mutex::new(None),
            jobs,
            breaker,
            pre_delete,
        })))
    }
}

/// The CSP client, when `CSP_API_TOKEN` is configured.
fn configured_provider(config: &Config) -> Result<Option<Arc<dyn ProviderClient>>, StartupError> {
    Ok(match config.csp.csp_settings() {
        Some(settings) => Some(Arc::new(CspClient::new(&settings)?)),
        None => None,
    })
}

/// A bound, ready-to-serve instance.
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
    state: AppState,
}

impl Server {
    /// Builds the router on `store` and binds the listener.
    pub async fn build(config: ValidConfig, store: SharedStore) -> Result<Self, StartupError> {
        Self::build_with_clock(config, store, None, Arc::new(SystemClock)).await
    }

    /// Like [`Self::build`], with `provider` instead of the configured CSP client.
    pub async fn build_with_provider(
        config: ValidConfig,
        store: SharedStore,
        provider: Arc<dyn ProviderClient>,
    ) -> Result<Self, StartupError> {
        Self::build_with_clock(config, store, Some(provider), Arc::new(SystemClock)).await
    }

    /// Like [`Self::build`], with the jobs reading `clock` (and `provider`, when given,
    /// instead of the configured CSP client): what tests use to move time by hand.
    pub async fn build_with_clock(
        config: ValidConfig,
        store: SharedStore,
        provider: Option<Arc<dyn ProviderClient>>,
        clock: SharedClock,
    ) -> Result<Self, StartupError> {
        let provider = match provider {
            Some(provider) => Some(provider),
            None => configured_provider(&config)?,
        };
        let state = AppState::with_clock(config, store, provider, clock)?;
        Self::from_state(state).await
    }

    async fn from_state(state: AppState) -> Result<Self, StartupError> {
        let addr = state.http.listen_addr;
        let router = crate::http::router::build(state.clone());
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr, source })?;
        Ok(Self {
            listener,
            local_addr,
            router,
            state,
        })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// The background jobs, e.g. to run one before serving.
    pub fn jobs(&self) -> Arc<Jobs> {
        Arc::clone(&self.state.jobs)
    }

    /// Serves until SIGTERM or SIGINT, then lets in-flight requests finish.
    pub async fn run_until_signalled(self) -> Result<(), StartupError> {
        tracing::info!(address = %self.local_addr(), "sandbox-broker listening");
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutdown signal received; draining in-flight requests");
            signal.cancel();
        });
        self.run_until_stopped(shutdown)
            .await
            .map_err(|source| StartupError::Io {
                what: "the HTTP server",
                source,
            })?;
        tracing::info!("sandbox-broker stopped cleanly");
        Ok(())
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests finish.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        self.state.jobs.spawn_schedules(&shutdown);
        let janitor_state = self.state.clone();
        let janitor_stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RATE_LIMIT_JANITOR_PERIOD);
            loop {
                tokio::select! {
                    () = janitor_stop.cancelled() => break,
                    _ = tick.tick() => {
                        janitor_state.rate_limiter.retain_recent();
                        janitor_state.address_limiter.retain_recent();
                        janitor_state.auth_failures.forget_ended(tokio::time::Instant::now());
                    }
                }
            }
        });
        let limits = self.state.http.connection_limits();
        crate::http::serve::serve(
            self.listener,
            self.router,
            limits,
            self.state.metrics.clone(),
            shutdown,
        )
        .await
    }
}

/// The `serve` command: checks `config` once, opens the store it chooses, and serves until
/// SIGTERM or SIGINT.
pub async fn serve(config: Config) -> Result<(), StartupError> {
    let _log = config.log.init(LogFormat::Json)?;
    let config = config.validate()?;
    let (kind, why) = config.store.choice();
    tracing::info!(store = ?kind, reason = why, "store selected");
    let store = crate::store::open(&config.store).await?;
    let marker = store.backup.restore_marker().await.map_err(|source| {
        StartupError::Backup(crate::backup::BackupError::Store {
            store: config.store.describe(),
            source,
        })
    })?;
    if let Some(marker) = marker {
        return Err(StartupError::RestoreUnfinished {
            store: config.store.describe(),
            started_at: marker.started_at.get(),
        });
    }
    Server::build(config, store)
        .await?
        .run_until_signalled()
        .await
}

/// The `init-table` command: creates the DynamoDB table and any missing index, and says
/// what it did.
pub async fn init_table(config: Config) -> Result<(), StartupError> {
    let _log = config.log.init(LogFormat::Json)?;
    let dynamo = &config.store.dynamo;
    dynamo.validate_index_names()?;
    let settings = dynamo.settings();
    let client = crate::store::dynamo::client(&settings).await;
    let report = crate::store::dynamo::schema::ensure_table(&client, &settings.table)
        .await
        .map_err(|source| StartupError::Table {
            table: settings.table.clone(),
            source,
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

/// The `export` command: every item of the configured store into a file.
pub async fn export(config: ExportConfig) -> Result<(), StartupError> {
    let store = crate::store::open(&config.store).await?;
    let name = config.store.describe();
    let now = crate::domain::time::EpochSecs::new(crate::domain::now_epoch());
    let trailer = crate::backup::export_to_file(&*store.backup, &name, &config.to, now).await?;
    println!(
        "exported {} items of {name} to {} ({})",
        trailer.items,
        config.to.display(),
        trailer.digest
    );
    for (what, count) in &trailer.counts {
        println!("{what:<32} {count:>10}");
    }
    Ok(())
}

/// The `restore` command: an export into the configured store, verified; with `--check`,
/// only the file is checked.
pub async fn restore(config: RestoreConfig) -> Result<(), StartupError> {
    if config.check {
        let checked = crate::backup::checked_file(&config.from)?;
        println!(
            "{}: a complete {} export of epoch {}, {} items, {}",
            config.from.display(),
            checked.header.store,
            checked.header.exported_at,
            checked.header.items,
            checked.trailer.digest
        );
        for (what, count) in &checked.trailer.counts {
            println!("{what:<32} {count:>10}");
        }
        return Ok(());
    }
    // Check the file before touching the store: a bad file must not even create one.
    let checked = crate::backup::checked_file(&config.from)?;
    let store = crate::store::open(&config.store).await?;
    let now = crate::domain::time::EpochSecs::new(crate::domain::now_epoch());
    crate::backup::restore(
        &*store.backup,
        &config.store.describe(),
        (&config.from, &checked),
        config.merge,
        now,
        &mut std::io::stdout(),
    )
    .await?;
    Ok(())
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = interrupt => {},
            () = terminate => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
