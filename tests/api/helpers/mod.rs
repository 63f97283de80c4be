//! `TestApp::spawn()` / `TestApp::builder()`, a `TestApp` with one typed method per
//! endpoint, and the helpers every test module shares.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use sandbox_broker::app::Server;
use sandbox_broker::config::Config;
use sandbox_broker::domain::clock::{SharedClock, SystemClock};
use sandbox_broker::domain::time::EpochSecs;
use sandbox_broker::domain::{ExternalId, NewSandbox, SandboxId, SandboxName, now_epoch};
use sandbox_broker::store::SharedStore;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub mod csp;
pub mod doubles;
pub mod process;
pub mod tools;

pub const LAB_TOKEN: &str = "track-token-for-tests";
pub const ADMIN_TOKEN: &str = "admin-token-for-tests";

/// A running app on a loopback port with its own store.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub store: SharedStore,
    shutdown: CancellationToken,
    /// The server task; it ends once shutdown has drained every in-flight request.
    pub server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _store_guard: StoreGuard,
}

/// Whatever keeps a test store alive (a temporary directory, nothing for a table).
pub type StoreGuard = Box<dyn std::any::Any + Send + Sync>;

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A fresh, empty store of this test crate's flavor.
pub async fn fresh_store() -> (SharedStore, StoreGuard) {
    crate::flavor::fresh_store().await
}

/// `count` instances of the service on one store of this crate's flavor (one embedded
/// store behind several routers, or several DynamoDB stores on one table).
pub async fn fleet(count: usize) -> (Vec<TestApp>, StoreGuard) {
    let (stores, guard) = crate::flavor::fleet_stores(count).await;
    let mut apps = Vec::new();
    for store in stores {
        apps.push(TestApp::builder().store(store, Box::new(())).spawn().await);
    }
    (apps, guard)
}

/// How a test's app starts: on a fresh store of this crate's flavor, the system clock and
/// the configured provider, with `Config::for_tests`, unless the test says otherwise.
pub struct TestAppBuilder<'a> {
    store: Option<(SharedStore, StoreGuard)>,
    clock: SharedClock,
    provider: Option<Arc<dyn sandbox_broker::provider::ProviderClient>>,
    adjustments: Vec<Adjustment<'a>>,
}

/// One change a test makes to its app's configuration.
type Adjustment<'a> = Box<dyn FnOnce(&mut Config) + Send + 'a>;

impl TestApp {
    /// A builder for an app started the way the test needs.
    pub fn builder<'a>() -> TestAppBuilder<'a> {
        TestAppBuilder {
            store: None,
            clock: Arc::new(SystemClock),
            provider: None,
            adjustments: Vec::new(),
        }
    }

    /// An app with every default.
    pub async fn spawn() -> Self {
        Self::builder().spawn().await
    }
}

impl<'a> TestAppBuilder<'a> {
    /// Changes the configuration (applied in order, after `Config::for_tests`).
    pub fn config(mut self, adjust: impl FnOnce(&mut Config) + Send + 'a) -> Self {
        self.adjustments.push(Box::new(adjust));
        self
    }

    /// Runs on `store`, kept alive by `guard`, instead of a fresh one.
    pub fn store(mut self, store: SharedStore, guard: StoreGuard) -> Self {
        self.store = Some((store, guard));
        self
    }

    /// Every rule reads `clock` (a manual one, moved by hand).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Syncs and deletes at `provider` instead of the configured CSP client.
    pub fn provider(mut self, provider: Arc<dyn sandbox_broker::provider::ProviderClient>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// `/metrics` counts the available sandboxes of each of `prefixes` (comma-separated,
    /// as `METRICS_POOL_PREFIXES`).
    pub fn pool_prefixes(self, prefixes: &str) -> Self {
        let prefixes = sandbox_broker::http::config::PoolPrefixes::parse(prefixes).unwrap();
        self.config(move |c| c.http.metrics_pool_prefixes = prefixes)
    }

    /// Builds the app, binds it to a loopback port and serves it in the background.
    pub async fn spawn(self) -> TestApp {
        sandbox_broker::telemetry::init_for_test();
        let (store, guard) = match self.store {
            Some(given) => given,
            None => fresh_store().await,
        };
        let mut config = Config::for_tests("unused".into(), LAB_TOKEN, ADMIN_TOKEN);
        for adjust in self.adjustments {
            adjust(&mut config);
        }
        let config = config.validate().expect("a valid test configuration");
        let app = Server::build_with_clock(config, store.clone(), self.provider, self.clock)
            .await
            .expect("build app");
        let address = format!("http://127.0.0.1:{}", app.port());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        TestApp {
            address,
            client: test_client(),
            store,
            shutdown,
            server: Some(server),
            _store_guard: guard,
        }
    }
}

/// The tests' HTTP client. Its pooled connections are dropped after 5 s idle, below the
/// server's 10 s header-read timeout: hyper's pool keeps a connection it opened for a
/// request that another connection served first, unused, and the server rightly closes a
/// connection that sent nothing for that long; a client that reused it later would get a
/// reset (seen once in the 1,500-student class start on a loaded machine). A client's
/// idle timeout below the server's is the usual rule for keep-alive.
fn test_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .expect("a client with default TLS settings builds")
}

/// The declared defaults' sync rules; `force` applies any listing, however much of the
/// pool it marks stale.
pub fn sync_rules(force: bool) -> sandbox_broker::domain::lifecycle::SyncRules {
    let config = Config::for_tests("unused".into(), LAB_TOKEN, ADMIN_TOKEN);
    sandbox_broker::domain::lifecycle::SyncRules {
        force,
        ..config.jobs.sync_rules()
    }
}

/// Finishes the deletion of the pending row `id` as the cleanup job does: claims it as
/// `runner` at `claimed_at` (for a minute), then records `outcome` (and what the NIOSXaaS
/// hook did, if it ran) at `finished_at`. The row as it was claimed.
pub async fn finish_deletion_of(
    store: &SharedStore,
    id: &SandboxId,
    outcome: sandbox_broker::store::DeletionOutcome,
    niosxaas: Option<sandbox_broker::domain::NiosxaasCleanup>,
    claimed_at: EpochSecs,
    finished_at: EpochSecs,
) -> sandbox_broker::domain::Sandbox {
    let claimed = store
        .lifecycle
        .claim_deletion(sandbox_broker::store::DeletionClaim {
            id,
            runner: "runner",
            now: claimed_at,
            until: claimed_at + 60,
        })
        .await
        .unwrap()
        .expect("a released sandbox can be claimed");
    store
        .lifecycle
        .finish_deletion(sandbox_broker::store::FinishedDeletion {
            claimed: &claimed,
            runner: "runner",
            outcome,
            niosxaas,
            now: finished_at,
        })
        .await
        .unwrap();
    claimed
}

/// A release of `id` by `holder` at `now`.
pub fn release_of(
    id: &SandboxId,
    holder: &sandbox_broker::domain::HolderKey,
    now: sandbox_broker::domain::time::EpochSecs,
) -> sandbox_broker::store::ReleaseRequest {
    sandbox_broker::store::ReleaseRequest {
        id: id.clone(),
        holder: holder.clone(),
        now,
        token: None,
    }
}

/// `count` sandbox rows named `<prefix><n>`, ids `<id_base + n>`; even ones carry an SFDC id.
pub fn sandboxes(prefix: &str, id_base: u64, count: u64) -> Vec<NewSandbox> {
    (1..=count)
        .map(|n| {
            let id = id_base + n;
            NewSandbox {
                sandbox_id: SandboxId::parse("id", &id.to_string()).unwrap(),
                name: SandboxName::parse("name", &format!("{prefix}{n:05}")).unwrap(),
                external_id: ExternalId::parse("ext", &format!("identity/accounts/uuid-{id}"))
                    .unwrap(),
                sfdc_account_id: (n % 2 == 0).then(|| format!("001SFDC{id}")),
            }
        })
        .collect()
}

impl TestApp {
    /// Starts a graceful shutdown, as SIGTERM does in the binary.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Puts `count` sandboxes named `<prefix>NNNNN` in the pool.
    pub async fn seed(&self, prefix: &str, id_base: u64, count: u64) {
        self.store
            .admin
            .import(
                sandboxes(prefix, id_base, count),
                EpochSecs::new(now_epoch()),
            )
            .await
            .expect("seed pool");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A request with the track token.
    pub fn lab(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(LAB_TOKEN)
    }

    /// A request with the admin token.
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// `POST /v1/allocate` the way lab scripts send it: JSON content type, no body.
    pub async fn allocate(&self, holder: &str) -> Response {
        self.allocate_with(holder, &[]).await
    }

    pub async fn allocate_with(&self, holder: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = self
            .lab(Method::POST, "/v1/allocate")
            .header("Content-Type", "application/json")
            .header("X-Instruqt-Sandbox-ID", holder);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("allocate request")
    }

    pub async fn get_sandbox(&self, id: &str, holder: &str) -> Response {
        self.lab(Method::GET, &format!("/v1/sandboxes/{id}"))
            .header("X-Instruqt-Sandbox-ID", holder)
            .send()
            .await
            .expect("get request")
    }

    pub async fn mark(&self, id: &str, holder: &str) -> Response {
        self.lab(
            Method::POST,
            &format!("/v1/sandboxes/{id}/mark-for-deletion"),
        )
        .header("Content-Type", "application/json")
        .header("X-Instruqt-Sandbox-ID", holder)
        .send()
        .await
        .expect("mark request")
    }

    pub async fn admin_get(&self, path: &str) -> Response {
        self.admin(Method::GET, path)
            .send()
            .await
            .expect("admin get")
    }

    /// Runs auto-expiry now (`POST /v1/admin/expire`, answered 200), which records a job run.
    pub async fn expire_now(&self) {
        let response = self
            .admin(Method::POST, "/v1/admin/expire")
            .send()
            .await
            .expect("expire request");
        assert_eq!(response.status(), StatusCode::OK);
    }

    pub async fn import(&self, body: &Value) -> Response {
        self.admin(Method::POST, "/v1/admin/sandboxes")
            .json(body)
            .send()
            .await
            .expect("import request")
    }

    /// The entry of `job` (`sync`, `audit`, …) in `GET /v1/admin/jobs`.
    pub async fn job(&self, job: &str) -> Value {
        let jobs = json_of(self.admin_get("/v1/admin/jobs").await, StatusCode::OK).await;
        jobs["jobs"]
            .as_array()
            .expect("a list of jobs")
            .iter()
            .find(|entry| entry["job"] == job)
            .cloned()
            .unwrap_or_else(|| panic!("{job} is not listed: {jobs}"))
    }

    /// The `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics request")
            .text()
            .await
            .expect("metrics body")
    }

    pub async fn stats(&self) -> Value {
        json_of(self.admin_get("/v1/admin/stats").await, StatusCode::OK).await
    }
}

/// Asserts the status and returns the JSON body.
pub async fn json_of(response: Response, expected: StatusCode) -> Value {
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(status, expected, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("not JSON ({err}): {text}"))
}

/// Asserts an error envelope with `code`, whose `request_id` equals the header, and returns its detail.
pub async fn error_of(response: Response, expected: StatusCode, code: &str) -> Value {
    let header_id = response
        .headers()
        .get("x-request-id")
        .expect("X-Request-ID on error")
        .to_str()
        .unwrap()
        .to_owned();
    let body = json_of(response, expected).await;
    let detail = &body["detail"];
    assert_eq!(detail["code"], code, "wrong code in {body}");
    assert!(
        detail["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message in {body}"
    );
    assert_eq!(
        detail["request_id"],
        header_id.as_str(),
        "request_id differs from header in {body}"
    );
    detail.clone()
}

/// One student's request: who, with which `Idempotency-Key`, and what came back.
pub struct Answer {
    pub holder: String,
    pub status: StatusCode,
    pub body: Value,
}

/// Sends every request, `at_once` in flight at a time, request `n` to instance `n % len`;
/// the answers come back in the requests' order.
pub async fn burst(
    apps: &[TestApp],
    holders: Vec<(String, Option<String>)>,
    at_once: usize,
) -> Vec<Answer> {
    stream::iter(holders.into_iter().enumerate())
        .map(|(n, (holder, key))| {
            let app = &apps[n % apps.len()];
            async move {
                let headers: Vec<(&str, &str)> = key
                    .as_deref()
                    .map(|k| ("Idempotency-Key", k))
                    .into_iter()
                    .collect();
                let response = app.allocate_with(&holder, &headers).await;
                let status = response.status();
                let body = response.json::<Value>().await.unwrap();
                Answer {
                    holder,
                    status,
                    body,
                }
            }
        })
        .buffered(at_once.max(1))
        .collect()
        .await
}

/// Every job's interval so long that, on a manual clock moved by hours, no scheduled run
/// falls due after the first ones ([`after_the_first_scheduled_runs`]): only the test's
/// own admin runs happen.
pub fn only_first_scheduled_runs(config: &mut Config) {
    let never = Duration::from_secs(100 * 86_400);
    let jobs = &mut config.jobs;
    jobs.sync_interval = never;
    jobs.cleanup_interval = never;
    jobs.auto_expiry_interval = never;
    jobs.auto_delete_stale_interval = never;
    jobs.audit_interval = never;
    jobs.reservations_interval = never;
    config.webhooks.webhook_dispatch_interval = never;
}

/// Moves `clock` past the first scheduled runs (10 s after the schedules start, which
/// may be a moment after the app answers) until every job has finished its first run and
/// given its lease back, so none of them races the test's own admin runs.
pub async fn after_the_first_scheduled_runs(
    app: &TestApp,
    clock: &sandbox_broker::domain::clock::ManualClock,
) {
    let mut jobs = Value::Null;
    for _ in 0..200 {
        clock.advance(Duration::from_secs(11));
        jobs = json_of(app.admin_get("/v1/admin/jobs").await, StatusCode::OK).await;
        let finished = jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|job| job["enabled"] == true)
            .all(|job| job["last_finished_at"].is_number() && job["lease_holder"].is_null());
        if finished {
            // The lease is released as a run's last write; its task ends a moment later.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the first scheduled runs did not finish: {jobs}");
}

/// The value of an unlabelled series (or the sum of a family's `_count` lines).
pub fn series_sum(exposition: &str, prefix: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What a provider lists: sandboxes `<prefix><id>` with these ids.
pub fn listed(ids: &[u64], prefix: &str) -> Vec<sandbox_broker::provider::ProviderSandbox> {
    ids.iter()
        .map(|id| sandbox_broker::provider::ProviderSandbox {
            sandbox_id: SandboxId::parse("id", &id.to_string()).unwrap(),
            name: sandbox_broker::domain::SandboxName::parse("n", &format!("{prefix}{id}"))
                .unwrap(),
            external_id: sandbox_broker::domain::ExternalId::parse(
                "e",
                &format!("identity/accounts/{id}"),
            )
            .unwrap(),
            sfdc_account_id: None,
            created_at: None,
        })
        .collect()
}
