//! The JSON shapes of the operations routes (docs/api.md, *Operations*), each an OpenAPI schema.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /healthz` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HealthView {
    /// Always `healthy`.
    pub status: String,
    /// Epoch seconds now.
    pub timestamp: i64,
}

/// `GET /readyz` answer, 200 or 503.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadyView {
    /// `ready` or `not_ready`.
    pub status: String,
    /// Epoch seconds now.
    pub timestamp: i64,
    /// Each dependency's state.
    pub checks: ReadyChecks,
}

/// The checks behind `/readyz`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadyChecks {
    /// `ok`, or a short reason such as `unavailable` or `timeout`.
    pub store: String,
    /// On the DynamoDB store, the same answer under the key the Python service used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamodb: Option<String>,
}

/// `GET /` answer, as the Python service gave it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RootView {
    /// `Sandbox Broker API`.
    pub service: String,
    /// This build's version.
    pub version: String,
    /// Where the API docs are.
    pub docs: String,
}
