//! What `database` reads and signals: the trait a PostgreSQL backend implements.

use async_trait::async_trait;

use crate::backends::{BackendResult, Permit};

// Serde: fixtures (`remedy test`) hold stats and sessions as written here.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolStats {
    pub total: u32,
    pub active: u32,
    pub idle: u32,
    pub idle_in_transaction: u32,
    pub waiting: u32,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
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
