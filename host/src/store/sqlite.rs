//! The SQLite store.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::{AuditEvent, AuditFilter, RunFilter, StoreError, StoredAlert};
use crate::action::ActionKind;
use crate::guardrails::{Intent, Ledger, Refusal};
use crate::record::{ActionRecord, Applied, RunRecord, RunStatus};

type Ack<T> = oneshot::Sender<Result<T, StoreError>>;

enum Op {
    Run {
        rec: Box<RunRecord>,
        ack: Ack<()>,
    },
    Alert {
        alert: StoredAlert,
        ack: Ack<bool>,
    },
    Audit {
        event: AuditEvent,
        ack: Option<Ack<()>>,
    },
    Intend {
        intent: Box<Intent>,
        ack: Ack<Result<i64, String>>,
    },
    Settle {
        id: i64,
        status: &'static str,
        error: Option<String>,
        ack: Ack<()>,
    },
    /// Alerts and the runs each new one starts, in one transaction: the
    /// runs of an alert are stored only if the alert itself is new.
    Receive {
        items: Vec<(StoredAlert, Vec<RunRecord>)>,
        ack: Ack<Vec<bool>>,
    },
    /// Replaces a record only while it is still `pending_approval`.
    Decide {
        rec: Box<RunRecord>,
        ack: Ack<bool>,
    },
    Setting {
        key: &'static str,
        value: Option<String>,
        ack: Ack<()>,
    },
    /// Removes what is older than the cutoffs, a bounded batch at a time.
    Prune {
        before: String,
        ledger_before: String,
        ack: Ack<Vec<bool>>,
    },
}

/// Most rows of one table one prune removes (the writer is shared).
const PRUNE_BATCH: usize = 5_000;

/// What one write came to.
enum Done {
    Nothing,
    Inserted(bool),
    Intended(Result<i64, String>),
    Received(Vec<bool>),
}

/// Most writes committed in one transaction.
const BATCH: usize = 512;
/// Most rows one listing returns.
const MAX_ROWS: u32 = 1000;

const SCHEMA: &str = "
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

/// The `settings` key of the kill switch.
const KILL_SWITCH: &str = "kill_switch";

use crate::record::timestamp as ts;

#[derive(Clone)]
pub struct SqliteStore {
    writer: mpsc::SyncSender<Op>,
    reader: Arc<Mutex<Connection>>,
    /// Cleared when the writer thread ends, however it ends.
    alive: Arc<std::sync::atomic::AtomicBool>,
}

/// Clears `alive` when the writer thread exits, even by a panic.
struct AliveGuard(Arc<std::sync::atomic::AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
        tracing::error!("the store's writer thread stopped: every write will fail until restart");
    }
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // WAL + NORMAL: a commit survives a process crash; only an OS crash
    // can lose the last transactions.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Fewer, larger checkpoints: the writer is the service's hot thread.
    conn.pragma_update(None, "wal_autocheckpoint", 8000)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (or creates) `dir/remedy.db`, and marks runs that were
    /// `running` when the previous process died as `interrupted` (`queued`
    /// ones never started: the service resumes them).
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        // Records can hold query text and alert labels: only Remedy's user
        // may read them.
        crate::private_fs::create_dir(dir).map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join("remedy.db");
        let writer = connect(&path)?;
        writer.execute_batch(SCHEMA)?;
        migrate(&writer)?;
        mark_interrupted(&writer)?;
        mark_interrupted_actions(&writer)?;
        let reader = connect(&path)?;
        for f in ["remedy.db", "remedy.db-wal", "remedy.db-shm"] {
            crate::private_fs::restrict_file(&dir.join(f)).map_err(|source| StoreError::Dir {
                path: dir.join(f).display().to_string(),
                source,
            })?;
        }
        let (tx, rx) = mpsc::sync_channel(8192);
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let guard = AliveGuard(alive.clone());
        std::thread::Builder::new()
            .name("remedy-store".into())
            .spawn(move || {
                let _guard = guard;
                write_loop(writer, rx)
            })
            .map_err(|source| StoreError::Dir {
                path: "store writer thread".into(),
                source,
            })?;
        Ok(SqliteStore {
            writer: tx,
            reader: Arc::new(Mutex::new(reader)),
            alive,
        })
    }

    /// Whether the writer thread still runs (`/healthz` reports it).
    pub fn writer_alive(&self) -> bool {
        self.alive.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn send<T>(&self, make: impl FnOnce(Ack<T>) -> Op) -> Result<T, StoreError> {
        let (ack, done) = oneshot::channel();
        let writer = self.writer.clone();
        let op = make(ack);
        // The channel is bounded: a full one blocks this thread briefly,
        // which is the back-pressure we want, but not on a runtime worker.
        match writer.try_send(op) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(op)) => {
                tokio::task::spawn_blocking(move || writer.send(op))
                    .await
                    .map_err(|_| StoreError::Closed)?
                    .map_err(|_| StoreError::Closed)?;
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
        }
        done.await.map_err(|_| StoreError::Closed)?
    }

    /// Inserts or replaces a run record; returns once it is committed.
    pub async fn put_run(&self, rec: &RunRecord) -> Result<(), StoreError> {
        let rec = Box::new(rec.clone());
        self.send(|ack| Op::Run { rec, ack }).await
    }

    /// Stores an alert; `false` when (fingerprint, startsAt, status) was
    /// already stored (a repeat or an HA duplicate).
    pub async fn put_alert(&self, alert: StoredAlert) -> Result<bool, StoreError> {
        self.send(|ack| Op::Alert { alert, ack }).await
    }

    /// Appends an audit event and waits for it to be committed.
    pub async fn audit(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.send(|ack| Op::Audit {
            event,
            ack: Some(ack),
        })
        .await
    }

    /// Stores the alerts of one payload and, for each that is new, its
    /// queued runs, in one transaction; answers which alerts were new.
    pub async fn receive(
        &self,
        items: Vec<(StoredAlert, Vec<RunRecord>)>,
    ) -> Result<Vec<bool>, StoreError> {
        self.send(|ack| Op::Receive { items, ack }).await
    }

    /// Stores a decided plan if it is still `pending_approval`; `false`
    /// when another decision got there first.
    pub async fn decide(&self, rec: &RunRecord) -> Result<bool, StoreError> {
        let rec = Box::new(rec.clone());
        self.send(|ack| Op::Decide { rec, ack }).await
    }

    /// Removes finished runs, alerts and audit events older than `before`,
    /// and settled ledger entries older than `ledger_before`, in batches;
    /// answers whether any table still had more to remove.
    pub async fn prune(&self, before: &str, ledger_before: &str) -> Result<bool, StoreError> {
        let (before, ledger_before) = (before.to_string(), ledger_before.to_string());
        let more = self
            .send(|ack| Op::Prune {
                before,
                ledger_before,
                ack,
            })
            .await?;
        Ok(more.into_iter().any(|m| m))
    }

    /// Stores the kill switch (`None`: off).
    pub async fn set_pause(
        &self,
        pause: Option<crate::killswitch::Pause>,
    ) -> Result<(), StoreError> {
        let value = pause.map(|p| serde_json::to_string(&p)).transpose()?;
        self.send(|ack| Op::Setting {
            key: KILL_SWITCH,
            value,
            ack,
        })
        .await
    }

    /// The kill switch as last stored.
    pub async fn pause(&self) -> Result<Option<crate::killswitch::Pause>, StoreError> {
        self.read(|c| {
            let v: Option<String> = c
                .query_row(
                    "SELECT value FROM settings WHERE key = ?1",
                    [KILL_SWITCH],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(v.map(|v| serde_json::from_str(&v)).transpose()?)
        })
        .await
    }

    /// The runs `plugin` made for one alert (fingerprint and start), newest
    /// first, at most 50.
    pub async fn runs_for_alert(
        &self,
        plugin: &str,
        fingerprint: &str,
        starts_at: &str,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let (plugin, fingerprint, starts_at) = (
            plugin.to_string(),
            fingerprint.to_string(),
            starts_at.to_string(),
        );
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                // INDEXED BY: ordered by start, the planner prefers
                // `runs_plugin` and decodes every run of the plugin.
                "SELECT record FROM runs INDEXED BY runs_alert WHERE plugin = ?1 \
                 AND json_extract(record, '$.trigger.alert.fingerprint') = ?2 \
                 AND json_extract(record, '$.trigger.alert.starts_at') = ?3 \
                 ORDER BY started_at DESC, id LIMIT 50",
            )?;
            let rows = stmt.query_map(params![plugin, fingerprint, starts_at], |r| {
                r.get::<_, String>(0)
            })?;
            rows.map(|j| Ok(serde_json::from_str(&j?)?)).collect()
        })
        .await
    }

    /// Live runs that executed something, finished after `since`, and have
    /// no verification yet (a restart reschedules it).
    pub async fn unverified_runs(&self, since: &str) -> Result<Vec<RunRecord>, StoreError> {
        let since = since.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT record FROM runs WHERE status = 'succeeded' AND started_at >= ?1 \
                 AND json_extract(record, '$.dry_run') = 0 \
                 AND json_extract(record, '$.verification') IS NULL",
            )?;
            let rows = stmt.query_map([since], |r| r.get::<_, String>(0))?;
            let recs: Vec<RunRecord> = rows
                .map(|j| Ok(serde_json::from_str(&j?)?))
                .collect::<Result<_, StoreError>>()?;
            Ok(recs
                .into_iter()
                .filter(|r| r.actions.iter().any(|a| a.applied == Applied::Executed))
                .collect())
        })
        .await
    }

    /// Runs stored as `queued` that never started, oldest first.
    pub async fn queued_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT record FROM runs WHERE status = 'queued' ORDER BY started_at, id",
            )?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.map(|j| Ok(serde_json::from_str(&j?)?)).collect()
        })
        .await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    pub async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let id = id.to_string();
        self.read(move |c| {
            let json: Option<String> = c
                .query_row("SELECT record FROM runs WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
        })
        .await
    }

    /// Newest first.
    pub async fn list_runs(&self, f: RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT record FROM runs WHERE (?1 IS NULL OR plugin = ?1) AND (?2 IS NULL OR status = ?2) \
                 AND (?3 IS NULL OR started_at >= ?3) ORDER BY started_at DESC, id LIMIT ?4",
            )?;
            let rows = stmt.query_map(
                params![f.plugin, f.status, f.since, f.limit.unwrap_or(100).min(MAX_ROWS)],
                |r| r.get::<_, String>(0),
            )?;
            rows.map(|j| Ok(serde_json::from_str(&j?)?)).collect()
        })
        .await
    }

    /// Newest first.
    pub async fn list_alerts(&self, limit: u32) -> Result<Vec<StoredAlert>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT fingerprint, starts_at, status, name, received_at, alert FROM alerts \
                 ORDER BY received_at DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit.min(MAX_ROWS)], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?;
            rows.map(|row| {
                let (fingerprint, starts_at, status, name, received_at, alert) = row?;
                Ok(StoredAlert {
                    fingerprint,
                    starts_at,
                    status,
                    name,
                    received_at,
                    alert: serde_json::from_str(&alert)?,
                })
            })
            .collect()
        })
        .await
    }

    /// Oldest first.
    pub async fn list_audit(&self, f: AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, at, run_id, plugin, event, detail FROM audit WHERE (?1 IS NULL OR run_id = ?1) \
                 AND (?2 IS NULL OR plugin = ?2) AND (?3 IS NULL OR at >= ?3) ORDER BY seq LIMIT ?4",
            )?;
            let rows = stmt.query_map(
                params![f.run, f.plugin, f.since, f.limit.unwrap_or(1000).min(10 * MAX_ROWS)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get::<_, String>(5)?)),
            )?;
            rows.map(|row| {
                let (seq, at, run_id, plugin, event, detail) = row?;
                Ok(AuditEvent { seq, at, run_id, plugin, event, detail: serde_json::from_str(&detail)? })
            })
            .collect()
        })
        .await
    }
}

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
        let status = match applied {
            Applied::Executed => "executed",
            Applied::Unknown => "unknown",
            Applied::Interrupted => "interrupted",
            _ => "failed",
        };
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

impl SqliteStore {
    /// Live actions of a run, from the ledger (oldest first), as
    /// `(kind, target, status)`.
    pub async fn ledger_actions(
        &self,
        run_id: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let run_id = run_id.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT kind, target, status FROM actions WHERE run_id = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}

/// Columns added after the first release, added in place to older stores.
fn migrate(c: &Connection) -> Result<(), StoreError> {
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

fn mark_interrupted(c: &Connection) -> Result<(), StoreError> {
    let mut stmt = c.prepare("SELECT record FROM runs WHERE status = 'running'")?;
    let stale: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for json in stale {
        let mut rec: RunRecord = serde_json::from_str(&json)?;
        rec.status = RunStatus::Interrupted;
        rec.error = Some("the Remedy process stopped while this run was in flight".into());
        c.execute(
            "UPDATE runs SET status = 'interrupted', record = ?2 WHERE id = ?1",
            params![rec.id, serde_json::to_string(&rec)?],
        )?;
        tracing::warn!(run_id = %rec.id, plugin = %rec.plugin, "run interrupted by a previous stop");
    }
    Ok(())
}

/// One op inside the batch's transaction, all or nothing: a savepoint that
/// an error rolls back, so a failed op leaves no half of itself behind and
/// costs the others nothing. A panic is caught the same way: the writer
/// thread is the store, and it must outlive any one bad write.
fn apply_alone(tx: &mut rusqlite::Transaction<'_>, op: &Op) -> Result<Done, StoreError> {
    let sp = tx.savepoint()?;
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apply(&sp, op)))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %what, "store write panicked; rolled back");
            Err(StoreError::Failed(format!(
                "internal error in a store write: {what}"
            )))
        });
    if res.is_ok() {
        sp.commit()?;
    }
    res
}

fn apply(tx: &Connection, op: &Op) -> Result<Done, StoreError> {
    match op {
        Op::Run { rec, .. } => {
            put_run(tx, rec)?;
            Ok(Done::Nothing)
        }
        Op::Alert { alert: a, .. } => Ok(Done::Inserted(insert_alert(tx, a)?)),
        Op::Audit { event: e, .. } => {
            tx.prepare_cached(
                "INSERT INTO audit (at, run_id, plugin, event, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                e.at,
                e.run_id,
                e.plugin,
                e.event,
                e.detail.to_string()
            ])?;
            Ok(Done::Nothing)
        }
        Op::Intend { intent, .. } => Ok(Done::Intended(intend(tx, intent)?)),
        Op::Receive { items, .. } => {
            let mut new = Vec::with_capacity(items.len());
            for (alert, runs) in items {
                let inserted = insert_alert(tx, alert)?;
                if inserted {
                    for rec in runs {
                        put_run(tx, rec)?;
                    }
                }
                new.push(inserted);
            }
            Ok(Done::Received(new))
        }
        Op::Decide { rec, .. } => {
            let n = tx
                .prepare_cached(
                    "UPDATE runs SET status = ?2, record = ?3 WHERE id = ?1 AND status = 'pending_approval'",
                )?
                .execute(params![rec.id, rec.status.as_str(), serde_json::to_string(rec)?])?;
            Ok(Done::Inserted(n == 1))
        }
        Op::Prune {
            before,
            ledger_before,
            ..
        } => {
            let mut more = Vec::new();
            for (sql, cutoff) in [
                ("DELETE FROM runs WHERE rowid IN (SELECT rowid FROM runs WHERE started_at < ?1 \
                  AND status NOT IN ('queued', 'running', 'pending_approval') LIMIT ?2)", before),
                ("DELETE FROM alerts WHERE rowid IN (SELECT rowid FROM alerts WHERE received_at < ?1 LIMIT ?2)", before),
                ("DELETE FROM audit WHERE seq IN (SELECT seq FROM audit WHERE at < ?1 LIMIT ?2)", before),
                ("DELETE FROM actions WHERE id IN (SELECT id FROM actions WHERE at < ?1 AND status <> 'intent' LIMIT ?2)", ledger_before),
            ] {
                let n = tx
                    .prepare_cached(sql)?
                    .execute(params![cutoff, PRUNE_BATCH as i64])?;
                more.push(n == PRUNE_BATCH);
            }
            Ok(Done::Received(more))
        }
        Op::Setting { key, value, .. } => {
            match value {
                Some(v) => tx
                    .prepare_cached("INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")?
                    .execute(params![key, v])?,
                None => tx
                    .prepare_cached("DELETE FROM settings WHERE key = ?1")?
                    .execute([key])?,
            };
            Ok(Done::Nothing)
        }
        Op::Settle {
            id, status, error, ..
        } => {
            tx.prepare_cached(
                "UPDATE actions SET status = ?2, error = ?3, settled_at = ?4 WHERE id = ?1",
            )?
            .execute(params![id, status, error, ts(chrono::Utc::now())])?;
            Ok(Done::Nothing)
        }
    }
}

fn put_run(tx: &Connection, rec: &RunRecord) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO runs (id, plugin, status, started_at, record) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT(id) DO UPDATE SET status = excluded.status, record = excluded.record",
    )?
    .execute(params![
        rec.id,
        rec.plugin,
        rec.status.as_str(),
        ts(rec.started_at),
        serde_json::to_string(rec)?
    ])?;
    Ok(())
}

fn insert_alert(tx: &Connection, a: &StoredAlert) -> Result<bool, StoreError> {
    let n = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO alerts (fingerprint, starts_at, status, name, received_at, alert) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![a.fingerprint, a.starts_at, a.status, a.name, a.received_at, a.alert.to_string()])?;
    Ok(n == 1)
}

/// The last earlier action on a cooldown key. The run's own earlier
/// actions do not count: one mitigation may take several (a runbook ending
/// several leaking sessions of one application). Only the kinds a cooldown
/// applies to count (not notifications: [`ActionKind::cooled`]).
static COOLDOWN_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let kinds: Vec<String> = ActionKind::cooled()
        .map(|k| format!("'{}'", k.as_str()))
        .collect();
    format!(
        "SELECT max(at) FROM actions WHERE plugin = ?1 AND coalesce(cooldown_key, target) = ?2 \
         AND at >= ?3 AND run_id <> ?4 \
         AND status IN ('intent', 'executed', 'interrupted', 'unknown') AND kind IN ({})",
        kinds.join(", ")
    )
});

/// Budget and cooldown, then the intent: one transaction on the one writer
/// thread, so no two runs can take the last unit of a budget.
fn intend(tx: &Connection, i: &Intent) -> Result<Result<i64, String>, StoreError> {
    let since = ts(window_start(i.at, i.budget.per));
    // Interrupted and unknown actions count: they may have taken effect.
    let used: u32 = tx
        .prepare_cached(
            "SELECT count(*) FROM actions WHERE plugin = ?1 AND kind = ?2 AND at >= ?3 \
             AND status IN ('intent', 'executed', 'interrupted', 'unknown')",
        )?
        .query_row(params![i.plugin, i.kind.as_str(), since], |r| r.get(0))?;
    if used >= i.budget.max {
        return Ok(Err(format!(
            "budget: {} already ran {used} time(s) in the last {}; at most {} (plugin {})",
            i.kind,
            human(i.budget.per),
            i.budget.max,
            i.plugin
        )));
    }
    if let Some(cooldown) = i.cooldown {
        let since = ts(window_start(i.at, cooldown));
        let last: Option<String> = tx
            .prepare_cached(&COOLDOWN_SQL)?
            .query_row(params![i.plugin, i.cooldown_key, since, i.run_id], |r| {
                r.get(0)
            })?;
        if let Some(last) = last {
            return Ok(Err(format!(
                "cooldown: {} acted on {} at {last}; wait {} after a live action (plugin {})",
                i.plugin,
                i.cooldown_key,
                human(cooldown),
                i.plugin
            )));
        }
    }
    tx.prepare_cached(
        "INSERT INTO actions (run_id, plugin, kind, target, reason, status, at, cooldown_key) VALUES (?1, ?2, ?3, ?4, ?5, 'intent', ?6, ?7)",
    )?
    .execute(params![i.run_id, i.plugin, i.kind.as_str(), i.target, i.reason, ts(i.at), i.cooldown_key])?;
    Ok(Ok(tx.last_insert_rowid()))
}

/// `at - window`, saturating at the earliest time chrono knows: a window
/// longer than history counts everything, it never overflows.
fn window_start(
    at: chrono::DateTime<chrono::Utc>,
    window: std::time::Duration,
) -> chrono::DateTime<chrono::Utc> {
    chrono::Duration::from_std(window)
        .ok()
        .and_then(|w| at.checked_sub_signed(w))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

fn human(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Intents a previous process left behind: the action may or may not have
/// happened. Each becomes `interrupted` in the table, in its run's record
/// and in the audit log, so nobody is left believing nothing was done.
fn mark_interrupted_actions(c: &Connection) -> Result<(), StoreError> {
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
    let error = "the Remedy process stopped after recording the intent and before the result: whether the action took effect is unknown; check the target";
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

fn write_loop(mut conn: Connection, rx: mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let results: Result<Vec<Result<Done, StoreError>>, StoreError> = (|| {
            let mut tx = conn.transaction()?;
            let mut results = Vec::with_capacity(batch.len());
            for op in &batch {
                results.push(apply_alone(&mut tx, op));
            }
            tx.commit()?;
            Ok(results)
        })();
        match results {
            Ok(results) => {
                for (op, res) in batch.into_iter().zip(results) {
                    match op {
                        Op::Run { ack, .. } | Op::Settle { ack, .. } => {
                            drop(ack.send(res.map(|_| ())))
                        }
                        Op::Alert { ack, .. } | Op::Decide { ack, .. } => {
                            drop(ack.send(res.map(|d| matches!(d, Done::Inserted(true)))))
                        }
                        Op::Setting { ack, .. } => drop(ack.send(res.map(|_| ()))),
                        Op::Receive { ack, .. } | Op::Prune { ack, .. } => {
                            drop(ack.send(res.map(|d| match d {
                                Done::Received(v) => v,
                                _ => Vec::new(),
                            })))
                        }
                        Op::Audit { ack: Some(ack), .. } => drop(ack.send(res.map(|_| ()))),
                        Op::Audit { ack: None, .. } => {}
                        Op::Intend { ack, .. } => drop(ack.send(res.map(|d| match d {
                            Done::Intended(r) => r,
                            _ => Err("no answer".into()),
                        }))),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store transaction failed");
                let msg = e.to_string();
                for op in batch {
                    let err = || StoreError::Failed(msg.clone());
                    match op {
                        Op::Run { ack, .. } | Op::Settle { ack, .. } => drop(ack.send(Err(err()))),
                        Op::Alert { ack, .. } | Op::Decide { ack, .. } => {
                            drop(ack.send(Err(err())))
                        }
                        Op::Setting { ack, .. } => drop(ack.send(Err(err()))),
                        Op::Receive { ack, .. } | Op::Prune { ack, .. } => {
                            drop(ack.send(Err(err())))
                        }
                        Op::Audit { ack: Some(ack), .. } => drop(ack.send(Err(err()))),
                        Op::Audit { ack: None, .. } => {}
                        Op::Intend { ack, .. } => drop(ack.send(Err(err()))),
                    }
                }
            }
        }
    }
}
