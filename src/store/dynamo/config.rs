//! The DynamoDB store's settings: which table, and how patiently it is called.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{Credentials, Region};
use clap::Args;

use super::schema::{IDEMPOTENCY_INDEX, LAB_INDEX, STATUS_INDEX};
use crate::config_values::{ConfigError, as_usize, parse_millis, parse_seconds};

/// The default table name (the Python service's).
const DEFAULT_TABLE: &str = "SandboxPool";

/// The `dynamodb` store's settings as the command line and environment give them.
#[derive(Debug, Clone, Args)]
pub struct DynamoConfig {
    /// DynamoDB table of the `dynamodb` store (default `SandboxPool`); setting it selects
    /// that store when BROKER_STORE is unset.
    #[arg(long, env = "DDB_TABLE_NAME", value_name = "DDB_TABLE_NAME")]
    pub ddb_table_name: Option<String>,

    /// The Python service's name for `StatusIndex`; only that name is supported.
    #[arg(long, env = "DDB_GSI1_NAME", value_name = "DDB_GSI1_NAME", default_value = STATUS_INDEX)]
    pub ddb_gsi1_name: String,

    /// The Python service's name for `TrackIndex`; only that name is supported.
    #[arg(long, env = "DDB_GSI2_NAME", value_name = "DDB_GSI2_NAME", default_value = LAB_INDEX)]
    pub ddb_gsi2_name: String,

    /// The Python service's name for `IdempotencyIndex`; only that name is supported.
    #[arg(long, env = "DDB_GSI3_NAME", value_name = "DDB_GSI3_NAME", default_value = IDEMPOTENCY_INDEX)]
    pub ddb_gsi3_name: String,

    /// DynamoDB endpoint override, e.g. `http://127.0.0.1:8000` for DynamoDB Local.
    #[arg(long, env = "DDB_ENDPOINT_URL", value_name = "DDB_ENDPOINT_URL")]
    pub ddb_endpoint_url: Option<String>,

    /// AWS region of the table (else the SDK's usual sources).
    #[arg(long, env = "AWS_REGION", value_name = "AWS_REGION")]
    pub aws_region: Option<String>,

    /// Candidate claims one allocation tries back to back, after losing races, before a
    /// short jittered pause (it keeps trying until ALLOCATE_DEADLINE_SEC).
    #[arg(long, env = "K_CANDIDATES", value_name = "K_CANDIDATES", default_value = "15", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub k_candidates: u32,

    /// Name prefixes (`X-Sandbox-Name-Prefix`) this instance keeps candidate queues for at
    /// once; the least recently used idle one makes room for a new one.
    #[arg(long, env = "DDB_CANDIDATE_PREFIXES", value_name = "DDB_CANDIDATE_PREFIXES", default_value = "1024", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub ddb_candidate_prefixes: u32,

    /// First retry delay (ms) of a throttled or failed DynamoDB call; jittered, doubling.
    #[arg(long, env = "BACKOFF_BASE_MS", value_name = "BACKOFF_BASE_MS", default_value = "25", value_parser = parse_millis)]
    pub backoff_base: Duration,

    /// Longest retry delay (ms) of a DynamoDB call.
    #[arg(long, env = "BACKOFF_MAX_MS", value_name = "BACKOFF_MAX_MS", default_value = "400", value_parser = parse_millis)]
    pub backoff_max: Duration,

    /// DynamoDB connect timeout (ms).
    #[arg(long, env = "DDB_CONNECT_TIMEOUT_MS", value_name = "DDB_CONNECT_TIMEOUT_MS", default_value = "300", value_parser = parse_millis)]
    pub ddb_connect_timeout: Duration,

    /// Ceiling of the adaptive limit on operations talking to DynamoDB at once; more wait
    /// their turn in this process, in arrival order.
    #[arg(long, env = "DDB_MAX_CONCURRENCY", value_name = "DDB_MAX_CONCURRENCY", default_value = "128", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub ddb_max_concurrency: u32,

    /// DynamoDB calls slower than this (ms) on average shrink the adaptive concurrency
    /// limit; faster ones let it grow up to DDB_MAX_CONCURRENCY.
    #[arg(long, env = "DDB_LATENCY_TARGET_MS", value_name = "DDB_LATENCY_TARGET_MS", default_value = "50", value_parser = parse_millis)]
    pub ddb_latency_target: Duration,

    /// Seconds one allocation (or other store operation) may wait for a slow DynamoDB,
    /// queueing and retrying, before it answers 503.
    #[arg(long, env = "ALLOCATE_DEADLINE_SEC", value_name = "ALLOCATE_DEADLINE_SEC", default_value = "10", value_parser = parse_seconds)]
    pub allocate_deadline: Duration,

    /// A DynamoDB call attempt (ms) that gets no answer while the table answers others is
    /// sent again.
    #[arg(long, env = "DDB_ATTEMPT_TIMEOUT_MS", value_name = "DDB_ATTEMPT_TIMEOUT_MS", default_value = "3000", value_parser = parse_millis)]
    pub ddb_attempt_timeout: Duration,

    /// No useful answer from DynamoDB to any call for this long (ms) means it is down:
    /// 503 at once until it answers again. Keeps an outage's 503 under 2 s.
    #[arg(long, env = "DDB_STALL_TIMEOUT_MS", value_name = "DDB_STALL_TIMEOUT_MS", default_value = "1000", value_parser = parse_millis)]
    pub ddb_stall_timeout: Duration,
}

impl DynamoConfig {
    /// Whether a table is configured (DDB_TABLE_NAME or DDB_ENDPOINT_URL), which selects
    /// this store when BROKER_STORE is unset.
    pub fn names_a_table(&self) -> bool {
        self.ddb_table_name.is_some() || self.ddb_endpoint_url.is_some()
    }

    /// `DDB_TABLE_NAME`, or the default `SandboxPool`.
    pub fn table_name(&self) -> &str {
        self.ddb_table_name.as_deref().unwrap_or(DEFAULT_TABLE)
    }

    /// Refuses index names other than the documented ones: the service queries its indexes by
    /// those names, and renaming a GSI is not something DynamoDB can do in place.
    pub fn validate_index_names(&self) -> Result<(), ConfigError> {
        let names = [
            ("DDB_GSI1_NAME", &self.ddb_gsi1_name, STATUS_INDEX),
            ("DDB_GSI2_NAME", &self.ddb_gsi2_name, LAB_INDEX),
            ("DDB_GSI3_NAME", &self.ddb_gsi3_name, IDEMPOTENCY_INDEX),
        ];
        for (variable, value, expected) in names {
            if value != expected {
                return Err(ConfigError::Invalid {
                    variable,
                    reason: format!(
                        "must be {expected} (the index name docs/dynamodb.md gives, which this service queries); other names are not supported"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The store's settings.
    pub fn settings(&self) -> DynamoSettings {
        DynamoSettings {
            table: self.table_name().to_owned(),
            endpoint_url: self.ddb_endpoint_url.clone(),
            region: self.aws_region.clone(),
            k_candidates: as_usize(self.k_candidates),
            candidate_prefixes: as_usize(self.ddb_candidate_prefixes),
            backoff_base: self.backoff_base,
            backoff_max: self.backoff_max,
            connect_timeout: self.ddb_connect_timeout,
            attempt_timeout: self.ddb_attempt_timeout,
            stall_timeout: self.ddb_stall_timeout,
            deadline: self.allocate_deadline,
            max_concurrency: as_usize(self.ddb_max_concurrency),
            latency_target: self.ddb_latency_target,
            list_evaluate_max: LIST_EVALUATE_PER_REQUEST,
        }
    }
}

/// How the store reaches its table.
#[derive(Debug, Clone)]
pub struct DynamoSettings {
    /// `DDB_TABLE_NAME`.
    pub table: String,
    /// `DDB_ENDPOINT_URL`, for DynamoDB Local.
    pub endpoint_url: Option<String>,
    /// `AWS_REGION`; `None` uses the SDK's default chain.
    pub region: Option<String>,
    /// `K_CANDIDATES`: candidate claims one allocation tries back to back before it backs
    /// off briefly and tries again (until its deadline).
    pub k_candidates: usize,
    /// `DDB_CANDIDATE_PREFIXES`: name prefixes kept in candidate queues at once.
    pub candidate_prefixes: usize,
    /// `BACKOFF_BASE_MS`: first retry delay of a throttled or failed call (jittered, doubling).
    pub backoff_base: Duration,
    /// `BACKOFF_MAX_MS`: longest retry delay.
    pub backoff_max: Duration,
    /// `DDB_CONNECT_TIMEOUT_MS`.
    pub connect_timeout: Duration,
    /// `DDB_ATTEMPT_TIMEOUT_MS`: one attempt that gets no answer while the table answers
    /// other calls is abandoned and sent again.
    pub attempt_timeout: Duration,
    /// `DDB_STALL_TIMEOUT_MS`: no useful answer to any call for this long means the table
    /// is down (503 at once, until it answers again).
    pub stall_timeout: Duration,
    /// `ALLOCATE_DEADLINE_SEC`: how long one allocation (or any other operation) may wait
    /// for a slow table, queueing and retrying, before it answers 503.
    pub deadline: Duration,
    /// `DDB_MAX_CONCURRENCY`: the ceiling of the adaptive limit on operations talking to
    /// DynamoDB at once; the rest queue here, in arrival order.
    pub max_concurrency: usize,
    /// `DDB_LATENCY_TARGET_MS`: calls slower than this on average shrink the limit.
    pub latency_target: Duration,
    /// Items one admin list request may evaluate before it answers what it found with a
    /// cursor ([`LIST_EVALUATE_PER_REQUEST`] outside tests).
    pub list_evaluate_max: usize,
}

/// Items one admin list request evaluates at most, so a filter that matches nothing
/// cannot make one request read a whole table.
pub const LIST_EVALUATE_PER_REQUEST: usize = 5_000;

/// Builds an SDK client for one-off work (`init-table`, test setup): explicit timeouts
/// and the SDK's jittered retries. The store itself retries in its own loop (`calls.rs`)
/// and turns the SDK's retries off on the client it is given.
pub async fn client(settings: &DynamoSettings) -> Client {
    Client::new(&sdk_config(settings).await)
}

/// The SDK configuration `settings` and the environment give: region, credentials chain,
/// timeouts, retries, endpoint.
pub(super) async fn sdk_config(settings: &DynamoSettings) -> SdkConfig {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(settings.connect_timeout)
        .operation_attempt_timeout(settings.attempt_timeout)
        .build();
    let retries = RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(settings.backoff_base)
        .with_max_backoff(settings.backoff_max);
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts)
        .retry_config(retries);
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &settings.endpoint_url {
        loader = loader.endpoint_url(endpoint);
        // DynamoDB Local ignores credentials; don't make a developer invent some.
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            loader = loader.credentials_provider(Credentials::new(
                "local",
                "local",
                None,
                None,
                "dynamodb-local",
            ));
        }
        if settings.region.is_none() {
            loader = loader.region(Region::new("us-east-1"));
        }
    }
    loader.load().await
}
