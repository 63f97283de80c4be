//! sandbox-broker: hands out pre-created cloud sandboxes from a pool, atomically and at scale.
//!
//! Modules, from the top of the layering down (docs/architecture.md, *Layers*; no module
//! imports one above it):
//!
//! - [`app`]: start-up: the `serve` and `init-table` commands, the application that binds
//!   the listener, and the state every handler shares.
//! - [`demo`]: the `demo` and `simulate-provider` commands and the demo pool.
//! - [`backup`]: the `export` and `restore` commands: a store's items to a file and back,
//!   checked before and after.
//! - [`config`]: the command line: every owner's settings flattened into one.
//! - [`http`]: the edge: routes, auth, extractors, the error envelope, middleware, the
//!   serve loop, handlers and the dashboard.
//! - [`jobs`]: the background jobs (sync, cleanup, expiry, stale removal, audit,
//!   reservations), their leases and schedules.
//! - [`webhooks`]: signed webhook deliveries: the HTTP client that will not follow a
//!   redirect or reach into the network.
//! - [`allocation`]: the lab rules (allocate, look up, release) with their metrics.
//! - [`provider`]: where sandboxes come from and are deleted: the CSP client, the circuit
//!   breaker, NIOSXaaS, the simulated provider.
//! - [`ratelimit`]: per-caller token buckets and the failed-authentication throttle.
//! - [`metrics`]: the Prometheus registry; [`telemetry`]: logging (its JSON line in
//!   `telemetry/json.rs`).
//! - [`store`]: the durable state, one trait per role, on the embedded (redb) or the
//!   DynamoDB store.
//! - [`domain`]: the values and every rule both stores share; depends on nothing.
//! - [`config_values`]: what every settings type shares (the error naming a variable,
//!   duration parsers); depends on nothing.

// An allocation's future nests the whole DynamoDB call path (the candidate queue's reads
// included); proving it `Send` takes more than the default 128 levels of type queries.
#![recursion_limit = "256"]

pub mod allocation;
pub mod app;
pub mod backup;
pub mod config;
pub mod config_values;
pub mod demo;
pub mod domain;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod provider;
pub mod ratelimit;
pub mod store;
pub mod telemetry;
pub mod webhooks;
