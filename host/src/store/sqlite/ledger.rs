//! The action ledger: budget and cooldown checked and the intent stored in
//! one transaction on the writer thread; results settled afterwards.

use super::*;
use crate::store::rules::*;

#[async_trait::async_trait]
impl Ledger for SqliteStore {
    async fn intend(&self, intent: Intent) -> Result<i64, Refusal> {
        let intent = Box::new(intent);
        match self.send(|ack| Op::Intend { intent, ack }).await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(guardrail)) => Err(Refusal::Guardrail(guardrail)),
            Err(e) => Err(Refusal::Unavailable(e.to_string())),
        }
    }

    async fn settle(&self, id: i64, applied: Applied, error: Option<String>) {
        let status = settled_status(applied);
        if let Err(e) = self
            .send(|ack| Op::Settle {
                id,
                status,
                error,
                ack,
            })
            .await
        {
            // The intent stays: a restart will report the action as
            // interrupted rather than lose it.
            tracing::error!(action_id = id, error = %e, "action result not stored");
        }
    }
}

/// The last earlier action on a cooldown key. The run's own earlier
/// actions do not count: one mitigation may take several (a runbook ending
/// several leaking sessions of one application).
pub(super) static COOLDOWN_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT max(at) FROM actions WHERE plugin = ?1 AND coalesce(cooldown_key, target) = ?2 \
         AND at >= ?3 AND run_id <> ?4 AND status IN {COUNTED} AND kind IN {}",
        cooled_kinds()
    )
});

/// Budget and cooldown, then the intent: one transaction on the one writer
/// thread, so no two runs can take the last unit of a budget.
pub(super) fn intend(tx: &Connection, i: &Intent) -> Result<Result<i64, String>, StoreError> {
    let since = ts(window_start(i.at, i.budget.per));
    // Interrupted and unknown actions count: they may have taken effect.
    let used: u32 = tx
        .prepare_cached(&BUDGET_USED_SQL)?
        .query_row(params![i.plugin, i.kind.as_str(), since], |r| r.get(0))?;
    if used >= i.budget.max {
        return Ok(Err(budget_refusal(i, used)));
    }
    if let Some(cooldown) = i.cooldown {
        let since = ts(window_start(i.at, cooldown));
        let last: Option<String> = tx
            .prepare_cached(&COOLDOWN_SQL)?
            .query_row(params![i.plugin, i.cooldown_key, since, i.run_id], |r| {
                r.get(0)
            })?;
        if let Some(last) = last {
            return Ok(Err(cooldown_refusal(i, &last, cooldown)));
        }
    }
    tx.prepare_cached(
        "INSERT INTO actions (run_id, plugin, kind, target, reason, status, at, cooldown_key) VALUES (?1, ?2, ?3, ?4, ?5, 'intent', ?6, ?7)",
    )?
    .execute(params![i.run_id, i.plugin, i.kind.as_str(), i.target, i.reason, ts(i.at), i.cooldown_key])?;
    Ok(Ok(tx.last_insert_rowid()))
}
