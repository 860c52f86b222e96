//! The action gate: every mutating host call passes here, in this order:
//! grant + target scope (`denied`); phase (no actions during `detect`:
//! `refused`); the approved plan (`refused` outside it); a backend to act
//! on (`refused` when none is configured); mode (dry-run records
//! `simulated` and stops); the kill switch; Alertmanager, for a run an
//! alert started (`refused` when the alert no longer fires or a
//! `block_while_firing` alert does); budget and cooldown, checked by
//! the ledger as it durably records the intent (`refused`); execution with
//! a [`Permit`]; the result, durably. Every action, whatever became of it
//! (including refusals before it reached the gate proper, see
//! [`Gate::refuse`]), lands in the run's journal: this is the one place
//! where an action can be allowed, and the only maker of permits.

use std::future::Future;
use std::sync::Arc;

use chrono::Utc;
use tracing::Instrument;

use crate::backends::BackendError;
use crate::bindings::types::{Applied as WitApplied, Error as WitError};
use crate::grants::Grants;
use crate::guardrails::{Intent, Ledger, Limits, Refusal, Stage};
use crate::journal::Journal;
use crate::killswitch::KillSwitch;
use crate::record::{caps, cut, ActionRecord, Applied, PlannedAction};

mod target;

pub use crate::permit::Permit;
pub use target::{glob_scope, outside, Action, ActionTarget};

/// Which guest export is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Describe,
    Detect,
    Mitigate,
}

/// What the gate knows of one run; shared by every call of it.
pub struct RunGate {
    pub plugin: String,
    pub run_id: String,
    pub grants: Arc<Grants>,
    pub limits: Arc<Limits>,
    pub dry_run: bool,
    pub stage: Stage,
    pub journal: Journal,
    /// `None` for one-shot CLI runs: no budgets across runs there.
    pub ledger: Option<Arc<dyn Ledger>>,
    /// The service's kill switch, read at the moment of each live action
    /// (`None` for one-shot CLI runs, which have no switch).
    pub kill: Option<KillSwitch>,
    /// What the run is about (see [`crate::record::Trigger::subject`]).
    pub subject: Option<String>,
    /// Asked before the first live action: does the alert still fire, does
    /// a blocking alert fire? (`None`: nothing to ask.)
    pub alert_guard: Option<Arc<crate::alertmanager::guard::AlertGuard>>,
}

impl RunGate {
    /// A run of `plugin` with `grants`: default limits, no approval stage,
    /// a fresh journal, and no ledger or kill switch (one-shot runs; the
    /// service sets both).
    pub fn new(plugin: &str, run_id: &str, grants: Arc<Grants>, dry_run: bool) -> RunGate {
        RunGate {
            plugin: plugin.to_string(),
            run_id: run_id.to_string(),
            grants,
            limits: Arc::default(),
            dry_run,
            stage: Stage::Normal,
            journal: Journal::new(crate::journal::LOG_CAP),
            ledger: None,
            kill: None,
            subject: None,
            alert_guard: None,
        }
    }

    /// The gate of one guest call (or of one host-initiated action).
    /// This is the only way to make a [`Gate`].
    pub fn call(self: &Arc<Self>, phase: Phase, deadline: Option<tokio::time::Instant>) -> Gate {
        Gate {
            run: self.clone(),
            phase,
            deadline,
        }
    }
}

/// The gate as one call of one run sees it.
#[derive(Clone)]
pub struct Gate {
    run: Arc<RunGate>,
    pub phase: Phase,
    /// When the guest call this gate serves must end: a backend that has
    /// not answered by then is abandoned, so the run records the outcome
    /// itself instead of the deadline cutting it off unrecorded.
    pub deadline: Option<tokio::time::Instant>,
}

impl std::ops::Deref for Gate {
    type Target = RunGate;
    fn deref(&self) -> &RunGate {
        &self.run
    }
}

/// How long before the call's deadline the gate stops waiting for a
/// backend, so that the result is still recorded inside the deadline.
pub const DEADLINE_MARGIN: std::time::Duration = std::time::Duration::from_millis(50);

/// An action whose intent is durable and whose result is not yet recorded.
/// If the future running it is dropped (the run's deadline fired while the
/// backend had not answered), the drop records it as `interrupted` in the
/// run and settles the intent, so the record shows it at once, not after a
/// restart.
struct InFlight<'a> {
    gate: &'a Gate,
    action: &'a Action,
    intent: Option<(Arc<dyn Ledger>, i64)>,
    open: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let error = "the run's deadline fired while this action was in flight: whether it took effect is unknown; check the target".to_string();
        self.gate
            .record(self.action, Applied::Interrupted, Some(error.clone()));
        if let Some((ledger, id)) = self.intent.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { ledger.settle(id, Applied::Interrupted, Some(error)).await });
            }
        }
    }
}

impl Gate {
    /// Checks without recording: `Err` is the refusal.
    fn check(&self, action: &Action) -> Result<(), (Applied, WitError)> {
        let denied = |m: String| (Applied::Denied, WitError::Denied(m));
        let refused = |m: String| (Applied::Refused, WitError::Refused(m));
        self.grants
            .check(action.kind.capability(), &self.plugin)
            .map_err(denied)?;
        action
            .target
            .check_scope(&self.grants.scope, &self.plugin)
            .map_err(denied)?;
        if self.phase != Phase::Mitigate {
            return Err(refused(format!(
                "{} is a mutation and is not allowed during {:?}",
                action.kind, self.phase
            )));
        }
        if let Stage::Approved(plan) = &self.stage {
            let planned = PlannedAction {
                kind: action.kind,
                target: action.target.label(),
            };
            if !plan.contains(&planned) {
                return Err(refused(format!(
                    "{} on {} was not in the approved plan",
                    action.kind,
                    action.target.label()
                )));
            }
        }
        let planning = matches!(self.stage, Stage::Plan);
        if action.kind.never_simulated() && self.dry_run && !planning {
            return Err(refused(format!(
                "{} runs only in mode `auto` or `approve`, never in a dry run of {}",
                action.kind, self.plugin
            )));
        }
        Ok(())
    }

    fn record(&self, action: &Action, applied: Applied, error: Option<String>) {
        let error = error.map(|e| cut(&e, caps::MESSAGE));
        let kept = self.journal.push(ActionRecord {
            kind: action.kind,
            target: cut(&action.target.label(), caps::LINE),
            reason: cut(&action.reason, caps::MESSAGE),
            applied,
            error: error.clone(),
            at: Utc::now(),
            incident: action.incident.clone(),
            result: action.result.get().map(|r| cut(r, caps::LINE)),
        });
        if kept {
            tracing::info!(
                plugin = %self.plugin,
                kind = action.kind.as_str(),
                target = %action.target.label(),
                applied = ?applied,
                error = error.as_deref().unwrap_or(""),
                "action"
            );
        }
    }

    /// Records an action refused before it could reach the gate proper (an
    /// invalid argument, a session that does not exist) and hands the error
    /// back: the run's record shows every action a plugin asked for.
    pub fn refuse(&self, action: &Action, err: WitError) -> WitError {
        let applied = match err {
            WitError::Denied(_) => Applied::Denied,
            _ => Applied::Refused,
        };
        self.record(action, applied, Some(error_text(&err)));
        err
    }

    /// Passes `action` through the gate and, when it may run live, runs
    /// `execute` with the backend and the permit its mutating methods
    /// take. `backend` is `Err` when none is configured. The whole passage
    /// is one `host_call` span.
    pub async fn act<B, F, Fut>(
        &self,
        action: Action,
        backend: Result<B, WitError>,
        execute: F,
    ) -> Result<WitApplied, WitError>
    where
        F: FnOnce(B, Permit) -> Fut,
        Fut: Future<Output = Result<(), BackendError>>,
    {
        let kind = action.kind.as_str();
        let (capability, function) = kind.split_once('.').unwrap_or((kind, kind));
        let span = host_call_span(capability, function, &action.target.label());
        // The gate's decision, inside the host call: traces show what each
        // action came to (executed, simulated, refused, denied…).
        let decision = tracing::info_span!(
            parent: &span,
            "gate.action",
            kind,
            target = %action.target.label(),
            dry_run = self.dry_run,
            outcome = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let r = async move {
            if let Err((applied, err)) = self.check(&action) {
                self.record(&action, applied, Some(error_text(&err)));
                return Err(err);
            }
            let backend = match backend {
                Ok(b) => b,
                Err(e) => return Err(self.refuse(&action, e)),
            };
            if self.dry_run {
                self.record(&action, Applied::Simulated, None);
                return Ok(WitApplied::Simulated);
            }
            // The run may have decided to act live before the switch was pulled
            // (queued behind the concurrency bound, or mid-mitigation): the
            // switch as it is now is what counts.
            if let Some(pause) = self.kill.as_ref().and_then(KillSwitch::get) {
                if action.kind.is_notification() {
                    // Telling humans is not remediation: while automation is
                    // paused they need to hear more, not less.
                    self.note(format!(
                        "{}; {} to {} sent anyway: notifications are not paused",
                        pause.describe(),
                        action.kind,
                        action.target.label()
                    ));
                } else {
                    let err = WitError::Refused(pause.refusal());
                    return Err(self.refuse(&action, err));
                }
            }
            if let Some(why) = self.alert_hold(&action).await {
                return Err(self.refuse(&action, WitError::Refused(why)));
            }
            let intent = match &self.ledger {
                None => None,
                Some(ledger) => match ledger.intend(self.intent(&action)).await {
                    Ok(id) => Some((ledger.clone(), id)),
                    Err(refusal) => {
                        let err = match refusal {
                            Refusal::Guardrail(m) => WitError::Refused(m),
                            Refusal::Fenced(m) => WitError::Refused(m),
                            Refusal::Unavailable(m) => WitError::Unavailable(format!(
                                "the action was not run because its intent could not be recorded: {m}"
                            )),
                        };
                        return Err(self.refuse(&action, err));
                    }
                },
            };
            #[cfg(feature = "fault-injection")]
            if intent.is_some() && std::env::var_os(ABORT_AFTER_INTENT).is_some() {
                tracing::error!("{ABORT_AFTER_INTENT} is set: aborting between intent and action");
                std::process::abort();
            }
            let mut flight = InFlight {
                gate: self,
                action: &action,
                intent,
                open: true,
            };
            let run = execute(backend, Permit::new());
            let outcome = match self.deadline {
                Some(deadline) => {
                    let by = deadline.checked_sub(DEADLINE_MARGIN).unwrap_or(deadline);
                    match tokio::time::timeout_at(by, run).await {
                        Ok(r) => r,
                        Err(_) => Err(BackendError::Unknown(format!(
                            "no answer before the run's deadline ({} was still waiting for its backend)",
                            action.kind
                        ))),
                    }
                }
                None => run.await,
            };
            let (applied, result) = match outcome {
                Ok(()) => (Applied::Executed, Ok(WitApplied::Executed)),
                Err(BackendError::Unknown(m)) => (
                    Applied::Unknown,
                    Err(WitError::Unavailable(format!(
                        "{m}: the request was sent, whether it took effect is unknown"
                    ))),
                ),
                Err(BackendError::Refused(m)) => (Applied::Refused, Err(WitError::Refused(m))),
                Err(e) => (Applied::Failed, Err(wit_error(e))),
            };
            let error = result.as_ref().err().map(error_text);
            if let Some((ledger, id)) = flight.intent.take() {
                ledger.settle(id, applied, error.clone()).await;
            }
            flight.open = false;
            drop(flight);
            self.record(&action, applied, error);
            result
        }
        .instrument(decision.clone())
        .instrument(span.clone())
        .await;
        let outcome = r.as_ref().map(|a| match a {
            WitApplied::Executed => "executed",
            WitApplied::Simulated => "simulated",
        });
        finish_span(&decision, started, outcome);
        finish_span(&span, started, outcome);
        r
    }

    fn intent(&self, action: &Action) -> Intent {
        Intent {
            run_id: self.run_id.clone(),
            plugin: self.plugin.clone(),
            kind: action.kind,
            target: action.target.label(),
            reason: action.reason.clone(),
            at: Utc::now(),
            budget: self.limits.budget(action.kind),
            cooldown: self.limits.cooldown_for(action.kind),
            cooldown_key: action.target.cooldown_key(),
        }
    }

    /// A line of the host's in the run's log (a probe outside the
    /// allow-list, an escalation channel skipped).
    /// Why the alert guard holds `action` off, if it does (notifications
    /// always go: telling humans is not acting). Bounded by the call's
    /// deadline: an Alertmanager that does not answer holds the run off.
    async fn alert_hold(&self, action: &Action) -> Option<String> {
        let guard = self
            .alert_guard
            .as_ref()
            .filter(|_| !action.kind.is_notification())?;
        let ask = guard.verdict(|line| self.note(line));
        let verdict = match self.deadline {
            Some(d) => {
                let by = d.checked_sub(DEADLINE_MARGIN).unwrap_or(d);
                match tokio::time::timeout_at(by, ask).await {
                    Ok(v) => v.clone(),
                    Err(_) => crate::alertmanager::guard::Verdict::Hold(
                        "held off: Alertmanager did not answer before the run's deadline".into(),
                    ),
                }
            }
            None => ask.await.clone(),
        };
        match verdict {
            crate::alertmanager::guard::Verdict::Hold(why) => Some(why),
            crate::alertmanager::guard::Verdict::Act(_) => None,
        }
    }

    pub fn note(&self, line: String) {
        self.journal.logs.line(format!("[remedy] {line}"));
    }
}

/// Fault injection for the crash-safety test (built only with the
/// `fault-injection` feature): with this variable set, the process aborts
/// right after an action's intent is durable and before the action runs —
/// the window the write-ahead audit exists for.
#[cfg(feature = "fault-injection")]
pub const ABORT_AFTER_INTENT: &str = "REMEDY_FAULT_ABORT_AFTER_INTENT";

/// A backend error as the plugin receives it.
pub fn wit_error(e: BackendError) -> WitError {
    match e {
        BackendError::Unavailable(m) | BackendError::Unknown(m) => WitError::Unavailable(m),
        BackendError::Invalid(m) => WitError::Invalid(m),
        BackendError::Failed(m) => WitError::Failed(m),
        BackendError::Refused(m) => WitError::Refused(m),
    }
}

/// `kind: message`, as operators read errors in records.
pub fn error_text(e: &WitError) -> String {
    match e {
        WitError::Denied(m) => format!("denied: {m}"),
        WitError::Unavailable(m) => format!("unavailable: {m}"),
        WitError::Invalid(m) => format!("invalid: {m}"),
        WitError::Refused(m) => format!("refused: {m}"),
        WitError::Failed(m) => format!("failed: {m}"),
    }
}

/// The span of one host call; `outcome` and `duration_ms` are filled in by
/// [`finish_span`].
pub fn host_call_span(capability: &str, function: &str, target: &str) -> tracing::Span {
    tracing::info_span!(
        "host_call",
        capability,
        function,
        target,
        outcome = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    )
}

/// Records how a host call ended in its span.
pub fn finish_span(span: &tracing::Span, started: std::time::Instant, r: Result<&str, &WitError>) {
    // With no subscriber listening (benchmarks, `RUST_LOG=off`) a span is
    // disabled: nothing to format.
    if span.is_disabled() {
        return;
    }
    let outcome = match r {
        Ok(o) => o,
        Err(WitError::Denied(_)) => "denied",
        Err(WitError::Unavailable(_)) => "unavailable",
        Err(WitError::Invalid(_)) => "invalid",
        Err(WitError::Refused(_)) => "refused",
        Err(WitError::Failed(_)) => "failed",
    };
    span.record("outcome", outcome);
    span.record("duration_ms", started.elapsed().as_secs_f64() * 1000.0);
}

#[cfg(test)]
mod tests;
