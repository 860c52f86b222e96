//! `notify`: escalation messages, through the gate (scoped by channel name,
//! recorded and not sent in dry-run).

use crate::backends::NotifyMessage;
use crate::bindings::remedy::plugin::notify::{Host, Message};
use crate::bindings::types::{Applied, Error, Severity};
use crate::config::Capability;
use crate::gate::{Action, Target};
use crate::record;

use super::HostCtx;

/// Largest body a plugin may send.
const MAX_BODY: usize = 16 * 1024;

impl Host for HostCtx {
    async fn send(&mut self, m: Message) -> Result<Applied, Error> {
        self.granted(Capability::Notify)?;
        let backend = self.backends.notify.clone().ok_or_else(|| {
            Error::Unavailable(
                "no notify channels configured: add [backends.notify.<name>] to remedy.toml".into(),
            )
        })?;
        if !backend.has_channel(&m.channel) {
            return Err(Error::Invalid(format!(
                "no notify channel `{}` configured",
                m.channel
            )));
        }
        if m.body.len() > MAX_BODY {
            return Err(Error::Invalid(format!(
                "message body of {} bytes exceeds {MAX_BODY}",
                m.body.len()
            )));
        }
        let message = NotifyMessage {
            channel: m.channel.clone(),
            severity: match m.severity {
                Severity::Info => record::Severity::Info,
                Severity::Warning => record::Severity::Warning,
                Severity::Critical => record::Severity::Critical,
            },
            title: m.title.clone(),
            body: m.body,
            evidence: m.evidence,
            plugin: self.gate.plugin.clone(),
            run_id: self.run_id.clone(),
        };
        let action = Action {
            kind: "notify.send",
            capability: Capability::Notify,
            target: Target::Channel(m.channel),
            reason: m.title,
        };
        self.gate
            .act(action, || async move { backend.send(&message).await })
            .await
    }
}
