//! Slack: plans posted to the incident channel with Approve / Reject
//! buttons and kept up to date as they are decided, their live runs and
//! verifications told in the message's thread; requests from Slack
//! verified by their signature; Slack users mapped to roles.
//!
//! The message of a plan is posted by the replica that made the plan, and
//! its place (`channel`, `ts`) is stored, so any replica that later decides
//! the plan or runs it updates the same message.

use crate::locks::MutexExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::{SlackChannel, SlackConfig, SLACK_API_URL};
use crate::record::{RunRecord, RunStatus};
use crate::store::{AuditEvent, Store};

pub mod api;
pub mod blocks;
pub mod signing;

pub use api::{Posted, SlackError, WebApi};
pub use signing::{Seen, Unsigned};

/// What a Slack user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlackRole {
    /// Decide plans, pull and release the kill switch, read.
    Approve,
    /// `/remedy status`.
    Read,
}

pub struct Slack {
    pub config: SlackConfig,
    api: WebApi,
    secret: Vec<u8>,
    /// Requests taken lately (a replay is refused).
    pub seen: Seen,
    store: Arc<dyn Store>,
    /// One change at a time per plan message in this process, each made
    /// from the plan as stored then, so an older state never lands last.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Where the message of plan `id` is kept in the store.
fn message_key(id: &str) -> String {
    format!("slack:{id}")
}

impl Slack {
    /// Reads the bot token and signing secret from the variables `cfg`
    /// names; an unset one is an error naming it.
    pub fn new(
        cfg: &SlackConfig,
        store: Arc<dyn Store>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let var = |name: &str, key: &str| -> anyhow::Result<String> {
            crate::backends::env_value(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| {
                    anyhow::anyhow!("[chat.slack] {key}: the variable {name} is not set")
                })
        };
        let token = var(&cfg.bot_token_env, "bot_token_env")?;
        let secret = var(&cfg.signing_secret_env, "signing_secret_env")?;
        let base = cfg.api_url.as_ref().map_or(SLACK_API_URL, |u| u.as_str());
        Ok(Slack {
            config: cfg.clone(),
            api: WebApi::new(base, token, timeout)?,
            secret: secret.into_bytes(),
            seen: Seen::default(),
            store,
            locks: Mutex::default(),
        })
    }

    /// Checks that a request is Slack's, signed now and not seen before.
    pub fn verify(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), Unsigned> {
        signing::verify(&self.secret, timestamp, signature, body, now)?;
        if !self.seen.first(signature.unwrap_or_default(), now) {
            return Err(Unsigned::Replayed);
        }
        Ok(())
    }

    /// What Slack user `id` may do, if anything.
    pub fn role(&self, id: &str) -> Option<SlackRole> {
        let c = &self.config;
        if c.approvers.iter().any(|u| u.as_str() == id) {
            Some(SlackRole::Approve)
        } else if c.anyone_may_read || c.readers.iter().any(|u| u.as_str() == id) {
            Some(SlackRole::Read)
        } else {
            None
        }
    }

    fn console(&self) -> Option<&str> {
        self.config.console_url.as_ref().map(|u| u.as_str())
    }

    fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.locked();
        // Forget plans nobody is changing now (bounded by plans in flight).
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(id.to_string()).or_default().clone()
    }

    async fn audit(&self, rec: &RunRecord, event: &str, detail: Value) {
        let ev = AuditEvent {
            seq: 0,
            at: crate::record::timestamp(chrono::Utc::now()),
            run_id: Some(rec.id.clone()),
            plugin: Some(rec.plugin.clone()),
            event: event.to_string(),
            detail,
        };
        if let Err(e) = self.store.audit(ev).await {
            tracing::error!(error = %e, event, "audit event not stored");
        }
    }

    /// Where the message of plan `id` is, if it was posted.
    pub async fn message_of(&self, id: &str) -> Option<Posted> {
        match self.store.setting(&message_key(id)).await {
            Ok(v) => v.and_then(|v| serde_json::from_str(&v).ok()),
            Err(e) => {
                tracing::warn!(run_id = %id, error = %e, "Slack message of the plan not read");
                None
            }
        }
    }

    /// Posts plan `rec` to `channel`, once: a plan already posted is not
    /// posted again, and a post that may have gone through is not retried.
    pub async fn post_plan(&self, rec: &RunRecord, channel: &SlackChannel) {
        let lock = self.lock(&rec.id);
        let _one = lock.lock().await;
        if self.message_of(&rec.id).await.is_some() {
            return;
        }
        // As stored now: a decision may have come first.
        let now = self.fresh(rec).await;
        let mut body = blocks::plan_message(&now, self.console());
        body["channel"] = Value::String(channel.as_str().to_string());
        match self.api.post(&body).await {
            Ok(posted) => {
                let value = serde_json::to_string(&posted).unwrap_or_default();
                let stored = self.remember(&rec.id, &value).await;
                if let Err(e) = &stored {
                    tracing::error!(run_id = %rec.id, error = %e, "where the plan's Slack message is was not stored: it will not be updated");
                }
                self.audit(
                    rec,
                    "slack.posted",
                    json!({"channel": posted.channel, "ts": posted.ts, "stored": stored.is_ok()}),
                )
                .await;
                // Decided while it was being posted: show it.
                let later = self.fresh(rec).await;
                if later.status != now.status || later.approval != now.approval {
                    self.show(&later, &posted).await;
                }
            }
            Err(e) => {
                tracing::error!(run_id = %rec.id, error = %e, "plan not posted to Slack; it is still decidable in the console and the API");
                self.audit(
                    rec,
                    "slack.failed",
                    json!({"method": "chat.postMessage", "error": e.to_string()}),
                )
                .await;
            }
        }
    }

    /// The plan was decided or approved once more: its message shows it
    /// (buttons gone once decided) and its thread says who.
    pub async fn plan_changed(&self, rec: &RunRecord) {
        let lock = self.lock(&rec.id);
        let _one = lock.lock().await;
        let Some(posted) = self.message_of(&rec.id).await else {
            return;
        };
        let now = self.fresh(rec).await;
        self.show(&now, &posted).await;
        if let Some(line) = blocks::decision_line(rec) {
            self.reply(rec, &posted, &line).await;
        }
    }

    /// A plan's live run ended: its actions in the plan's thread.
    pub async fn live_finished(&self, rec: &RunRecord) {
        let Some(plan) = rec.approval_of.as_deref() else {
            return;
        };
        if let Some(posted) = self.message_of(plan).await {
            self.reply(rec, &posted, &blocks::live_line(rec, self.console()))
                .await;
        }
    }

    /// A plan's live run was verified: the result in the plan's thread.
    pub async fn verified(&self, rec: &RunRecord) {
        let Some(plan) = rec.approval_of.as_deref() else {
            return;
        };
        if let Some(posted) = self.message_of(plan).await {
            self.reply(rec, &posted, &blocks::verified_line(rec)).await;
        }
    }

    /// Stores where plan `id`'s message is, through a blip or two of the
    /// store (without it the message can no longer be updated).
    async fn remember(&self, id: &str, posted: &str) -> Result<(), crate::store::StoreError> {
        let mut wait = Duration::from_millis(100);
        loop {
            match self.store.put_setting(&message_key(id), Some(posted)).await {
                Err(e) if e.transient() && wait < Duration::from_secs(3) => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                r => return r,
            }
        }
    }

    /// Tells Slack user `user` (only them) in `channel` what became of
    /// what they asked.
    pub async fn tell(&self, channel: &str, user: &str, text: &str) {
        let body = json!({"channel": channel, "user": user, "text": text});
        if let Err(e) = self.api.ephemeral(&body).await {
            tracing::warn!(user, error = %e, "Slack answer not posted");
        }
    }

    async fn fresh(&self, rec: &RunRecord) -> RunRecord {
        match self.store.get_run(&rec.id).await {
            Ok(Some(r)) => r,
            _ => rec.clone(),
        }
    }

    async fn show(&self, rec: &RunRecord, posted: &Posted) {
        let body = blocks::plan_message(rec, self.console());
        if let Err(e) = self.api.update(posted, body).await {
            tracing::warn!(run_id = %rec.id, error = %e, "plan's Slack message not updated");
            self.audit(
                rec,
                "slack.failed",
                json!({"method": "chat.update", "error": e.to_string()}),
            )
            .await;
        }
    }

    async fn reply(&self, rec: &RunRecord, posted: &Posted, text: &str) {
        let body = json!({"channel": posted.channel, "thread_ts": posted.ts, "text": text});
        if let Err(e) = self.api.post(&body).await {
            tracing::warn!(run_id = %rec.id, error = %e, "Slack thread reply not posted");
            self.audit(
                rec,
                "slack.failed",
                json!({"method": "chat.postMessage", "error": e.to_string()}),
            )
            .await;
        }
    }
}

/// Whether `rec` is a plan that waits (the message to post).
pub fn is_pending_plan(rec: &RunRecord) -> bool {
    rec.status == RunStatus::PendingApproval && rec.approval.is_some()
}
