//! Guardrails of live actions: budgets (at most N actions of a
//! kind per window, per plugin), a cooldown per target after a live action,
//! the plan an approval allows, and the durable ledger that enforces the
//! first two and writes every live action's intent before it runs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::action::{ActionKind, Budget};
use crate::record::{Applied, PlannedAction};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// A plugin's guardrails after defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Budgets by action kind (others use the kind's default).
    pub budgets: BTreeMap<ActionKind, Budget>,
    /// After a live action on a target, further actions of the plugin on
    /// that target wait this long.
    pub cooldown: Duration,
    /// How long a plan waits for approval.
    pub approval_ttl: Duration,
    /// When verification re-runs detect after a live mitigation.
    pub verify_after: Duration,
    /// The first wait before a repeat of an alert retries a failed run.
    pub retry_after: Duration,
    /// How many distinct people must approve a plan.
    pub approvals_required: u32,
    /// Act on an alert only while Alertmanager still has it firing.
    pub act_only_while_firing: bool,
    /// When Alertmanager cannot say, act on the webhook's word.
    pub act_if_alertmanager_down: bool,
    /// The plugin's own alerts that hold its live actions off.
    pub block_while_firing: Vec<crate::config::alerting::Selector>,
    /// Silence the alert while acting, for this lease (`None`: don't).
    pub silence_lease: Option<Duration>,
    /// At most this many live mitigations of one alert per window.
    pub flap: Option<Flap>,
    /// How runs for one alert go by its occurrence in the window.
    pub ladder: Option<crate::config::Ladder>,
}

/// See [`Limits::flap`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flap {
    pub max: u32,
    pub per: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            budgets: BTreeMap::new(),
            cooldown: Duration::from_secs(300),
            approval_ttl: Duration::from_secs(3600),
            verify_after: Duration::from_secs(30),
            retry_after: Duration::from_secs(30),
            approvals_required: 1,
            act_only_while_firing: true,
            act_if_alertmanager_down: true,
            block_while_firing: Vec::new(),
            silence_lease: None,
            flap: None,
            ladder: None,
        }
    }
}

impl Limits {
    pub fn budget(&self, kind: ActionKind) -> Budget {
        self.budgets
            .get(&kind)
            .copied()
            .unwrap_or_else(|| kind.default_budget())
    }

    pub fn cooldown_for(&self, kind: ActionKind) -> Option<Duration> {
        (!kind.is_notification() && !self.cooldown.is_zero()).then_some(self.cooldown)
    }
}

/// The actions an approval allows: kind and target, nothing else.
pub type Plan = BTreeSet<PlannedAction>;

/// Where a run stands with respect to approval.
#[derive(Debug, Clone, Default)]
pub enum Stage {
    /// The plugin's mode (or the request) decides.
    #[default]
    Normal,
    /// `approve` mode, first pass: a dry run whose simulated actions become
    /// the plan (a cache flush may be planned here, never merely simulated).
    Plan,
    /// The approved plan, live: only these actions may run.
    Approved(std::sync::Arc<Plan>),
    /// Verification after a live mitigation: detect only.
    Verify,
}

/// A live action about to run, as the ledger stores it.
#[derive(Debug, Clone)]
pub struct Intent {
    pub run_id: String,
    pub plugin: String,
    pub kind: ActionKind,
    pub target: String,
    pub reason: String,
    pub at: DateTime<Utc>,
    pub budget: Budget,
    pub cooldown: Option<Duration>,
    /// What the cooldown is kept per: the thing remediated, not the handle
    /// acted on (a database session's application, not its pid, which is
    /// new every time).
    pub cooldown_key: String,
}

/// Why the ledger said no.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// A guardrail: the message says which and until when.
    Guardrail(String),
    /// The ledger could not be written: nothing may run unrecorded.
    Unavailable(String),
    /// The run is no longer this replica's (it was taken over while this
    /// replica stalled): it may not act at all.
    Fenced(String),
}

/// Durable record of live actions: checks budget and cooldown and stores the
/// intent in one step (so concurrent runs cannot both take the last unit of
/// a budget), then stores the result.
#[async_trait]
pub trait Ledger: Send + Sync {
    async fn intend(&self, intent: Intent) -> Result<i64, Refusal>;
    async fn settle(&self, id: i64, applied: Applied, error: Option<String>);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_conservative_and_overridable() {
        let mut l = Limits::default();
        assert_eq!(l.budget(ActionKind::DatabaseTerminate).max, 5);
        assert_eq!(l.budget(ActionKind::CacheFlush).max, 1);
        l.budgets.insert(
            ActionKind::DatabaseTerminate,
            Budget {
                max: 3,
                per: Duration::from_secs(60),
            },
        );
        assert_eq!(l.budget(ActionKind::DatabaseTerminate).max, 3);
        assert_eq!(l.cooldown_for(ActionKind::NotifyEscalate), None);
        assert_eq!(
            l.cooldown_for(ActionKind::BreakerForceState),
            Some(Duration::from_secs(300))
        );
    }
}
