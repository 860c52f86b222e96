//! Deciding on a plan waiting for approval: reject it, let it expire, or
//! approve it, which runs detect + mitigate again live with the gate limited
//! to the planned actions.

use std::sync::Arc;

use chrono::Utc;

use super::{Launch, Service};
use crate::config::Mode;
use crate::guardrails::Plan;
use crate::record::{Applied, Approval, Decision, PlannedAction, RunRecord, RunStatus, Vote};
use crate::runtime::Plugin;
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
    #[error("{by} asked for run {id}, and a plan that needs two people needs someone else")]
    OwnRequest { id: String, by: String },
    #[error("run {id}: this approval is counted already ({progress})")]
    AlreadyApproved { id: String, progress: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How often a decision is tried again after losing to a concurrent
/// approval of the same plan (each loss means another approval counted).
const MAX_TRIES: usize = 8;

/// Who asked for a manual run (as the API names its callers).
pub fn requester(rec: &RunRecord) -> Option<&str> {
    match &rec.trigger {
        crate::record::Trigger::Manual { by } => Some(by.strip_prefix("http:").unwrap_or(by)),
        _ => None,
    }
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
    /// A plan that needs more than one approval stays pending until enough
    /// distinct people approved it; any rejection ends it.
    pub async fn decide(
        self: &Arc<Self>,
        id: &str,
        approve: bool,
        by: &str,
    ) -> Result<Decided, DecideError> {
        // Each try reads the plan and writes it back only if nobody decided
        // or approved in between; a try that lost to another approval reads
        // again (two approvers clicking at once both count).
        for _ in 0..MAX_TRIES {
            if let Some(d) = self.try_decide(id, approve, by).await? {
                return Ok(d);
            }
        }
        Err(self.lost(id).await)
    }

    /// One read-check-write of [`Service::decide`]; `None` when another
    /// approval was stored between the read and the write.
    async fn try_decide(
        self: &Arc<Self>,
        id: &str,
        approve: bool,
        by: &str,
    ) -> Result<Option<Decided>, DecideError> {
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
        let before = approval.approvals.len();
        let now = Utc::now();
        if now > approval.expires_at {
            self.close(
                &mut rec,
                before,
                RunStatus::Expired,
                Decision::Expired,
                "remedy",
            )
            .await?;
            return Err(DecideError::Expired {
                id: id.to_string(),
                at: approval.expires_at.to_rfc3339(),
            });
        }
        if !approve {
            if !self
                .close(
                    &mut rec,
                    before,
                    RunStatus::Rejected,
                    Decision::Rejected,
                    by,
                )
                .await?
            {
                return Ok(None);
            }
            return Ok(Some(Decided {
                plan: rec,
                live_run: None,
            }));
        }
        if let Some(p) = self.paused() {
            return Err(DecideError::Paused { at: p.at, by: p.by });
        }
        if approval.approvals.iter().any(|v| v.by == by) {
            return Err(DecideError::AlreadyApproved {
                id: id.to_string(),
                progress: approval.progress(),
            });
        }
        // Two people means two people: whoever asked for the run is one
        // already, and may not also be the second.
        if approval.required > 1 && requester(&rec).is_some_and(|r| r == by) {
            return Err(DecideError::OwnRequest {
                id: id.to_string(),
                by: by.to_string(),
            });
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
        if let Some(a) = rec.approval.as_mut() {
            a.approvals.push(Vote {
                by: by.to_string(),
                at: now,
            });
        }
        // A human has taken the plan on: the incidents about it are
        // acknowledged once, at the first approval that counted.
        let first = before == 0;
        if before + 1 < approval.required as usize {
            // Not enough yet: the approval is stored, the plan still waits.
            if !self.store.decide(&rec, before).await? {
                return Ok(None);
            }
            if first {
                self.clone().acknowledge_plan(plugin.clone(), rec.clone());
            }
            let progress = rec.approval.as_ref().map(|a| a.progress());
            self.audit(
                Some(&rec.id),
                Some(&rec.plugin),
                "approval.approved_one",
                serde_json::json!({"by": by, "progress": progress}),
            )
            .await;
            self.events.emit(
                "approval.progress",
                Some(&rec.id),
                Some(&rec.plugin),
                || serde_json::json!({"by": by, "progress": progress}),
            );
            self.chat_plan_changed(&rec);
            return Ok(Some(Decided {
                plan: rec,
                live_run: None,
            }));
        }
        // The decision is taken by one conditional update in the store; the
        // live run's id is named in it, so it is launched only by the winner
        // and at most once.
        let live = crate::record::new_run_id();
        if let Some(a) = rec.approval.as_mut() {
            a.live_run = Some(live.clone());
        }
        if !self
            .close(
                &mut rec,
                before,
                RunStatus::Succeeded,
                Decision::Approved,
                by,
            )
            .await?
        {
            return Ok(None);
        }
        if first {
            self.clone().acknowledge_plan(plugin.clone(), rec.clone());
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
        Ok(Some(Decided {
            plan: rec,
            live_run: Some(live),
        }))
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
            if let Some(before) = rec
                .approval
                .as_ref()
                .filter(|a| now > a.expires_at)
                .map(|a| a.approvals.len())
            {
                if let Err(e) = self
                    .close(
                        &mut rec,
                        before,
                        RunStatus::Expired,
                        Decision::Expired,
                        "remedy",
                    )
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
        approvals_before: usize,
        status: RunStatus,
        decision: Decision,
        by: &str,
    ) -> Result<bool, StoreError> {
        rec.status = status;
        if let Some(a) = rec.approval.as_mut() {
            a.decision = Some(decision);
            a.decided_by = Some(by.to_string());
            a.decided_at = Some(Utc::now());
        }
        if !self.store.decide(rec, approvals_before).await? {
            return Ok(false);
        }
        self.audit(
            Some(&rec.id),
            Some(&rec.plugin),
            &format!("approval.{}", decision.as_str()),
            serde_json::json!({
                "by": by,
                "plan": rec.approval.as_ref().map(|a| &a.plan),
                "approvals": rec.approval.as_ref().map(|a| &a.approvals),
                "live_run": rec.approval.as_ref().and_then(|a| a.live_run.clone()),
            }),
        )
        .await;
        self.events
            .emit("approval.decided", Some(&rec.id), Some(&rec.plugin), || {
                serde_json::json!({
                    "decision": decision.as_str(),
                    "by": by,
                    "live_run": rec.approval.as_ref().and_then(|a| a.live_run.clone()),
                })
            });
        self.chat_plan_changed(rec);
        Ok(true)
    }

    /// Turns a finished planning run into a plan waiting for approval (or
    /// leaves it finished when mitigation wanted nothing).
    pub(super) fn plan_for_approval(&self, plugin: &Plugin, rec: &mut RunRecord) {
        rec.mode = Mode::Approve;
        let plan: Vec<PlannedAction> = rec
            .actions
            .iter()
            .filter(|a| a.applied == Applied::Simulated)
            .map(|a| PlannedAction {
                kind: a.kind,
                target: a.target.clone(),
            })
            .collect();
        if rec.status != RunStatus::Succeeded || plan.is_empty() {
            return;
        }
        let expires_at = chrono::Duration::from_std(plugin.settings.limits.approval_ttl)
            .ok()
            .and_then(|ttl| Utc::now().checked_add_signed(ttl))
            .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC);
        rec.status = RunStatus::PendingApproval;
        rec.approval = Some(Approval::new(
            plan,
            expires_at,
            plugin.settings.limits.approvals_required,
        ));
    }
}
