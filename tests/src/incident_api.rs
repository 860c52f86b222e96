//! Local PagerDuty Events API v2 and Grafana annotations API for the tests.
//! Each checks what the vendor documents — PagerDuty: a JSON body, a
//! 32-character `routing_key`, `event_action` one of trigger / acknowledge /
//! resolve, a `dedup_key` of at most 255 characters (required to acknowledge
//! or resolve), a trigger's `payload` with `summary`, `source` and a known
//! `severity`; Grafana: the service-account token as `Authorization:
//! Bearer`, a `text`, `tags` as strings, `time`/`timeEnd` in epoch
//! milliseconds, `dashboardUID` a string and `panelId` a number — records
//! what it accepted, and answers as the vendor does (`202` with
//! `status: success` and the `dedup_key`; `{"message":"Annotation
//! added","id":N}`; `400`/`401` with the vendor's error shape; `429` when
//! scripted).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// The integration key the fake PagerDuty accepts (32 characters).
pub const ROUTING_KEY: &str = "R0UT1NGKEYREMEDYTEST000000000032";

/// The service-account token the fake Grafana accepts.
pub const GRAFANA_TOKEN: &str = "glsa_remedyTestToken0000000000_0000abcd";

#[derive(Default)]
struct Inner {
    accepted: Vec<Value>,
    refused: Vec<String>,
    /// Scripted answers: `Some(status)` for the next calls.
    script: VecDeque<u16>,
}

/// What a fake received: the bodies it accepted, the reasons it refused.
#[derive(Clone)]
pub struct Fake {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

impl Fake {
    pub fn accepted(&self) -> Vec<Value> {
        self.inner.lock().unwrap().accepted.clone()
    }

    pub fn refused(&self) -> Vec<String> {
        self.inner.lock().unwrap().refused.clone()
    }

    /// The next calls are answered with these statuses (429, 500…).
    pub fn script(&self, statuses: Vec<u16>) {
        self.inner.lock().unwrap().script = statuses.into();
    }

    fn scripted(&self) -> Option<u16> {
        self.inner.lock().unwrap().script.pop_front()
    }

    fn refuse(&self, why: String) {
        self.inner.lock().unwrap().refused.push(why);
    }

    fn accept(&self, body: Value) {
        self.inner.lock().unwrap().accepted.push(body);
    }
}

async fn listen(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn json_body(headers: &HeaderMap, body: &str) -> Result<Value, String> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(format!("content-type `{ct}` is not application/json"));
    }
    serde_json::from_str(body).map_err(|e| format!("body is not JSON: {e}"))
}

/// Starts a PagerDuty Events API v2 at `{base}/v2/enqueue`.
pub async fn pagerduty() -> Fake {
    let fake = Fake {
        base: String::new(),
        inner: Arc::default(),
    };
    let app = Router::new()
        .route("/v2/enqueue", post(enqueue))
        .with_state(fake.clone());
    Fake {
        base: listen(app).await,
        ..fake
    }
}

/// The Events API's checks, in its words where it documents them.
fn check_event(e: &Value) -> Result<String, String> {
    let key = e["routing_key"].as_str().unwrap_or("");
    if key.len() != 32 {
        return Err("Length of 'routing_key' is incorrect (should be 32 characters)".into());
    }
    if key != ROUTING_KEY {
        return Err("Invalid routing key".into());
    }
    let action = e["event_action"].as_str().unwrap_or("");
    let dedup = e["dedup_key"].as_str();
    if dedup.is_some_and(|d| d.is_empty() || d.len() > 255) {
        return Err("'dedup_key' must be between 1 and 255 characters".into());
    }
    match action {
        "trigger" => {
            let p = &e["payload"];
            for field in ["summary", "source"] {
                if p[field].as_str().is_none_or(str::is_empty) {
                    return Err(format!("'payload.{field}' is missing or blank"));
                }
            }
            if p["summary"].as_str().is_some_and(|s| s.len() > 1024) {
                return Err("'payload.summary' is longer than 1024 characters".into());
            }
            let severity = p["severity"].as_str().unwrap_or("");
            if !["critical", "error", "warning", "info"].contains(&severity) {
                return Err("'payload.severity' is invalid (expected one of critical, error, warning, info)".into());
            }
        }
        "acknowledge" | "resolve" => {
            if dedup.is_none() {
                return Err(format!("'dedup_key' is required to {action}"));
            }
            if e.get("payload").is_some() {
                return Err(format!("a {action} event takes no 'payload'"));
            }
        }
        other => return Err(format!("'event_action' is invalid: `{other}`")),
    }
    Ok(dedup
        .map(str::to_string)
        .unwrap_or_else(|| "generated-dedup-key".into()))
}

async fn enqueue(State(fake): State<Fake>, headers: HeaderMap, body: String) -> Response {
    if let Some(status) = fake.scripted() {
        let status = StatusCode::from_u16(status).unwrap();
        return (status, Json(json!({"status": "throttle", "message": "Requests for this service are arriving too quickly"}))).into_response();
    }
    match json_body(&headers, &body).and_then(|e| check_event(&e).map(|k| (e, k))) {
        Ok((event, dedup_key)) => {
            fake.accept(event);
            (
                StatusCode::ACCEPTED,
                Json(json!({"status": "success", "message": "Event processed", "dedup_key": dedup_key})),
            )
                .into_response()
        }
        Err(why) => {
            fake.refuse(why.clone());
            (
                StatusCode::BAD_REQUEST,
                Json(json!({"status": "invalid event", "message": "Event object is invalid", "errors": [why]})),
            )
                .into_response()
        }
    }
}

/// Starts a Grafana HTTP API with `{base}/api/annotations`.
pub async fn grafana() -> Fake {
    let fake = Fake {
        base: String::new(),
        inner: Arc::default(),
    };
    let app = Router::new()
        .route("/api/annotations", post(annotate))
        .with_state(fake.clone());
    Fake {
        base: listen(app).await,
        ..fake
    }
}

fn check_annotation(a: &Value) -> Result<(), String> {
    if a["text"].as_str().is_none_or(str::is_empty) {
        return Err("text is required".into());
    }
    if let Some(tags) = a.get("tags") {
        if !tags
            .as_array()
            .is_some_and(|t| t.iter().all(Value::is_string))
        {
            return Err("tags must be an array of strings".into());
        }
    }
    for field in ["time", "timeEnd"] {
        if let Some(t) = a.get(field) {
            // Epoch milliseconds: a seconds value would land in 1970.
            if t.as_i64().is_none_or(|t| t <= 1_000_000_000_000) {
                return Err(format!("{field} must be epoch milliseconds"));
            }
        }
    }
    if a.get("dashboardUID").is_some_and(|d| !d.is_string()) {
        return Err("dashboardUID must be a string".into());
    }
    if a.get("panelId").is_some_and(|p| !p.is_i64()) {
        return Err("panelId must be a number".into());
    }
    Ok(())
}

async fn annotate(State(fake): State<Fake>, headers: HeaderMap, body: String) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(GRAFANA_TOKEN) {
        fake.refuse("unauthorized".into());
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "Unauthorized"})),
        )
            .into_response();
    }
    if let Some(status) = fake.scripted() {
        let status = StatusCode::from_u16(status).unwrap();
        return (status, Json(json!({"message": "scripted failure"}))).into_response();
    }
    match json_body(&headers, &body).and_then(|a| check_annotation(&a).map(|()| a)) {
        Ok(a) => {
            fake.accept(a);
            let id = fake.accepted().len();
            Json(json!({"message": "Annotation added", "id": id})).into_response()
        }
        Err(why) => {
            fake.refuse(why.clone());
            (StatusCode::BAD_REQUEST, Json(json!({"message": why}))).into_response()
        }
    }
}
