//! `sandbox-broker`: parse the command line and run the command (docs/api.md, *The binary*).

use std::process::ExitCode;

use clap::Parser;
use sandbox_broker::app::{self, StartupError};
use sandbox_broker::config::{Cli, Command};
use sandbox_broker::demo;
use sandbox_broker::telemetry::error_chain;

/// mimalloc: a request allocates and frees dozens of small buffers, and glibc's malloc and
/// free were about a fifth of the instructions an allocation cost (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A missing .env is normal; a present one fills variables not already set.
    let _ = dotenvy::dotenv();
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sandbox-broker: {}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), StartupError> {
    let runtime = tokio::runtime::Runtime::new().map_err(|source| StartupError::Io {
        what: "the async runtime",
        source,
    })?;
    runtime.block_on(async {
        match command {
            Command::Serve(config) => app::serve(config).await,
            Command::Demo(config) => demo::run(config).await,
            Command::InitTable(config) => app::init_table(config).await,
            Command::Export(config) => app::export(config).await,
            Command::Restore(config) => app::restore(config).await,
            Command::SimulateProvider(config) => demo::simulate_provider(config).await,
        }
    })
}
