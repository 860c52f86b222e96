//! The schema, its migrations, and what opening the store repairs: runs
//! and action intents a stopped process left unfinished.

use super::*;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    plugin TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started_at);
CREATE INDEX IF NOT EXISTS runs_plugin ON runs(plugin, started_at);
CREATE TABLE IF NOT EXISTS alerts (
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    status TEXT NOT NULL,
    name TEXT NOT NULL,
    received_at TEXT NOT NULL,
    alert TEXT NOT NULL,
    PRIMARY KEY (fingerprint, starts_at, status)
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    run_id TEXT,
    plugin TEXT,
    event TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_run ON audit(run_id);
-- Live actions, written ahead: `intent` before the action runs, then
-- `executed` / `failed` / `unknown` (sent, never answered) / `interrupted`
-- (the run's deadline fired, or an `intent` found at start-up).
-- Budgets and cooldowns are counted here, so they hold across restarts.
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    plugin TEXT NOT NULL,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    at TEXT NOT NULL,
    settled_at TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS actions_budget ON actions(plugin, kind, at);
CREATE INDEX IF NOT EXISTS actions_target ON actions(plugin, target, at);
CREATE INDEX IF NOT EXISTS actions_status ON actions(status);
-- (cooldown_key is added by `migrate` to stores made before it existed.)
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
-- The runs of one alert (a repeat looks them up).
CREATE INDEX IF NOT EXISTS runs_alert ON runs(plugin, json_extract(record, '$.trigger.alert.fingerprint'));
-- Service state that must survive a restart (the kill switch).
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// A connection to the store file, with the pragmas both the writer and
/// the reader use.
pub(super) fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // WAL + NORMAL: a commit survives a process crash; only an OS crash
    // can lose the last transactions.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // No connection checkpoints on commit: the checkpoint thread does it
    // (`checkpoint`), so the writer never stalls on copying the WAL back.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // A WAL that grew under a burst is cut back to this when it restarts.
    conn.pragma_update(None, "journal_size_limit", 64 << 20)?;
    Ok(conn)
}

/// Columns added after the first release, added in place to older stores.
pub(super) fn migrate(c: &Connection) -> Result<(), StoreError> {
    let has = c
        .prepare("SELECT 1 FROM pragma_table_info('actions') WHERE name = 'cooldown_key'")?
        .exists([])?;
    if !has {
        c.execute_batch("ALTER TABLE actions ADD COLUMN cooldown_key TEXT")?;
    }
    c.execute_batch(
        "CREATE INDEX IF NOT EXISTS actions_cooldown ON actions(plugin, cooldown_key, at)",
    )?;
    Ok(())
}

pub(super) fn mark_interrupted(c: &Connection) -> Result<(), StoreError> {
    let mut stmt = c.prepare("SELECT record FROM runs WHERE status = 'running'")?;
    let stale: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for json in stale {
        let mut rec: RunRecord = serde_json::from_str(&json)?;
        rec.status = RunStatus::Interrupted;
        rec.error = Some(crate::store::rules::RUN_INTERRUPTED.into());
        c.execute(
            "UPDATE runs SET status = 'interrupted', record = ?2 WHERE id = ?1",
            params![rec.id, serde_json::to_string(&rec)?],
        )?;
        tracing::warn!(run_id = %rec.id, plugin = %rec.plugin, "run interrupted by a previous stop");
    }
    Ok(())
}

/// Intents a previous process left behind: the action may or may not have
/// happened. Each becomes `interrupted` in the table, in its run's record
/// and in the audit log, so nobody is left believing nothing was done.
pub(super) fn mark_interrupted_actions(c: &Connection) -> Result<(), StoreError> {
    let mut stmt = c.prepare(
        "SELECT id, run_id, plugin, kind, target, reason, at FROM actions WHERE status = 'intent' ORDER BY id",
    )?;
    let rows: Vec<(i64, String, String, String, String, String, String)> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let now = ts(chrono::Utc::now());
    let error = crate::store::rules::ACTION_INTERRUPTED;
    for (id, run_id, plugin, kind, target, reason, at) in rows {
        c.execute(
            "UPDATE actions SET status = 'interrupted', error = ?2, settled_at = ?3 WHERE id = ?1",
            params![id, error, now],
        )?;
        let at_parsed = chrono::DateTime::parse_from_rfc3339(&at)
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_else(|_| chrono::Utc::now());
        let Some(action_kind) = ActionKind::parse(&kind) else {
            // Only a newer binary could have written it; the row itself
            // reads `interrupted` now.
            tracing::warn!(%run_id, %kind, "interrupted action of an unknown kind");
            continue;
        };
        let action = ActionRecord {
            kind: action_kind,
            target: target.clone(),
            reason,
            applied: Applied::Interrupted,
            error: Some(error.into()),
            at: at_parsed,
        };
        let json: Option<String> = c
            .query_row("SELECT record FROM runs WHERE id = ?1", [&run_id], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(json) = json {
            let mut rec: RunRecord = serde_json::from_str(&json)?;
            rec.actions.push(action.clone());
            c.execute(
                "UPDATE runs SET record = ?2 WHERE id = ?1",
                params![run_id, serde_json::to_string(&rec)?],
            )?;
        }
        c.execute(
            "INSERT INTO audit (at, run_id, plugin, event, detail) VALUES (?1, ?2, ?3, 'action.interrupted', ?4)",
            params![now, run_id, plugin, serde_json::to_string(&action)?],
        )?;
        tracing::warn!(%run_id, %plugin, %kind, %target, "action interrupted by a previous stop");
    }
    Ok(())
}
