//! Deciding on a plan waiting for approval: reject it, let it expire, or
//! approve it, which runs detect + mitigate again live with the gate limited
//! to the planned actions.

use std::sync::Arc;

use chrono::Utc;

use super::{Launch, Service};
use crate::guardrails::Plan;
use crate::record::{RunRecord, RunStatus};
use crate::store::StoreError;

/// Why a decision could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("no run `{0}`")]
    NotFound(String),
    #[error("run {id} is {status}, not pending_approval")]
    NotPending { id: String, status: &'static str },
    #[error("the plan of run {id} expired at {at}")]
    Expired { id: String, at: String },
    #[error("the kill switch is on (since {at}, by {by}): nothing is approved until it is off")]
    Paused { at: String, by: String },
    #[error("plugin `{0}` is not loaded any more")]
    PluginGone(String),
    #[error("plugin `{plugin}` changed since the plan was made ({planned} then, {now} now): the plan was made by other code; start a new run to plan again")]
    PluginChanged {
        plugin: String,
        planned: String,
        now: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a decision came to.
pub struct Decided {
    /// The plan's record, with the decision.
    pub plan: RunRecord,
    /// The live run carrying the plan out (approval only).
    pub live_run: Option<String>,
}

impl Service {
    /// Approves (`approve`) or rejects a pending plan on behalf of `by`.
    pub async fn decide(
        self: &Arc<Self>,
        id: &str,
        approve: bool,
        by: &str,
    ) -> Result<Decided, DecideError> {
        let mut rec = self
            .store
            .get_run(id)
            .await?
            .ok_or_else(|| DecideError::NotFound(id.to_string()))?;
        let Some(approval) = rec
            .approval
            .clone()
            .filter(|_| rec.status == RunStatus::PendingApproval)
        else {
            return Err(DecideError::NotPending {
                id: id.to_string(),
                status: rec.status.as_str(),
            });
        };
        let now = Utc::now();
        if now > approval.expires_at {
            self.close(&mut rec, RunStatus::Expired, "expired", "remedy")
                .await?;
            return Err(DecideError::Expired {
                id: id.to_string(),
                at: approval.expires_at.to_rfc3339(),
            });
        }
        if !approve {
            if !self
                .close(&mut rec, RunStatus::Rejected, "rejected", by)
                .await?
            {
                return Err(self.lost(id).await);
            }
            return Ok(Decided {
                plan: rec,
                live_run: None,
            });
        }
        if let Some(p) = self.paused() {
            return Err(DecideError::Paused { at: p.at, by: p.by });
        }
        let plugin = self
            .registry
            .get(&rec.plugin)
            .ok_or_else(|| DecideError::PluginGone(rec.plugin.clone()))?;
        // What was approved is what this code planned: a plugin replaced in
        // between could do anything with the same kinds and targets.
        if plugin.digest != rec.plugin_digest {
            return Err(DecideError::PluginChanged {
                plugin: rec.plugin.clone(),
                planned: rec.plugin_digest.clone(),
                now: plugin.digest.clone(),
            });
        }
        // The decision is taken by one conditional update in the store; the
        // live run's id is named in it, so it is launched only by the winner
        // and at most once.
        let live = crate::record::new_run_id();
        if let Some(a) = rec.approval.as_mut() {
            a.live_run = Some(live.clone());
        }
        if !self
            .close(&mut rec, RunStatus::Succeeded, "approved", by)
            .await?
        {
            return Err(self.lost(id).await);
        }
        let plan: Plan = approval.plan.iter().cloned().collect();
        self.launch(
            plugin,
            Launch {
                id: Some(live.clone()),
                trigger: rec.trigger.clone(),
                mode: None,
                params: Default::default(),
                target: format!("approval:{id}"),
                approved: Some((id.to_string(), Arc::new(plan))),
                waited: false,
            },
        )
        .await?;
        Ok(Decided {
            plan: rec,
            live_run: Some(live),
        })
    }

    /// The answer to a decision that lost the race to another one.
    async fn lost(&self, id: &str) -> DecideError {
        let status = match self.store.get_run(id).await {
            Ok(Some(r)) => r.status.as_str(),
            Ok(None) => return DecideError::NotFound(id.to_string()),
            Err(e) => return DecideError::Store(e),
        };
        DecideError::NotPending {
            id: id.to_string(),
            status,
        }
    }

    /// Marks plans whose time ran out as `expired` (decisions check the
    /// time themselves; this keeps listings honest).
    pub async fn expire_stale_plans(&self) {
        let pending = match self
            .store
            .list_runs(crate::store::RunFilter {
                status: Some(RunStatus::PendingApproval.as_str().into()),
                limit: Some(1000),
                ..Default::default()
            })
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list plans to expire");
                return;
            }
        };
        let now = Utc::now();
        for mut rec in pending {
            if rec.approval.as_ref().is_some_and(|a| now > a.expires_at) {
                if let Err(e) = self
                    .close(&mut rec, RunStatus::Expired, "expired", "remedy")
                    .await
                {
                    tracing::warn!(run_id = %rec.id, error = %e, "plan not expired");
                }
            }
        }
    }

    /// Records the decision on the plan, if it is still pending, and then in
    /// the audit log; `false` when another decision came first (then
    /// nothing is recorded).
    async fn close(
        &self,
        rec: &mut RunRecord,
        status: RunStatus,
        decision: &str,
        by: &str,
    ) -> Result<bool, StoreError> {
        rec.status = status;
        if let Some(a) = rec.approval.as_mut() {
            a.decision = Some(decision.to_string());
            a.decided_by = Some(by.to_string());
            a.decided_at = Some(Utc::now());
        }
        if !self.store.decide(rec).await? {
            return Ok(false);
        }
        self.audit(
            Some(&rec.id),
            Some(&rec.plugin),
            &format!("approval.{decision}"),
            serde_json::json!({
                "by": by,
                "plan": rec.approval.as_ref().map(|a| &a.plan),
                "live_run": rec.approval.as_ref().and_then(|a| a.live_run.clone()),
            }),
        )
        .await;
        self.events
            .emit("approval.decided", Some(&rec.id), Some(&rec.plugin), || {
                serde_json::json!({
                    "decision": decision,
                    "by": by,
                    "live_run": rec.approval.as_ref().and_then(|a| a.live_run.clone()),
                })
            });
        Ok(true)
    }
}
