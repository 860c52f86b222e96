//! The systems behind the capabilities, one small trait each. Real
//! implementations talk to PostgreSQL, Prometheus, the breaker admin API and
//! HTTP upstreams; `memory` holds in-memory ones for unit tests and benchmarks.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::BackendsConfig;
pub use crate::gate::permit::Permit;

pub mod breaker_api;
pub mod memory;
pub mod notify_http;
pub mod postgres;
pub mod probe_http;
pub mod prometheus;
pub mod redis;

/// A backend could not do what was asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    #[error("{0}")]
    Unavailable(String),
    /// The request was sent and no answer came: a change may or may not
    /// have taken effect (a timeout after sending).
    #[error("{0}")]
    Unknown(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
}

pub type BackendResult<T> = Result<T, BackendError>;

/// One sample of an instant query.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolStats {
    pub total: u32,
    pub active: u32,
    pub idle: u32,
    pub idle_in_transaction: u32,
    pub waiting: u32,
    pub max_connections: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub pid: i32,
    pub application_name: String,
    pub user_name: String,
    pub database: String,
    pub state: String,
    pub duration_ms: u64,
    pub wait_event: Option<String>,
    pub query: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The wire name of the breaker admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "CLOSED",
            Self::Open => "OPEN",
            Self::HalfOpen => "HALF_OPEN",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "CLOSED" => Some(Self::Closed),
            "OPEN" => Some(Self::Open),
            "HALF_OPEN" => Some(Self::HalfOpen),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Breaker {
    pub name: String,
    pub state: BreakerState,
    pub failures: u32,
    pub opened_at: Option<String>,
    pub status_url: Option<String>,
}

/// A Statuspage overall indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indicator {
    Operational,
    Minor,
    Major,
    Critical,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResponse {
    pub status: u16,
    pub body: String,
    pub truncated: bool,
    pub elapsed_ms: u32,
    pub indicator: Option<Indicator>,
    pub description: Option<String>,
}

#[async_trait]
pub trait MetricsBackend: Send + Sync {
    async fn query(&self, promql: &str) -> BackendResult<Vec<Sample>>;
}

#[async_trait]
pub trait DatabaseBackend: Send + Sync {
    async fn stats(&self) -> BackendResult<PoolStats>;
    async fn long_running(&self, min_duration_ms: u64, limit: u32) -> BackendResult<Vec<Session>>;
    /// The client session `pid` (never Remedy's own), if it exists.
    async fn session(&self, pid: i32) -> BackendResult<Option<Session>>;
    /// `pg_cancel_backend`; `false` when the session was gone or is no
    /// longer `application`'s (a reused pid is never signalled).
    async fn cancel(&self, _: &Permit, pid: i32, application: &str) -> BackendResult<bool>;
    /// `pg_terminate_backend`; `false` as for `cancel`.
    async fn terminate(&self, _: &Permit, pid: i32, application: &str) -> BackendResult<bool>;
}

#[async_trait]
pub trait BreakerBackend: Send + Sync {
    async fn list(&self) -> BackendResult<Vec<Breaker>>;
    async fn get(&self, name: &str) -> BackendResult<Option<Breaker>>;
    async fn force_state(
        &self,
        _: &Permit,
        name: &str,
        state: BreakerState,
        reason: &str,
    ) -> BackendResult<Breaker>;
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub keys: u64,
    pub used_memory_bytes: u64,
    pub evicted_keys: u64,
    pub expired_keys: u64,
}

#[async_trait]
pub trait CacheBackend: Send + Sync {
    async fn stats(&self) -> BackendResult<CacheStats>;
    async fn scan(&self, pattern: &str, limit: u32) -> BackendResult<Vec<String>>;
    /// `None`: no such key; `Some(None)`: no expiry.
    async fn ttl(&self, key: &str) -> BackendResult<Option<Option<u64>>>;
    /// `false` when the key was already gone.
    async fn delete(&self, _: &Permit, key: &str) -> BackendResult<bool>;
    /// `false` when the key does not exist.
    async fn expire(&self, _: &Permit, key: &str, ttl_ms: u64) -> BackendResult<bool>;
    /// Deletes every key starting with `prefix`; answers how many.
    async fn flush_prefix(&self, _: &Permit, prefix: &str) -> BackendResult<u64>;
}

/// A message for a notify channel, with where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyMessage {
    pub channel: String,
    pub severity: crate::record::Severity,
    pub title: String,
    pub body: String,
    pub evidence: Vec<(String, String)>,
    pub plugin: String,
    pub run_id: String,
}

#[async_trait]
pub trait NotifyBackend: Send + Sync {
    fn has_channel(&self, name: &str) -> bool;
    async fn send(&self, _: &Permit, message: &NotifyMessage) -> BackendResult<()>;
}

#[async_trait]
pub trait ProbeBackend: Send + Sync {
    /// GETs an URL that the caller has already checked against the allow-list.
    async fn get(&self, url: &reqwest::Url) -> BackendResult<ProbeResponse>;
}

/// The backends of one Remedy process; `None` is unconfigured.
#[derive(Clone)]
pub struct Backends {
    pub metrics: Option<Arc<dyn MetricsBackend>>,
    pub database: Option<Arc<dyn DatabaseBackend>>,
    pub breaker: Option<Arc<dyn BreakerBackend>>,
    pub cache: Option<Arc<dyn CacheBackend>>,
    pub notify: Option<Arc<dyn NotifyBackend>>,
    pub probe: Arc<dyn ProbeBackend>,
}

impl Backends {
    /// Nothing configured: every call but probe answers `unavailable`.
    pub fn none() -> Backends {
        Backends {
            metrics: None,
            database: None,
            breaker: None,
            cache: None,
            notify: None,
            probe: Arc::new(memory::NoProbe),
        }
    }

    /// Real backends from config. Nothing connects here: connections are
    /// made on first use, so an unreachable backend never stops start-up.
    pub fn from_config(cfg: &BackendsConfig) -> anyhow::Result<Backends> {
        let timeout = cfg
            .request_timeout_ms
            .map_or(Duration::from_millis(5_000), |t| t.get());
        let metrics = match &cfg.prometheus_url {
            Some(u) => Some(Arc::new(prometheus::Prometheus::new(u.as_str(), timeout)?)
                as Arc<dyn MetricsBackend>),
            None => None,
        };
        let breaker = match &cfg.breaker_url {
            Some(u) => Some(Arc::new(breaker_api::BreakerApi::new(u.as_str(), timeout)?)
                as Arc<dyn BreakerBackend>),
            None => None,
        };
        let database = match &cfg.database_url {
            Some(u) => {
                let mut pg = postgres::Postgres::new(u.as_str(), timeout)?
                    .with_query_text(cfg.query_text.unwrap_or_default());
                if let Some(ca) = &cfg.database_ca {
                    pg = pg.with_certs(&ca.certs)?;
                }
                Some(Arc::new(pg) as Arc<dyn DatabaseBackend>)
            }
            None => None,
        };
        let cache = match &cfg.redis_url {
            Some(u) => {
                Some(Arc::new(redis::Redis::new(u.as_str(), timeout)?) as Arc<dyn CacheBackend>)
            }
            None => None,
        };
        let notify = if cfg.notify.is_empty() {
            None
        } else {
            Some(
                Arc::new(notify_http::HttpNotify::new(&cfg.notify, timeout)?)
                    as Arc<dyn NotifyBackend>,
            )
        };
        let probe_timeout = cfg
            .probe_timeout_ms
            .map_or(Duration::from_millis(2_000), |t| t.get());
        Ok(Backends {
            metrics,
            database,
            breaker,
            cache,
            notify,
            probe: Arc::new(probe_http::HttpProbe::new(
                probe_timeout,
                probe_http::BODY_CAP,
            )?),
        })
    }
}

/// A request that never got an answer: the backend is unreachable or slow.
/// reqwest's own message hides the cause, so the whole chain is spelled out.
pub(crate) fn transport_error(what: &str, e: reqwest::Error) -> BackendError {
    // A URL can carry secrets (a Slack webhook's path, `user:pass@`, a
    // token in the query): errors name only scheme, host and port, and the
    // error chain is printed without the URL reqwest would add.
    let at = e
        .url()
        .map(|u| format!(" ({})", origin(u)))
        .unwrap_or_default();
    let e = e.without_url();
    if e.is_timeout() {
        return BackendError::Unavailable(format!("{what}{at}: timed out"));
    }
    let mut msg = format!("{what}{at}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    BackendError::Unavailable(msg)
}

/// `transport_error` for a request that changes something: a timeout other
/// than a connect timeout may have been applied, so its outcome is unknown.
pub(crate) fn write_error(what: &str, e: reqwest::Error) -> BackendError {
    let unknown = e.is_timeout() && !e.is_connect();
    match transport_error(what, e) {
        BackendError::Unavailable(m) if unknown => BackendError::Unknown(m),
        other => other,
    }
}

/// The body of `resp`, refused past `max` bytes: a backend answering
/// without end must not exhaust the host.
pub(crate) async fn read_capped(
    what: &str,
    mut resp: reqwest::Response,
    max: usize,
) -> BackendResult<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport_error(what, e))? {
        if body.len() + chunk.len() > max {
            return Err(BackendError::Failed(format!(
                "{what}: answer larger than {max} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `scheme://host:port` of a URL: what an error may show of it.
pub fn origin(u: &reqwest::Url) -> String {
    match (u.host_str(), u.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{}://{h}:{p}", u.scheme()),
        (Some(h), None) => format!("{}://{h}", u.scheme()),
        _ => u.scheme().to_string(),
    }
}
