//! Runs: start one, list and read them, approve or reject a plan, and the
//! post-incident report.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::{at_most, json_body, ApiError, AppResult, AppState, Who, Q};
use crate::config::{Mode, Role};
use crate::record::Trigger;
use crate::service::Started;
use crate::store::RunFilter;

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
// `mode` or `dry_run`, not both (a `null` counts as absent).
#[schemars(extend("not" = {"required": ["mode", "dry_run"], "properties": {"mode": {"type": "string"}, "dry_run": {"type": "boolean"}}}))]
pub(crate) struct RunBody {
    dry_run: Option<bool>,
    /// `dry-run`, `auto` or `approve`, over the plugin's mode.
    #[schemars(with = "Option<Mode>")]
    mode: Option<String>,
    /// Config keys for this run only: strings, numbers or booleans.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, ConfigScalar>")]
    config: BTreeMap<String, serde_json::Value>,
}

/// A per-run config value (its schema; the handler checks it).
#[derive(schemars::JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ConfigScalar {
    String(String),
    Number(f64),
    Bool(bool),
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct WaitQuery {
    #[serde(default)]
    wait: bool,
}

pub(super) async fn start_run(
    State(s): State<Arc<AppState>>,
    Extension(Who(who)): Extension<Who>,
    h: HeaderMap,
    Path(name): Path<String>,
    Q(q): Q<WaitQuery>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> AppResult<Response> {
    let body: RunBody = json_body(&body?)?;
    let plugin = s.service.registry.get(&name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_plugin",
            format!("no loaded plugin named `{name}`"),
        )
    })?;
    let mut params = BTreeMap::new();
    for (k, v) in body.config {
        if k.starts_with("protected") {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("`config.{k}`: protected lists come from the config file only; a run cannot change them"),
            ));
        }
        let v = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => v.to_string(),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "`config.{k}`: must be a string, number or boolean"
                )))
            }
        };
        params.insert(k, v);
    }
    let mode = match (body.mode.as_deref(), body.dry_run) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give `mode` or `dry_run`, not both"))
        }
        (Some(m), None) => Some(Mode::parse(m).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`mode`: `{m}` is not one of dry-run, auto, approve"
            ))
        })?),
        (None, Some(true)) => Some(Mode::DryRun),
        (None, Some(false)) => Some(Mode::Auto),
        (None, None) => None,
    };
    // A request may make a run safer than the plugin's mode, never less safe:
    // running an approve-mode or dry-run plugin live, or changing the limits
    // of a run that may act, is an approver's decision.
    let configured = plugin.settings.mode;
    let effective = mode.unwrap_or(configured);
    // Approve is less safe than dry-run: its plan, once approved, acts.
    let unsafer = effective.risk() > configured.risk();
    let acts = effective != Mode::DryRun;
    if (unsafer || (acts && !params.is_empty())) && !s.auth.may(&h, Role::Approve) {
        let what = if unsafer {
            format!(
                "running {name} in mode `{}` (it is configured `{}`)",
                effective.as_str(),
                configured.as_str()
            )
        } else {
            format!("changing the config of a run of {name} that may act")
        };
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{what} needs the `approve` role; a dry run needs only `run`"),
        ));
    }
    let id_target = crate::service::own_target();
    let trigger = Trigger::Manual {
        by: format!("http:{who}"),
    };
    let launch = crate::service::Launch {
        id: None,
        trigger,
        mode,
        params,
        target: id_target,
        approved: None,
        waited: q.wait,
    };
    match s.service.launch(plugin, launch).await? {
        Started::Running { id, handle } if q.wait => {
            let rec = handle.await.map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "run_panicked",
                    format!("run {id}: {e}"),
                )
            })?;
            Ok((StatusCode::OK, Json(rec)).into_response())
        }
        Started::Running { id, .. } => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"run_id": id, "status": "running"})),
        )
            .into_response()),
        Started::Skipped(rec) => Ok((StatusCode::OK, Json(rec)).into_response()),
    }
}

pub(super) async fn list_runs(
    State(s): State<Arc<AppState>>,
    Q(f): Q<RunFilter>,
) -> AppResult<impl IntoResponse> {
    at_most("limit", f.limit, 1000)?;
    let runs = s.service.store.list_runs(f).await?;
    Ok(Json(json!({"runs": runs})))
}

pub(super) async fn get_run(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> AppResult<impl IntoResponse> {
    match s.service.store.get_run(&id).await? {
        Some(rec) => Ok(Json(rec)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_run",
            format!("no run with id `{id}`"),
        )),
    }
}

async fn decide(s: &AppState, who: &str, id: &str, approve: bool) -> AppResult<Response> {
    let d = s.service.decide(id, approve, who).await?;
    // 202: the live run started; 200: rejected, or approved by one more
    // person while it needs more.
    let status = if d.live_run.is_some() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({"run": d.plan, "live_run": d.live_run}))).into_response())
}

pub(super) async fn approve(
    State(s): State<Arc<AppState>>,
    Extension(Who(who)): Extension<Who>,
    Path(id): Path<String>,
) -> AppResult<Response> {
    decide(&s, &who, &id, true).await
}

pub(super) async fn reject(
    State(s): State<Arc<AppState>>,
    Extension(Who(who)): Extension<Who>,
    Path(id): Path<String>,
) -> AppResult<Response> {
    decide(&s, &who, &id, false).await
}

pub(super) async fn report(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> AppResult<Response> {
    let text = crate::report::for_run(s.service.store.as_ref(), &id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_run",
                format!("no run with id `{id}`"),
            )
        })?;
    Ok((
        [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
        text,
    )
        .into_response())
}
