//! Durable history: run records, received alerts and audit events.
//!
//! SQLite in WAL mode under the data directory is the embedded default. One
//! writer thread batches writes into transactions (a run's record is
//! acknowledged only once its transaction committed, so an answer never
//! reports a record that a crash could lose); reads use their own connection.

mod sqlite;

pub use sqlite::SqliteStore;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store: cannot create {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("store: record is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("store: the writer has stopped")]
    Closed,
    #[error("store: transaction failed: {0}")]
    Failed(String),
}

/// A received Alertmanager alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StoredAlert {
    pub fingerprint: String,
    pub starts_at: String,
    /// `firing` or `resolved`.
    pub status: String,
    pub name: String,
    pub received_at: String,
    /// The alert as received.
    pub alert: serde_json::Value,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditEvent {
    #[serde(default)]
    pub seq: i64,
    pub at: String,
    pub run_id: Option<String>,
    pub plugin: Option<String>,
    /// e.g. `run.started`, `run.finished`, `action`, `alert.received`, `plugin.loaded`.
    pub event: String,
    pub detail: serde_json::Value,
}

/// Filters of `GET /v1/runs`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
pub struct RunFilter {
    pub plugin: Option<String>,
    pub status: Option<String>,
    /// RFC 3339: runs started at or after.
    pub since: Option<String>,
    #[schemars(range(max = 1000))]
    pub limit: Option<u32>,
}

/// Filters of `GET /v1/audit`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
pub struct AuditFilter {
    pub run: Option<String>,
    pub plugin: Option<String>,
    pub since: Option<String>,
    #[schemars(range(max = 10000))]
    pub limit: Option<u32>,
}
