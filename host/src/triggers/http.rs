//! The HTTP API (DESIGN §7): one router, one JSON error shape, bearer tokens
//! with roles, body limits.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::config::{Mode, Role};
use crate::record::Trigger;
use crate::service::approval::DecideError;
use crate::service::{Service, Started};
use crate::store::{AuditFilter, RunFilter};

/// Default largest request body.
pub const MAX_BODY: usize = 1 << 20;

/// Every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn unavailable(e: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

/// Bearer tokens and their roles; empty means the API is open.
#[derive(Default)]
pub struct Auth {
    tokens: Vec<(String, String, Vec<Role>)>,
}

impl Auth {
    /// Reads each token's value from its environment variable.
    pub fn from_config(tokens: &[crate::config::TokenConfig]) -> anyhow::Result<Auth> {
        let mut out = Vec::new();
        for t in tokens {
            let value = std::env::var(&t.env)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "token `{}`: environment variable {} is not set",
                        t.name,
                        t.env
                    )
                })?;
            out.push((t.name.clone(), value, t.roles.clone()));
        }
        Ok(Auth { tokens: out })
    }

    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether the caller also holds `role` (admin holds every role; an
    /// open API has no roles to hold back).
    fn may(&self, headers: &HeaderMap, role: Role) -> bool {
        self.check(headers, role).is_ok()
    }

    /// The caller's token, if it is one of ours (any role).
    fn known(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match self.check(headers, Role::Admin) {
            Err(e) if e.status == StatusCode::FORBIDDEN => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Who is asking, if they may `role`.
    fn check(&self, headers: &HeaderMap, role: Role) -> Result<String, ApiError> {
        if self.tokens.is_empty() {
            return Ok("anonymous".into());
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "a bearer token is required",
                )
            })?;
        let (name, _, roles) = self
            .tokens
            .iter()
            .find(|(_, v, _)| constant_time_eq(v.as_bytes(), presented.trim().as_bytes()))
            .ok_or_else(|| {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown token")
            })?;
        if roles.contains(&role) || roles.contains(&Role::Admin) {
            Ok(name.clone())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("token `{name}` lacks the `{}` role", role_name(role)),
            ))
        }
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Read => "read",
        Role::Run => "run",
        Role::Approve => "approve",
        Role::Alerts => "alerts",
        Role::Admin => "admin",
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub struct AppState {
    pub service: Arc<Service>,
    pub auth: Auth,
}

type AppResult<T> = Result<T, ApiError>;

pub fn router(state: Arc<AppState>, max_body: usize, read_timeout: std::time::Duration) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/plugins", get(plugins))
        .route("/v1/plugins/reload", post(reload))
        .route("/v1/plugins/{name}/runs", post(start_run))
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/{id}", get(get_run))
        .route("/v1/runs/{id}/approve", post(approve))
        .route("/v1/runs/{id}/reject", post(reject))
        .route("/v1/runs/{id}/report", get(report))
        .route("/v1/admin/pause", post(pause).get(pause_state))
        .route("/v1/admin/resume", post(resume))
        .route("/v1/alerts", post(post_alerts).get(list_alerts))
        .route("/v1/audit", get(list_audit))
        .route(
            "/v1/openapi.json",
            get(|State(s): State<Arc<AppState>>| async move {
                Json(super::openapi::document(!s.auth.is_open()).clone())
            }),
        )
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
            front_door,
        ))
        .with_state(state)
}

/// The front door, before any handler reads a body. With tokens, a request
/// without a known one is answered `401` here. With no tokens configured the
/// API is open, so it must be reachable only
/// from this machine *as this machine*: a web page in a local browser can
/// send requests to 127.0.0.1 (cross-site) or, by DNS rebinding, under a
/// name of its own. Both are refused: the `Host` must be a loopback name or
/// address, and an `Origin`, when the browser sends one, too.
async fn front_door(
    State((s, max_body, read_timeout)): State<(Arc<AppState>, usize, std::time::Duration)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if s.auth.is_open() {
        if let Err(e) = loopback_request(req.headers()) {
            return e.into_response();
        }
    } else if !matches!(
        req.uri().path(),
        "/healthz" | "/metrics" | "/v1/openapi.json"
    ) {
        // Who is asking is settled before any body is read: an unknown
        // caller cannot make the server buffer a megabyte per request.
        if let Err(e) = s.auth.known(req.headers()) {
            return e.into_response();
        }
    }
    // The body, read here within `read_timeout` and `max_body`: a client
    // trickling a body holds nothing for long.
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(read_timeout, axum::body::to_bytes(body, max_body)).await
    {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let too_large = e.to_string().contains("length limit");
            return if too_large {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the body is larger than {max_body} bytes"),
                )
            } else {
                ApiError::bad_request(format!("reading the body failed: {e}"))
            }
            .into_response();
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the body did not arrive within {} ms",
                    read_timeout.as_millis()
                ),
            )
            .into_response()
        }
    };
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

fn loopback_request(h: &HeaderMap) -> Result<(), ApiError> {
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !is_loopback_authority(host) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_host",
            format!("with no [[server.tokens]] configured, only requests addressed to a loopback name or address are answered (Host: `{host}`)"),
        ));
    }
    if let Some(origin) = h.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let authority = origin
            .split_once("://")
            .map(|(_, a)| a.trim_end_matches('/'))
            .unwrap_or("");
        if !is_loopback_authority(authority) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                format!("with no [[server.tokens]] configured, cross-site requests are refused (Origin: `{origin}`)"),
            ));
        }
    }
    Ok(())
}

/// `localhost`, `127.0.0.1:8080`, `[::1]:8080` and the like.
fn is_loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(authority),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `Query` whose rejection is an error in the API's shape.
struct Q<T>(T);

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

/// Fails when the store cannot write any more: nothing the service
/// acknowledged from then on would be durable.
async fn healthz(State(s): State<Arc<AppState>>) -> Response {
    if s.service.store.writer_alive() {
        Json(json!({"status": "ok"})).into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store's writer has stopped; restart the service",
        )
        .into_response()
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.service.metrics.render(),
    )
}

async fn plugins(State(s): State<Arc<AppState>>, h: HeaderMap) -> AppResult<impl IntoResponse> {
    s.auth.check(&h, Role::Read)?;
    Ok(Json(json!({"plugins": s.service.registry.views()})))
}

async fn reload(State(s): State<Arc<AppState>>, h: HeaderMap) -> AppResult<impl IntoResponse> {
    let who = s.auth.check(&h, Role::Admin)?;
    s.service.scan_plugins_dir().await;
    s.service
        .audit(None, None, "plugins.reload", json!({"by": who}))
        .await;
    Ok(Json(json!({"plugins": s.service.registry.views()})))
}

/// The body limit surfaces as a failed read: 413 in our error shape.
fn body_error(e: axum::extract::rejection::BytesRejection) -> ApiError {
    let status = e.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "payload_too_large"
    } else {
        "bad_request"
    };
    ApiError::new(status, code, e.body_text())
}

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

/// A query parameter's bound, as the OpenAPI document states it.
fn at_most(key: &str, v: Option<u32>, max: u32) -> AppResult<()> {
    match v {
        Some(v) if v > max => Err(ApiError::bad_request(format!(
            "`{key}`: at most {max}, got {v}"
        ))),
        _ => Ok(()),
    }
}

fn json_body<T: for<'de> Deserialize<'de> + Default>(body: &Bytes) -> AppResult<T> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Ok(T::default()),
        // serde would take `[..]` for a struct's fields in order.
        Some(b'{') => {}
        Some(_) => return Err(ApiError::bad_request("the body must be a JSON object")),
    }
    super::parse_json(body).map_err(ApiError::bad_request)
}

async fn start_run(
    State(s): State<Arc<AppState>>,
    h: HeaderMap,
    Path(name): Path<String>,
    Q(q): Q<WaitQuery>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> AppResult<Response> {
    let who = s.auth.check(&h, Role::Run)?;
    let body: RunBody = json_body(&body.map_err(body_error)?)?;
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
    let unsafer = effective == Mode::Auto && configured != Mode::Auto;
    let acts = effective != Mode::DryRun;
    if (unsafer || (acts && !params.is_empty())) && !s.auth.may(&h, Role::Approve) {
        let what = if unsafer {
            format!(
                "running {name} live (it is configured `{}`)",
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
    let id_target = format!("manual:{}", uuid::Uuid::new_v4());
    let trigger = Trigger::Manual {
        by: format!("http:{who}"),
    };
    match s
        .service
        .start_run(plugin, trigger, mode, params, id_target)
        .await
        .map_err(ApiError::unavailable)?
    {
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

async fn list_runs(
    State(s): State<Arc<AppState>>,
    h: HeaderMap,
    Q(f): Q<RunFilter>,
) -> AppResult<impl IntoResponse> {
    s.auth.check(&h, Role::Read)?;
    at_most("limit", f.limit, 1000)?;
    let runs = s
        .service
        .store
        .list_runs(f)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(json!({"runs": runs})))
}

async fn get_run(
    State(s): State<Arc<AppState>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> AppResult<impl IntoResponse> {
    s.auth.check(&h, Role::Read)?;
    match s
        .service
        .store
        .get_run(&id)
        .await
        .map_err(ApiError::unavailable)?
    {
        Some(rec) => Ok(Json(rec)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_run",
            format!("no run with id `{id}`"),
        )),
    }
}

async fn post_alerts(
    State(s): State<Arc<AppState>>,
    h: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> AppResult<Response> {
    s.auth.check(&h, Role::Alerts)?;
    let body = body.map_err(body_error)?;
    let hook = super::alerts::parse(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    match super::alerts::receive(&s.service, hook).await {
        Ok(receipt) => Ok((StatusCode::ACCEPTED, Json(receipt)).into_response()),
        Err(super::alerts::AlertError::Store(e)) => Err(ApiError::unavailable(e)),
        Err(e) => Err(ApiError::bad_request(e.to_string())),
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct LimitQuery {
    #[schemars(range(max = 1000))]
    limit: Option<u32>,
}

async fn list_alerts(
    State(s): State<Arc<AppState>>,
    h: HeaderMap,
    Q(q): Q<LimitQuery>,
) -> AppResult<impl IntoResponse> {
    s.auth.check(&h, Role::Read)?;
    at_most("limit", q.limit, 1000)?;
    let alerts = s
        .service
        .store
        .list_alerts(q.limit.unwrap_or(100))
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(json!({"alerts": alerts})))
}

async fn list_audit(
    State(s): State<Arc<AppState>>,
    h: HeaderMap,
    Q(f): Q<AuditFilter>,
) -> AppResult<impl IntoResponse> {
    s.auth.check(&h, Role::Read)?;
    at_most("limit", f.limit, 10_000)?;
    let events = s
        .service
        .store
        .list_audit(f)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(json!({"events": events})))
}

async fn decide(s: &AppState, h: &HeaderMap, id: &str, approve: bool) -> AppResult<Response> {
    let who = s.auth.check(h, Role::Approve)?;
    match s.service.decide(id, approve, &who).await {
        Ok(d) => Ok((
            if approve {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            },
            Json(json!({"run": d.plan, "live_run": d.live_run})),
        )
            .into_response()),
        Err(e) => {
            let (status, code) = match &e {
                DecideError::NotFound(_) => (StatusCode::NOT_FOUND, "unknown_run"),
                DecideError::NotPending { .. } => (StatusCode::CONFLICT, "not_pending"),
                DecideError::Expired { .. } => (StatusCode::GONE, "plan_expired"),
                DecideError::Paused { .. } => (StatusCode::CONFLICT, "paused"),
                DecideError::PluginGone(_) => (StatusCode::CONFLICT, "plugin_gone"),
                DecideError::PluginChanged { .. } => (StatusCode::CONFLICT, "plugin_changed"),
                DecideError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            };
            Err(ApiError::new(status, code, e.to_string()))
        }
    }
}

async fn approve(
    State(s): State<Arc<AppState>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> AppResult<Response> {
    decide(&s, &h, &id, true).await
}

async fn reject(
    State(s): State<Arc<AppState>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> AppResult<Response> {
    decide(&s, &h, &id, false).await
}

async fn pause_state(State(s): State<Arc<AppState>>, h: HeaderMap) -> AppResult<impl IntoResponse> {
    s.auth.check(&h, Role::Read)?;
    Ok(Json(json!({"paused": s.service.paused()})))
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PauseBody {
    /// Why automation is paused (shown wherever the pause is).
    reason: Option<String>,
}

async fn pause(
    State(s): State<Arc<AppState>>,
    h: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> AppResult<impl IntoResponse> {
    let who = s.auth.check(&h, Role::Admin)?;
    let body: PauseBody = json_body(&body.map_err(body_error)?)?;
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

async fn resume(State(s): State<Arc<AppState>>, h: HeaderMap) -> AppResult<impl IntoResponse> {
    let who = s.auth.check(&h, Role::Admin)?;
    let p = s
        .service
        .set_paused(false, &who, None)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(json!({"paused": p})))
}

async fn report(
    State(s): State<Arc<AppState>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> AppResult<Response> {
    s.auth.check(&h, Role::Read)?;
    let text = crate::report::for_run(&s.service.store, &id)
        .await
        .map_err(ApiError::unavailable)?
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
