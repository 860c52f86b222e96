//! `notify`: escalation messages, through the gate (scoped by channel name,
//! recorded and not sent in dry-run), routed by the escalation policy, and
//! the policy's communication templates.

use crate::backends::NotifyMessage;
use crate::bindings::remedy::plugin::notify::{Host, Message, Priority as WitPriority, Rendered};
use crate::bindings::types::{Applied, Error, Severity};
use crate::config::Capability;
use crate::escalation::Priority;
use crate::gate::{Action, Target};
use crate::record;

use super::HostCtx;

/// Largest body a plugin may send.
const MAX_BODY: usize = 16 * 1024;

fn priority(p: WitPriority) -> Priority {
    match p {
        WitPriority::P0 => Priority::P0,
        WitPriority::P1 => Priority::P1,
        WitPriority::P2 => Priority::P2,
        WitPriority::P3 => Priority::P3,
    }
}

impl HostCtx {
    /// One message to one channel, through the gate as `kind`.
    async fn deliver(&mut self, kind: &'static str, m: Message) -> Result<Applied, Error> {
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
            kind,
            capability: Capability::Notify,
            target: Target::Channel(m.channel),
            reason: m.title,
        };
        self.gate
            .act(action, || async move { backend.send(&message).await })
            .await
    }
}

impl Host for HostCtx {
    async fn send(&mut self, m: Message) -> Result<Applied, Error> {
        self.deliver("notify.send", m).await
    }

    async fn escalate(&mut self, p: WitPriority, m: Message) -> Result<Applied, Error> {
        self.granted(Capability::Notify)?;
        let route = self.backends.escalation.route(priority(p)).clone();
        let configured: Vec<String> = match &self.backends.notify {
            Some(b) => route
                .channels
                .iter()
                .filter(|c| b.has_channel(c))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        if configured.is_empty() {
            return Err(Error::Unavailable(format!(
                "{} routes to {}, and none of them is configured under [backends.notify]",
                route.priority.as_str(),
                route.channels.join(", ")
            )));
        }
        for missing in route.channels.iter().filter(|c| !configured.contains(c)) {
            self.gate.note(format!(
                "{} escalation skips channel `{missing}`: not configured",
                route.priority.as_str()
            ));
        }
        let mut evidence = m.evidence;
        evidence.extend([
            ("priority".to_string(), route.priority.as_str().to_string()),
            ("respond-within".to_string(), route.respond_within.clone()),
            ("escalate-to".to_string(), route.escalate_to.clone()),
        ]);
        let title = format!("[{}] {}", route.priority.as_str(), m.title);
        let mut first: Option<Result<Applied, Error>> = None;
        let mut first_err = None;
        // Every channel is tried even after one fails: a page that reached
        // PagerDuty must not be lost because Slack was down.
        for channel in configured {
            let one = Message {
                channel,
                severity: m.severity,
                title: title.clone(),
                body: m.body.clone(),
                evidence: evidence.clone(),
            };
            match self.deliver("notify.escalate", one).await {
                Ok(a) => {
                    first.get_or_insert(Ok(a));
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match (first_err, first) {
            (Some(e), _) => Err(e),
            (None, Some(ok)) => ok,
            (None, None) => Err(Error::Unavailable("no channel was tried".into())),
        }
    }

    async fn render(
        &mut self,
        template: String,
        values: Vec<(String, String)>,
    ) -> Result<Rendered, Error> {
        let t = self
            .backends
            .escalation
            .render(&template, &values)
            .map_err(Error::Invalid)?;
        Ok(Rendered {
            title: t.title,
            body: t.body,
        })
    }
}
