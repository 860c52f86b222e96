//! Alertmanager's webhook, the alert and audit listings, and clearing an
//! alert's flapping.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::{at_most, ApiError, AppResult, AppState, Who, Q};
use crate::store::AuditFilter;
use crate::triggers::alerts;

pub(super) async fn post_alerts(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> AppResult<Response> {
    let body = body?;
    let hook = alerts::parse(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    // A P0/P1 alert's receipt is handled on the urgent runtime, so that
    // its runs start without waiting behind a storm's ready tasks.
    let urgent = hook
        .alerts
        .iter()
        .any(|a| crate::record::urgent_alert(&a.labels));
    let receipt = if urgent {
        let service = s.service.clone();
        s.service
            .urgent
            .spawn(async move { alerts::receive(&service, hook).await })
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "receipt_failed",
                    format!("the receipt task failed: {e}"),
                )
            })??
    } else {
        alerts::receive(&s.service, hook).await?
    };
    Ok((StatusCode::ACCEPTED, Json(receipt)).into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct LimitQuery {
    #[schemars(range(max = 1000))]
    limit: Option<u32>,
}

pub(super) async fn list_alerts(
    State(s): State<Arc<AppState>>,
    Q(q): Q<LimitQuery>,
) -> AppResult<impl IntoResponse> {
    at_most("limit", q.limit, 1000)?;
    let alerts = s.service.store.list_alerts(q.limit.unwrap_or(100)).await?;
    let flapping = s.service.flapping_alerts().await?;
    let alerts: Vec<serde_json::Value> = alerts
        .into_iter()
        .map(|a| {
            let flap = flapping.get(&a.fingerprint).cloned();
            let mut v = serde_json::to_value(a).unwrap_or_default();
            if let Some(f) = flap {
                v["flapping"] = f;
            }
            v
        })
        .collect();
    Ok(Json(json!({"alerts": alerts})))
}

pub(super) async fn list_audit(
    State(s): State<Arc<AppState>>,
    Q(f): Q<AuditFilter>,
) -> AppResult<impl IntoResponse> {
    at_most("limit", f.limit, 10_000)?;
    let events = s.service.store.list_audit(f).await?;
    Ok(Json(json!({"events": events})))
}

/// `POST /v1/alerts/{fingerprint}/clear-flap`: mitigations of the alert
/// before now no longer count towards `flap.max`.
pub(super) async fn clear_flap(
    State(s): State<Arc<AppState>>,
    Extension(Who(who)): Extension<Who>,
    Path(fingerprint): Path<String>,
) -> AppResult<Response> {
    if !crate::service::valid_fingerprint(&fingerprint) {
        return Err(ApiError::bad_request(
            "`fingerprint`: at most 128 letters, digits, `-`, `_`, `:` or `.`",
        ));
    }
    s.service.clear_flap(&fingerprint, &who).await?;
    Ok(
        Json(serde_json::json!({"fingerprint": fingerprint, "cleared": true, "by": who}))
            .into_response(),
    )
}
