//! Notify backend: channels from config, each a Slack incoming webhook, a
//! PagerDuty Events API v2 endpoint or a generic JSON webhook.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::backend::{NotifyBackend, NotifyMessage};
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
                    Some(v) => std::env::var(v)
                        .ok()
                        .filter(|s| !s.is_empty())
                        .map(Some)
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "notify channel `{name}`: {what} variable {v} is not set"
                            )
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
            let routing_key = env(&c.routing_key_env, "routing_key_env")?;
            if c.kind == ChannelKind::Pagerduty && routing_key.is_none() {
                anyhow::bail!("notify channel `{name}`: PagerDuty needs `routing_key_env`");
            }
            out.insert(
                name.clone(),
                Channel {
                    kind: c.kind,
                    url,
                    routing_key,
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
        "dedup_key": format!("remedy:{}:{}", m.plugin, m.title),
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
            ChannelKind::Webhook => webhook_payload(m),
        };
        let what = format!("notify {}", m.channel);
        let resp = self
            .client
            .post(&c.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| write_error(&what, e))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            let text = resp.text().await.unwrap_or_default();
            Err(BackendError::Failed(format!(
                "{what}: HTTP {}: {}",
                status.as_u16(),
                text.chars().take(200).collect::<String>()
            )))
        }
    }
}
