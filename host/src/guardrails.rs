//! Guardrails of live actions (DESIGN §6): budgets (at most N actions of a
//! kind per window, per plugin), a cooldown per target after a live action,
//! the plan an approval allows, and the durable ledger that enforces the
//! first two and writes every live action's intent before it runs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::record::{Applied, PlannedAction};

/// At most `max` actions per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max: u32,
    pub per: Duration,
}

/// A budget as configured: `{ max = 3, per = "1h" }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub max: u32,
    pub per: String,
}

const HOUR: Duration = Duration::from_secs(3600);

/// Conservative defaults per action kind: a runbook that goes wrong can
/// never do much damage in an hour before a human notices.
pub fn default_budget(kind: &str) -> Budget {
    let max = match kind {
        "database.terminate" => 5,
        "database.cancel" => 10,
        "breaker.force-state" => 6,
        "cache.delete" | "cache.expire" => 1000,
        "cache.flush" => 1,
        "notify.send" | "notify.escalate" => 30,
        _ => 5,
    };
    Budget { max, per: HOUR }
}

/// Kinds a cooldown does not apply to: telling a human twice is no harm.
fn cooldown_exempt(kind: &str) -> bool {
    kind.starts_with("notify.")
}

/// A plugin's guardrails after defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Budgets by action kind (others use [`default_budget`]).
    pub budgets: BTreeMap<String, Budget>,
    /// After a live action on a target, further actions of the plugin on
    /// that target wait this long.
    pub cooldown: Duration,
    /// How long a plan waits for approval.
    pub approval_ttl: Duration,
    /// When verification re-runs detect after a live mitigation.
    pub verify_after: Duration,
    /// The first wait before a repeat of an alert retries a failed run.
    pub retry_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            budgets: BTreeMap::new(),
            cooldown: Duration::from_secs(300),
            approval_ttl: HOUR,
            verify_after: Duration::from_secs(30),
            retry_after: Duration::from_secs(30),
        }
    }
}

impl Limits {
    pub fn budget(&self, kind: &str) -> Budget {
        self.budgets
            .get(kind)
            .copied()
            .unwrap_or_else(|| default_budget(kind))
    }

    pub fn cooldown_for(&self, kind: &str) -> Option<Duration> {
        (!cooldown_exempt(kind) && !self.cooldown.is_zero()).then_some(self.cooldown)
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
    pub kind: String,
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
}

/// Durable record of live actions: checks budget and cooldown and stores the
/// intent in one step (so concurrent runs cannot both take the last unit of
/// a budget), then stores the result.
#[async_trait]
pub trait Ledger: Send + Sync {
    async fn intend(&self, intent: Intent) -> Result<i64, Refusal>;
    async fn settle(&self, id: i64, applied: Applied, error: Option<String>);
}

/// The longest guardrail duration (budget window, cooldown, approval TTL,
/// verification delay): a year. Longer is a typo, and would overflow the
/// time arithmetic downstream.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Parses config durations such as `30s`, `5m`, `1h`.
/// `0s` (or `0`) is zero: a guardrail turned off on purpose.
pub fn duration(key: &str, v: &str) -> Result<Duration, String> {
    if matches!(v.trim(), "0" | "0s" | "0m" | "0h" | "0ms") {
        return Ok(Duration::ZERO);
    }
    let d = crate::triggers::schedule::parse_duration(v).map_err(|e| format!("{key}: {e}"))?;
    if d > MAX_DURATION {
        return Err(format!("{key}: `{v}` is longer than a year (8784h)"));
    }
    Ok(d)
}

/// Every action kind the gate knows (`interface.function`): budget keys
/// must be one of these.
pub const ACTION_KINDS: &[&str] = &[
    "database.cancel",
    "database.terminate",
    "breaker.force-state",
    "cache.delete",
    "cache.expire",
    "cache.flush",
    "notify.send",
    "notify.escalate",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_conservative_and_overridable() {
        let mut l = Limits::default();
        assert_eq!(l.budget("database.terminate").max, 5);
        assert_eq!(l.budget("cache.flush").max, 1);
        l.budgets.insert(
            "database.terminate".into(),
            Budget {
                max: 3,
                per: Duration::from_secs(60),
            },
        );
        assert_eq!(l.budget("database.terminate").max, 3);
        assert_eq!(l.cooldown_for("notify.escalate"), None);
        assert_eq!(
            l.cooldown_for("breaker.force-state"),
            Some(Duration::from_secs(300))
        );
    }
}
