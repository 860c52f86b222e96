//! Where `notify` sends: the trait a channel backend implements.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::backends::{BackendError, BackendResult, Permit};

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
    /// What the run is about (its alert's fingerprint), when known.
    pub subject: Option<String>,
}

/// What the host does, on its own, to an incident a channel opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowUp {
    /// A human took the plan on (approved it).
    Acknowledge,
    /// Verification found the problem gone.
    Resolve,
}

/// A mark on the dashboards' timeline: what Remedy did, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Annotation {
    pub at: DateTime<Utc>,
    pub text: String,
    pub tags: Vec<String>,
}

#[async_trait]
pub trait NotifyBackend: Send + Sync {
    fn has_channel(&self, name: &str) -> bool;
    async fn send(&self, _: &Permit, message: &NotifyMessage) -> BackendResult<()>;

    /// The key of the incident `message` opens, when its channel opens
    /// incidents (PagerDuty's `dedup_key`): the run keeps it so the host
    /// can acknowledge and resolve that incident later.
    fn incident_key(&self, _message: &NotifyMessage) -> Option<String> {
        None
    }

    /// Whether `channel`'s incidents are followed up with `f`.
    fn follows(&self, _channel: &str, _f: FollowUp) -> bool {
        false
    }

    /// Whether any channel's incidents are followed up with `f` (when none
    /// is, the host need not look for incidents at all).
    fn follows_any(&self, _f: FollowUp) -> bool {
        false
    }

    async fn follow_up(
        &self,
        _: &Permit,
        channel: &str,
        _incident: &str,
        _f: FollowUp,
    ) -> BackendResult<()> {
        Err(BackendError::Invalid(format!(
            "notify channel `{channel}` opens no incidents"
        )))
    }

    /// The channels that mark what Remedy does on dashboards (Grafana).
    fn annotation_channels(&self) -> Vec<String> {
        Vec::new()
    }

    async fn annotate(&self, _: &Permit, channel: &str, _a: &Annotation) -> BackendResult<()> {
        Err(BackendError::Invalid(format!(
            "notify channel `{channel}` takes no annotations"
        )))
    }
}
