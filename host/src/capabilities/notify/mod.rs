//! `notify`: messages to humans, through the gate (scoped by channel name,
//! recorded and not sent in dry-run), routed by the escalation policy, and
//! the policy's communication templates. [`escalate`] is the one
//! escalation path: plugins reach it through `notify.escalate`, the host
//! (verification, repeated alerts) calls it directly.

use std::sync::Arc;
use std::time::Duration;

use crate::action::ActionKind;
use crate::bindings::remedy::plugin::notify::{Host, Message, Priority as WitPriority, Rendered};
use crate::bindings::types::{Applied, Error, Severity};
use crate::config::BackendsConfig;
use crate::escalation::{Policy, Priority};
use crate::gate::{glob_scope, Action, ActionTarget, Gate};
use crate::grants::Scope;
use crate::record;

use super::HostCtx;

pub mod backend;
pub mod fixture;
pub mod http;

use backend::{NotifyBackend, NotifyMessage};

/// The channels `[backends.notify.*]` configures, if any.
pub fn from_config(
    cfg: &BackendsConfig,
    timeout: Duration,
) -> anyhow::Result<Option<Arc<dyn NotifyBackend>>> {
    if cfg.notify.is_empty() {
        return Ok(None);
    }
    Ok(Some(Arc::new(http::HttpNotify::new(&cfg.notify, timeout)?)))
}

/// A notify channel, by name.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelTarget(pub String);

impl ActionTarget for ChannelTarget {
    fn label(&self) -> String {
        format!("channel:{}", self.0)
    }

    fn describe(&self) -> String {
        format!("notify channel `{}`", self.0)
    }

    fn check_scope(&self, scope: &Scope, plugin: &str) -> Result<(), String> {
        glob_scope(self, &scope.notify_channels, &self.0, plugin)
    }
}

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

fn severity(s: Severity) -> record::Severity {
    match s {
        Severity::Info => record::Severity::Info,
        Severity::Warning => record::Severity::Warning,
        Severity::Critical => record::Severity::Critical,
    }
}

/// A message to one channel.
pub struct Outgoing {
    pub channel: String,
    pub severity: record::Severity,
    pub title: String,
    pub body: String,
    pub evidence: Vec<(String, String)>,
}

/// One message to one channel, through the gate as `kind`. Refusals before
/// the gate (no such channel, body too large) are journaled too.
pub async fn deliver(
    gate: &Gate,
    notify: Option<&Arc<dyn NotifyBackend>>,
    kind: ActionKind,
    m: Outgoing,
) -> Result<Applied, Error> {
    let action = Action::new(kind, ChannelTarget(m.channel.clone()), m.title.clone());
    if let Err(denied) = gate.grants.check(kind.capability(), &gate.plugin) {
        return Err(gate.refuse(&action, Error::Denied(denied)));
    }
    let backend = notify.cloned().ok_or_else(|| {
        Error::Unavailable(
            "no notify channels configured: add [backends.notify.<name>] to remedy.toml".into(),
        )
    });
    if let Ok(b) = &backend {
        if !b.has_channel(&m.channel) {
            let e = Error::Invalid(format!("no notify channel `{}` configured", m.channel));
            return Err(gate.refuse(&action, e));
        }
    }
    if m.body.len() > MAX_BODY {
        let e = Error::Invalid(format!(
            "message body of {} bytes exceeds {MAX_BODY}",
            m.body.len()
        ));
        return Err(gate.refuse(&action, e));
    }
    let message = NotifyMessage {
        channel: m.channel,
        severity: m.severity,
        title: m.title,
        body: m.body,
        evidence: m.evidence,
        plugin: gate.plugin.clone(),
        run_id: gate.run_id.clone(),
        subject: gate.subject.clone(),
    };
    // A channel that opens incidents: the run keeps the incident's key.
    let incident = backend.as_ref().ok().and_then(|b| b.incident_key(&message));
    let action = match incident {
        Some(key) => action.with_incident(key),
        None => action,
    };
    gate.act(action, backend, |backend, permit| async move {
        backend.send(&permit, &message).await
    })
    .await
}

/// Sends `m` (its channel is ignored) to every configured channel the
/// policy routes `p` to, each through the gate as `notify.escalate`: the
/// title gains the priority, the evidence the route. Every channel is tried
/// even after one fails (a page that reached PagerDuty must not be lost
/// because Slack was down); the answer is the first error, if any.
pub async fn escalate(
    gate: &Gate,
    notify: Option<&Arc<dyn NotifyBackend>>,
    policy: &Policy,
    p: Priority,
    m: Outgoing,
) -> Result<Applied, Error> {
    let route = policy.route(p);
    let configured: Vec<&String> = route
        .channels
        .iter()
        .filter(|c| notify.is_some_and(|n| n.has_channel(c)))
        .collect();
    if configured.is_empty() {
        let e = Error::Unavailable(format!(
            "{} routes to {}, and none of them is configured under [backends.notify]",
            route.priority.as_str(),
            route.channels.join(", ")
        ));
        gate.note(crate::gate::error_text(&e));
        return Err(e);
    }
    for missing in route.channels.iter().filter(|c| !configured.contains(c)) {
        gate.note(format!(
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
    for channel in configured {
        let one = Outgoing {
            channel: channel.clone(),
            severity: m.severity,
            title: title.clone(),
            body: m.body.clone(),
            evidence: evidence.clone(),
        };
        match deliver(gate, notify, ActionKind::NotifyEscalate, one).await {
            Ok(a) => {
                first.get_or_insert(Ok(a));
            }
            Err(e) => {
                if !matches!(first, Some(Err(_))) {
                    first = Some(Err(e));
                }
            }
        }
    }
    first.unwrap_or_else(|| Err(Error::Unavailable("no channel was tried".into())))
}

fn outgoing(m: Message) -> Outgoing {
    Outgoing {
        channel: m.channel,
        severity: severity(m.severity),
        title: m.title,
        body: m.body,
        evidence: m.evidence,
    }
}

impl Host for HostCtx {
    async fn send(&mut self, m: Message) -> Result<Applied, Error> {
        let notify = self.backends.notify.clone();
        deliver(
            &self.gate,
            notify.as_ref(),
            ActionKind::NotifySend,
            outgoing(m),
        )
        .await
    }

    async fn escalate(&mut self, p: WitPriority, m: Message) -> Result<Applied, Error> {
        self.granted(crate::grants::Capability::Notify)?;
        let notify = self.backends.notify.clone();
        escalate(
            &self.gate,
            notify.as_ref(),
            &self.escalation,
            priority(p),
            outgoing(m),
        )
        .await
    }

    async fn render(
        &mut self,
        template: String,
        values: Vec<(String, String)>,
    ) -> Result<Rendered, Error> {
        let t = self
            .escalation
            .render(&template, &values)
            .map_err(Error::Invalid)?;
        Ok(Rendered {
            title: t.title,
            body: t.body,
        })
    }
}
