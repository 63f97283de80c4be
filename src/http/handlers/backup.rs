//! `GET /v1/admin/export`: every item the store holds, streamed as an export file
//! (docs/operations.md) while the service keeps serving.

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use crate::http::error::{ErrorEnvelope, Result};
use crate::http::state::AppState;
use crate::store::backup::export_lines;

/// The media type of an export.
const NDJSON: &str = "application/x-ndjson";

/// Every item the store holds as NDJSON: a header line (format, version, store, time, item
/// count), one line per item, and a closing line with the counts and a digest. On the
/// embedded store the items are one snapshot; on DynamoDB one consistent scan. A store
/// error after the first byte ends the body early, without the closing line, so a
/// restore refuses the file as truncated.
#[utoipa::path(
    get, path = "/admin/export", tag = "admin",
    responses(
        (status = 200, description = "The export file", content_type = "application/x-ndjson", body = String),
        (status = 503, body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn export(State(app): State<AppState>) -> Result<Response> {
    let now = app.clock.now();
    let export = app.store.backup.export(now).await?;
    let file_name = format!(
        "attachment; filename=\"sandbox-broker-{}-{}.ndjson\"",
        export.header.store,
        now.get()
    );
    tracing::info!(
        items = export.header.items,
        store = %export.header.store,
        "export started"
    );
    let headers = [
        (CONTENT_TYPE, NDJSON.to_owned()),
        (CONTENT_DISPOSITION, file_name),
    ];
    Ok((headers, Body::from_stream(export_lines(export))).into_response())
}
