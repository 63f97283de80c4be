//! Every route, listed once; the same list yields `/v1/openapi.json`.
//!
//! Rule: auth is the outermost route layer of the track and admin routes, so it is checked
//! before rate limiting, extraction or anything else; ops routes are open and unlimited.

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use super::auth::{guard_admin_route, guard_lab_route, require_metrics_token};
use super::error::ApiError;
use super::handlers::{
    actions, admin, backup, cordon, dashboard, jobs, lab, ops, reservations, tokens, usage,
    webhooks,
};
use super::middleware;
use crate::http::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "sandbox-broker", description = "Hands out pre-created cloud sandboxes to lab students."),
    modifiers(&BearerAuth),
    tags(
        (name = "track", description = "Called by lab scripts (track token)"),
        (name = "admin", description = "Pool administration (admin token)"),
        (name = "ops", description = "Health, readiness and metrics (no token)"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The routes and the OpenAPI document describing them.
pub fn routes(state: &AppState) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let lab = OpenApiRouter::new()
        .routes(routes!(lab::allocate_sandbox))
        .routes(routes!(lab::get_sandbox))
        .routes(routes!(lab::release))
        .route_layer(from_fn_with_state(state.clone(), guard_lab_route));
    let admin = OpenApiRouter::new()
        .routes(routes!(admin::list_sandboxes, admin::import_sandboxes))
        .routes(routes!(admin::pool_stats))
        .routes(routes!(admin::lab_analytics))
        .routes(routes!(admin::bulk_delete))
        .routes(routes!(admin::niosxaas_cleanup))
        .routes(routes!(usage::usage))
        .routes(routes!(usage::niosxaas_overview))
        .routes(routes!(jobs::trigger_sync))
        .routes(routes!(jobs::list_jobs))
        .routes(routes!(jobs::trigger_expiry))
        .routes(routes!(jobs::trigger_cleanup))
        .routes(routes!(jobs::auto_delete_stale))
        .routes(routes!(jobs::trigger_audit, jobs::last_audit))
        .routes(routes!(actions::release))
        .routes(routes!(actions::quarantine))
        .routes(routes!(actions::unquarantine))
        .routes(routes!(actions::retire))
        .routes(routes!(actions::actions))
        .routes(routes!(backup::export))
        .routes(routes!(tokens::mint_token, tokens::list_tokens))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(
            reservations::create_reservation,
            reservations::list_reservations
        ))
        .routes(routes!(reservations::delete_reservation))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(webhooks::get_webhook, webhooks::delete_webhook))
        .routes(routes!(webhooks::test_webhook))
        .routes(routes!(webhooks::rotate_webhook))
        .routes(routes!(cordon::list_cordons, cordon::add_cordon))
        .routes(routes!(cordon::remove_cordon))
        .route_layer(from_fn_with_state(state.clone(), guard_admin_route));
    let api = lab.merge(admin);
    let base = state.http.api_base_path.as_str();
    let api = if base.is_empty() {
        api
    } else {
        OpenApiRouter::new().nest(base, api)
    };
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(api)
        .routes(routes!(ops::root))
        .routes(routes!(ops::health))
        .routes(routes!(ops::readiness))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(ops::metrics))
                .route_layer(from_fn_with_state(state.clone(), require_metrics_token)),
        )
        .split_for_parts();
    declare_common_errors(&mut openapi, base);
    (router, openapi)
}

/// Which routes answer a status regardless of what they do: the layers around them.
fn common_errors(path: &str, post: bool, base: &str) -> Vec<(&'static str, &'static str)> {
    let mut statuses = vec![
        ("408", "The request took longer than REQUEST_TIMEOUT_SEC"),
        ("500", "An internal error (the envelope says no more)"),
    ];
    // The ops routes are unprefixed and open (API_BASE_PATH may be empty).
    let ops = matches!(path, "/" | "/healthz" | "/readyz" | "/metrics");
    let Some(api_path) = path
        .strip_prefix(base)
        .filter(|rest| !ops && rest.starts_with('/'))
    else {
        return statuses;
    };
    let admin = api_path.starts_with("/admin/");
    statuses.extend([
        ("400", "A header, path or query value fails validation"),
        ("401", "Missing, malformed or unknown bearer token"),
        ("429", "Rate limited; see Retry-After"),
        (
            "503",
            "The store (or the provider) is unavailable; see Retry-After",
        ),
    ]);
    if admin {
        statuses.push(("403", "A valid token that is not an admin token"));
    }
    if post {
        statuses.push(("413", "The request body is larger than allowed"));
    }
    statuses
}

/// Adds to every operation the statuses the middleware and extractors can answer, each with
/// the error envelope as its body, unless the route already declares that status.
fn declare_common_errors(openapi: &mut utoipa::openapi::OpenApi, base: &str) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    for (path, item) in &mut openapi.paths.paths {
        let operations = [
            (&mut item.get, false),
            (&mut item.post, true),
            (&mut item.delete, false),
        ];
        for (operation, post) in operations {
            let Some(operation) = operation.as_mut() else {
                continue;
            };
            for (status, description) in common_errors(path, post, base) {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| {
                        RefOr::T(
                            ResponseBuilder::new()
                                .description(description)
                                .content(
                                    "application/json",
                                    ContentBuilder::new()
                                        .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                                        .build(),
                                )
                                .build(),
                        )
                    });
            }
        }
    }
}

/// The complete router: routes, API docs, fallback and the middleware stack.
pub fn build(state: AppState) -> Router {
    let (routes, openapi) = routes(&state);
    let base = state.http.api_base_path.clone();
    let docs = SwaggerUi::new(format!("{base}/docs")).url(format!("{base}/openapi.json"), openapi);
    let dashboard = Router::new()
        .route(&format!("{base}/redoc"), get(ops::redoc))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/app.css", get(dashboard::style));
    let router = routes
        .merge(docs)
        .merge(dashboard)
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
    middleware::apply(router, &state).with_state(state)
}
