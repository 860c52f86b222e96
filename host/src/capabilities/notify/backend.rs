//! Where `notify` sends: the trait a channel backend implements.

use async_trait::async_trait;

use crate::backends::{BackendResult, Permit};

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
