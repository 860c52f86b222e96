//! The SQLite store: one writer thread (`writer`), a reader connection,
//! the schema (`schema`) and the action ledger (`ledger`).

use crate::locks::MutexExt;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::{AuditEvent, AuditFilter, RunFilter, Store, StoreError, StoredAlert};

mod backup;
mod checkpoint;
mod ledger;
mod schema;
mod writer;

use crate::action::ActionKind;
use crate::guardrails::{Intent, Ledger, Refusal};
use crate::record::{ActionRecord, Applied, RunRecord, RunStatus};
use ledger::*;
use schema::*;
use writer::*;

pub use backup::{backup, Backup};

/// The `settings` key of the kill switch.
const KILL_SWITCH: &str = "kill_switch";

use crate::record::timestamp as ts;

#[derive(Clone)]
pub struct SqliteStore {
    writer: mpsc::SyncSender<Op>,
    /// Writes that go before the queue (see `write_loop`).
    urgent: mpsc::Sender<Op>,
    reader: Arc<Mutex<Connection>>,
    /// Cleared when the writer thread ends, however it ends.
    alive: Arc<std::sync::atomic::AtomicBool>,
    /// Set once `take_over` has answered.
    handed_over: Arc<std::sync::atomic::AtomicBool>,
    /// The writer's commits (`/metrics`).
    stats: Arc<super::WriteStats>,
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
        let (urgent, urgent_rx) = mpsc::channel();
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let guard = AliveGuard(alive.clone());
        let handoff = checkpoint::Handoff::default();
        checkpoint::spawn(&path, alive.clone(), handoff.clone())?;
        let stats = Arc::new(super::WriteStats::default());
        let counted = stats.clone();
        std::thread::Builder::new()
            .name("remedy-store".into())
            .spawn(move || {
                let _guard = guard;
                write_loop(writer, rx, urgent_rx, handoff, &counted)
            })
            .map_err(|source| StoreError::Dir {
                path: "store writer thread".into(),
                source,
            })?;
        Ok(SqliteStore {
            writer: tx,
            urgent,
            reader: Arc::new(Mutex::new(reader)),
            alive,
            handed_over: Arc::default(),
            stats,
        })
    }

    /// Like `send`, ahead of the queue: for a critical alert's writes, which
    /// are few, so the queue they skip need not bound them.
    async fn send_urgent<T>(&self, make: impl FnOnce(Ack<T>) -> Op) -> Result<T, StoreError> {
        let (ack, done) = oneshot::channel();
        self.urgent
            .send(make(ack))
            .map_err(|_| StoreError::Closed)?;
        // The writer may be asleep on the main queue.
        let _ = self.writer.try_send(Op::Wake);
        done.await.map_err(|_| StoreError::Closed)?
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
                tokio::task::spawn_blocking(move || {
                    writer.send(op).map_err(|_| StoreError::Closed)
                })
                .await
                .map_err(|_| StoreError::Closed)??;
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
        }
        done.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.locked();
            f(&conn)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn healthy(&self) -> bool {
        self.alive.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn write_stats(&self) -> Option<&super::WriteStats> {
        Some(&self.stats)
    }

    async fn put_run(&self, rec: &RunRecord) -> Result<(), StoreError> {
        let row = RunRow::of(rec)?;
        if rec.trigger.urgent() {
            return self.send_urgent(|ack| Op::Run { row, ack }).await;
        }
        self.send(|ack| Op::Run { row, ack }).await
    }

    async fn audit(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.send(|ack| Op::Audit {
            event,
            ack: Some(ack),
        })
        .await
    }

    async fn receive(
        &self,
        items: Vec<(StoredAlert, &[RunRecord])>,
    ) -> Result<Vec<bool>, StoreError> {
        let urgent = items
            .iter()
            .any(|(_, runs)| runs.iter().any(|r| r.trigger.urgent()));
        let items = items
            .into_iter()
            .map(|(alert, runs)| {
                let runs = runs.iter().map(RunRow::of).collect::<Result<_, _>>()?;
                Ok((AlertRow::of(alert), runs))
            })
            .collect::<Result<_, StoreError>>()?;
        if urgent {
            return self.send_urgent(|ack| Op::Receive { items, ack }).await;
        }
        self.send(|ack| Op::Receive { items, ack }).await
    }

    async fn decide(&self, rec: &RunRecord, approvals_before: usize) -> Result<bool, StoreError> {
        let row = RunRow::of(rec)?;
        let before = i64::try_from(approvals_before).unwrap_or(i64::MAX);
        self.send(|ack| Op::Decide { row, before, ack }).await
    }

    async fn prune(&self, before: &str, ledger_before: &str) -> Result<bool, StoreError> {
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

    async fn set_pause(&self, pause: Option<crate::killswitch::Pause>) -> Result<(), StoreError> {
        let value = pause.map(|p| serde_json::to_string(&p)).transpose()?;
        self.send(|ack| Op::Setting {
            key: KILL_SWITCH.to_string(),
            value,
            ack,
        })
        .await
    }

    async fn put_setting(&self, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        let key = key.to_string();
        let value = value.map(String::from);
        self.send(|ack| Op::Setting { key, value, ack }).await
    }

    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT value FROM settings WHERE key = ?1")?
                    .query_row([key], |r| r.get(0))
                    .optional()?,
            )
        })
        .await
    }

    async fn settings_under(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        let prefix = prefix.to_string();
        self.read(move |c| {
            // Not LIKE: a key's `_` and `%` are no wildcards here.
            let mut st = c.prepare_cached(
                "SELECT key, value FROM settings WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key",
            )?;
            let rows = st.query_map([prefix], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn pause(&self) -> Result<Option<crate::killswitch::Pause>, StoreError> {
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

    async fn create_session(
        &self,
        session: &super::StoredSession,
        ttl: std::time::Duration,
    ) -> Result<(), StoreError> {
        let now = chrono::Utc::now();
        // Sessions last hours: a duration chrono cannot hold is a day.
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1));
        let row = SessionRow {
            token: session.token.clone(),
            binding: session.binding.clone(),
            created_at: ts(now),
            expires_at: ts(now + ttl),
        };
        let id_hash = session.id_hash.clone();
        self.send(|ack| Op::Session {
            id_hash,
            row: Some(row),
            ack,
        })
        .await
    }

    async fn session(&self, id_hash: &str) -> Result<Option<super::StoredSession>, StoreError> {
        let id_hash = id_hash.to_string();
        let now = ts(chrono::Utc::now());
        self.read(move |c| {
            let row: Option<(String, String)> = c
                .prepare_cached(
                    "SELECT token, binding FROM sessions WHERE id_hash = ?1 AND expires_at > ?2",
                )?
                .query_row(params![id_hash, now], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            Ok(row.map(|(token, binding)| super::StoredSession {
                id_hash,
                token,
                binding,
            }))
        })
        .await
    }

    async fn end_session(&self, id_hash: &str) -> Result<(), StoreError> {
        let id_hash = id_hash.to_string();
        self.send(|ack| Op::Session {
            id_hash,
            row: None,
            ack,
        })
        .await
    }

    async fn runs_for_alerts(
        &self,
        keys: &[super::AlertKey],
    ) -> Result<Vec<Vec<RunRecord>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = keys.to_vec();
        // One hand-off to the reader for the lot: a payload's repeats
        // queued one by one behind the reader's lock, each its own wake-up.
        self.read(move |c| keys.iter().map(|k| alert_runs(c, k)).collect())
            .await
    }

    async fn take_over(&self) -> Result<super::Orphans, StoreError> {
        // One process owns the file: what the previous one left is handed
        // over once (its running runs and intents were marked at open).
        if self
            .handed_over
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(super::Orphans::default());
        }
        let since = ts(chrono::Utc::now() - chrono::Duration::days(1));
        Ok(super::Orphans {
            queued: self.queued_runs().await?,
            unverified: self.unverified_runs(&since).await?,
            replicas: Vec::new(),
        })
    }

    async fn run_counts(&self, since: &str) -> Result<Vec<super::HourCount>, StoreError> {
        let since = since.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(crate::store::rules::RUN_COUNTS_SQL)?;
            let rows = stmt.query_map([since], |r| {
                Ok(super::HourCount {
                    hour: r.get(0)?,
                    status: r.get(1)?,
                    runs: r.get::<_, i64>(2)?.max(0) as u64,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn budget_used(
        &self,
        plugin: &str,
        kind: ActionKind,
        per: std::time::Duration,
    ) -> Result<u32, StoreError> {
        let since = ts(crate::store::rules::window_start(chrono::Utc::now(), per));
        let plugin = plugin.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(&crate::store::rules::BUDGET_USED_SQL)?
                .query_row(params![plugin, kind.as_str(), since], |r| r.get(0))?)
        })
        .await
    }

    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let id = id.to_string();
        self.read(move |c| {
            let json: Option<String> = c
                .query_row("SELECT record FROM runs WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
        })
        .await
    }

    async fn list_runs(&self, f: RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        // Runs waiting for approval (the console's overview) are few among
        // all those kept: through `runs_unfinished`, not by walking every
        // run newest first until the limit is met or the history ends.
        let unfinished = f
            .status
            .as_deref()
            .is_some_and(|s| UNFINISHED_STATUSES.contains(&s));
        self.read(move |c| {
            let mut stmt = c.prepare_cached(if unfinished {
                LIST_UNFINISHED_RUNS.as_str()
            } else {
                LIST_RUNS
            })?;
            records(
                &mut stmt,
                params![
                    f.plugin,
                    f.status,
                    f.since,
                    f.limit.unwrap_or(100).min(MAX_ROWS)
                ],
            )
        })
        .await
    }

    async fn list_alerts(&self, limit: u32) -> Result<Vec<StoredAlert>, StoreError> {
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

    async fn list_audit(&self, f: AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, at, run_id, plugin, event, detail FROM audit WHERE (?1 IS NULL OR run_id = ?1) \
                 AND (?2 IS NULL OR plugin = ?2) AND (?3 IS NULL OR at >= ?3) \
                 AND (?5 IS NULL OR event = ?5) ORDER BY seq LIMIT ?4",
            )?;
            let rows = stmt.query_map(
                params![f.run, f.plugin, f.since, f.limit.unwrap_or(1000).min(10 * MAX_ROWS), f.event],
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

impl SqliteStore {
    /// Live runs that mitigated, started at or after `since`, whose
    /// verification is still open.
    async fn unverified_runs(&self, since: &str) -> Result<Vec<RunRecord>, StoreError> {
        let since = since.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT record FROM runs WHERE status = 'succeeded' AND started_at >= ?1 \
                 AND json_extract(record, '$.dry_run') = 0 \
                 AND json_extract(record, '$.verification') IS NULL",
            )?;
            Ok(records(&mut stmt, [since])?
                .into_iter()
                .filter(|r| r.actions.iter().any(|a| a.applied == Applied::Executed))
                .collect())
        })
        .await
    }

    async fn queued_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT record FROM runs WHERE status = 'queued' ORDER BY started_at, id",
            )?;
            records(&mut stmt, [])
        })
        .await
    }
}

/// `GET /v1/runs`: (plugin, status, since, limit), newest first.
const LIST_RUNS: &str = "SELECT record FROM runs WHERE (?1 IS NULL OR plugin = ?1) \
     AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR started_at >= ?3) \
     ORDER BY started_at DESC, id LIMIT ?4";

/// [`LIST_RUNS`] of one unfinished status (`?2` is never null here).
static LIST_UNFINISHED_RUNS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT record FROM runs WHERE ({UNFINISHED}) AND status = ?2 \
             AND (?1 IS NULL OR plugin = ?1) AND (?3 IS NULL OR started_at >= ?3) \
             ORDER BY started_at DESC, id LIMIT ?4"
    )
});

/// The runs a plugin made for one alert, newest first, at most 50.
fn alert_runs(c: &Connection, k: &super::AlertKey) -> Result<Vec<RunRecord>, StoreError> {
    let mut stmt = c.prepare_cached(
        // INDEXED BY: ordered by start, the planner prefers
        // `runs_plugin` and decodes every run of the plugin.
        "SELECT record FROM runs INDEXED BY runs_of_alert WHERE plugin = ?1 \
         AND alert = ?2 \
         AND json_extract(record, '$.trigger.alert.starts_at') = ?3 \
         ORDER BY started_at DESC, id LIMIT 50",
    )?;
    records(&mut stmt, params![k.plugin, k.fingerprint, k.starts_at])
}

/// The run records a `SELECT record …` statement answers, decoded.
fn records(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
) -> Result<Vec<RunRecord>, StoreError> {
    let rows = stmt.query_map(params, |r| r.get::<_, String>(0))?;
    rows.map(|j| Ok(serde_json::from_str(&j?)?)).collect()
}
