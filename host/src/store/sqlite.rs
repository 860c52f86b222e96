//! The SQLite store.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::{AuditEvent, AuditFilter, RunFilter, StoreError, StoredAlert};
use crate::record::{RunRecord, RunStatus};

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
";

#[derive(Clone)]
pub struct SqliteStore {
    writer: mpsc::SyncSender<Op>,
    reader: Arc<Mutex<Connection>>,
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
    /// `queued`/`running` when the previous process died as `interrupted`.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join("remedy.db");
        let writer = connect(&path)?;
        writer.execute_batch(SCHEMA)?;
        mark_interrupted(&writer)?;
        let reader = connect(&path)?;
        let (tx, rx) = mpsc::sync_channel(8192);
        std::thread::Builder::new()
            .name("remedy-store".into())
            .spawn(move || write_loop(writer, rx))
            .map_err(|source| StoreError::Dir {
                path: "store writer thread".into(),
                source,
            })?;
        Ok(SqliteStore {
            writer: tx,
            reader: Arc::new(Mutex::new(reader)),
        })
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

fn mark_interrupted(c: &Connection) -> Result<(), StoreError> {
    let mut stmt = c.prepare("SELECT record FROM runs WHERE status IN ('queued', 'running')")?;
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

fn apply(tx: &rusqlite::Transaction<'_>, op: &Op) -> Result<Option<bool>, StoreError> {
    match op {
        Op::Run { rec, .. } => {
            tx.prepare_cached("INSERT INTO runs (id, plugin, status, started_at, record) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT(id) DO UPDATE SET status = excluded.status, record = excluded.record")?
                .execute(params![
                    rec.id,
                    rec.plugin,
                    rec.status.as_str(),
                    rec.started_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    serde_json::to_string(rec)?
                ])?;
            Ok(None)
        }
        Op::Alert { alert: a, .. } => {
            let n = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO alerts (fingerprint, starts_at, status, name, received_at, alert) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![a.fingerprint, a.starts_at, a.status, a.name, a.received_at, a.alert.to_string()])?;
            Ok(Some(n == 1))
        }
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
            Ok(None)
        }
    }
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
        let results: Result<Vec<Result<Option<bool>, StoreError>>, StoreError> = (|| {
            let tx = conn.transaction()?;
            let results = batch.iter().map(|op| apply(&tx, op)).collect();
            tx.commit()?;
            Ok(results)
        })();
        match results {
            Ok(results) => {
                for (op, res) in batch.into_iter().zip(results) {
                    match op {
                        Op::Run { ack, .. } => drop(ack.send(res.map(|_| ()))),
                        Op::Alert { ack, .. } => drop(ack.send(res.map(|n| n.unwrap_or(false)))),
                        Op::Audit { ack: Some(ack), .. } => drop(ack.send(res.map(|_| ()))),
                        Op::Audit { ack: None, .. } => {}
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store transaction failed");
                let msg = e.to_string();
                for op in batch {
                    let err = || StoreError::Failed(msg.clone());
                    match op {
                        Op::Run { ack, .. } => drop(ack.send(Err(err()))),
                        Op::Alert { ack, .. } => drop(ack.send(Err(err()))),
                        Op::Audit { ack: Some(ack), .. } => drop(ack.send(Err(err()))),
                        Op::Audit { ack: None, .. } => {}
                    }
                }
            }
        }
    }
}
