//! servio-sim: a small stand-in for the Servio platform that Remedy
//! remediates. It exposes circuit breakers (stripe, supabase, openai) through
//! the breaker admin API of docs/breaker-api.md, a Statuspage-style status
//! document per upstream, the Prometheus metrics a real Servio exposes
//! (breakers, HTTP traffic, latency, payments, webhooks, cache, build), and
//! endpoints to inject the fault of each incident in the seed runbook.

pub mod deployed;
pub mod traffic;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Upstream health, as a Statuspage indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// indicator `none`
    Healthy,
    /// indicator `minor`
    Degraded,
    /// indicator `major`
    Down,
}

#[derive(Debug, Clone, Serialize)]
pub struct Breaker {
    pub name: String,
    pub state: String,
    pub failures: u32,
    pub opened_at: Option<String>,
    pub status_url: Option<String>,
}

#[derive(Default)]
struct Inner {
    breakers: BTreeMap<String, Breaker>,
    upstreams: BTreeMap<String, Health>,
    transitions: u64,
    /// State changes asked through the admin API (what a remediation tool
    /// did, counted at the backend rather than in its own records).
    forced: u64,
    traffic: traffic::Traffic,
    /// The access log, when the sim writes one.
    log: Option<deployed::AccessLog>,
    /// The breaker admin API answers reads this much later.
    slow_reads_ms: u64,
    /// The breaker admin API applies a state change at once and answers
    /// this much later (the "did it happen?" fault).
    slow_writes_ms: u64,
}

impl Inner {
    /// Traffic up to now under the faults in force until now.
    fn advance(&mut self) {
        let stripe_open = self
            .breakers
            .get("stripe")
            .is_some_and(|b| b.state == "OPEN");
        self.traffic.advance(stripe_open);
        let status = self.traffic.faults.error_status;
        let answered = self.traffic.answered();
        if let Some(log) = self.log.as_mut() {
            log.write(answered, status);
        }
    }
}

/// The simulated platform's state.
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Mutex<Inner>>,
    /// Base URL this sim is reachable at (for the status URLs it reports).
    base_url: Arc<String>,
}

pub const UPSTREAMS: [&str; 3] = ["stripe", "supabase", "openai"];

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Sim {
    pub fn new(base_url: &str) -> Sim {
        let base = base_url.trim_end_matches('/').to_string();
        let mut inner = Inner::default();
        for name in UPSTREAMS {
            inner.breakers.insert(
                name.to_string(),
                Breaker {
                    name: name.to_string(),
                    state: "CLOSED".into(),
                    failures: 0,
                    opened_at: None,
                    status_url: Some(format!("{base}/status/{name}/api/v2/status.json")),
                },
            );
            inner.upstreams.insert(name.to_string(), Health::Healthy);
        }
        Sim {
            inner: Arc::new(Mutex::new(inner)),
            base_url: Arc::new(base),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// A breaker's current state (`CLOSED`, `OPEN`, `HALF_OPEN`).
    pub fn breaker_state(&self, name: &str) -> Option<String> {
        self.lock().breakers.get(name).map(|b| b.state.clone())
    }

    /// Opens a breaker as if its upstream had failed repeatedly.
    pub fn open_breaker(&self, name: &str) -> bool {
        let mut g = self.lock();
        g.advance();
        let Some(b) = g.breakers.get_mut(name) else {
            return false;
        };
        b.state = "OPEN".into();
        b.failures = b.failures.max(5);
        b.opened_at = Some(now());
        g.transitions += 1;
        true
    }

    pub fn set_health(&self, upstream: &str, health: Health) -> bool {
        match self.lock().upstreams.get_mut(upstream) {
            Some(h) => {
                *h = health;
                true
            }
            None => false,
        }
    }

    fn set_state(&self, name: &str, state: &str) -> Option<Breaker> {
        let mut g = self.lock();
        g.advance();
        let b = g.breakers.get_mut(name)?;
        b.state = state.to_string();
        b.opened_at = if state == "OPEN" { Some(now()) } else { None };
        if state == "CLOSED" {
            b.failures = 0;
        }
        let out = b.clone();
        g.transitions += 1;
        Some(out)
    }

    /// How many state changes the admin API was asked for (by anyone).
    pub fn forced(&self) -> u64 {
        self.lock().forced
    }

    /// Changes the faults, after accounting the traffic that ran under
    /// the old ones.
    pub fn faults(&self, change: impl FnOnce(&mut traffic::Traffic)) {
        let mut g = self.lock();
        g.advance();
        change(&mut g.traffic);
    }

    /// `percent` of HTTP requests answer 500 (HighErrorRate).
    pub fn set_error_percent(&self, percent: f64) {
        self.faults(|t| t.faults.error_percent = percent);
    }

    /// `dependency` (`db`, `external`, `cache`) takes `ms` longer (HighLatency).
    pub fn set_extra_latency(&self, dependency: &str, ms: f64) {
        self.faults(|t| {
            t.faults.extra_latency_ms.insert(dependency.to_string(), ms);
        });
    }

    /// `percent` of payments fail (PaymentProcessingFailure).
    pub fn set_payment_failures(&self, percent: f64) {
        self.faults(|t| t.faults.payment_fail_percent = percent);
    }

    /// `percent` of webhooks fail verification for `reason` (webhook security).
    pub fn set_webhook_failures(&self, reason: &str, percent: f64) {
        self.faults(|t| {
            t.faults
                .webhook_fail_percent
                .insert(reason.to_string(), percent);
        });
    }

    /// Cache lookups hit `percent` of the time (LowCacheHitRate).
    pub fn set_cache_hit_percent(&self, percent: f64) {
        self.faults(|t| t.faults.cache_hit_percent = percent);
    }

    /// Build `version` goes live now (a deploy, for HighErrorRate).
    pub fn deploy(&self, version: &str) {
        self.faults(|t| t.deploy(version));
    }

    /// The build a branch's head describes goes live: a deploy of its
    /// short id, with the faults it carries.
    pub fn go_live(&self, build: &deployed::Build) {
        let version = build.head[..12.min(build.head.len())].to_string();
        self.faults(|t| {
            t.deploy(&version);
            t.faults.error_percent = build.error_percent;
            t.faults.error_status = build.error_status;
        });
    }

    /// Writes an access log to `path` from now on.
    pub fn log_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut log = deployed::AccessLog::open(path)?;
        let mut g = self.lock();
        g.advance();
        log.write(g.traffic.answered(), g.traffic.faults.error_status);
        g.log = Some(log);
        Ok(())
    }

    /// Accounts traffic up to now (and logs it).
    pub fn tick(&self) {
        self.lock().advance();
    }

    /// The build running now.
    pub fn version(&self) -> String {
        self.lock().traffic.version.clone()
    }

    /// The breaker admin API answers reads `reads_ms` late, and answers
    /// state changes `writes_ms` after applying them.
    pub fn set_admin_delay(&self, reads_ms: u64, writes_ms: u64) {
        let mut g = self.lock();
        g.slow_reads_ms = reads_ms;
        g.slow_writes_ms = writes_ms;
    }

    async fn delay(&self, write: bool) {
        let ms = {
            let g = self.lock();
            if write {
                g.slow_writes_ms
            } else {
                g.slow_reads_ms
            }
        };
        if ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }

    /// Back to all-closed, all-healthy, no faults (counters keep counting).
    pub fn reset(&self) {
        self.set_admin_delay(0, 0);
        for name in UPSTREAMS {
            self.set_state(name, "CLOSED");
            self.set_health(name, Health::Healthy);
        }
        self.faults(|t| t.faults = traffic::Faults::default());
    }
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

async fn list(State(sim): State<Sim>) -> Json<serde_json::Value> {
    sim.delay(false).await;
    let g = sim.lock();
    Json(json!({"breakers": g.breakers.values().collect::<Vec<_>>()}))
}

async fn get_one(State(sim): State<Sim>, Path(name): Path<String>) -> Response {
    sim.delay(false).await;
    let found = sim.lock().breakers.get(&name).cloned();
    match found {
        Some(b) => Json(b).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no breaker named `{name}`"),
        ),
    }
}

#[derive(Deserialize)]
struct ForceState {
    state: String,
    #[serde(default)]
    reason: String,
}

async fn force_state(
    State(sim): State<Sim>,
    Path(name): Path<String>,
    body: Result<Json<ForceState>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    if !matches!(req.state.as_str(), "CLOSED" | "OPEN" | "HALF_OPEN") {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_state",
            format!(
                "state `{}` is not one of CLOSED, OPEN, HALF_OPEN",
                req.state
            ),
        );
    }
    let changed = sim.set_state(&name, &req.state);
    if changed.is_some() {
        sim.lock().forced += 1;
    }
    sim.delay(true).await;
    match changed {
        Some(b) => {
            tracing::info!(breaker = %name, state = %req.state, reason = %req.reason, "breaker forced");
            Json(b).into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no breaker named `{name}`"),
        ),
    }
}

async fn status_page(State(sim): State<Sim>, Path(upstream): Path<String>) -> Response {
    let Some(h) = sim.lock().upstreams.get(&upstream).copied() else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no upstream `{upstream}`"),
        );
    };
    let (indicator, description) = match h {
        Health::Healthy => ("none", "All Systems Operational"),
        Health::Degraded => ("minor", "Partially Degraded Service"),
        Health::Down => ("major", "Major Service Outage"),
    };
    Json(json!({
        "page": {"id": upstream, "name": upstream, "url": format!("{}/status/{upstream}", sim.base_url())},
        "status": {"indicator": indicator, "description": description}
    }))
    .into_response()
}

async fn metrics(State(sim): State<Sim>) -> String {
    let mut g = sim.lock();
    g.advance();
    let mut out = String::from(
        "# HELP servio_circuit_breaker_state Breaker state: 0 closed, 1 open, 2 half-open.\n# TYPE servio_circuit_breaker_state gauge\n",
    );
    for b in g.breakers.values() {
        let v = match b.state.as_str() {
            "OPEN" => 1,
            "HALF_OPEN" => 2,
            _ => 0,
        };
        out.push_str(&format!(
            "servio_circuit_breaker_state{{breaker=\"{}\"}} {v}\n",
            b.name
        ));
    }
    out.push_str("# HELP servio_circuit_breaker_failures Consecutive failures counted by the breaker.\n# TYPE servio_circuit_breaker_failures gauge\n");
    for b in g.breakers.values() {
        out.push_str(&format!(
            "servio_circuit_breaker_failures{{breaker=\"{}\"}} {}\n",
            b.name, b.failures
        ));
    }
    out.push_str("# HELP servio_upstream_up Upstream health as the status page reports it (1 healthy).\n# TYPE servio_upstream_up gauge\n");
    for (name, h) in &g.upstreams {
        out.push_str(&format!(
            "servio_upstream_up{{upstream=\"{name}\"}} {}\n",
            u8::from(*h == Health::Healthy)
        ));
    }
    out.push_str(&format!(
        "# HELP servio_breaker_transitions_total State changes of all breakers.\n# TYPE servio_breaker_transitions_total counter\nservio_breaker_transitions_total {}\n",
        g.transitions
    ));
    g.traffic.render(&mut out);
    out
}

/// Applies a percentage from the path, or answers 400 naming it.
fn with_percent(raw: &str, apply: impl FnOnce(f64)) -> Response {
    match raw.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => {
            apply(p);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => error(
            StatusCode::BAD_REQUEST,
            "bad_percent",
            format!("`{raw}` is not a percentage between 0 and 100"),
        ),
    }
}

async fn fault_errors(State(sim): State<Sim>, Path(p): Path<String>) -> Response {
    with_percent(&p, |p| sim.set_error_percent(p))
}

async fn fault_latency(
    State(sim): State<Sim>,
    Path((dep, ms)): Path<(String, String)>,
) -> Response {
    if !traffic::DEPENDENCIES.iter().any(|(d, _)| *d == dep) {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no dependency `{dep}` (db, external, cache)"),
        );
    }
    match ms.parse::<f64>() {
        Ok(ms) if (0.0..=60_000.0).contains(&ms) => {
            sim.set_extra_latency(&dep, ms);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => error(
            StatusCode::BAD_REQUEST,
            "bad_latency",
            format!("`{ms}` is not a latency between 0 and 60000 ms"),
        ),
    }
}

async fn fault_payments(State(sim): State<Sim>, Path(p): Path<String>) -> Response {
    with_percent(&p, |p| sim.set_payment_failures(p))
}

async fn fault_webhooks(
    State(sim): State<Sim>,
    Path((reason, p)): Path<(String, String)>,
) -> Response {
    if !traffic::WEBHOOK_REASONS.contains(&reason.as_str()) {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no webhook failure reason `{reason}` ({})",
                traffic::WEBHOOK_REASONS.join(", ")
            ),
        );
    }
    with_percent(&p, |p| sim.set_webhook_failures(&reason, p))
}

async fn fault_cache(State(sim): State<Sim>, Path(p): Path<String>) -> Response {
    with_percent(&p, |p| sim.set_cache_hit_percent(p))
}

async fn fault_deploy(State(sim): State<Sim>, Path(version): Path<String>) -> StatusCode {
    sim.deploy(&version);
    StatusCode::NO_CONTENT
}

async fn fault_open(State(sim): State<Sim>, Path(name): Path<String>) -> Response {
    if sim.open_breaker(&name) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no breaker named `{name}`"),
        )
    }
}

async fn fault_health(
    State(sim): State<Sim>,
    Path((name, health)): Path<(String, String)>,
) -> Response {
    let h = match health.as_str() {
        "healthy" => Health::Healthy,
        "degraded" => Health::Degraded,
        "down" => Health::Down,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_health",
                format!("`{other}` is not healthy, degraded or down"),
            )
        }
    };
    if sim.set_health(&name, h) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no upstream `{name}`"),
        )
    }
}

async fn fault_admin_delay(
    State(sim): State<Sim>,
    Path((kind, ms)): Path<(String, u64)>,
) -> Response {
    let g = sim.lock();
    let (reads, writes) = (g.slow_reads_ms, g.slow_writes_ms);
    drop(g);
    match kind.as_str() {
        "reads" => sim.set_admin_delay(ms, writes),
        "writes" => sim.set_admin_delay(reads, ms),
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("`{kind}` is neither reads nor writes"),
            )
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn fault_reset(State(sim): State<Sim>) -> StatusCode {
    sim.reset();
    StatusCode::NO_CONTENT
}

pub fn router(sim: Sim) -> Router {
    Router::new()
        .route("/admin/breakers", get(list))
        .route("/admin/breakers/{name}", get(get_one))
        .route("/admin/breakers/{name}/state", post(force_state))
        .route("/status/{upstream}/api/v2/status.json", get(status_page))
        .route("/metrics", get(metrics))
        .route("/faults/breakers/{name}/open", post(fault_open))
        .route("/faults/upstreams/{name}/{health}", post(fault_health))
        .route("/faults/errors/{percent}", post(fault_errors))
        .route("/faults/latency/{dependency}/{ms}", post(fault_latency))
        .route("/faults/payments/{percent}", post(fault_payments))
        .route("/faults/webhooks/{reason}/{percent}", post(fault_webhooks))
        .route("/faults/cache/hit-rate/{percent}", post(fault_cache))
        .route("/faults/deploy/{version}", post(fault_deploy))
        .route("/faults/admin/{kind}/{ms}", post(fault_admin_delay))
        .route("/faults/reset", post(fault_reset))
        .with_state(sim)
}

/// Serves a fresh sim on `listener`; returns the sim to drive from tests.
pub fn spawn(listener: tokio::net::TcpListener) -> std::io::Result<Sim> {
    let addr = listener.local_addr()?;
    let sim = Sim::new(&format!("http://{addr}"));
    let app = router(sim.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "servio-sim stopped");
        }
    });
    Ok(sim)
}
