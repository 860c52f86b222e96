//! Verification: `verify_after` a live mitigation, detect runs again; the
//! original run records `resolved` or `not_resolved`, and not resolved
//! escalates through notify per the escalation policy (the alert's
//! `priority` label, else the plugin's `priority`).

use std::sync::Arc;

use chrono::Utc;

use super::Service;
use crate::backends::NotifyMessage;
use crate::config::{Capability, Scope};
use crate::escalation::Priority;
use crate::gate::{Action, Gate, Grants, Journal, Phase, Target};
use crate::guardrails::Stage;
use crate::record::{self, RunRecord, Trigger};
use crate::remedy::RunRequest;
use crate::runtime::Plugin;

impl Service {
    /// Schedules the verification of `rec`, a run that executed actions.
    pub fn verify_later(self: Arc<Self>, plugin: Arc<Plugin>, rec: RunRecord) {
        let after = plugin.settings.limits.verify_after;
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            self.verify(&plugin, &rec).await;
        });
    }

    async fn verify(&self, plugin: &Plugin, rec: &RunRecord) {
        let req = RunRequest {
            trigger: rec.trigger.clone(),
            dry_run: Some(true),
            params: Default::default(),
            stage: Stage::Verify,
        };
        let check = self.remedy.run(plugin, req).await;
        let resolved = check.detection.as_ref().is_some_and(|d| d.healthy);
        let result = if resolved { "resolved" } else { "not_resolved" };
        tracing::info!(run_id = %rec.id, plugin = %rec.plugin, result, "verification");
        let mut escalations = Vec::new();
        if !resolved {
            let findings: Vec<String> = check
                .detection
                .iter()
                .flat_map(|d| d.findings.iter().map(|f| format!("• {}", f.summary)))
                .collect();
            escalations = self
                .escalate(
                    plugin,
                    rec,
                    "Not resolved after mitigation",
                    format!(
                        "Run {} mitigated live, but detect still finds a problem:\n{}",
                        rec.id,
                        findings.join("\n")
                    ),
                )
                .await;
        }
        let mut latest = match self.store.get_run(&rec.id).await {
            Ok(Some(r)) => r,
            _ => rec.clone(),
        };
        latest.verification = Some(result.to_string());
        latest.verified_at = Some(Utc::now());
        latest.actions.extend(escalations.iter().cloned());
        if let Err(e) = self.store.put_run(&latest).await {
            tracing::error!(run_id = %rec.id, error = %e, "verification not stored");
        }
        let findings: Vec<&str> = check
            .detection
            .iter()
            .flat_map(|d| d.findings.iter().map(|f| f.summary.as_str()))
            .collect();
        self.audit(
            Some(&rec.id),
            Some(&rec.plugin),
            "verification",
            serde_json::json!({"result": result, "status": check.status.as_str(), "findings": findings, "error": check.error}),
        )
        .await;
        for a in &escalations {
            self.audit(
                Some(&rec.id),
                Some(&rec.plugin),
                "action",
                serde_json::to_value(a).unwrap_or_default(),
            )
            .await;
        }
        self.metrics.verified(&rec.plugin, result);
    }

    /// Tells the route of the alert's priority (its `priority` label, else
    /// the plugin's) about `rec`, through the gate; answers the actions.
    pub(crate) async fn escalate(
        &self,
        plugin: &Plugin,
        rec: &RunRecord,
        what: &str,
        body: String,
    ) -> Vec<record::ActionRecord> {
        let priority = match &rec.trigger {
            Trigger::Alert { alert } => alert
                .labels
                .get("priority")
                .and_then(|p| Priority::parse(p)),
            _ => None,
        }
        .unwrap_or(plugin.settings.priority);
        let backends = &self.remedy.backends;
        let route = backends.escalation.route(priority).clone();
        let journal = Journal::new(4096);
        let Some(notify) = backends.notify.clone() else {
            tracing::error!(run_id = %rec.id, what, "no notify channel is configured to escalate to");
            return Vec::new();
        };
        // The host escalates on the plugin's behalf, through the same gate
        // (budget included) as any plugin action.
        let gate = Gate {
            plugin: rec.plugin.clone(),
            grants: Arc::new(Grants {
                capabilities: [Capability::Notify].into(),
                scope: Scope {
                    notify_channels: Some(vec!["*".into()]),
                    ..Scope::default()
                },
            }),
            dry_run: false,
            phase: Phase::Mitigate,
            journal: journal.clone(),
            run_id: rec.id.clone(),
            limits: plugin.settings.limits.clone(),
            stage: Stage::Normal,
            ledger: self.remedy.ledger.clone(),
        };
        let title = format!("[{}] {what}: {}", priority.as_str(), rec.plugin);
        for channel in route.channels.iter().filter(|c| notify.has_channel(c)) {
            let message = NotifyMessage {
                channel: channel.clone(),
                severity: record::Severity::Critical,
                title: title.clone(),
                body: body.clone(),
                evidence: vec![
                    ("priority".into(), priority.as_str().into()),
                    ("respond-within".into(), route.respond_within.clone()),
                    ("escalate-to".into(), route.escalate_to.clone()),
                    ("run".into(), rec.id.clone()),
                ],
                plugin: rec.plugin.clone(),
                run_id: rec.id.clone(),
            };
            let notify = notify.clone();
            let action = Action {
                kind: "notify.escalate",
                capability: Capability::Notify,
                target: Target::Channel(channel.clone()),
                reason: title.clone(),
            };
            let _ = gate
                .act(action, || async move { notify.send(&message).await })
                .await;
        }
        journal.actions()
    }
}

impl Service {
    /// A repeat notification of a firing alert (same fingerprint and start)
    /// whose last run already mitigated live and was not verified as
    /// resolved: mitigating again would repeat what did not work, so a human
    /// hears about it instead. Answers the run escalated about, if any.
    pub async fn escalate_repeat(
        &self,
        plugin: &Plugin,
        fingerprint: &str,
        starts_at: &str,
    ) -> Option<String> {
        let runs = self
            .store
            .list_runs(crate::store::RunFilter {
                plugin: Some(plugin.name().to_string()),
                limit: Some(200),
                ..Default::default()
            })
            .await
            .ok()?;
        let mut rec = runs.into_iter().find(|r| {
            matches!(&r.trigger, Trigger::Alert { alert } if alert.fingerprint == fingerprint && alert.starts_at == starts_at)
                && !r.dry_run
                && r.actions.iter().any(|a| a.applied == record::Applied::Executed)
        })?;
        if rec.verification.as_deref() == Some("resolved") {
            return None;
        }
        // Before verification had its chance this is most likely the other
        // replica of an HA Alertmanager pair, not a repeat.
        let settle = chrono::Duration::from_std(plugin.settings.limits.verify_after)
            .unwrap_or(chrono::Duration::zero());
        if rec.verification.is_none()
            && rec
                .finished_at
                .is_none_or(|t| chrono::Utc::now() < t + settle)
        {
            return None;
        }
        let actions = self
            .escalate(
                plugin,
                &rec,
                "Still firing after mitigation",
                format!(
                    "Alertmanager repeats the alert that run {} mitigated at {}; Remedy will not repeat the mitigation.\nVerification: {}",
                    rec.id,
                    rec.finished_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    rec.verification.as_deref().unwrap_or("pending")
                ),
            )
            .await;
        self.audit(
            Some(&rec.id),
            Some(&rec.plugin),
            "alert.repeat_escalated",
            serde_json::json!({"fingerprint": fingerprint, "actions": actions}),
        )
        .await;
        rec.actions.extend(actions);
        if let Err(e) = self.store.put_run(&rec).await {
            tracing::error!(run_id = %rec.id, error = %e, "escalation not stored");
        }
        Some(rec.id)
    }
}
