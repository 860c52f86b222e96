//! The one invocation path: detect, then (when unhealthy and the alert
//! still fires) mitigate, through the gate; every trigger ends up here.

use std::sync::Arc;

use chrono::Utc;
use tracing::Instrument;

use super::*;

impl Remedy {
    /// The one invocation path: detect, then (when unhealthy and the alert
    /// still fires) mitigate; every trigger ends up here.
    pub async fn run(&self, plugin: &Plugin, req: RunRequest) -> RunRecord {
        self.run_with_id(plugin, req, crate::record::new_run_id())
            .await
    }

    /// `run` with an id the caller already handed out (the service stores
    /// a `running` record under it before the run starts).
    pub async fn run_with_id(&self, plugin: &Plugin, req: RunRequest, id: String) -> RunRecord {
        let span = tracing::info_span!("run", plugin = %plugin.name(), run_id = %id, digest = %plugin.digest);
        self.run_inner(plugin, req, id).instrument(span).await
    }

    /// What a live action of this run must ask Alertmanager first: the
    /// plugin's and the server's blocking alerts, and whether the alert
    /// that started it still fires.
    fn alert_guard(
        &self,
        settings: &crate::runtime::PluginSettings,
        trigger: &crate::record::Trigger,
        run_id: &str,
    ) -> Option<crate::alertmanager::guard::AlertGuard> {
        let limits = &settings.limits;
        let mut blockers = limits.block_while_firing.clone();
        blockers.extend(
            self.config
                .server
                .block_while_firing
                .iter()
                .flatten()
                .cloned(),
        );
        let alert = match trigger {
            crate::record::Trigger::Alert { alert } => Some(alert),
            _ => None,
        };
        crate::alertmanager::guard::AlertGuard::for_run(
            self.alerts.clone(),
            alert,
            limits.act_only_while_firing,
            limits.act_if_alertmanager_down,
            blockers,
            limits.silence_lease.map(|lease| crate::alertmanager::guard::SilenceWhileActing {
                run_id: run_id.to_string(),
                lease,
                comment: format!(
                    "Remedy run {run_id} is acting on this alert; the silence ends when its verification does, or within {}s if Remedy stops",
                    lease.as_secs()
                ),
                leases: self.silences.clone(),
            }),
        )
    }

    async fn run_inner(&self, plugin: &Plugin, req: RunRequest, id: String) -> RunRecord {
        let started = Utc::now();
        let clock = std::time::Instant::now();
        let settings = &plugin.settings;
        let dry_run = Self::dry_run_for(plugin, req.dry_run);
        let mut config = settings.config.clone();
        config.extend(req.params.clone());
        let config: Vec<(String, String)> = config.into_iter().collect();
        let ctx = conv::context(&id, &req.trigger, &config, dry_run);
        let journal = Journal::new(LOG_CAP);
        let run = Arc::new(RunGate {
            plugin: plugin.name().to_string(),
            run_id: id.clone(),
            grants: settings.grants.clone(),
            limits: settings.limits.clone(),
            dry_run,
            stage: req.stage.clone(),
            journal: journal.clone(),
            ledger: self.ledger.clone(),
            kill: self.kill.clone(),
            subject: req.trigger.subject().map(String::from),
            alert_guard: self.alert_guard(settings, &req.trigger, &id).map(Arc::new),
        });
        let setup = || CallSetup {
            run: &run,
            settings,
            backends: &self.backends,
            escalation: &self.escalation,
        };
        let mut rec = RunRecord::begin(
            id.clone(),
            &plugin.plugin_ref(),
            req.trigger.clone(),
            dry_run,
            RunStatus::Running,
        );
        rec.started_at = started;
        rec.trace_id = crate::telemetry::trace_id(&tracing::Span::current());
        let (status, error) = match self
            .runtime
            .detect(plugin, setup(), ctx.clone())
            .instrument(tracing::info_span!("detect"))
            .await
        {
            Err(e) => call_failed("detect", e),
            Ok(Err(e)) => plugin_failed("detect", &e),
            Ok(Ok(det)) => {
                let (detection, notes) = conv::detection(&det);
                rec.detection = Some(detection);
                notes.into_iter().for_each(|n| journal.logs.host_line(n));
                let resolved = matches!(&req.trigger, Trigger::Alert { alert } if !alert.firing);
                let verifying = matches!(req.stage, crate::guardrails::Stage::Verify);
                if det.healthy || verifying {
                    (RunStatus::Succeeded, None)
                } else if resolved {
                    journal
                        .logs
                        .line("[remedy] alert is resolved: no mitigation".into());
                    (RunStatus::Succeeded, None)
                } else {
                    match self
                        .runtime
                        .mitigate(plugin, setup(), ctx, det)
                        .instrument(tracing::info_span!("mitigate"))
                        .await
                    {
                        Err(e) => call_failed("mitigate", e),
                        Ok(Err(e)) => plugin_failed("mitigate", &e),
                        Ok(Ok(outcome)) => {
                            let (outcome, notes) = conv::outcome(outcome);
                            rec.outcome = Some(outcome);
                            notes.into_iter().for_each(|n| journal.logs.host_line(n));
                            (RunStatus::Succeeded, None)
                        }
                    }
                }
            }
        };
        rec.status = status;
        rec.error = error;
        rec.actions = journal.actions();
        rec.silence = self.silences.id_of(&id);
        let dropped = journal.dropped_actions();
        if dropped > 0 {
            journal.logs.host_line(format!(
                "[remedy] {dropped} more refused or simulated actions were not kept (at most {} per run)",
                crate::journal::MAX_ACTIONS
            ));
        }
        rec.logs = journal.logs.lines();
        rec.finished_at = Some(Utc::now());
        rec.duration_ms = Some(clock.elapsed().as_millis() as u64);
        tracing::info!(
            status = rec.status.as_str(),
            actions = rec.actions.len(),
            duration_ms = rec.duration_ms,
            "run finished"
        );
        rec
    }
}

fn call_failed(phase: &str, e: CallError) -> (RunStatus, Option<String>) {
    let status = match e {
        CallError::TimedOut(_) => RunStatus::TimedOut,
        CallError::OutOfMemory(_) => RunStatus::OutOfMemory,
        CallError::Trapped(_) => RunStatus::Trapped,
    };
    (status, Some(format!("{phase}: {e}")))
}

fn plugin_failed(phase: &str, e: &crate::bindings::types::Error) -> (RunStatus, Option<String>) {
    let status = match e {
        crate::bindings::types::Error::Denied(_) => RunStatus::Denied,
        _ => RunStatus::Failed,
    };
    let text = conv::cut(&error_text(e), conv::caps::MESSAGE);
    (status, Some(format!("{phase}: {text}")))
}
