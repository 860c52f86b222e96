//! Notify backend: channels from config, each a Slack incoming webhook, a
//! PagerDuty Events API v2 endpoint (whose incidents the host acknowledges
//! and resolves), a Grafana instance (annotations) or a generic JSON webhook.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::backend::{Annotation, FollowUp, NotifyBackend, NotifyMessage};
use crate::backends::{write_error, BackendError, BackendResult, Permit};
use crate::config::{ChannelConfig, ChannelKind};
use crate::record::Severity;

/// The public PagerDuty Events API v2 endpoint.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

pub struct HttpNotify {
    client: reqwest::Client,
    channels: BTreeMap<String, Channel>,
}

struct Channel {
    kind: ChannelKind,
    url: String,
    routing_key: Option<String>,
    /// Grafana: the service-account token.
    token: Option<String>,
    dashboard_uid: Option<String>,
    acknowledge: bool,
    resolve: bool,
}

impl HttpNotify {
    /// Reads secrets (webhook URLs, routing keys) from the environment
    /// variables the config names.
    pub fn new(
        channels: &BTreeMap<String, ChannelConfig>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let mut out = BTreeMap::new();
        for (name, c) in channels {
            let env = |var: &Option<String>, what: &str| -> anyhow::Result<Option<String>> {
                match var {
                    None => Ok(None),
                    Some(v) => crate::backends::env_value(v).map(Some).ok_or_else(|| {
                        anyhow::anyhow!("notify channel `{name}`: {what} variable {v} is not set")
                    }),
                }
            };
            let url = match (&c.url, env(&c.url_env, "url_env")?) {
                (_, Some(u)) => u,
                (Some(u), None) => u.clone(),
                (None, None) if c.kind == ChannelKind::Pagerduty => {
                    PAGERDUTY_EVENTS_URL.to_string()
                }
                (None, None) => anyhow::bail!("notify channel `{name}`: give `url` or `url_env`"),
            };
            let pd_only = c.acknowledge_on_approval.is_some() || c.resolve_on_verified.is_some();
            if pd_only && c.kind != ChannelKind::Pagerduty {
                anyhow::bail!("notify channel `{name}`: `acknowledge_on_approval` and `resolve_on_verified` apply to PagerDuty channels only");
            }
            let grafana_only = c.token_env.is_some() || c.dashboard_uid.is_some();
            if grafana_only && c.kind != ChannelKind::Grafana {
                anyhow::bail!("notify channel `{name}`: `token_env` and `dashboard_uid` apply to Grafana channels only");
            }
            let routing_key = env(&c.routing_key_env, "routing_key_env")?;
            if c.kind == ChannelKind::Pagerduty && routing_key.is_none() {
                anyhow::bail!("notify channel `{name}`: PagerDuty needs `routing_key_env`");
            }
            let token = env(&c.token_env, "token_env")?;
            if c.kind == ChannelKind::Grafana && token.is_none() {
                anyhow::bail!(
                    "notify channel `{name}`: Grafana needs `token_env` (a service-account token)"
                );
            }
            out.insert(
                name.clone(),
                Channel {
                    kind: c.kind,
                    url,
                    routing_key,
                    token,
                    dashboard_uid: c.dashboard_uid.clone(),
                    acknowledge: c.acknowledge_on_approval.unwrap_or(true),
                    resolve: c.resolve_on_verified.unwrap_or(true),
                },
            );
        }
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            channels: out,
        })
    }
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// Slack incoming webhook: `text` (the fallback) plus Block Kit blocks.
pub fn slack_payload(m: &NotifyMessage) -> Value {
    let icon = match m.severity {
        Severity::Critical => ":rotating_light:",
        Severity::Warning => ":warning:",
        Severity::Info => ":information_source:",
    };
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": format!("{icon} {}", m.title), "emoji": true}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": m.body}}),
    ];
    if !m.evidence.is_empty() {
        let fields: Vec<Value> = m
            .evidence
            .iter()
            .take(10) // Slack allows at most 10 fields per section.
            .map(|(k, v)| json!({"type": "mrkdwn", "text": format!("*{k}*\n{v}")}))
            .collect();
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("Remedy · run {} · {}", m.run_id, m.plugin)}]}));
    json!({"text": format!("[{}] {}", severity_word(m.severity), m.title), "blocks": blocks})
}

/// PagerDuty's `dedup_key` for `m`: one incident per plugin and alert
/// (per title when the run has no alert), so that a repeated escalation
/// updates the open incident instead of opening another, and the host can
/// acknowledge and resolve it. PagerDuty takes at most 255 characters.
pub fn pagerduty_dedup_key(m: &NotifyMessage) -> String {
    let about = m.subject.as_deref().unwrap_or(&m.title);
    let mut key = format!("remedy:{}:{about}", m.plugin);
    if key.len() > 255 {
        let mut end = 255;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        key.truncate(end);
    }
    key
}

/// PagerDuty Events API v2 `trigger` event.
pub fn pagerduty_payload(m: &NotifyMessage, routing_key: &str) -> Value {
    let details: serde_json::Map<String, Value> = m
        .evidence
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": pagerduty_dedup_key(m),
        "payload": {
            "summary": m.title.chars().take(1024).collect::<String>(),
            "source": format!("remedy/{}", m.plugin),
            "severity": severity_word(m.severity),
            "component": m.plugin,
            "custom_details": {"body": m.body, "run_id": m.run_id, "evidence": details},
        },
        "client": "Remedy",
    })
}

/// PagerDuty Events API v2 `acknowledge` / `resolve` of an incident.
pub fn pagerduty_follow_up(routing_key: &str, dedup_key: &str, f: FollowUp) -> Value {
    let action = match f {
        FollowUp::Acknowledge => "acknowledge",
        FollowUp::Resolve => "resolve",
    };
    json!({"routing_key": routing_key, "event_action": action, "dedup_key": dedup_key})
}

/// Grafana `POST /api/annotations`: an instant (`time` in epoch ms), on
/// one dashboard when the channel names it, else organisation-wide.
pub fn grafana_annotation(a: &Annotation, dashboard_uid: Option<&str>) -> Value {
    let mut body = json!({
        "time": a.at.timestamp_millis(),
        "tags": a.tags,
        "text": a.text,
    });
    if let Some(uid) = dashboard_uid {
        body["dashboardUID"] = Value::String(uid.to_string());
    }
    body
}

/// A plugin's message to a Grafana channel: an annotation now.
fn message_annotation(m: &NotifyMessage) -> Annotation {
    Annotation {
        at: chrono::Utc::now(),
        text: format!("{}\n{}", m.title, m.body),
        tags: vec![
            "remedy".into(),
            m.plugin.clone(),
            severity_word(m.severity).into(),
        ],
    }
}

/// Generic webhook: the message as JSON.
pub fn webhook_payload(m: &NotifyMessage) -> Value {
    json!({
        "channel": m.channel,
        "severity": severity_word(m.severity),
        "title": m.title,
        "body": m.body,
        "evidence": m.evidence.iter().cloned().collect::<BTreeMap<String, String>>(),
        "plugin": m.plugin,
        "run_id": m.run_id,
    })
}

#[async_trait]
impl NotifyBackend for HttpNotify {
    fn has_channel(&self, name: &str) -> bool {
        self.channels.contains_key(name)
    }

    async fn send(&self, _: &Permit, m: &NotifyMessage) -> BackendResult<()> {
        let c = self.channels.get(&m.channel).ok_or_else(|| {
            BackendError::Invalid(format!("no notify channel `{}` configured", m.channel))
        })?;
        let body = match c.kind {
            ChannelKind::Slack => slack_payload(m),
            ChannelKind::Pagerduty => {
                pagerduty_payload(m, c.routing_key.as_deref().unwrap_or_default())
            }
            ChannelKind::Grafana => {
                grafana_annotation(&message_annotation(m), c.dashboard_uid.as_deref())
            }
            ChannelKind::Webhook => webhook_payload(m),
        };
        self.post(&m.channel, c, body).await
    }

    fn incident_key(&self, m: &NotifyMessage) -> Option<String> {
        let c = self.channels.get(&m.channel)?;
        (c.kind == ChannelKind::Pagerduty).then(|| pagerduty_dedup_key(m))
    }

    fn follows(&self, channel: &str, f: FollowUp) -> bool {
        self.channels.get(channel).is_some_and(|c| {
            c.kind == ChannelKind::Pagerduty
                && match f {
                    FollowUp::Acknowledge => c.acknowledge,
                    FollowUp::Resolve => c.resolve,
                }
        })
    }

    fn follows_any(&self, f: FollowUp) -> bool {
        self.channels.keys().any(|name| self.follows(name, f))
    }

    async fn follow_up(
        &self,
        _: &Permit,
        channel: &str,
        incident: &str,
        f: FollowUp,
    ) -> BackendResult<()> {
        let c = self
            .channels
            .get(channel)
            .filter(|c| c.kind == ChannelKind::Pagerduty)
            .ok_or_else(|| {
                BackendError::Invalid(format!("no PagerDuty channel `{channel}` configured"))
            })?;
        let body = pagerduty_follow_up(c.routing_key.as_deref().unwrap_or_default(), incident, f);
        self.post_retrying(channel, c, body).await
    }

    fn annotation_channels(&self) -> Vec<String> {
        self.channels
            .iter()
            .filter(|(_, c)| c.kind == ChannelKind::Grafana)
            .map(|(name, _)| name.clone())
            .collect()
    }

    async fn annotate(&self, _: &Permit, channel: &str, a: &Annotation) -> BackendResult<()> {
        let c = self
            .channels
            .get(channel)
            .filter(|c| c.kind == ChannelKind::Grafana)
            .ok_or_else(|| {
                BackendError::Invalid(format!("no Grafana channel `{channel}` configured"))
            })?;
        let body = grafana_annotation(a, c.dashboard_uid.as_deref());
        self.post_retrying(channel, c, body).await
    }
}

impl HttpNotify {
    /// Posts `body` to the channel's endpoint (Grafana's annotations API
    /// under its base URL, with its token), once: a plugin's message is sent
    /// within its run's deadline, and the plugin decides what a failure means.
    async fn post(&self, name: &str, c: &Channel, body: Value) -> BackendResult<()> {
        self.post_once(name, c, &body).await.map_err(|f| f.error)
    }

    /// [`Self::post`] for the host's own follow-ups, which nothing waits
    /// on: tried again (at most [`FOLLOW_UP_TRIES`] times in all) while the
    /// vendor rate-limits (honouring `Retry-After` up to
    /// [`MAX_RETRY_AFTER`]), fails on its side or cannot be reached. A
    /// timeout is not tried again: the first request may have been taken.
    async fn post_retrying(&self, name: &str, c: &Channel, body: Value) -> BackendResult<()> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.post_once(name, c, &body).await {
                Ok(()) => return Ok(()),
                Err(f) if f.retry && tries < FOLLOW_UP_TRIES => {
                    let wait = f.after.unwrap_or(RETRY_PAUSE).min(MAX_RETRY_AFTER);
                    tracing::warn!(channel = name, error = %f.error, ?wait, "notify follow-up tried again");
                    tokio::time::sleep(wait).await;
                }
                Err(f) => return Err(f.error),
            }
        }
    }

    async fn post_once(&self, name: &str, c: &Channel, body: &Value) -> Result<(), Failure> {
        let what = format!("notify {name}");
        let req = match (c.kind, &c.token) {
            (ChannelKind::Grafana, Some(token)) => self
                .client
                .post(format!("{}/api/annotations", c.url.trim_end_matches('/')))
                .bearer_auth(token),
            _ => self.client.post(&c.url),
        };
        let resp = match req.json(body).send().await {
            Ok(r) => r,
            Err(e) => {
                let error = write_error(&what, e);
                return Err(Failure {
                    retry: matches!(error, BackendError::Unavailable(_)),
                    after: None,
                    error,
                });
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.unwrap_or_default();
        Err(Failure {
            retry: status.as_u16() == 429 || status.is_server_error(),
            after,
            error: BackendError::Failed(format!(
                "{what}: HTTP {}: {}",
                status.as_u16(),
                text.chars().take(200).collect::<String>()
            )),
        })
    }
}

/// Attempts at one host follow-up (acknowledge, resolve, annotate).
pub const FOLLOW_UP_TRIES: u32 = 3;
/// The pause between attempts when the vendor names none.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// The longest `Retry-After` honoured: a follow-up later than this is
/// worth less than a failure on record.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// One failed post: whether trying again can help, and when.
struct Failure {
    retry: bool,
    after: Option<Duration>,
    error: BackendError,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(title: &str, subject: Option<&str>) -> NotifyMessage {
        NotifyMessage {
            channel: "pd".into(),
            severity: Severity::Critical,
            title: title.into(),
            body: "b".into(),
            evidence: vec![],
            plugin: "circuit-breaker-open".into(),
            run_id: "r1".into(),
            subject: subject.map(String::from),
        }
    }

    #[test]
    fn one_incident_per_alert_and_the_key_fits_pagerduty() {
        let a = pagerduty_dedup_key(&message("[P0] Upstream down", Some("fp1")));
        let b = pagerduty_dedup_key(&message("[P0] Not resolved after mitigation", Some("fp1")));
        assert_eq!(a, "remedy:circuit-breaker-open:fp1");
        assert_eq!(a, b, "every page about one alert is one incident");
        let untitled = pagerduty_dedup_key(&message("[P2] Nightly check", None));
        assert_eq!(untitled, "remedy:circuit-breaker-open:[P2] Nightly check");
        let long = pagerduty_dedup_key(&message(&"é".repeat(300), None));
        assert!(
            long.len() <= 255 && long.starts_with("remedy:"),
            "{}",
            long.len()
        );
        let trigger = pagerduty_payload(&message("t", Some("fp1")), "k");
        assert_eq!(trigger["dedup_key"], a);
    }

    #[test]
    fn follow_ups_and_annotations_have_the_documented_shape() {
        let ack = pagerduty_follow_up("k", "remedy:p:fp", FollowUp::Acknowledge);
        assert_eq!(
            ack,
            json!({"routing_key": "k", "event_action": "acknowledge", "dedup_key": "remedy:p:fp"})
        );
        let resolve = pagerduty_follow_up("k", "x", FollowUp::Resolve);
        assert_eq!(resolve["event_action"], "resolve");
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-07T03:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let a = Annotation {
            at,
            text: "half-opened".into(),
            tags: vec!["remedy".into()],
        };
        let body = grafana_annotation(&a, Some("servio"));
        assert_eq!(body["time"], 1_796_612_400_000_i64, "epoch milliseconds");
        assert_eq!(body["dashboardUID"], "servio");
        assert!(grafana_annotation(&a, None).get("dashboardUID").is_none());
    }

    fn channel(toml_text: &str) -> anyhow::Result<HttpNotify> {
        let c: ChannelConfig = toml::from_str(toml_text).unwrap();
        let channels = BTreeMap::from([("ch".to_string(), c)]);
        HttpNotify::new(&channels, Duration::from_secs(1))
    }

    #[test]
    fn misplaced_or_missing_keys_name_the_channel() {
        let e = channel("kind = \"grafana\"\nurl = \"http://g\"")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("`ch`") && e.contains("token_env"), "{e}");
        let e = channel("kind = \"slack\"\nurl = \"http://s\"\nresolve_on_verified = false")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("PagerDuty channels only"), "{e}");
        let e = channel("kind = \"webhook\"\nurl = \"http://w\"\ndashboard_uid = \"d\"")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("Grafana channels only"), "{e}");
        let e = channel(
            "kind = \"grafana\"\nurl = \"http://g\"\ntoken_env = \"REMEDY_TEST_UNSET_TOKEN_VAR\"",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("REMEDY_TEST_UNSET_TOKEN_VAR is not set"), "{e}");
    }
}
