//! Route handlers, one module per audience. Each extracts, calls one rule, maps the result.

pub mod actions;
pub mod admin;
pub mod backup;
pub mod cordon;
pub mod dashboard;
pub mod jobs;
pub mod lab;
pub mod ops;
pub mod reservations;
pub mod tokens;
pub mod usage;
pub mod webhooks;
