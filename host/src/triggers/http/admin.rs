//! Health, metrics, the plugin list and reload, and the kill switch.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::{json_body, ApiError, AppResult, AppState, Who};

/// Fails when the store cannot write any more: nothing the service
/// acknowledged from then on would be durable.
pub(super) async fn healthz(State(s): State<Arc<AppState>>) -> Response {
    if let Some((runs, oldest)) = s.service.unwritten_for() {
        if oldest >= s.service.unwritten_bound() {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "records_unwritten",
                format!(
                    "{runs} finished run(s) not stored for {}s (the oldest): the store refuses this replica's writes; restart it if this lasts",
                    oldest.as_secs()
                ),
            )
            .into_response();
        }
    }
    if s.service.store.healthy() {
        Json(json!({"status": "ok"})).into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store cannot be written (SQLite: its writer stopped, restart the service; PostgreSQL: unreachable, see the log)",
        )
        .into_response()
    }
}

pub(super) async fn metrics(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    s.service
        .metrics
        .set_store(s.service.store.healthy(), s.service.unwritten_for());
    s.service
        .metrics
        .set_store_writes(s.service.store.write_stats().map(|w| w.read()));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.service.metrics.render(),
    )
}

pub(super) async fn plugins(State(s): State<Arc<AppState>>) -> AppResult<impl IntoResponse> {
    Ok(Json(json!({"plugins": s.service.registry.views()})))
}

pub(super) async fn reload(
    State(s): State<Arc<AppState>>,
    Extension(Who(who)): Extension<Who>,
) -> AppResult<impl IntoResponse> {
    s.service.scan_plugins_dir().await;
    s.service
        .audit(None, None, "plugins.reload", json!({"by": who}))
        .await;
    Ok(Json(json!({"plugins": s.service.registry.views()})))
}

pub(super) async fn cluster(State(s): State<Arc<AppState>>) -> AppResult<impl IntoResponse> {
    Ok(Json(s.service.cluster.view()))
}

pub(super) async fn pause_state(State(s): State<Arc<AppState>>) -> AppResult<impl IntoResponse> {
    Ok(Json(json!({"paused": s.service.paused()})))
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PauseBody {
    /// Why automation is paused (shown wherever the pause is).
    reason: Option<String>,
}

pub(super) async fn pause(
    State(s): State<Arc<AppState>>,
    Extension(Who(who)): Extension<Who>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> AppResult<impl IntoResponse> {
    let body: PauseBody = json_body(&body?)?;
    let reason = body
        .reason
        .map(|r| r.chars().take(500).collect::<String>())
        .filter(|r| !r.trim().is_empty());
    // Stopping automation is never refused: if the store cannot keep the
    // pause, it holds in this process and the answer says it was not stored.
    match s.service.set_paused(true, &who, reason).await {
        Ok(p) => Ok(Json(json!({"paused": p, "stored": true}))),
        Err(e) => Ok(Json(
            json!({"paused": s.service.paused(), "stored": false, "warning": format!("the pause holds in this process but was not stored and a restart will forget it: {e}")}),
        )),
    }
}

pub(super) async fn resume(
    State(s): State<Arc<AppState>>,
    Extension(Who(who)): Extension<Who>,
) -> AppResult<impl IntoResponse> {
    let p = s.service.set_paused(false, &who, None).await?;
    Ok(Json(json!({"paused": p})))
}
