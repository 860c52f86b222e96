//! Alertmanager's webhook payload (version 4), as Remedy reads it: parsed
//! and validated with errors that name the field, and each alert's
//! fingerprint.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::record::{AlertInfo, AlertStatus};

/// Why a payload was refused; names the field.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// The parts of Alertmanager's webhook payload Remedy uses; unknown fields
/// are ignored.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct Webhook {
    #[serde(default)]
    #[schemars(extend("enum" = ["4", null]))]
    pub version: Option<String>,
    pub alerts: Vec<WebhookAlert>,
}

#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
pub struct WebhookAlert {
    pub status: AlertStatus,
    /// Must carry a non-empty `alertname`.
    #[schemars(extend("required" = ["alertname"], "properties" = {"alertname": {"type": "string", "minLength": 1}}))]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    #[schemars(extend("format" = "date-time"))]
    pub starts_at: String,
    #[serde(rename = "endsAt", default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    #[serde(
        rename = "generatorURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub generator_url: Option<String>,
    #[serde(default)]
    pub fingerprint: Option<String>,
}

impl WebhookAlert {
    /// Its `alertname` (validated present by [`parse`]).
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }

    /// The alert as runs and records see it.
    pub fn info(&self) -> AlertInfo {
        AlertInfo {
            name: self.name().to_string(),
            firing: self.status == AlertStatus::Firing,
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            starts_at: self.starts_at.clone(),
            fingerprint: fingerprint(self),
        }
    }
}

/// A payload from a file (`remedy run --alert`): a webhook payload, or one
/// alert object, validated as a POST is.
pub fn parse_file(body: &[u8]) -> Result<Vec<WebhookAlert>, AlertError> {
    let v: serde_json::Value = crate::triggers::parse_json(body).map_err(AlertError::Malformed)?;
    if v.get("alerts").is_some() {
        return parse(body).map(|h| h.alerts);
    }
    let wrapped = serde_json::json!({ "alerts": [v] });
    parse(wrapped.to_string().as_bytes()).map(|h| h.alerts)
}

/// Parses and validates a payload; errors name the field.
pub fn parse(body: &[u8]) -> Result<Webhook, AlertError> {
    let hook: Webhook = crate::triggers::parse_json(body).map_err(AlertError::Malformed)?;
    if let Some(v) = &hook.version {
        if v != "4" {
            return Err(AlertError::Malformed(format!(
                "`version`: {v:?} is not supported (Alertmanager webhook version 4 is)"
            )));
        }
    }
    for (i, a) in hook.alerts.iter().enumerate() {
        if a.labels.get("alertname").is_none_or(|n| n.is_empty()) {
            return Err(AlertError::Malformed(format!(
                "`alerts[{i}].labels.alertname`: missing"
            )));
        }
        if chrono::DateTime::parse_from_rfc3339(&a.starts_at).is_err() {
            return Err(AlertError::Malformed(format!(
                "`alerts[{i}].startsAt`: {:?} is not an RFC 3339 time",
                a.starts_at
            )));
        }
    }
    Ok(hook)
}

/// Alertmanager's fingerprint when the payload has one, else a hash of the
/// label set (stable across posts).
pub(super) fn fingerprint(a: &WebhookAlert) -> String {
    match &a.fingerprint {
        Some(f) if !f.is_empty() => f.clone(),
        _ => {
            let mut h = Sha256::new();
            for (k, v) in &a.labels {
                h.update(k.as_bytes());
                h.update([0]);
                h.update(v.as_bytes());
                h.update([0]);
            }
            hex::encode(&h.finalize()[..8])
        }
    }
}
