//! What the store keeps about the background jobs: each one's lease and last run.

use crate::domain::time::{EpochMillis, EpochSecs};
/// How a job's run ended, as [`JobRecord::last_outcome`] stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// It ran to the end.
    Completed,
    /// The provider was unavailable: nothing was changed, the next run tries again.
    Postponed,
    /// It ended in an error.
    Failed,
    /// A sync refused the provider's listing as unbelievable: nothing was changed.
    Refused,
}

impl JobOutcome {
    /// Every outcome.
    pub const ALL: [Self; 4] = [
        Self::Completed,
        Self::Postponed,
        Self::Failed,
        Self::Refused,
    ];

    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Postponed => "postponed",
            Self::Failed => "failed",
            Self::Refused => "refused",
        }
    }
}

/// A job's lease and its last run, as `GET /v1/admin/jobs` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobRecord {
    /// The job (`sync`, `cleanup`, `expiry`).
    pub job: String,
    /// The instance holding the lease, if one does.
    #[serde(rename = "holder")]
    pub instance: Option<String>,
    /// Epoch milliseconds the lease runs out.
    pub lease_expires_at_ms: EpochMillis,
    /// Epoch seconds the last run started.
    pub last_started_at: Option<EpochSecs>,
    /// Epoch seconds the last run ended.
    pub last_finished_at: Option<EpochSecs>,
    /// A [`JobOutcome`]'s name.
    pub last_outcome: Option<String>,
    /// The last run's counts, e.g. `{"synced": 12}`.
    pub last_counts: std::collections::BTreeMap<String, u64>,
    /// Epoch seconds of the next scheduled run.
    pub next_run_at: Option<EpochSecs>,
}

/// Whether a lease was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// This holder has the lease until the given epoch milliseconds.
    Acquired,
    /// Another holder has it.
    Held {
        /// Who holds it.
        instance: String,
        /// Until when (epoch milliseconds).
        until_ms: EpochMillis,
    },
}
