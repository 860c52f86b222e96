//! Closing the loop where the incident is worked, beside the runs: the
//! PagerDuty incidents a run opened are acknowledged when a human first
//! approves its plan and resolved when verification finds the problem
//! gone, and every Grafana channel gets an annotation for each live action
//! and each verification. Each is a host action through the gate
//! (budgeted, recorded, allowed while paused like every notification); a
//! vendor that is down delays and blocks nothing.

use std::sync::Arc;

use super::Service;
use crate::capabilities::notify::backend::{Annotation, FollowUp};
use crate::capabilities::notify::ChannelTarget;
use crate::gate::Action;
use crate::record::{ActionKind, ActionRecord, Applied, RunRecord};
use crate::runtime::Plugin;
use crate::store::RunFilter;

/// The incidents `rec`'s executed notifications opened, as (channel, key),
/// each once.
pub fn incidents(rec: &RunRecord) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for a in rec
        .actions
        .iter()
        .filter(|a| a.applied == Applied::Executed)
    {
        let (Some(channel), Some(key)) = (a.target.strip_prefix("channel:"), &a.incident) else {
            continue;
        };
        let one = (channel.to_string(), key.clone());
        if !out.contains(&one) {
            out.push(one);
        }
    }
    out
}

/// How many of a plugin's latest runs are searched for incidents about
/// the same alert.
const RECENT: u32 = 50;

/// The dashboard mark of one live action.
fn action_annotation(plugin: &str, run: &str, a: &ActionRecord) -> Annotation {
    Annotation {
        at: a.at,
        text: format!(
            "Remedy {plugin}: {} {} ({}). Run {run}.",
            a.kind, a.target, a.reason
        ),
        tags: vec!["remedy".into(), plugin.to_string(), a.kind.as_str().into()],
    }
}

/// Results of host actions: what the gate recorded, and its notes.
pub type Done = (Vec<ActionRecord>, Vec<String>);

impl Service {
    /// The incidents opened about what `rec` is about: by `rec`, by the
    /// plan it carried out, and by the plugin's recent runs for the same
    /// alert (an earlier attempt that paged, the host's escalations).
    async fn incidents_about(&self, rec: &RunRecord, f: FollowUp) -> Vec<(String, String)> {
        // No channel is followed up so: no runs to read.
        if !self
            .remedy
            .backends
            .notify
            .as_ref()
            .is_some_and(|n| n.follows_any(f))
        {
            return Vec::new();
        }
        let mut related = Vec::new();
        if let Some(plan) = &rec.approval_of {
            if let Ok(Some(plan)) = self.store.get_run(plan).await {
                related.push(plan);
            }
        }
        if let Some(subject) = rec.trigger.subject() {
            let filter = RunFilter {
                plugin: Some(rec.plugin.clone()),
                limit: Some(RECENT),
                ..Default::default()
            };
            match self.store.list_runs(filter).await {
                Ok(runs) => related.extend(
                    runs.into_iter()
                        .filter(|r| r.trigger.subject() == Some(subject)),
                ),
                Err(e) => {
                    tracing::warn!(run_id = %rec.id, error = %e, "runs not read: only this run's incidents are followed up");
                }
            }
        }
        let mut out = incidents(rec);
        for i in related.iter().flat_map(incidents) {
            if !out.contains(&i) {
                out.push(i);
            }
        }
        out
    }

    /// Sends `f` for each of `incidents` whose channel is configured to be
    /// followed up that way, on behalf of `rec`'s plugin.
    pub(super) async fn follow_up(
        &self,
        plugin: &Plugin,
        rec: &RunRecord,
        incidents: Vec<(String, String)>,
        f: FollowUp,
    ) -> Done {
        let Some(notify) = self.remedy.backends.notify.clone() else {
            return Done::default();
        };
        let (gate, journal) = self.host_gate(plugin, rec);
        let (kind, why) = match f {
            FollowUp::Acknowledge => (ActionKind::NotifyAcknowledge, "a human approved the plan"),
            FollowUp::Resolve => (ActionKind::NotifyResolve, "verification: resolved"),
        };
        for (channel, key) in incidents {
            if !notify.follows(&channel, f) {
                continue;
            }
            let action =
                Action::new(kind, ChannelTarget(channel.clone()), why).with_incident(key.clone());
            // The gate records the outcome; a failure is no reason to stop.
            let _ = gate
                .act(action, Ok(notify.clone()), |n, permit| async move {
                    n.follow_up(&permit, &channel, &key, f).await
                })
                .await;
        }
        (journal.actions(), journal.logs.lines())
    }

    /// Posts each of `marks` to every Grafana channel, on behalf of `rec`'s
    /// plugin.
    pub(super) async fn annotate(
        &self,
        plugin: &Plugin,
        rec: &RunRecord,
        marks: Vec<Annotation>,
    ) -> Done {
        let Some(notify) = self.remedy.backends.notify.clone() else {
            return Done::default();
        };
        let channels = notify.annotation_channels();
        if channels.is_empty() || marks.is_empty() {
            return Done::default();
        }
        let (gate, journal) = self.host_gate(plugin, rec);
        for channel in channels {
            for mark in &marks {
                let action = Action::new(
                    ActionKind::NotifyAnnotate,
                    ChannelTarget(channel.clone()),
                    mark.text.clone(),
                );
                let channel = channel.clone();
                let _ = gate
                    .act(action, Ok(notify.clone()), |n, permit| async move {
                        n.annotate(&permit, &channel, mark).await
                    })
                    .await;
            }
        }
        (journal.actions(), journal.logs.lines())
    }

    /// The live run `rec` ended having executed actions: its mutations are
    /// marked on the dashboards, beside everything else. The marks are
    /// audited (the run's record is verification's to update).
    pub(super) fn mark_live_actions(self: Arc<Self>, plugin: Arc<Plugin>, rec: RunRecord) {
        let marks: Vec<Annotation> = rec
            .actions
            .iter()
            .filter(|a| a.applied == Applied::Executed && !a.kind.is_notification())
            .map(|a| action_annotation(&rec.plugin, &rec.id, a))
            .collect();
        if marks.is_empty() {
            return;
        }
        tokio::spawn(async move {
            let (actions, _) = self.annotate(&plugin, &rec, marks).await;
            self.audit_actions(&rec, &actions).await;
        });
    }

    /// A human gave plan `rec` its first approval: the incidents its run
    /// opened are acknowledged, beside the decision. Audited.
    pub(super) fn acknowledge_plan(self: Arc<Self>, plugin: Arc<Plugin>, rec: RunRecord) {
        tokio::spawn(async move {
            let open = self.incidents_about(&rec, FollowUp::Acknowledge).await;
            if open.is_empty() {
                return;
            }
            let (actions, _) = self
                .follow_up(&plugin, &rec, open, FollowUp::Acknowledge)
                .await;
            self.audit_actions(&rec, &actions).await;
        });
    }

    /// What verification of the live run `rec` adds: the incidents it and
    /// the plan it carried out opened are resolved when `resolved`, and the
    /// result is marked on the dashboards.
    pub(super) async fn verification_follow_ups(
        &self,
        plugin: &Plugin,
        rec: &RunRecord,
        resolved: bool,
    ) -> Done {
        let (mut actions, mut notes) = Done::default();
        if resolved {
            let open = self.incidents_about(rec, FollowUp::Resolve).await;
            (actions, notes) = self.follow_up(plugin, rec, open, FollowUp::Resolve).await;
        }
        let result = if resolved { "resolved" } else { "not resolved" };
        let mark = Annotation {
            at: chrono::Utc::now(),
            text: format!(
                "Remedy {}: verification {result}. Run {}.",
                rec.plugin, rec.id
            ),
            tags: vec![
                "remedy".into(),
                rec.plugin.clone(),
                "verification".into(),
                result.replace(' ', "_"),
            ],
        };
        let (more, more_notes) = self.annotate(plugin, rec, vec![mark]).await;
        actions.extend(more);
        notes.extend(more_notes);
        (actions, notes)
    }

    /// Ends the silence run `rec` held while it acted, if this process
    /// holds it; answers a line for the run's log.
    pub(super) async fn end_silence(&self, rec: &RunRecord) -> Option<String> {
        let ended = self.remedy.silences.end(&rec.id).await?;
        let (line, detail) = match ended {
            Ok(id) => (
                format!("[remedy] silence {id} ended: the alert is no longer silenced"),
                serde_json::json!({"silence": id, "ended": true}),
            ),
            Err(e) => (format!("[remedy] {e}"), serde_json::json!({"error": e})),
        };
        self.audit(Some(&rec.id), Some(&rec.plugin), "silence.ended", detail)
            .await;
        Some(line)
    }

    /// A run this process took over held a silence: renew it from here on
    /// (its holder stopped), so that it ends with the verification.
    pub(super) async fn adopt_silence(&self, plugin: &Plugin, rec: &RunRecord) {
        let (Some(id), Some(source), crate::record::Trigger::Alert { alert }) =
            (&rec.silence, self.remedy.alerts.clone(), &rec.trigger)
        else {
            return;
        };
        let lease = plugin
            .settings
            .limits
            .silence_lease
            .unwrap_or(std::time::Duration::from_secs(120));
        let comment = format!(
            "Remedy run {} is acting on this alert (taken over after its replica stopped)",
            rec.id
        );
        match crate::alertmanager::lease::SilenceLease::adopt(
            source,
            Some(id.clone()),
            &alert.labels,
            comment,
            lease,
        )
        .await
        {
            Ok(l) => {
                let now = l.id();
                self.remedy.silences.hold(&rec.id, l);
                self.audit(
                    Some(&rec.id),
                    Some(&rec.plugin),
                    "silence.adopted",
                    serde_json::json!({"silence": now, "was": id}),
                )
                .await;
            }
            Err(e) => {
                tracing::warn!(run_id = %rec.id, silence = %id, error = %e, "silence not adopted: it lapses at the end of its lease");
            }
        }
    }
}
