//! The action gate: every mutating host call passes here, in this order:
//! grant + target scope (`denied`); phase (no actions during `detect`:
//! `refused`); the approved plan (`refused` outside it); mode (dry-run
//! records `simulated` and stops); budget and cooldown, checked by the
//! ledger as it durably records the intent (`refused`); execution; the
//! result, durably. Every action, whatever became of it, lands in the run's
//! journal: this is the one place where an action can be allowed.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use chrono::Utc;

use crate::backends::BackendError;
use crate::bindings::types::{Applied as WitApplied, Error as WitError};
use crate::config::{Capability, Scope};
use crate::guardrails::{Intent, Ledger, Limits, Refusal, Stage};
use crate::killswitch::KillSwitch;
use crate::record::{ActionRecord, Applied, PlannedAction};
use crate::runtime::logs::LogBuffer;
use crate::scope::any_match;

/// What a plugin was granted: interfaces and targets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grants {
    pub capabilities: BTreeSet<Capability>,
    pub scope: Scope,
}

impl Grants {
    pub fn has(&self, cap: Capability) -> bool {
        // `log` is harmless and capped: always granted.
        cap == Capability::Log || self.capabilities.contains(&cap)
    }
}

/// Which guest export is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Describe,
    Detect,
    Mitigate,
}

/// What an action acts on, for the scope check.
#[derive(Debug, Clone)]
pub enum Target {
    /// A breaker, by name.
    Breaker(String),
    /// A database session, by the application that owns it.
    DatabaseSession { pid: i32, application: String },
    /// A cache key.
    CacheKey(String),
    /// Every cache key under a prefix (a flush).
    CachePrefix(String),
    /// A notify channel.
    Channel(String),
}

impl Target {
    /// What a cooldown is kept per (see [`crate::guardrails::Intent`]).
    pub fn cooldown_key(&self) -> String {
        match self {
            Target::DatabaseSession { application, .. } => format!("application:{application}"),
            other => other.label(),
        }
    }

    /// How the target appears in the run record.
    pub fn label(&self) -> String {
        match self {
            Target::Breaker(n) => format!("breaker:{n}"),
            Target::DatabaseSession { pid, .. } => format!("pid:{pid}"),
            Target::CacheKey(k) => format!("key:{k}"),
            Target::CachePrefix(p) => format!("prefix:{p}"),
            Target::Channel(c) => format!("channel:{c}"),
        }
    }
}

/// One mutating call as the gate sees it.
#[derive(Debug, Clone)]
pub struct Action {
    /// `interface.function`.
    pub kind: &'static str,
    pub capability: Capability,
    pub target: Target,
    pub reason: String,
}

/// Most actions one run's record keeps. Live ones are bounded by budgets
/// anyway; this bounds what a plugin calling denied or refused functions in
/// a loop can make the host hold.
pub const MAX_ACTIONS: usize = 256;

/// What one run did and logged; shared by the stores of its calls.
#[derive(Clone)]
pub struct Journal {
    /// The actions kept, and how many more were dropped at the cap.
    actions: Arc<Mutex<(Vec<ActionRecord>, usize)>>,
    pub logs: LogBuffer,
}

impl Journal {
    pub fn new(log_cap: usize) -> Self {
        Self {
            actions: Arc::default(),
            logs: LogBuffer::new(log_cap),
        }
    }

    pub fn actions(&self) -> Vec<ActionRecord> {
        self.actions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Actions dropped at [`MAX_ACTIONS`].
    pub fn dropped_actions(&self) -> usize {
        self.actions.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// `false` when the cap dropped it. An action that ran (or may have)
    /// is always kept: only refusals and simulations can be dropped.
    fn push(&self, a: ActionRecord) -> bool {
        let mut g = self.actions.lock().unwrap_or_else(|p| p.into_inner());
        let consequential = matches!(
            a.applied,
            Applied::Executed | Applied::Failed | Applied::Unknown | Applied::Interrupted
        );
        if g.0.len() >= MAX_ACTIONS && !consequential {
            g.1 += 1;
            return false;
        }
        g.0.push(a);
        true
    }
}

/// The gate as one call of one run sees it.
#[derive(Clone)]
pub struct Gate {
    pub plugin: String,
    pub grants: Arc<Grants>,
    pub dry_run: bool,
    pub phase: Phase,
    pub journal: Journal,
    pub run_id: String,
    pub limits: Arc<Limits>,
    pub stage: Stage,
    /// `None` for one-shot CLI runs: no budgets across runs there.
    pub ledger: Option<Arc<dyn Ledger>>,
    /// The service's kill switch, read at the moment of each live action
    /// (`None` for one-shot CLI runs, which have no switch).
    pub kill: Option<KillSwitch>,
    /// When the guest call this gate serves must end: a backend that has
    /// not answered by then is abandoned, so the run records the outcome
    /// itself instead of the deadline cutting it off unrecorded.
    pub deadline: Option<tokio::time::Instant>,
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
    /// Is `target` inside the granted scope?
    fn in_scope(&self, target: &Target) -> bool {
        let scope = &self.grants.scope;
        match target {
            Target::Breaker(name) => any_match(scope.breakers.as_deref().unwrap_or_default(), name),
            Target::DatabaseSession { application, .. } => any_match(
                scope.database_applications.as_deref().unwrap_or_default(),
                application,
            ),
            // Plain prefixes: `tenant:acme:` must not match `tenant:acmex:`
            // the way a glob without its colon would.
            Target::CacheKey(key) | Target::CachePrefix(key) => scope
                .cache_prefixes
                .iter()
                .flatten()
                .any(|p| key.starts_with(p.as_str())),
            Target::Channel(name) => {
                any_match(scope.notify_channels.as_deref().unwrap_or_default(), name)
            }
        }
    }

    /// Checks without recording: `Err` is the refusal.
    fn check(&self, action: &Action) -> Result<(), (Applied, WitError)> {
        if !self.grants.has(action.capability) {
            return Err((
                Applied::Denied,
                WitError::Denied(format!(
                    "interface `{}` is not granted to {}",
                    action.capability.as_str(),
                    self.plugin
                )),
            ));
        }
        if !self.in_scope(&action.target) {
            let what = match &action.target {
                Target::Breaker(n) => format!("breaker `{n}`"),
                Target::DatabaseSession { pid, application } => {
                    format!("session {pid} of application `{application}`")
                }
                Target::CacheKey(k) => format!("cache key `{k}`"),
                Target::CachePrefix(p) => format!("cache prefix `{p}`"),
                Target::Channel(c) => format!("notify channel `{c}`"),
            };
            return Err((
                Applied::Denied,
                WitError::Denied(format!(
                    "{what} is outside the scope granted to {}",
                    self.plugin
                )),
            ));
        }
        if let Target::CachePrefix(p) = &action.target {
            if self.grants.scope.cache_flush != Some(true) {
                return Err((
                    Applied::Denied,
                    WitError::Denied(format!(
                        "flushing `{p}*` needs `cache_flush = true` in the scope of {}",
                        self.plugin
                    )),
                ));
            }
        }
        if self.phase != Phase::Mitigate {
            return Err((
                Applied::Refused,
                WitError::Refused(format!(
                    "{} is a mutation and is not allowed during {:?}",
                    action.kind, self.phase
                )),
            ));
        }
        if let Stage::Approved(plan) = &self.stage {
            let planned = PlannedAction {
                kind: action.kind.to_string(),
                target: action.target.label(),
            };
            if !plan.contains(&planned) {
                return Err((
                    Applied::Refused,
                    WitError::Refused(format!(
                        "{} on {} was not in the approved plan",
                        action.kind,
                        action.target.label()
                    )),
                ));
            }
        }
        let planning = matches!(self.stage, Stage::Plan);
        if matches!(action.target, Target::CachePrefix(_)) && self.dry_run && !planning {
            // A flush cannot be undone and its simulation says nothing about
            // what it would hit a minute later: it runs only when an operator
            // has put the plugin in `auto` on purpose.
            return Err((
                Applied::Refused,
                WitError::Refused(format!(
                    "a full cache flush runs only in mode `auto` or `approve`, never in a dry run of {}",
                    self.plugin
                )),
            ));
        }
        Ok(())
    }

    fn record(&self, action: &Action, applied: Applied, error: Option<String>) {
        use crate::capabilities::types::{caps, cut};
        let error = error.map(|e| cut(&e, caps::MESSAGE));
        let kept = self.journal.push(ActionRecord {
            kind: action.kind.to_string(),
            target: cut(&action.target.label(), caps::LINE),
            reason: cut(&action.reason, caps::MESSAGE),
            applied,
            error: error.clone(),
            at: Utc::now(),
        });
        if kept {
            tracing::info!(
                plugin = %self.plugin,
                kind = action.kind,
                target = %action.target.label(),
                applied = ?applied,
                error = error.as_deref().unwrap_or(""),
                "action"
            );
        }
    }

    /// Passes `action` through the gate and, when it may run live, runs
    /// `execute`.
    pub async fn act<F, Fut>(&self, action: Action, execute: F) -> Result<WitApplied, WitError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), BackendError>>,
    {
        if let Err((applied, err)) = self.check(&action) {
            self.record(&action, applied, Some(error_text(&err)));
            return Err(err);
        }
        if self.dry_run {
            self.record(&action, Applied::Simulated, None);
            return Ok(WitApplied::Simulated);
        }
        // The run may have decided to act live before the switch was pulled
        // (queued behind the concurrency bound, or mid-mitigation): the
        // switch as it is now is what counts.
        if let Some(pause) = self.kill.as_ref().and_then(KillSwitch::get) {
            if action.capability == Capability::Notify {
                // Telling humans is not remediation: while automation is
                // paused they need to hear more, not less.
                self.note(format!(
                    "{}; {} to {} sent anyway: notifications are not paused",
                    pause.describe(),
                    action.kind,
                    action.target.label()
                ));
            } else {
                let err = WitError::Refused(format!(
                    "{}: live actions are not run while automation is paused",
                    pause.describe()
                ));
                self.record(&action, Applied::Refused, Some(error_text(&err)));
                return Err(err);
            }
        }
        let intent = match &self.ledger {
            None => None,
            Some(ledger) => match ledger.intend(self.intent(&action)).await {
                Ok(id) => Some((ledger.clone(), id)),
                Err(refusal) => {
                    let err = match refusal {
                        Refusal::Guardrail(m) => WitError::Refused(m),
                        Refusal::Unavailable(m) => WitError::Unavailable(format!(
                            "the action was not run because its intent could not be recorded: {m}"
                        )),
                    };
                    self.record(&action, Applied::Refused, Some(error_text(&err)));
                    return Err(err);
                }
            },
        };
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
        let outcome = match self.deadline {
            Some(deadline) => {
                let by = deadline.checked_sub(DEADLINE_MARGIN).unwrap_or(deadline);
                match tokio::time::timeout_at(by, execute()).await {
                    Ok(r) => r,
                    Err(_) => Err(BackendError::Unknown(format!(
                        "no answer before the run's deadline ({} was still waiting for its backend)",
                        action.kind
                    ))),
                }
            }
            None => execute().await,
        };
        let (applied, result) = match outcome {
            Ok(()) => (Applied::Executed, Ok(WitApplied::Executed)),
            Err(BackendError::Unknown(m)) => (
                Applied::Unknown,
                Err(WitError::Unavailable(format!(
                    "{m}: the request was sent, whether it took effect is unknown"
                ))),
            ),
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

    fn intent(&self, action: &Action) -> Intent {
        Intent {
            run_id: self.run_id.clone(),
            plugin: self.plugin.clone(),
            kind: action.kind.to_string(),
            target: action.target.label(),
            reason: action.reason.clone(),
            at: Utc::now(),
            budget: self.limits.budget(action.kind),
            cooldown: self.limits.cooldown_for(action.kind),
            cooldown_key: action.target.cooldown_key(),
        }
    }

    /// Records a call that was refused before reaching the gate proper
    /// (e.g. a probe outside the allow-list), so the run shows it.
    pub fn note(&self, line: String) {
        self.journal.logs.line(format!("[remedy] {line}"));
    }
}

/// Fault injection for the crash-safety test: with this variable set, the
/// process aborts right after an action's intent is durable and before the
/// action runs — the window the write-ahead audit exists for.
pub const ABORT_AFTER_INTENT: &str = "REMEDY_FAULT_ABORT_AFTER_INTENT";

/// A backend error as the plugin receives it.
pub fn wit_error(e: BackendError) -> WitError {
    match e {
        BackendError::Unavailable(m) | BackendError::Unknown(m) => WitError::Unavailable(m),
        BackendError::Invalid(m) => WitError::Invalid(m),
        BackendError::Failed(m) => WitError::Failed(m),
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::killswitch::Pause;

    fn gate(kill: &KillSwitch) -> Gate {
        Gate {
            plugin: "p".into(),
            grants: Arc::new(Grants {
                capabilities: [Capability::Breaker, Capability::Notify].into(),
                scope: Scope {
                    breakers: Some(vec!["*".into()]),
                    notify_channels: Some(vec!["*".into()]),
                    ..Scope::default()
                },
            }),
            dry_run: false,
            phase: Phase::Mitigate,
            journal: Journal::new(4096),
            run_id: "r".into(),
            limits: Arc::default(),
            stage: Stage::Normal,
            ledger: None,
            kill: Some(kill.clone()),
            deadline: None,
        }
    }

    fn action(capability: Capability, target: Target) -> Action {
        Action {
            kind: if capability == Capability::Notify {
                "notify.send"
            } else {
                "breaker.force-state"
            },
            capability,
            target,
            reason: "test".into(),
        }
    }

    /// A run that decided to act live before the switch was pulled must not
    /// act after it (issue 9, item 2): the gate reads the switch as it is.
    #[tokio::test]
    async fn the_kill_switch_is_read_at_the_moment_of_the_action() {
        let kill = KillSwitch::default();
        let g = gate(&kill);
        let calls = Arc::new(AtomicUsize::new(0));
        let run = |g: Gate, a: Action| {
            let calls = calls.clone();
            async move {
                g.act(a, || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .await
            }
        };
        let breaker = || action(Capability::Breaker, Target::Breaker("stripe".into()));
        assert!(matches!(
            run(g.clone(), breaker()).await,
            Ok(WitApplied::Executed)
        ));
        kill.set(Some(Pause {
            by: "alice".into(),
            at: "2026-11-27T03:00:00Z".into(),
            reason: Some("bad deploy".into()),
        }));
        let err = run(g.clone(), breaker()).await.unwrap_err();
        assert!(
            matches!(&err, WitError::Refused(m) if m.contains("kill switch") && m.contains("alice") && m.contains("bad deploy")),
            "{err:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1, "nothing ran while paused");
        // Telling humans goes on, and the run says so.
        let notify = action(Capability::Notify, Target::Channel("oncall".into()));
        assert!(matches!(
            run(g.clone(), notify).await,
            Ok(WitApplied::Executed)
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let actions = g.journal.actions();
        assert_eq!(actions[1].applied, Applied::Refused);
        assert!(g
            .journal
            .logs
            .lines()
            .iter()
            .any(|l| l.contains("notifications are not paused")));
        kill.set(None);
        assert!(matches!(run(g, breaker()).await, Ok(WitApplied::Executed)));
    }

    /// A backend that does not answer before the call's deadline leaves an
    /// `unknown` action in the run at once (issue 9, items 9 and 20).
    #[tokio::test]
    async fn a_backend_silent_past_the_deadline_is_recorded_unknown_in_time() {
        let mut g = gate(&KillSwitch::default());
        g.deadline = Some(tokio::time::Instant::now() + std::time::Duration::from_millis(200));
        let started = std::time::Instant::now();
        let r = g
            .act(
                action(Capability::Breaker, Target::Breaker("stripe".into())),
                || async {
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    Ok(())
                },
            )
            .await;
        assert!(started.elapsed() < std::time::Duration::from_millis(1000));
        assert!(
            matches!(&r, Err(WitError::Unavailable(m)) if m.contains("unknown")),
            "{r:?}"
        );
        let a = g.journal.actions();
        assert_eq!(a[0].applied, Applied::Unknown, "{a:?}");
        assert!(a[0].error.as_deref().unwrap().contains("deadline"));
    }

    /// A plugin calling what it may not in a loop cannot grow its record
    /// without bound (issue 9, item 13).
    #[tokio::test]
    async fn refusals_past_the_cap_are_counted_not_kept() {
        let mut g = gate(&KillSwitch::default());
        g.phase = Phase::Detect;
        for _ in 0..(MAX_ACTIONS + 1000) {
            let _ = g
                .act(
                    action(Capability::Breaker, Target::Breaker("x".repeat(10_000))),
                    || async { Ok(()) },
                )
                .await;
        }
        let a = g.journal.actions();
        assert_eq!(a.len(), MAX_ACTIONS);
        assert_eq!(g.journal.dropped_actions(), 1000);
        assert!(a[0].target.len() <= 1100, "{}", a[0].target.len());
    }

    /// If the call is abandoned anyway (its future dropped mid-action), the
    /// action is recorded `interrupted` by the drop, not lost.
    #[tokio::test]
    async fn an_action_abandoned_mid_flight_is_recorded_interrupted() {
        let g = gate(&KillSwitch::default());
        let act = g.act(
            action(Capability::Breaker, Target::Breaker("stripe".into())),
            std::future::pending::<Result<(), BackendError>>,
        );
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(100), act)
                .await
                .is_err()
        );
        let a = g.journal.actions();
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].applied, Applied::Interrupted);
        assert!(a[0].error.as_deref().unwrap().contains("unknown"));
    }
}
