//! The Alertmanager receiver (webhook payload version 4): store every alert,
//! deduplicate on (fingerprint, startsAt), route firing ones to plugins.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::record::{AlertInfo, Trigger};
use crate::runtime::Plugin;
use crate::service::{Service, Started};
use crate::store::StoredAlert;

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
#[derive(Debug, Deserialize)]
pub struct Webhook {
    #[serde(default)]
    pub version: Option<String>,
    pub alerts: Vec<WebhookAlert>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct WebhookAlert {
    pub status: String,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
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

/// What one run start came to.
#[derive(Debug, Serialize)]
pub struct StartedRun {
    pub plugin: String,
    pub run_id: String,
    pub status: &'static str,
}

/// The `202` answer.
#[derive(Debug, Default, Serialize)]
pub struct Receipt {
    pub received: usize,
    pub new: usize,
    pub duplicates: usize,
    pub resolved: usize,
    pub runs: Vec<StartedRun>,
}

/// Parses and validates a payload; errors name the field.
pub fn parse(body: &[u8]) -> Result<Webhook, AlertError> {
    let hook: Webhook = super::parse_json(body).map_err(AlertError::Malformed)?;
    if let Some(v) = &hook.version {
        if v != "4" {
            return Err(AlertError::Malformed(format!(
                "`version`: {v:?} is not supported (Alertmanager webhook version 4 is)"
            )));
        }
    }
    for (i, a) in hook.alerts.iter().enumerate() {
        if a.status != "firing" && a.status != "resolved" {
            return Err(AlertError::Malformed(format!(
                "`alerts[{i}].status`: {:?} is neither firing nor resolved",
                a.status
            )));
        }
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
fn fingerprint(a: &WebhookAlert) -> String {
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

/// Does the plugin take this alert (by name and label matchers)?
fn routes_to(service: &Service, p: &Plugin, name: &str, labels: &BTreeMap<String, String>) -> bool {
    let pc = service.remedy.config.plugins.get(p.name());
    let names = pc.and_then(|c| c.alerts.as_ref()).unwrap_or(&p.info.alerts);
    let matchers = pc.map(|c| &c.match_labels);
    names.iter().any(|n| n == name)
        && matchers.is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The target of an alert for single flight: the values of the plugin's
/// `target_labels` (default `alertname`, `service`, `instance`).
fn target(service: &Service, p: &Plugin, labels: &BTreeMap<String, String>) -> String {
    let default = ["alertname", "service", "instance"]
        .map(String::from)
        .to_vec();
    let keys = service
        .remedy
        .config
        .plugins
        .get(p.name())
        .and_then(|c| c.target_labels.clone())
        .unwrap_or(default);
    keys.iter()
        .filter_map(|k| labels.get(k).map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(",")
}

/// Stores every alert of the payload, then starts runs for the new firing
/// ones. A store failure is an error (the caller answers 503 and
/// Alertmanager retries; what was stored deduplicates the retry).
///
/// The alerts of one payload are stored together and their runs started
/// together: the store's writer commits them in shared transactions, so a
/// storm costs a few commits per payload, not two per alert in a row.
pub async fn receive(service: &Arc<Service>, hook: Webhook) -> Result<Receipt, AlertError> {
    let mut receipt = Receipt {
        received: hook.alerts.len(),
        ..Receipt::default()
    };
    let received_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut stores = tokio::task::JoinSet::new();
    for (i, a) in hook.alerts.iter().enumerate() {
        let stored = StoredAlert {
            fingerprint: fingerprint(a),
            starts_at: a.starts_at.clone(),
            status: a.status.clone(),
            name: a.labels.get("alertname").cloned().unwrap_or_default(),
            received_at: received_at.clone(),
            alert: serde_json::to_value(a).unwrap_or_default(),
        };
        let store = service.store.clone();
        stores.spawn(async move { (i, store.put_alert(stored).await) });
    }
    let mut new = vec![false; hook.alerts.len()];
    while let Some(done) = stores.join_next().await {
        let (i, stored) = done.map_err(|e| {
            AlertError::Store(crate::store::StoreError::Failed(format!(
                "storing an alert: {e}"
            )))
        })?;
        new[i] = stored?;
    }

    let mut starts = tokio::task::JoinSet::new();
    for (i, a) in hook.alerts.into_iter().enumerate() {
        let fp = fingerprint(&a);
        let name = a.labels.get("alertname").cloned().unwrap_or_default();
        service.metrics.alert_received(&a.status);
        if !new[i] {
            receipt.duplicates += 1;
            if a.status == "firing" {
                for p in service.registry.loaded() {
                    if !routes_to(service, &p, &name, &a.labels) {
                        continue;
                    }
                    if let Some(run_id) = service.escalate_repeat(&p, &fp, &a.starts_at).await {
                        receipt.runs.push(StartedRun {
                            plugin: p.name().to_string(),
                            run_id,
                            status: "escalated",
                        });
                    }
                }
            }
            continue;
        }
        receipt.new += 1;
        if a.status == "resolved" {
            receipt.resolved += 1;
            continue;
        }
        for (k, p) in service.registry.loaded().into_iter().enumerate() {
            if !routes_to(service, &p, &name, &a.labels) {
                continue;
            }
            let trigger = Trigger::Alert {
                alert: AlertInfo {
                    name: name.clone(),
                    firing: true,
                    labels: a.labels.clone(),
                    annotations: a.annotations.clone(),
                    starts_at: a.starts_at.clone(),
                    fingerprint: fp.clone(),
                },
            };
            let tgt = target(service, &p, &a.labels);
            let service = service.clone();
            starts.spawn(async move {
                let plugin = p.name().to_string();
                let started = service
                    .start_run(p, trigger, None, BTreeMap::new(), tgt)
                    .await;
                ((i, k), plugin, started)
            });
        }
    }
    let mut runs = Vec::new();
    while let Some(done) = starts.join_next().await {
        let (order, plugin, started) = done.map_err(|e| {
            AlertError::Store(crate::store::StoreError::Failed(format!(
                "starting a run: {e}"
            )))
        })?;
        let run = match started? {
            Started::Running { id, .. } => StartedRun {
                plugin,
                run_id: id,
                status: "running",
            },
            Started::Skipped(rec) => StartedRun {
                plugin,
                run_id: rec.id,
                status: "skipped",
            },
        };
        runs.push((order, run));
    }
    // Alerts in payload order, then plugins in registry order.
    runs.sort_by_key(|(order, _)| *order);
    receipt.runs.extend(runs.into_iter().map(|(_, r)| r));
    Ok(receipt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_payloads_name_the_field() {
        let err = |b: &str| parse(b.as_bytes()).unwrap_err().to_string();
        assert!(err("{").contains("invalid JSON body"));
        assert!(err(r#"{"alerts": 3}"#).contains("`alerts`"));
        assert!(
            err(r#"{"alerts":[{"status":"firing","labels":{"alertname":"X"}}]}"#)
                .contains("startsAt")
        );
        assert!(err(r#"{"alerts":[{"status":"on fire","labels":{"alertname":"X"},"startsAt":"2026-01-01T00:00:00Z"}]}"#)
            .contains("alerts[0].status"));
        assert!(err(
            r#"{"alerts":[{"status":"firing","labels":{},"startsAt":"2026-01-01T00:00:00Z"}]}"#
        )
        .contains("alerts[0].labels.alertname"));
        assert!(err(r#"{"version":"3","alerts":[]}"#).contains("`version`"));
        let ok = parse(br#"{"version":"4","unknown":{"a":1},"alerts":[{"status":"firing","labels":{"alertname":"X"},"startsAt":"2026-01-01T00:00:00Z","extra":true}]}"#);
        assert!(ok.is_ok());
    }
}
