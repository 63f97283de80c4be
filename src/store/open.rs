//! Opening the configured store: the embedded store's directory, or a DynamoDB table that
//! answers and has every index this service reads.

use super::config::{StoreConfig, StoreKind};
use super::dynamo::{self, DynamoStore};
use super::embedded::{self, EmbeddedStore};
use super::{HealthStore, SharedStore, StoreError};

/// Why the configured store could not be opened; each names the variable to look at.
#[derive(Debug, thiserror::Error)]
pub enum OpenFailure {
    /// The embedded store's directory or file.
    #[error("BROKER_DATA_DIR: {0}")]
    Embedded(#[from] embedded::OpenError),
    /// The table does not answer (or does not exist).
    #[error(
        "DDB_TABLE_NAME: table {table} is unreachable; run `sandbox-broker init-table` if it does not exist"
    )]
    Unreachable {
        /// The table.
        table: String,
        /// What the ping met.
        #[source]
        source: StoreError,
    },
    /// The table's description could not be read.
    #[error("DDB_TABLE_NAME: cannot describe table {table}")]
    Undescribed {
        /// The table.
        table: String,
        /// What the call met.
        #[source]
        source: StoreError,
    },
    /// The table lacks indexes this service queries.
    #[error(
        "DDB_TABLE_NAME: table {table} lacks the index(es) {missing}; run `sandbox-broker init-table` (additive, safe on a live table) first"
    )]
    MissingIndexes {
        /// The table.
        table: String,
        /// The missing indexes, comma-separated.
        missing: String,
    },
}

/// Opens the store `config` chooses. A DynamoDB table must answer and have its indexes:
/// start-up refuses a table it cannot use rather than serve 503s.
pub async fn open(config: &StoreConfig) -> Result<SharedStore, OpenFailure> {
    match config.kind() {
        StoreKind::Embedded => Ok(SharedStore::new(EmbeddedStore::open(&config.data_dir)?)),
        StoreKind::Dynamodb => {
            let settings = config.dynamo.settings();
            let client = dynamo::client(&settings).await;
            let table = || settings.table.clone();
            let store = DynamoStore::new(&client, &settings)
                .await
                .map_err(|source| OpenFailure::Unreachable {
                    table: table(),
                    source,
                })?;
            store
                .ping()
                .await
                .map_err(|source| OpenFailure::Unreachable {
                    table: table(),
                    source,
                })?;
            let missing = dynamo::schema::missing_indexes(&client, &settings.table)
                .await
                .map_err(|source| OpenFailure::Undescribed {
                    table: table(),
                    source,
                })?;
            if !missing.is_empty() {
                return Err(OpenFailure::MissingIndexes {
                    table: table(),
                    missing: missing.join(", "),
                });
            }
            Ok(SharedStore::new(store))
        }
    }
}
