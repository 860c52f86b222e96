//! Verification: `verify_after` a live mitigation, detect runs again; the
//! original run records `resolved` or `not_resolved`, and not resolved
//! escalates through notify per the escalation policy, to the alert's
//! priority (`record::alert_priority`: its `priority` label, else P0 for
//! `severity=critical`), else the plugin's `priority`.

use std::sync::Arc;

use chrono::Utc;

use super::Service;
use crate::capabilities::notify::{escalate, Outgoing};
use crate::gate::{Gate, Phase, RunGate};
use crate::grants::{Capability, Grants, Scope};
use crate::guardrails::Stage;
use crate::journal::Journal;
use crate::record::{self, ActionKind, RunRecord};
use crate::remedy::RunRequest;
use crate::runtime::Plugin;

impl Service {
    /// Schedules the verification of `rec`, a run that executed actions,
    /// `verify_after` after it finished.
    pub fn verify_later(self: Arc<Self>, plugin: Arc<Plugin>, rec: RunRecord) {
        let after = plugin.settings.limits.verify_after;
        let finished = rec.finished_at.unwrap_or(rec.started_at);
        let due = chrono::Duration::from_std(after)
            .ok()
            .and_then(|a| finished.checked_add_signed(a))
            .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC);
        let wait = (due - Utc::now()).to_std().unwrap_or_default();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            self.verify(&plugin, &rec).await;
        });
    }

    /// Verifications a stopped process (this one's previous life, or a
    /// replica that died) had scheduled and never ran: each gets one, due
    /// when it would have been (at once if that has passed).
    pub(crate) fn resume_verifications(self: &Arc<Self>, runs: Vec<RunRecord>) {
        for rec in runs {
            let Some(plugin) = self.registry.get(&rec.plugin) else {
                tracing::warn!(run_id = %rec.id, plugin = %rec.plugin, "not verified: plugin not loaded");
                continue;
            };
            tracing::info!(run_id = %rec.id, plugin = %rec.plugin, "verification taken over from a stopped process");
            let me = self.clone();
            tokio::spawn(async move {
                me.adopt_silence(&plugin, &rec).await;
                me.verify_later(plugin, rec);
            });
        }
    }

    /// Whether the verification of `rec` is still this replica's: after a
    /// stall past its lease a survivor took it over (and verifies it), and
    /// two verifications would escalate twice.
    async fn still_ours(&self, rec: &RunRecord) -> bool {
        match self.store.owns_run(&rec.id).await {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(run_id = %rec.id, plugin = %rec.plugin, "verification dropped: another replica took the run over");
                false
            }
            // Unknown: verify (a missed escalation is worse than a repeat).
            Err(e) => {
                tracing::warn!(run_id = %rec.id, error = %e, "run owner not read; verifying");
                true
            }
        }
    }

    async fn verify(&self, plugin: &Plugin, rec: &RunRecord) {
        if !self.still_ours(rec).await {
            // The survivor that took the run over renews the silence now.
            self.remedy.silences.release(&rec.id);
            return;
        }
        let req = RunRequest {
            trigger: rec.trigger.clone(),
            dry_run: Some(true),
            params: Default::default(),
            stage: Stage::Verify,
        };
        let check = self.remedy.run(plugin, req).await;
        let resolved = check.detection.as_ref().is_some_and(|d| d.healthy);
        let result = if resolved {
            record::Verification::Resolved
        } else {
            record::Verification::NotResolved
        };
        tracing::info!(run_id = %rec.id, plugin = %rec.plugin, result = result.as_str(), "verification");
        let mut escalations = Vec::new();
        let mut notes: Vec<String> = Vec::new();
        // Detection takes time: ask again before anyone is paged.
        if !resolved && !self.still_ours(rec).await {
            self.remedy.silences.release(&rec.id);
            return;
        }
        // Verification is over: the alert speaks for itself again, before
        // a not-resolved result pages anyone.
        if let Some(note) = self.end_silence(rec).await {
            notes.push(note);
        }
        if !resolved {
            let findings: Vec<String> = check
                .detection
                .iter()
                .flat_map(|d| d.findings.iter().map(|f| format!("• {}", f.summary)))
                .collect();
            (escalations, notes) = self
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
        let (follow_ups, more_notes) = self.verification_follow_ups(plugin, rec, resolved).await;
        escalations.extend(follow_ups);
        notes.extend(more_notes);
        let mut latest = match self.store.get_run(&rec.id).await {
            Ok(Some(r)) => r,
            _ => rec.clone(),
        };
        latest.verification = Some(result);
        latest.verified_at = Some(Utc::now());
        latest.actions.extend(escalations.iter().cloned());
        latest.logs.extend(notes);
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
        self.audit_actions(rec, &escalations).await;
        self.metrics.verified(&rec.plugin, result.as_str());
        self.chat_verified(&latest);
    }

    /// Tells the route of the alert's priority (its `priority` label, else
    /// P0 for `severity=critical`, else the plugin's) about `rec`, through the one escalation path and the
    /// gate (budget included) as a plugin's own escalation would; answers
    /// the actions and the gate's notes (e.g. that the kill switch let them
    /// through, or that no channel is configured).
    pub(crate) async fn escalate(
        &self,
        plugin: &Plugin,
        rec: &RunRecord,
        what: &str,
        body: String,
    ) -> (Vec<record::ActionRecord>, Vec<String>) {
        // The one rule of an alert's urgency (`record::alert_priority`):
        // its `priority` label, else P0 for `severity=critical`; the
        // plugin's priority for everything else.
        let priority = rec
            .trigger
            .alert_priority()
            .unwrap_or(plugin.settings.priority);
        self.metrics.escalated(plugin.name(), priority.as_str());
        let (gate, journal) = self.host_gate(plugin, rec);
        let message = Outgoing {
            channel: String::new(),
            severity: record::Severity::Critical,
            title: format!("{what}: {}", rec.plugin),
            body,
            evidence: vec![("run".into(), rec.id.clone())],
        };
        let notify = self.remedy.backends.notify.clone();
        if let Err(e) = escalate(
            &gate,
            notify.as_ref(),
            &self.remedy.escalation,
            priority,
            message,
        )
        .await
        {
            tracing::error!(run_id = %rec.id, what, error = %crate::gate::error_text(&e), "escalation failed");
        }
        (journal.actions(), journal.logs.lines())
    }
}

impl Service {
    /// A gate for notifications the host sends on behalf of `rec`'s plugin
    /// (escalations, incident follow-ups, annotations), to whichever
    /// channels the policy or the config names, under the plugin's budgets;
    /// and the journal that records them.
    pub(super) fn host_gate(&self, plugin: &Plugin, rec: &RunRecord) -> (Gate, Journal) {
        let journal = Journal::new(4096);
        let grants = Arc::new(Grants {
            capabilities: [Capability::Notify].into(),
            scope: Scope {
                notify_channels: Some(vec!["*".into()]),
                ..Scope::default()
            },
        });
        let run = Arc::new(RunGate {
            limits: plugin.settings.limits.clone(),
            journal: journal.clone(),
            ledger: self.remedy.ledger.clone(),
            kill: self.remedy.kill.clone(),
            subject: rec.trigger.subject().map(String::from),
            ..RunGate::new(&rec.plugin, &rec.id, grants, false)
        });
        // No guest call to outlive: the notify backend's own request
        // timeout bounds each call.
        (run.call(Phase::Mitigate, None), journal)
    }
}

/// What a repeat notification of a firing alert comes to for one plugin.
#[derive(Debug, PartialEq)]
pub enum Repeat {
    /// Its run is going, waiting for a human, or did what it could.
    Nothing,
    /// The last attempt did not succeed and its backoff has passed: run again.
    Retry,
    /// A human was told (the run named here records the escalation).
    Escalated(String),
}

/// Attempts at one alert before Remedy stops retrying and escalates.
pub const MAX_ATTEMPTS: usize = 4;

/// Wait after the n-th failed attempt (1-based) before the next: `first`
/// (the plugin's `retry_after`), doubling, at most 30 min. Alertmanager's
/// repeats (every `repeat_interval`) are what drive retries; this only
/// keeps a flapping backend from being hammered by a short one.
pub fn retry_backoff(first: std::time::Duration, attempts: usize) -> chrono::Duration {
    let ms = (first.as_millis() as i64).saturating_mul(1i64 << attempts.saturating_sub(1).min(16));
    chrono::Duration::milliseconds(ms.min(30 * 60 * 1000))
}

impl Service {
    /// Decides what a repeat of a firing alert (same fingerprint and start)
    /// does for `plugin`:
    /// - the last run is queued, running or waiting for approval, or the
    ///   alert's run succeeded without acting live: nothing;
    /// - the last run mitigated live and was not verified as resolved:
    ///   mitigating again would repeat what did not work, so a human hears
    ///   about it instead (once verification had its chance);
    /// - the last attempt failed, timed out or was interrupted (or there is
    ///   no run at all): retry, after a backoff; after [`MAX_ATTEMPTS`] a
    ///   human is told instead, once.
    ///
    /// A `skipped` run never ran (another held its target): it is neither
    /// an attempt nor the alert's state. An HA pair's twin repeats leave one
    /// beside each retry; counted, they would give up after half the
    /// attempts, and a skipped run newer than a retry still in flight would
    /// start another.
    ///
    /// `runs`: the plugin's runs for the alert, newest first, as the store
    /// answered them (`Store::runs_for_alerts`).
    pub async fn on_repeat(
        &self,
        plugin: &Plugin,
        runs: Vec<RunRecord>,
        fingerprint: &str,
    ) -> Repeat {
        use crate::record::RunStatus as S;
        let runs: Vec<RunRecord> = runs
            .into_iter()
            .filter(|r| r.status != S::Skipped)
            .collect();
        let Some(latest) = runs.first().cloned() else {
            return Repeat::Retry;
        };
        match latest.status {
            S::Queued | S::Running | S::PendingApproval | S::Rejected | S::Expired => {
                Repeat::Nothing
            }
            S::Succeeded => self.escalate_unresolved(plugin, latest, fingerprint).await,
            S::Failed
            | S::Denied
            | S::Trapped
            | S::TimedOut
            | S::OutOfMemory
            | S::Interrupted
            | S::Skipped => self.retry_or_give_up(plugin, runs, fingerprint).await,
        }
    }

    async fn retry_or_give_up(
        &self,
        plugin: &Plugin,
        runs: Vec<RunRecord>,
        fingerprint: &str,
    ) -> Repeat {
        // Attempts since the alert's last success (there is none: the
        // latest did not succeed, and a success ends the streak).
        let attempts = runs
            .iter()
            .take_while(|r| r.status != record::RunStatus::Succeeded)
            .count();
        let Some(latest) = runs.into_iter().next() else {
            return Repeat::Retry;
        };
        if latest
            .actions
            .iter()
            .any(|a| a.kind == ActionKind::NotifyEscalate && a.reason.contains("Remedy gave up"))
        {
            return Repeat::Nothing;
        }
        if attempts < MAX_ATTEMPTS {
            let last = latest.finished_at.unwrap_or(latest.started_at);
            if chrono::Utc::now()
                < last + retry_backoff(plugin.settings.limits.retry_after, attempts)
            {
                return Repeat::Nothing;
            }
            self.audit(
                Some(&latest.id),
                Some(&latest.plugin),
                "alert.retry",
                serde_json::json!({"fingerprint": fingerprint, "attempts": attempts, "last_status": latest.status.as_str()}),
            )
            .await;
            return Repeat::Retry;
        }
        let (actions, notes) = self
            .escalate(
                plugin,
                &latest,
                "Remedy gave up",
                format!(
                    "Alertmanager still fires the alert, and {attempts} attempt(s) of {} did not succeed; Remedy will not retry it.\nLast run {}: {}{}",
                    latest.plugin,
                    latest.id,
                    latest.status.as_str(),
                    latest.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default(),
                ),
            )
            .await;
        let detail = serde_json::json!({"fingerprint": fingerprint, "attempts": attempts, "actions": actions});
        self.record_escalation(latest, "alert.gave_up", detail, actions, notes)
            .await
    }

    /// Audits an escalation made about `rec` and adds its actions and notes
    /// to the run's record.
    async fn record_escalation(
        &self,
        mut rec: RunRecord,
        event: &str,
        detail: serde_json::Value,
        actions: Vec<record::ActionRecord>,
        notes: Vec<String>,
    ) -> Repeat {
        self.audit(Some(&rec.id), Some(&rec.plugin), event, detail)
            .await;
        rec.actions.extend(actions);
        rec.logs.extend(notes);
        if let Err(e) = self.store.put_run(&rec).await {
            tracing::error!(run_id = %rec.id, error = %e, "escalation not stored");
        }
        Repeat::Escalated(rec.id)
    }

    /// The last run succeeded; if it acted live and verification did not
    /// find the problem resolved, a human hears about it.
    async fn escalate_unresolved(
        &self,
        plugin: &Plugin,
        rec: RunRecord,
        fingerprint: &str,
    ) -> Repeat {
        let acted = !rec.dry_run
            && rec
                .actions
                .iter()
                .any(|a| a.applied == record::Applied::Executed);
        if !acted || rec.verification == Some(record::Verification::Resolved) {
            return Repeat::Nothing;
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
            return Repeat::Nothing;
        }
        let (actions, notes) = self
            .escalate(
                plugin,
                &rec,
                "Still firing after mitigation",
                format!(
                    "Alertmanager repeats the alert that run {} mitigated at {}; Remedy will not repeat the mitigation.\nVerification: {}",
                    rec.id,
                    rec.finished_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    rec.verification.map_or("pending", |v| v.as_str())
                ),
            )
            .await;
        let detail = serde_json::json!({"fingerprint": fingerprint, "actions": actions});
        self.record_escalation(rec, "alert.repeat_escalated", detail, actions, notes)
            .await
    }
}
