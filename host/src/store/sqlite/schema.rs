//! The schema, its migrations, and what opening the store repairs: runs
//! and action intents a stopped process left unfinished.

use super::*;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    plugin TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    record TEXT NOT NULL,
    -- The fingerprint of the alert the run serves; NULL for other runs.
    alert TEXT
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
-- Service state that must survive a restart (the kill switch).
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Console sessions: the SHA-256 of each id (never the id, the cookie's
-- value), the name of its token (never its value) and a hash binding the
-- two; removed at logout or by the prune once expired.
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    binding TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
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
    if !has_column(c, "actions", "cooldown_key")? {
        c.execute_batch("ALTER TABLE actions ADD COLUMN cooldown_key TEXT")?;
    }
    c.execute_batch(
        "CREATE INDEX IF NOT EXISTS actions_cooldown ON actions(plugin, cooldown_key, at)",
    )?;
    if !has_column(c, "runs", "alert")? {
        // One transaction: a store is never left with the column but
        // without the fingerprints of the runs it already held.
        c.execute_batch(
            "BEGIN;
             ALTER TABLE runs ADD COLUMN alert TEXT;
             UPDATE runs SET alert = json_extract(record, '$.trigger.alert.fingerprint')
                 WHERE json_extract(record, '$.trigger.kind') = 'alert';
             COMMIT;",
        )?;
    }
    // Every index of `runs` is paid for by every run twice (stored
    // `running` or `queued`, then finished), so they hold only what is
    // looked up. Before, `runs_alert` indexed an expression that parsed each
    // record's JSON on every write, and `runs_status` held every run,
    // although only unfinished ones are few enough to be worth finding by
    // status (a listing of a finished status walks the runs by start until
    // it meets its limit).
    c.execute_batch(&format!(
        "DROP INDEX IF EXISTS runs_alert;
         DROP INDEX IF EXISTS runs_status;
         -- The runs of one alert (a repeat looks them up).
         CREATE INDEX IF NOT EXISTS runs_of_alert ON runs(plugin, alert) WHERE alert IS NOT NULL;
         -- Runs left unfinished (found again at start-up, listed by the
         -- console), by status.
         CREATE INDEX IF NOT EXISTS runs_unfinished ON runs(status) WHERE {UNFINISHED};"
    ))?;
    Ok(())
}

/// The condition of `runs_unfinished`. Written as OR terms, so that a query
/// on any one status can use the index; and a query that names the whole
/// condition as one of its terms can use it with its status a bound
/// parameter (SQLite cannot tell that `status = ?` implies it).
pub(super) const UNFINISHED: &str =
    "status = 'queued' OR status = 'running' OR status = 'pending_approval'";

/// The statuses [`UNFINISHED`] names.
pub(super) const UNFINISHED_STATUSES: [&str; 3] = ["queued", "running", "pending_approval"];

fn has_column(c: &Connection, table: &str, column: &str) -> Result<bool, StoreError> {
    Ok(
        c.prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
            .exists([table, column])?,
    )
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
            incident: None,
            result: None,
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::record::{AlertInfo, PluginRef, RunRecord, RunStatus, Trigger};
    use crate::store::sqlite::SqliteStore;
    use crate::store::Store;

    /// The first column of `sql`'s rows, read straight from the database
    /// file under `dir`.
    fn strings(dir: &std::path::Path, sql: &str) -> Vec<String> {
        let conn = rusqlite::Connection::open(dir.join("remedy.db")).unwrap();
        let mut stmt = conn.prepare(sql).unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    /// The runs of plugin `p` for an alert of [`alert_run`]'s start.
    fn key(plugin: &str, fingerprint: &str) -> crate::store::AlertKey {
        crate::store::AlertKey {
            plugin: plugin.into(),
            fingerprint: fingerprint.into(),
            starts_at: "2026-11-28T00:00:00Z".into(),
        }
    }

    fn alert_run(id: &str, fingerprint: &str) -> RunRecord {
        let plugin = PluginRef {
            name: "p".into(),
            version: "1".into(),
            digest: "sha256:0".into(),
        };
        let alert = AlertInfo {
            name: "A".into(),
            firing: true,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            starts_at: "2026-11-28T00:00:00Z".into(),
            fingerprint: fingerprint.into(),
        };
        let mut rec = RunRecord::begin(
            id.into(),
            &plugin,
            Trigger::Alert { alert },
            true,
            RunStatus::Succeeded,
        );
        rec.finished_at = Some(rec.started_at);
        rec
    }

    /// A store written before runs had their own `alert` column: opening it
    /// fills the column from the records, so a repeat of an alert still
    /// finds the runs it started, and drops the indexes every write paid for.
    #[tokio::test]
    async fn a_store_from_before_the_alert_column_keeps_finding_an_alerts_runs() {
        let dir = tempfile::tempdir().unwrap();
        {
            let old = rusqlite::Connection::open(dir.path().join("remedy.db")).unwrap();
            old.execute_batch(
                "CREATE TABLE runs (id TEXT PRIMARY KEY, plugin TEXT NOT NULL, status TEXT NOT NULL,
                     started_at TEXT NOT NULL, record TEXT NOT NULL);
                 CREATE INDEX runs_status ON runs(status);
                 CREATE INDEX runs_alert ON runs(plugin, json_extract(record, '$.trigger.alert.fingerprint'));",
            )
            .unwrap();
            for rec in [alert_run("old-1", "fp-1"), alert_run("old-2", "fp-2")] {
                old.execute(
                    "INSERT INTO runs VALUES (?1, 'p', 'succeeded', '2026-11-28T00:00:00.000000Z', ?2)",
                    [&rec.id, &serde_json::to_string(&rec).unwrap()],
                )
                .unwrap();
            }
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        let found = store
            .runs_for_alerts(&[key("p", "fp-1")])
            .await
            .unwrap()
            .remove(0);
        assert_eq!(
            found.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["old-1"]
        );
        // A run written now is found the same way.
        store.put_run(&alert_run("new-1", "fp-1")).await.unwrap();
        let found = store
            .runs_for_alerts(&[key("p", "fp-1")])
            .await
            .unwrap()
            .remove(0);
        assert_eq!(found.len(), 2, "{found:?}");

        let indexes = strings(
            dir.path(),
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'runs' AND sql IS NOT NULL ORDER BY name",
        );
        assert_eq!(
            indexes,
            [
                "runs_of_alert",
                "runs_plugin",
                "runs_started",
                "runs_unfinished"
            ]
        );
    }

    /// A payload's repeats are looked up in one read: one answer per key,
    /// in the keys' order, newest run first, none for an alert or a plugin
    /// without runs.
    #[tokio::test]
    async fn the_runs_of_several_alerts_are_answered_in_the_order_asked() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let mut later = alert_run("fp-1-later", "fp-1");
        later.started_at += chrono::Duration::seconds(1);
        for rec in [
            alert_run("fp-1-first", "fp-1"),
            later,
            alert_run("fp-2", "fp-2"),
        ] {
            store.put_run(&rec).await.unwrap();
        }
        let found = store
            .runs_for_alerts(&[
                key("p", "fp-2"),
                key("p", "fp-1"),
                key("p", "fp-3"),
                key("q", "fp-1"),
            ])
            .await
            .unwrap();
        let ids: Vec<Vec<&str>> = found
            .iter()
            .map(|runs| runs.iter().map(|r| r.id.as_str()).collect())
            .collect();
        assert_eq!(
            ids,
            [
                vec!["fp-2"],
                vec!["fp-1-later", "fp-1-first"],
                vec![],
                vec![]
            ]
        );
        assert!(store.runs_for_alerts(&[]).await.unwrap().is_empty());
    }

    /// Console sessions: answered until ended or expired; expired ones are
    /// pruned, live ones kept.
    #[tokio::test]
    async fn a_console_session_is_answered_until_it_ends_or_expires() {
        use crate::store::StoredSession;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let session = |id: &str| StoredSession {
            id_hash: format!("hash-{id}"),
            token: "on-call".into(),
            binding: format!("binding-{id}"),
        };
        let hour = std::time::Duration::from_secs(3600);
        for id in ["1", "2"] {
            store.create_session(&session(id), hour).await.unwrap();
        }
        assert_eq!(store.session("hash-1").await.unwrap(), Some(session("1")));
        assert_eq!(store.session("hash-3").await.unwrap(), None);
        store.end_session("hash-1").await.unwrap();
        assert_eq!(store.session("hash-1").await.unwrap(), None, "ended");

        let ms = std::time::Duration::from_millis(1);
        store.create_session(&session("short"), ms).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(store.session("hash-short").await.unwrap(), None, "expired");
        let old = "2000-01-01T00:00:00Z";
        store.prune(old, old).await.unwrap();
        let left = strings(dir.path(), "SELECT id_hash FROM sessions");
        assert_eq!(
            left,
            ["hash-2"],
            "the expired one pruned, the live one kept"
        );
    }

    /// Unfinished runs are looked up by status at start-up, through the
    /// partial index, not by scanning every run ever stored.
    #[test]
    fn the_queries_by_status_and_alert_use_the_partial_indexes() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        let conn = rusqlite::Connection::open(dir.path().join("remedy.db")).unwrap();
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            // Bound as the store binds them: the plan is made for any value.
            let args = vec!["x"; stmt.parameter_count()];
            let steps: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(args), |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            steps.join("; ")
        };
        for status in ["queued", "running", "pending_approval"] {
            let p = plan(&format!(
                "SELECT record FROM runs WHERE status = '{status}'"
            ));
            assert!(p.contains("USING INDEX runs_unfinished"), "{status}: {p}");
        }
        let p = plan("SELECT record FROM runs WHERE plugin = ?1 AND alert = ?2");
        assert!(p.contains("USING INDEX runs_of_alert"), "{p}");
        // `GET /v1/runs?status=pending_approval` (the console's overview):
        // through the index, with the status bound. The general listing
        // cannot use it.
        let p = plan(&super::super::LIST_UNFINISHED_RUNS);
        assert!(p.contains("USING INDEX runs_unfinished"), "{p}");
        let p = plan(super::super::LIST_RUNS);
        assert!(!p.contains("runs_unfinished"), "{p}");
    }
}
