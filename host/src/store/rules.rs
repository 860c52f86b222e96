//! What every store counts and says the same way: budget and cooldown
//! windows, their refusals, and the words for work a stopped process left
//! unfinished.

use crate::action::ActionKind;
use crate::guardrails::Intent;

/// Ledger statuses that spend a budget or start a cooldown: interrupted
/// and unknown actions may have taken effect.
pub(super) const COUNTED: &str = "('intent', 'executed', 'interrupted', 'unknown')";

/// Counts runs by hour and status: one query, whatever the number of runs.
pub(super) const RUN_COUNTS_SQL: &str =
    "SELECT substr(started_at, 1, 13), status, count(*) FROM runs \
     WHERE started_at >= $1 GROUP BY substr(started_at, 1, 13), status";

/// The actions that count against a budget (plugin, kind, since): the one
/// query the ledger decides with and the console shows, in `$n` (PostgreSQL)
/// placeholders; SQLite takes them too.
pub(super) static BUDGET_USED_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT count(*) FROM actions WHERE plugin = $1 AND kind = $2 AND at >= $3 AND status IN {COUNTED}"
    )
});

/// The kinds a cooldown applies to, as an SQL list (not notifications:
/// [`ActionKind::cooled`]).
pub(super) fn cooled_kinds() -> String {
    let kinds: Vec<String> = ActionKind::cooled()
        .map(|k| format!("'{}'", k.as_str()))
        .collect();
    format!("({})", kinds.join(", "))
}

pub(super) fn budget_refusal(i: &Intent, used: u32) -> String {
    format!(
        "budget: {} already ran {used} time(s) in the last {}; at most {} (plugin {})",
        i.kind,
        human(i.budget.per),
        i.budget.max,
        i.plugin
    )
}

pub(super) fn cooldown_refusal(i: &Intent, last: &str, cooldown: std::time::Duration) -> String {
    format!(
        "cooldown: {} acted on {} at {last}; wait {} after a live action (plugin {})",
        i.plugin,
        i.cooldown_key,
        human(cooldown),
        i.plugin
    )
}

/// The ledger status an action's result is stored as.
pub(super) fn settled_status(applied: crate::record::Applied) -> &'static str {
    use crate::record::Applied;
    match applied {
        Applied::Executed => "executed",
        Applied::Unknown => "unknown",
        Applied::Interrupted => "interrupted",
        _ => "failed",
    }
}

pub(super) const RUN_INTERRUPTED: &str = "the Remedy process stopped while this run was in flight";

pub(super) const ACTION_INTERRUPTED: &str = "the Remedy process stopped after recording the intent and before the result: whether the action took effect is unknown; check the target";

/// `at - window`, saturating at the earliest time chrono knows: a window
/// longer than history counts everything, it never overflows.
pub(super) fn window_start(
    at: chrono::DateTime<chrono::Utc>,
    window: std::time::Duration,
) -> chrono::DateTime<chrono::Utc> {
    chrono::Duration::from_std(window)
        .ok()
        .and_then(|w| at.checked_sub_signed(w))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

/// A duration as the ledger's refusals (and the console's budgets) say it.
pub(crate) fn human(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
