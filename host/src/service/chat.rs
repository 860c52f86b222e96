//! What the service tells the incident channel, and when: a plan waiting
//! for approval is posted, each decision or approval on it updates its
//! message, its live run and verification are told in the thread. Each is
//! sent beside the run, never in its way: a chat that is down delays no
//! run and loses no decision (the plan stays decidable everywhere else).

use std::sync::Arc;

use crate::record::{alert_priority, RunRecord, Trigger};

use super::Service;

impl Service {
    /// Called for every run that ended (see [`Service::finished`]).
    pub(super) fn chat_run_ended(&self, rec: &RunRecord) {
        let Some(slack) = self.slack.clone() else {
            return;
        };
        if crate::chat::slack::is_pending_plan(rec) {
            let Some(channel) = self.plan_channel(rec) else {
                tracing::debug!(run_id = %rec.id, "no Slack channel for this plan: not posted");
                return;
            };
            let rec = rec.clone();
            tokio::spawn(async move { slack.post_plan(&rec, &channel).await });
        } else if rec.approval_of.is_some() {
            let rec = rec.clone();
            tokio::spawn(async move { slack.live_finished(&rec).await });
        }
    }

    /// A plan was decided, approved once more or expired.
    pub(super) fn chat_plan_changed(&self, rec: &RunRecord) {
        if let Some(slack) = self.slack.clone() {
            let rec = rec.clone();
            tokio::spawn(async move { slack.plan_changed(&rec).await });
        }
    }

    /// A live run was verified (`rec` carries the result).
    pub(super) fn chat_verified(&self, rec: &RunRecord) {
        if let Some(slack) = self.slack.clone().filter(|_| rec.approval_of.is_some()) {
            let rec = rec.clone();
            tokio::spawn(async move { slack.verified(&rec).await });
        }
    }

    /// Where a plan is posted: the plugin's `slack_channel`, else the
    /// channel of the plan's priority (its alert's, else the plugin's),
    /// else `[chat.slack] channel`.
    fn plan_channel(&self, rec: &RunRecord) -> Option<crate::config::SlackChannel> {
        let slack = self.slack.as_ref()?;
        let pc = self.remedy.config.plugins.get(&rec.plugin);
        let labelled = match &rec.trigger {
            Trigger::Alert { alert } => alert_priority(&alert.labels),
            _ => None,
        };
        let priority = labelled
            .or_else(|| self.registry.get(&rec.plugin).map(|p| p.settings.priority))
            .unwrap_or(crate::escalation::Priority::P1);
        slack
            .config
            .channel_for(pc.and_then(|c| c.slack_channel.as_ref()), priority)
            .cloned()
    }
}

/// The Slack participant `config` asks for, if any.
pub(super) fn slack(
    config: &crate::Config,
    store: &Arc<dyn crate::store::Store>,
) -> anyhow::Result<Option<Arc<crate::chat::Slack>>> {
    let Some(cfg) = &config.chat.slack else {
        return Ok(None);
    };
    let timeout = config
        .backends
        .request_timeout_ms
        .map_or(std::time::Duration::from_secs(5), |t| t.get());
    Ok(Some(Arc::new(crate::chat::Slack::new(
        cfg,
        store.clone(),
        timeout,
    )?)))
}
