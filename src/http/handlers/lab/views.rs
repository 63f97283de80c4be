//! The JSON shapes of the lab routes (docs/api.md, *Track routes*), each an OpenAPI schema.
//!
//! Rule: wire shapes are built from store rows here and nowhere else; `sfdc_account_id`
//! is always a string and timestamps are integer epoch seconds.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::time::EpochSecs;
use crate::domain::{LabPolicy, Sandbox};

/// `POST /allocate` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AllocationView {
    /// The sandbox's id.
    #[schema(example = "2012224")]
    pub sandbox_id: String,
    /// Display name.
    #[schema(example = "lab-adventure-0087")]
    pub name: String,
    /// The provider's id; lab scripts use the part after the last `/`.
    #[schema(example = "identity/accounts/1e96e538-0000-4000-8000-000000000000")]
    pub external_id: String,
    /// Epoch seconds of allocation.
    pub allocated_at: i64,
    /// When the lab ends: `allocated_at` plus the lab duration recorded at allocation
    /// (`LAB_DURATION_HOURS` for allocations another service made).
    pub expires_at: i64,
    /// Salesforce account id, `""` when unknown.
    pub sfdc_account_id: String,
}

impl AllocationView {
    /// The allocation answer for an allocated row, its lab ending as `lab` says.
    pub fn new(row: &Sandbox, lab: LabPolicy) -> Self {
        let allocated_at = row.allocated_at.unwrap_or(row.updated_at);
        Self {
            sandbox_id: row.sandbox_id.clone(),
            name: row.name.clone(),
            external_id: row.external_id.clone(),
            allocated_at: allocated_at.get(),
            expires_at: (lab.expires_at(row).unwrap_or(allocated_at)).get(),
            sfdc_account_id: row.sfdc_account_id.clone().unwrap_or_default(),
        }
    }
}

/// A sandbox as its owner (`GET /sandboxes/{id}`) or an admin (list) sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SandboxView {
    /// The sandbox's id.
    pub sandbox_id: String,
    /// Display name.
    pub name: String,
    /// The provider's id.
    pub external_id: String,
    /// Lifecycle status.
    #[schema(example = "allocated")]
    pub status: String,
    /// The holder key holding it, if any.
    #[serde(rename = "allocated_to_track")]
    pub holder: Option<String>,
    /// Epoch seconds of allocation; null while never allocated.
    pub allocated_at: Option<i64>,
    /// Epoch seconds when the lab ends; null while never allocated.
    pub expires_at: Option<i64>,
    /// The lab slug it was allocated for, if any.
    #[serde(rename = "track_name")]
    pub lab: Option<String>,
    /// Salesforce account id, `""` when unknown.
    pub sfdc_account_id: String,
    /// Epoch seconds when it was released, if it was.
    pub deletion_requested_at: Option<i64>,
}

impl SandboxView {
    /// How `row` looks on the wire, its lab ending as `lab` says.
    pub fn new(row: &Sandbox, lab: LabPolicy) -> Self {
        Self {
            sandbox_id: row.sandbox_id.clone(),
            name: row.name.clone(),
            external_id: row.external_id.clone(),
            status: row.status.as_str().to_owned(),
            holder: row.holder.clone(),
            allocated_at: row.allocated_at.map(EpochSecs::get),
            expires_at: (lab.expires_at(row)).map(EpochSecs::get),
            lab: row.lab.clone(),
            sfdc_account_id: row.sfdc_account_id.clone().unwrap_or_default(),
            deletion_requested_at: row.deletion_requested_at.map(EpochSecs::get),
        }
    }
}

/// `POST /sandboxes/{id}/mark-for-deletion` answer; a repeat returns the same body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = MarkView)]
pub struct ReleaseView {
    /// The sandbox's id.
    pub sandbox_id: String,
    /// `pending_deletion`, or a later status when cleanup already ran.
    #[schema(example = "pending_deletion")]
    pub status: String,
    /// Epoch seconds of the first release request.
    pub deletion_requested_at: Option<i64>,
}

impl From<&Sandbox> for ReleaseView {
    fn from(row: &Sandbox) -> Self {
        Self {
            sandbox_id: row.sandbox_id.clone(),
            status: row.status.as_str().to_owned(),
            deletion_requested_at: row.deletion_requested_at.map(EpochSecs::get),
        }
    }
}
