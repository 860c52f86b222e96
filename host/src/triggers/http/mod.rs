//! The HTTP API: one router, one JSON error shape, bearer tokens
//! with roles, body limits. Routes are grouped by the role they need and
//! each group sits behind that role's layer ([`auth::require`]), so a
//! handler cannot be reached without its check.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::config::Role;
use crate::service::Service;

mod admin;
pub mod admission;
mod auth;
pub mod dead_peers;
mod error;
mod events;
mod feeds;
mod front_door;
mod runs;
mod slack;
mod throttle;

pub(crate) use admin::PauseBody;
pub use auth::{bearer, session_cookie, Auth, Caller, Peer, Who, COOKIE, SESSION_TTL};
pub use error::ApiError;
pub(crate) use feeds::LimitQuery;
pub(crate) use runs::{RunBody, WaitQuery};

/// Default largest request body.
pub const MAX_BODY: usize = 1 << 20;

pub struct AppState {
    pub service: Arc<Service>,
    pub auth: Auth,
}

type AppResult<T> = Result<T, ApiError>;

/// Routes that need `role`, behind its layer.
fn guarded(
    state: &Arc<AppState>,
    role: Role,
    routes: Router<Arc<AppState>>,
) -> Router<Arc<AppState>> {
    routes.route_layer(axum::middleware::from_fn_with_state(
        (state.clone(), role),
        auth::require,
    ))
}

pub fn router(state: Arc<AppState>, max_body: usize, read_timeout: std::time::Duration) -> Router {
    // Open to anyone who reaches the front door: probes and scrapers.
    let public = Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/metrics", get(admin::metrics))
        .route(
            "/v1/openapi.json",
            get(|State(s): State<Arc<AppState>>| async move {
                Json(super::openapi::document(!s.auth.is_open()).clone())
            }),
        )
        // No token: Slack signs its requests (checked in the handler).
        .route("/v1/slack/interactions", post(slack::interactions));
    let read = Router::new()
        .route("/v1/plugins", get(admin::plugins))
        .route("/v1/runs", get(runs::list_runs))
        .route("/v1/runs/{id}", get(runs::get_run))
        .route("/v1/runs/{id}/report", get(runs::report))
        .route("/v1/admin/pause", get(admin::pause_state))
        .route("/v1/cluster", get(admin::cluster))
        .route("/v1/alerts", get(feeds::list_alerts))
        .route("/v1/audit", get(feeds::list_audit))
        .route("/v1/events", get(events::events));
    let run = Router::new().route("/v1/plugins/{name}/runs", post(runs::start_run));
    let approve = Router::new()
        .route("/v1/runs/{id}/approve", post(runs::approve))
        .route("/v1/runs/{id}/reject", post(runs::reject))
        .route(
            "/v1/alerts/{fingerprint}/clear-flap",
            post(feeds::clear_flap),
        );
    let alerts = Router::new().route("/v1/alerts", post(feeds::post_alerts));
    let agent = Router::new()
        .route_service("/mcp", super::mcp::service(state.clone()))
        .layer(axum::middleware::map_response(super::mcp::json_errors));
    let admin = Router::new()
        .route("/v1/plugins/reload", post(admin::reload))
        .route("/v1/admin/pause", post(admin::pause))
        .route("/v1/admin/resume", post(admin::resume));
    Router::new()
        .merge(public)
        .merge(super::console::routes(&state))
        .merge(guarded(&state, Role::Read, read))
        .merge(guarded(&state, Role::Run, run))
        .merge(guarded(&state, Role::Approve, approve))
        .merge(guarded(&state, Role::Alerts, alerts))
        .merge(guarded(&state, Role::Agent, agent))
        .merge(guarded(&state, Role::Admin, admin))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            (state.clone(), max_body, read_timeout),
            front_door::front_door,
        ))
        .with_state(state)
}

/// `Query` whose rejection is an error in the API's shape.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| Q(t))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// A query parameter's bound, as the OpenAPI document states it.
pub fn at_most(key: &str, v: Option<u32>, max: u32) -> AppResult<()> {
    match v {
        Some(v) if v > max => Err(ApiError::bad_request(format!(
            "`{key}`: at most {max}, got {v}"
        ))),
        _ => Ok(()),
    }
}

pub fn json_body<T: for<'de> Deserialize<'de> + Default>(body: &Bytes) -> AppResult<T> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Ok(T::default()),
        // serde would take `[..]` for a struct's fields in order.
        Some(b'{') => {}
        Some(_) => return Err(ApiError::bad_request("the body must be a JSON object")),
    }
    crate::triggers::parse_json(body).map_err(ApiError::bad_request)
}
