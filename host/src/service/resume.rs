//! Start-up: the runs a previous process stored as `queued` and never got
//! to are resumed under their own ids, or marked `interrupted` when they
//! cannot be.

use std::sync::Arc;

use chrono::Utc;

use super::{Launch, Service};
use crate::record::{RunRecord, RunStatus};
use crate::runtime::Plugin;

impl Service {
    /// Starts the runs a previous process stored as `queued` and never got
    /// to: each resumes under its own id, or is marked `interrupted` when it
    /// cannot (its plugin is gone, its plan is missing).
    pub(crate) async fn resume_queued(self: &Arc<Self>, queued: Vec<RunRecord>) {
        for rec in queued {
            match self.resumable(&rec).await {
                Ok((plugin, l)) => match self.claim(plugin, l) {
                    Ok(c) => {
                        tracing::info!(run_id = %rec.id, plugin = %rec.plugin, "queued run resumed");
                        self.audit(
                            Some(&rec.id),
                            Some(&rec.plugin),
                            "run.resumed",
                            serde_json::json!({"queued_at": rec.started_at}),
                        )
                        .await;
                        // Detached: the run stores its own result.
                        drop(self.spawn_run(c, None));
                    }
                    Err(skipped) => {
                        if let Err(e) = self.store.put_run(&skipped).await {
                            tracing::error!(run_id = %rec.id, error = %e, "skipped not stored");
                        }
                        self.finished(&skipped);
                    }
                },
                Err(why) => {
                    let mut rec = rec;
                    rec.status = RunStatus::Interrupted;
                    rec.error = Some(format!(
                        "queued when the previous Remedy process stopped, and not resumed: {why}"
                    ));
                    rec.finished_at = Some(Utc::now());
                    tracing::warn!(run_id = %rec.id, plugin = %rec.plugin, %why, "queued run not resumed");
                    if let Err(e) = self.store.put_run(&rec).await {
                        tracing::error!(run_id = %rec.id, error = %e, "interrupted not stored");
                    }
                    self.finished(&rec);
                }
            }
        }
    }

    async fn resumable(&self, rec: &RunRecord) -> Result<(Arc<Plugin>, Launch), String> {
        // Resumed with placeholders for its secrets, it would not be the
        // run that was asked for.
        if let Some(k) = rec
            .params
            .iter()
            .find(|(_, v)| v.contains(crate::redact::PLACEHOLDER))
            .map(|(k, _)| k)
        {
            return Err(format!(
                "its param `{k}` held a secret, which the record does not keep; start the run again"
            ));
        }
        let plugin = self
            .registry
            .get(&rec.plugin)
            .ok_or_else(|| format!("plugin `{}` is not loaded", rec.plugin))?;
        let approved = match &rec.approval_of {
            None => None,
            Some(of) => {
                let plan = self
                    .store
                    .get_run(of)
                    .await
                    .map_err(|e| e.to_string())?
                    .and_then(|p| p.approval)
                    .ok_or_else(|| format!("the approved plan {of} is missing"))?;
                Some((of.clone(), Arc::new(plan.plan.into_iter().collect())))
            }
        };
        let l = Launch {
            id: Some(rec.id.clone()),
            trigger: rec.trigger.clone(),
            mode: Some(rec.mode),
            params: rec.params.clone(),
            target: rec
                .target
                .clone()
                .unwrap_or_else(|| format!("run:{}", rec.id)),
            approved,
            waited: false,
        };
        Ok((plugin, l))
    }
}
