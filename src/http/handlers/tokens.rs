//! Lab tokens (docs/api.md, *Lab tokens*): an admin mints a token scoped to labs and name
//! prefixes, with caps, sees each token's use, and revokes it; every change is recorded in
//! the action log. The secret is in the mint's answer only.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::actions::{Done, record};
use crate::domain::tokens::{ID_PREFIX, LabToken, RawTokenSpec, TokenSpec, TokenUse};
use crate::http::auth::AdminActor;
use crate::http::error::{ApiError, ErrorEnvelope, Result};
use crate::http::extract::{JsonBody, prefixed_id};
use crate::http::state::AppState;

/// A token to mint, as sent.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// What to call it (required; unique among live tokens; the metrics' `token` label).
    name: Option<String>,
    /// The labs (`X-Instruqt-Track-ID`) it may allocate for.
    track_names: Option<Vec<String>>,
    /// The name prefixes (`X-Sandbox-Name-Prefix`) it may allocate from. At least one of
    /// `track_names` and `name_prefixes` is required.
    name_prefixes: Option<Vec<String>>,
    /// Sandboxes held under it at once, at most (1–1000).
    max_active: Option<i64>,
    /// Allocations per minute, at most (1–100000).
    per_minute: Option<i64>,
    /// Epoch seconds it stops working.
    expires_at: Option<i64>,
}

/// A token as listed: never its secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    /// Its id, for `DELETE /v1/admin/tokens/{id}`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The labs it may allocate for (empty: any).
    pub track_names: Vec<String>,
    /// The name prefixes it may allocate from (empty: any).
    pub name_prefixes: Vec<String>,
    /// Sandboxes held under it at once, at most (null: no cap).
    pub max_active: Option<u32>,
    /// Allocations per minute, at most (null: only the per-student limits).
    pub per_minute: Option<u32>,
    /// Epoch seconds it was minted.
    pub created_at: i64,
    /// Epoch seconds it stops working (null: never).
    pub expires_at: Option<i64>,
    /// Epoch seconds it was last presented, to the minute (null: never).
    pub last_used_at: Option<i64>,
    /// Sandboxes allocated under it and not yet released.
    pub held: u64,
    /// Epoch seconds it was revoked (null: not revoked).
    pub revoked_at: Option<i64>,
    /// `active`, `expired` or `revoked`.
    pub status: String,
}

impl TokenView {
    fn of(token: &LabToken, held: u64, now: crate::domain::time::EpochSecs) -> Self {
        let status = if token.revoked_at.is_some() {
            "revoked"
        } else if token.is_live(now) {
            "active"
        } else {
            "expired"
        };
        Self {
            id: token.id.clone(),
            name: token.name.clone(),
            track_names: token.labs.clone(),
            name_prefixes: token.name_prefixes.clone(),
            max_active: token.max_active,
            per_minute: token.per_minute,
            created_at: token.created_at.get(),
            expires_at: token.expires_at.map(|at| at.get()),
            last_used_at: token.last_used_at.map(|at| at.get()),
            held,
            revoked_at: token.revoked_at.map(|at| at.get()),
            status: status.to_owned(),
        }
    }
}

/// `POST /admin/tokens` answer: the token and, this once, its secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MintedTokenView {
    /// The secret: the bearer token the lab's scripts send. Shown only here.
    pub token: String,
    /// The token's settings.
    #[serde(flatten)]
    pub details: TokenView,
}

/// `GET /admin/tokens` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokensView {
    /// Every token, newest first, revoked and expired ones included.
    pub tokens: Vec<TokenView>,
}

/// Mints a lab token: a bearer token for the track routes that allocates only inside its
/// scope, under its caps. The secret is in this answer only.
#[utoipa::path(
    post, path = "/admin/tokens", tag = "admin",
    request_body = TokenRequest,
    responses(
        (status = 201, body = MintedTokenView),
        (status = 400, description = "A bad field, named", body = ErrorEnvelope),
        (status = 409, description = "`TOO_MANY_TOKENS` (MAX_TOKENS live tokens exist) or `TOKEN_NAME_TAKEN`", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn mint_token(
    State(app): State<AppState>,
    Extension(actor): Extension<AdminActor>,
    JsonBody(request): JsonBody<TokenRequest>,
) -> Result<(StatusCode, Json<MintedTokenView>)> {
    let now = app.clock.now();
    let spec = TokenSpec::parse(
        RawTokenSpec {
            name: request.name,
            track_names: request.track_names,
            name_prefixes: request.name_prefixes,
            max_active: request.max_active,
            per_minute: request.per_minute,
            expires_at: request.expires_at,
        },
        now,
    )?;
    let (token, secret) = LabToken::mint(spec, now, rand::random(), rand::random());
    app.store
        .tokens
        .add_token(&token, app.auth.max_tokens, now)
        .await??;
    app.lab_tokens.forget().await;
    let done = Done {
        action: "admin.token_mint",
        target: Some(format!("token {}", token.id)),
        reason: None,
        detail: Some(format!("{} ({})", token.name, token.scope())),
    };
    record(&app, &actor, done).await;
    let details = TokenView::of(&token, 0, now);
    Ok((
        StatusCode::CREATED,
        Json(MintedTokenView {
            token: secret,
            details,
        }),
    ))
}

/// Every lab token with its use, newest first; never a secret.
#[utoipa::path(
    get, path = "/admin/tokens", tag = "admin",
    responses((status = 200, body = TokensView)),
    security(("bearer" = []))
)]
pub async fn list_tokens(State(app): State<AppState>) -> Result<Json<TokensView>> {
    let now = app.clock.now();
    let mut uses: Vec<TokenUse> = app.store.tokens.tokens().await?;
    uses.sort_by_key(|used| std::cmp::Reverse(used.token.created_at));
    Ok(Json(TokensView {
        tokens: uses
            .iter()
            .map(|used| TokenView::of(&used.token, used.held, now))
            .collect(),
    }))
}

/// Revokes a lab token: it stops working on this instance at once and across the fleet
/// within 5 s. Sandboxes held under it stay with their students until released.
#[utoipa::path(
    delete, path = "/admin/tokens/{id}", tag = "admin",
    params(("id" = String, Path, description = "The token's id (`tok_…`)")),
    responses(
        (status = 200, description = "Revoked (or already)", body = TokenView),
        (status = 400, description = "Not a token id", body = ErrorEnvelope),
        (status = 404, description = "No such token", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn revoke_token(
    State(app): State<AppState>,
    Extension(actor): Extension<AdminActor>,
    Path(id): Path<String>,
) -> Result<Json<TokenView>> {
    prefixed_id(&id, ID_PREFIX, "token")?;
    let now = app.clock.now();
    let Some(token) = app.store.tokens.revoke_token(&id, now).await? else {
        return Err(ApiError::NothingFound(format!("no token {id}")));
    };
    app.lab_tokens.forget().await;
    let done = Done {
        action: "admin.token_revoke",
        target: Some(format!("token {id}")),
        reason: None,
        detail: Some(token.name.clone()),
    };
    record(&app, &actor, done).await;
    let held = app
        .store
        .tokens
        .tokens()
        .await?
        .into_iter()
        .find(|used| used.token.id == id)
        .map_or(0, |used| used.held);
    Ok(Json(TokenView::of(&token, held, now)))
}
