//! The one writer thread: every write is an `Op`, applied in batches of
//! transactions, each under its own savepoint so that one failing (or
//! panicking) write is rolled back alone.

use super::*;

pub(super) type Ack<T> = oneshot::Sender<Result<T, StoreError>>;

pub(super) enum Op {
    Run {
        rec: Box<RunRecord>,
        ack: Ack<()>,
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
pub(super) const PRUNE_BATCH: usize = 5_000;

/// What one write came to.
pub(super) enum Done {
    Nothing,
    Inserted(bool),
    Intended(Result<i64, String>),
    Received(Vec<bool>),
}

/// Most writes committed in one transaction.
pub(super) const BATCH: usize = 512;
/// Most rows one listing returns.
pub(super) const MAX_ROWS: u32 = 1000;

/// Clears `alive` when the writer thread exits, even by a panic.
pub(super) struct AliveGuard(pub(super) Arc<std::sync::atomic::AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
        tracing::error!("the store's writer thread stopped: every write will fail until restart");
    }
}

/// One op inside the batch's transaction, all or nothing: a savepoint that
/// an error rolls back, so a failed op leaves no half of itself behind and
/// costs the others nothing. A panic is caught the same way: the writer
/// thread is the store, and it must outlive any one bad write.
pub(super) fn apply_alone(tx: &mut rusqlite::Transaction<'_>, op: &Op) -> Result<Done, StoreError> {
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

pub(super) fn apply(tx: &Connection, op: &Op) -> Result<Done, StoreError> {
    match op {
        Op::Run { rec, .. } => {
            put_run(tx, rec)?;
            Ok(Done::Nothing)
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

pub(super) fn put_run(tx: &Connection, rec: &RunRecord) -> Result<(), StoreError> {
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

pub(super) fn insert_alert(tx: &Connection, a: &StoredAlert) -> Result<bool, StoreError> {
    let n = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO alerts (fingerprint, starts_at, status, name, received_at, alert) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![a.fingerprint, a.starts_at, a.status, a.name, a.received_at, a.alert.to_string()])?;
    Ok(n == 1)
}

pub(super) fn write_loop(mut conn: Connection, rx: mpsc::Receiver<Op>) {
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
                        Op::Decide { ack, .. } => {
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
                        Op::Decide { ack, .. } => drop(ack.send(Err(err()))),
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
