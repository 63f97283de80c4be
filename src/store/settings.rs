//! Which store backs the service, and where the embedded one keeps its file.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Which store backs the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// The embedded redb store in `BROKER_DATA_DIR`.
    Embedded,
    /// A DynamoDB table (`DDB_TABLE_NAME`), shared by a fleet of instances.
    Dynamodb,
}

/// The store choice and the embedded store's directory.
#[derive(Debug, Clone, Args)]
pub struct StoreConfig {
    /// Which store to use. Unset: `dynamodb` when DDB_TABLE_NAME or DDB_ENDPOINT_URL is
    /// set (the Python service's environment starts on its table), else `embedded`.
    #[arg(long, env = "BROKER_STORE", value_name = "BROKER_STORE", value_enum)]
    pub store: Option<StoreKind>,

    /// Directory of the embedded store.
    #[arg(
        long,
        env = "BROKER_DATA_DIR",
        value_name = "BROKER_DATA_DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,
}

impl StoreConfig {
    /// The store to run on, and why: `BROKER_STORE`, else `dynamodb` when `names_a_table`
    /// (DDB_TABLE_NAME or DDB_ENDPOINT_URL is set), else `embedded` (docs/api.md and `.env.example`).
    pub fn choice(&self, names_a_table: bool) -> (StoreKind, &'static str) {
        match self.store {
            Some(kind) => (kind, "BROKER_STORE"),
            None if names_a_table => (
                StoreKind::Dynamodb,
                "BROKER_STORE is unset and DDB_TABLE_NAME or DDB_ENDPOINT_URL is set",
            ),
            None => (
                StoreKind::Embedded,
                "BROKER_STORE is unset and no DynamoDB table is configured",
            ),
        }
    }
}
