#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]
//! Black-box tests: the real router on port 0, the real binary for process-level behaviour.

mod admin;
mod bad_input;
mod concurrency;
mod embedded;
mod helpers;
mod ops;
mod process;
mod shutdown;
mod store_conformance;
mod track;
