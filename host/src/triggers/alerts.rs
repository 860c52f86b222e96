//! The Alertmanager receiver (webhook payload version 4): store every alert,
//! deduplicate on (fingerprint, startsAt), route firing ones to plugins.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

mod payload;
use payload::fingerprint;
pub use payload::{parse, parse_file, AlertError, Webhook, WebhookAlert};

use crate::record::{AlertStatus, Trigger};
use crate::runtime::Plugin;
use crate::service::verify::Repeat;
use crate::service::{Launch, Service, Started};
use crate::store::{AlertKey, StoredAlert};

/// What one run start came to.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct StartedRun {
    pub plugin: String,
    pub run_id: String,
    pub status: &'static str,
}

/// The `202` answer.
#[derive(Debug, Default, Serialize, schemars::JsonSchema)]
pub struct Receipt {
    pub received: usize,
    pub new: usize,
    pub duplicates: usize,
    pub resolved: usize,
    pub runs: Vec<StartedRun>,
}

/// The plugins that take this alert (by name and label matchers).
fn routed<'a>(
    loaded: &'a [Arc<Plugin>],
    a: &'a WebhookAlert,
) -> impl Iterator<Item = &'a Arc<Plugin>> {
    loaded.iter().filter(|p| {
        p.settings
            .routing
            .takes(&p.info.alerts, a.name(), &a.labels)
    })
}

/// The target of an alert for single flight: the values of the plugin's
/// `target_labels` (default `alertname`, `service`, `instance`), as JSON so
/// that values containing `,` or `=` cannot make two targets one.
fn target(p: &Plugin, labels: &BTreeMap<String, String>) -> String {
    let picked: BTreeMap<&String, &String> = p
        .settings
        .routing
        .target_labels
        .iter()
        .filter_map(|k| labels.get_key_value(k))
        .collect();
    serde_json::to_string(&picked).unwrap_or_default()
}

/// Stores every alert of the payload together with the runs each new
/// firing one starts (`queued`), in one transaction, and only then answers;
/// the runs go on in their own tasks, so nothing depends on the sender
/// waiting, and a restart resumes whatever was still queued. A store
/// failure is an error (the caller answers 503, Alertmanager retries, and
/// since nothing of the payload was stored the retry is not a duplicate).
#[tracing::instrument(name = "alert.receipt", skip_all, fields(alerts = hook.alerts.len()))]
pub async fn receive(service: &Arc<Service>, hook: Webhook) -> Result<Receipt, AlertError> {
    let mut receipt = Receipt {
        received: hook.alerts.len(),
        ..Receipt::default()
    };
    let received_at = crate::record::timestamp(chrono::Utc::now());
    let loaded = service.registry.loaded();
    // Each firing alert's runs are stored `queued` with it, and claimed
    // (single flight) only once the commit has said the alert is new. A
    // claim taken before could be held by a payload whose alerts turn out
    // to be repeats: the HA twin of this one, which took the claims first
    // and committed second, would leave the alert only a `skipped` run.
    let mut alerts = Vec::with_capacity(hook.alerts.len());
    let mut records = Vec::with_capacity(hook.alerts.len());
    let mut planned = Vec::with_capacity(hook.alerts.len());
    for a in &hook.alerts {
        let fp = fingerprint(a);
        // Sized to the plugins routed to, usually one: grown from empty,
        // each would hold room for four records, kilobytes per alert that
        // a storm's receipts faulted in fresh.
        let takers: Vec<&Arc<Plugin>> = match a.status {
            AlertStatus::Firing => routed(&loaded, a).collect(),
            AlertStatus::Resolved => Vec::new(),
        };
        let mut recs = Vec::with_capacity(takers.len());
        let mut mine = Vec::with_capacity(takers.len());
        for p in takers {
            let launch = alert_launch(p, a);
            recs.push(crate::service::queued_record(p, &launch));
            mine.push((p.clone(), launch));
        }
        alerts.push(StoredAlert {
            fingerprint: fp,
            starts_at: a.starts_at.clone(),
            status: a.status.as_str().to_string(),
            name: a.name().to_string(),
            received_at: received_at.clone(),
            alert: serde_json::to_value(a).unwrap_or_default(),
        });
        records.push(recs);
        planned.push(mine);
    }
    let items = alerts.into_iter().zip(records.iter().map(Vec::as_slice));
    // On a shared store the runs' single flights are claimed in the same
    // transaction, where no other run holds them.
    let (new, claimed) = service.store.receive_and_claim(items.collect()).await?;
    let mut repeats = repeated_runs(service, &loaded, &hook.alerts, &new).await;

    let mut skipped = Vec::new();
    let planned = planned.into_iter().zip(records).map(|(mine, recs)| {
        mine.into_iter()
            .zip(recs)
            .map(|((p, launch), rec)| (p, launch, rec))
    });
    for ((a, is_new), mine) in hook.alerts.iter().zip(new).zip(planned) {
        service.metrics.alert_received(a.status.as_str());
        if !is_new {
            receipt.duplicates += 1;
            if a.status == AlertStatus::Firing {
                repeat(service, &loaded, a, &mut repeats, &mut receipt).await?;
            }
            continue;
        }
        receipt.new += 1;
        if a.status == AlertStatus::Resolved {
            receipt.resolved += 1;
        }
        // What the alert started is told before any of it runs, so that a
        // watcher hears of the alert before its runs.
        let mut start = Vec::new();
        let runs: Vec<StartedRun> = mine
            .into_iter()
            .map(
                |(p, launch, rec)| match service.claim_queued(p, launch, rec) {
                    Ok(mut c) => {
                        if claimed.contains(&c.rec.id) {
                            c.holds_shared_flight();
                        }
                        let run = StartedRun {
                            plugin: c.rec.plugin.clone(),
                            run_id: c.rec.id.clone(),
                            status: "queued",
                        };
                        start.push(c);
                        run
                    }
                    Err(rec) => {
                        let run = StartedRun {
                            plugin: rec.plugin.clone(),
                            run_id: rec.id.clone(),
                            status: "skipped",
                        };
                        skipped.push(rec);
                        run
                    }
                },
            )
            .collect();
        service.events.emit("alert.received", None, None, || {
            serde_json::json!({
                "fingerprint": fingerprint(a),
                "alertname": a.labels.get("alertname"),
                "status": a.status,
                "labels": a.labels,
                "runs": runs,
            })
        });
        receipt.runs.extend(runs);
        for c in start {
            drop(service.spawn_run(c, None));
        }
    }
    // A run that lost its claim to one in flight replaces its `queued`
    // record with a `skipped` one (were this lost in a crash, the restart
    // would resume the queued run, and single flight decide again).
    // One the receipt claimed the shared flight for gives it up with it.
    let stored = futures_util::future::join_all(
        skipped
            .iter()
            .map(|rec| service.store.finish_run(rec, claimed.contains(&rec.id))),
    );
    for (rec, done) in skipped.iter().zip(stored.await) {
        if let Err(e) = done {
            tracing::error!(run_id = %rec.id, error = %e, "`skipped` not stored; the run stays queued");
        }
        service.finished(rec);
    }
    Ok(receipt)
}

/// How an alert starts a run of `p`: the plugin's mode, keyed for single
/// flight by the alert's target labels.
fn alert_launch(p: &Plugin, a: &WebhookAlert) -> Launch {
    Launch {
        id: None,
        trigger: Trigger::Alert { alert: a.info() },
        mode: None,
        params: BTreeMap::new(),
        target: target(p, &a.labels),
        approved: None,
        waited: false,
    }
}

/// What `p`'s runs for `a` are looked up by.
fn alert_key(p: &Plugin, a: &WebhookAlert) -> AlertKey {
    AlertKey {
        plugin: p.name().to_string(),
        fingerprint: fingerprint(a),
        starts_at: a.starts_at.clone(),
    }
}

/// Each plugin's runs for each repeated firing alert of a payload, read at
/// once after its commit; a key is taken by the first repeat that uses it
/// (`None` after: the same alert twice in one payload is one repeat).
type RepeatedRuns = HashMap<AlertKey, Option<Vec<crate::record::RunRecord>>>;

async fn repeated_runs(
    service: &Arc<Service>,
    loaded: &[Arc<Plugin>],
    alerts: &[WebhookAlert],
    new: &[bool],
) -> RepeatedRuns {
    let mut keys = Vec::new();
    for (a, _) in alerts
        .iter()
        .zip(new)
        .filter(|(a, is_new)| !**is_new && a.status == AlertStatus::Firing)
    {
        keys.extend(routed(loaded, a).map(|p| alert_key(p, a)));
    }
    keys.sort();
    keys.dedup();
    match service.store.runs_for_alerts(&keys).await {
        Ok(runs) => keys.into_iter().zip(runs.into_iter().map(Some)).collect(),
        Err(e) => {
            // As when a plugin has no say: nothing is retried or escalated
            // on a read that failed; the next repeat decides.
            tracing::error!(error = %e, "runs of repeated alerts could not be read");
            HashMap::new()
        }
    }
}

/// A repeat notification of a firing alert: each plugin it routes to
/// decides between nothing (its run is fine or still going), a retry (its
/// last attempt did not succeed) and an escalation (it mitigated and the
/// alert still fires).
async fn repeat(
    service: &Arc<Service>,
    loaded: &[Arc<Plugin>],
    a: &WebhookAlert,
    repeats: &mut RepeatedRuns,
    receipt: &mut Receipt,
) -> Result<(), AlertError> {
    let fp = fingerprint(a);
    for p in routed(loaded, a) {
        let launch = || alert_launch(p, a);
        let Some(runs) = repeats.get_mut(&alert_key(p, a)).and_then(Option::take) else {
            continue;
        };
        match service.on_repeat(p, runs, &fp).await {
            Repeat::Nothing => {}
            Repeat::Escalated(run_id) => receipt.runs.push(StartedRun {
                plugin: p.name().to_string(),
                run_id,
                status: "escalated",
            }),
            Repeat::Retry => {
                let run = match service.launch(p.clone(), launch()).await? {
                    Started::Running { id, .. } => StartedRun {
                        plugin: p.name().to_string(),
                        run_id: id,
                        status: "retried",
                    },
                    Started::Skipped(rec) => StartedRun {
                        plugin: p.name().to_string(),
                        run_id: rec.id,
                        status: "skipped",
                    },
                };
                receipt.runs.push(run);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    mod twins;

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
