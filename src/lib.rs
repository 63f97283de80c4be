//! sandbox-broker: hands out pre-created cloud sandboxes from a pool, atomically and at scale.
//!
//! Layout: `http` is the edge (routes, extractors, errors, middleware), `allocation` holds
//! the track rules, `store` the durable state behind one trait, `config`, `telemetry`,
//! `metrics` and `ratelimit` the cross-cutting parts, and `app` wires them together.

pub mod allocation;
pub mod app;
pub mod config;
pub mod demo;
pub mod domain;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod provider;
pub mod ratelimit;
pub mod settings;
pub mod store;
pub mod telemetry;
