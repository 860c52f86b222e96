//! Alertmanager, as the host asks it (never a plugin): which alerts fire
//! right now. The gate asks before a run's first live action whether the
//! alert that started the run still fires and whether an alert that should
//! hold automation off (a maintenance window, a deploy) fires; see
//! [`guard::AlertGuard`].

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::backends::BackendResult;

pub mod api;
pub mod guard;
pub mod lease;

pub use crate::config::alerting::{Matcher, Selector};

/// An alert as Alertmanager holds it now.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub fingerprint: String,
    pub labels: BTreeMap<String, String>,
    /// `active`, `suppressed` (silenced or inhibited) or `unprocessed`.
    pub state: String,
    /// The silences that suppress it.
    pub silenced_by: Vec<String>,
}

/// A silence, as much of it as the guard needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    pub id: String,
    pub created_by: String,
    pub comment: String,
    pub starts_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A silence to create, or (with `id`) to update.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSilence {
    pub id: Option<String>,
    pub matchers: Vec<Matcher>,
    pub starts_at: chrono::DateTime<chrono::Utc>,
    pub ends_at: chrono::DateTime<chrono::Utc>,
    pub created_by: String,
    pub comment: String,
}

#[async_trait]
pub trait AlertSource: Send + Sync {
    /// Alerts that have not resolved and match every matcher (silenced and
    /// inhibited ones included).
    async fn alerts(&self, matchers: &[Matcher]) -> BackendResult<Vec<Alert>>;
    async fn silence(&self, id: &str) -> BackendResult<Silence>;
    /// Creates or updates a silence; answers its id (an update may get a
    /// new one).
    async fn put_silence(&self, s: &NewSilence) -> BackendResult<String>;
    async fn expire_silence(&self, id: &str) -> BackendResult<()>;
}
