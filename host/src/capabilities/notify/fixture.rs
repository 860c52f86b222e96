//! `[answers.notify]`: the channels of a fixture's world and those that
//! fail; what is sent is the world's output. A recorder keeps the channels
//! only: messages may carry webhook URLs.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::backend::{NotifyBackend, NotifyMessage};
use crate::backends::{BackendError, BackendResult, Permit};
use crate::capabilities::world::{lock, unconfigured, Recorder, World};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
/// Without this table every channel exists and every send succeeds.
pub struct Answers {
    /// The configured channels.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Configured channels whose sends fail.
    #[serde(default)]
    pub failing: Vec<String>,
}

#[async_trait]
impl NotifyBackend for World {
    fn has_channel(&self, name: &str) -> bool {
        match &self.answers().notify {
            Some(n) => n.channels.iter().chain(&n.failing).any(|c| c == name),
            None => true,
        }
    }

    async fn send(&self, _: &Permit, message: &NotifyMessage) -> BackendResult<()> {
        let failing = self
            .answers()
            .notify
            .as_ref()
            .is_some_and(|n| n.failing.contains(&message.channel));
        if failing {
            return Err(BackendError::Failed(format!(
                "channel `{}` failed (the fixture says so)",
                message.channel
            )));
        }
        lock(&self.sent).push(message.clone());
        Ok(())
    }
}
#[async_trait]
impl NotifyBackend for Recorder {
    fn has_channel(&self, name: &str) -> bool {
        let Some(real) = &self.real.notify else {
            return false;
        };
        let has = real.has_channel(name);
        if has {
            let mut a = self.answers();
            let channels = &mut a.notify.get_or_insert_with(Default::default).channels;
            if !channels.iter().any(|c| c == name) {
                channels.push(name.to_string());
            }
        }
        has
    }

    async fn send(&self, permit: &Permit, message: &NotifyMessage) -> BackendResult<()> {
        match &self.real.notify {
            Some(real) => real.send(permit, message).await,
            None => unconfigured("notify"),
        }
    }
}

impl crate::capabilities::PublicValues for Answers {}
