//! Which store backs the service: the embedded one's directory, or the DynamoDB table.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::dynamo::DynamoConfig;

/// Which store backs the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// The embedded redb store in `BROKER_DATA_DIR`.
    Embedded,
    /// A DynamoDB table (`DDB_TABLE_NAME`), shared by a fleet of instances.
    Dynamodb,
}

/// The store choice, the embedded store's directory and the DynamoDB store's settings.
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

    /// The DynamoDB store.
    #[command(flatten, next_help_heading = "DynamoDB store")]
    pub dynamo: DynamoConfig,
}

impl StoreConfig {
    /// The store to run on, and why: `BROKER_STORE`, else `dynamodb` when DDB_TABLE_NAME
    /// or DDB_ENDPOINT_URL is set, else `embedded` (docs/api.md and `.env.example`).
    pub fn choice(&self) -> (StoreKind, &'static str) {
        let names_a_table = self.dynamo.names_a_table();
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

impl StoreConfig {
    /// The store, as an operator would name it in a message.
    pub fn describe(&self) -> String {
        match self.kind() {
            StoreKind::Embedded => format!("the embedded store in {}", self.data_dir.display()),
            StoreKind::Dynamodb => {
                let settings = self.dynamo.settings();
                match settings.endpoint_url {
                    Some(endpoint) => {
                        format!("the DynamoDB table {} at {endpoint}", settings.table)
                    }
                    None => format!("the DynamoDB table {}", settings.table),
                }
            }
        }
    }

    /// The store to run on (see [`Self::choice`]).
    pub fn kind(&self) -> StoreKind {
        self.choice().0
    }
}
