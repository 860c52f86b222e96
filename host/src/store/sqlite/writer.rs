//! The one writer thread: every write is an `Op`, applied in batches of
//! up to `BATCH` in one transaction. Records arrive encoded (`RunRow`,
//! `AlertRow`): JSON is written by the many callers, not by the one thread
//! every write waits on. A batch is first applied whole; only if one of its
//! writes fails (or panics) is it rolled back and applied again with a
//! savepoint per write, so that the failing write is rolled back alone.

use std::time::Duration;

use super::*;

pub(super) type Ack<T> = oneshot::Sender<Result<T, StoreError>>;

pub(super) enum Op {
    Run {
        row: RunRow,
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
        items: Vec<(AlertRow, Vec<RunRow>)>,
        ack: Ack<Vec<bool>>,
    },
    /// Replaces a record only while it is still `pending_approval`.
    /// A plan's decision or one more approval, if the plan still waits
    /// with `before` approvals.
    Decide {
        row: RunRow,
        before: i64,
        ack: Ack<bool>,
    },
    Setting {
        key: String,
        value: Option<String>,
        ack: Ack<()>,
    },
    /// Stores a console session (`Some`) or ends it (`None`).
    Session {
        id_hash: String,
        row: Option<SessionRow>,
        ack: Ack<()>,
    },
    /// Nothing: wakes the writer for an op waiting in the urgent queue.
    Wake,
    /// Removes what is older than the cutoffs, a bounded batch at a time.
    Prune {
        before: String,
        ledger_before: String,
        ack: Ack<Vec<bool>>,
    },
}

/// A run as the `runs` table holds it, encoded by the caller.
pub(super) struct RunRow {
    id: String,
    plugin: String,
    status: &'static str,
    started_at: String,
    record: String,
    /// The fingerprint of the alert the run serves.
    alert: Option<String>,
}

impl RunRow {
    pub(super) fn of(rec: &RunRecord) -> Result<RunRow, StoreError> {
        Ok(RunRow {
            id: rec.id.clone(),
            plugin: rec.plugin.clone(),
            status: rec.status.as_str(),
            started_at: ts(rec.started_at),
            record: serde_json::to_string(rec)?,
            alert: match &rec.trigger {
                crate::record::Trigger::Alert { alert } => Some(alert.fingerprint.clone()),
                _ => None,
            },
        })
    }
}

/// A console session as the `sessions` table holds it.
pub(super) struct SessionRow {
    pub(super) token: String,
    pub(super) binding: String,
    pub(super) created_at: String,
    pub(super) expires_at: String,
}

/// An alert as the `alerts` table holds it, encoded by the caller.
pub(super) struct AlertRow {
    a: StoredAlert,
    json: String,
}

impl AlertRow {
    pub(super) fn of(a: StoredAlert) -> AlertRow {
        let json = a.alert.to_string();
        AlertRow { a, json }
    }
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

/// Most rows written in one transaction (an op may write many: a receipt
/// writes its alerts and their runs). Bounded by rows, not ops, so that a
/// batch of storm receipts cannot keep an urgent write waiting for long.
pub(super) const BATCH: usize = 512;

/// The rows an op writes, about.
fn weight(op: &Op) -> usize {
    match op {
        Op::Receive { items, .. } => items.iter().map(|(_, runs)| 1 + runs.len()).sum(),
        _ => 1,
    }
}
/// Most rows one listing returns.
pub(super) const MAX_ROWS: u32 = 1000;

/// Clears `alive` when the writer thread exits, even by a panic. Only a
/// panic is an error: the loop itself ends when the store is dropped (every
/// sender gone), as on every clean shutdown, which must not page anyone.
pub(super) struct AliveGuard(pub(super) Arc<std::sync::atomic::AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
        if std::thread::panicking() {
            tracing::error!(
                "the store's writer thread stopped: every write will fail until restart"
            );
        } else {
            tracing::debug!("the store was closed");
        }
    }
}

/// One op inside the batch's transaction, all or nothing: a savepoint that
/// an error rolls back, so a failed op leaves no half of itself behind and
/// costs the others nothing. A panic is caught the same way: the writer
/// thread is the store, and it must outlive any one bad write.
pub(super) fn apply_alone(tx: &mut rusqlite::Transaction<'_>, op: &Op) -> Result<Done, StoreError> {
    let sp = tx.savepoint()?;
    let res = guarded(&sp, op);
    if res.is_ok() {
        sp.commit()?;
    }
    res
}

/// `apply`, with a panic turned into that write's error.
fn guarded(tx: &Connection, op: &Op) -> Result<Done, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apply(tx, op))).unwrap_or_else(
        |panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %what, "store write panicked; rolled back");
            Err(StoreError::Failed(format!(
                "internal error in a store write: {what}"
            )))
        },
    )
}

pub(super) fn apply(tx: &Connection, op: &Op) -> Result<Done, StoreError> {
    match op {
        Op::Run { row, .. } => {
            put_run(tx, row)?;
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
        Op::Wake => Ok(Done::Nothing),
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
        Op::Decide { row, before, .. } => {
            let n = tx
                .prepare_cached(
                    "UPDATE runs SET status = ?2, record = ?3 WHERE id = ?1 AND status = 'pending_approval' \
                     AND coalesce(json_array_length(record, '$.approval.approvals'), 0) = ?4",
                )?
                .execute(params![row.id, row.status, row.record, before])?;
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
            let n = tx
                .prepare_cached(
                    "DELETE FROM sessions WHERE rowid IN (SELECT rowid FROM sessions WHERE expires_at < ?1 LIMIT ?2)",
                )?
                .execute(params![ts(chrono::Utc::now()), PRUNE_BATCH as i64])?;
            more.push(n == PRUNE_BATCH);
            // Where pruned plans' chat messages were: nothing updates them.
            let n = tx
                .prepare_cached(
                    "DELETE FROM settings WHERE rowid IN (SELECT rowid FROM settings WHERE key LIKE 'slack:%' \
                     AND substr(key, 7) NOT IN (SELECT id FROM runs) LIMIT ?1)",
                )?
                .execute(params![PRUNE_BATCH as i64])?;
            more.push(n == PRUNE_BATCH);
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
        Op::Session { id_hash, row, .. } => {
            match row {
                Some(r) => tx
                    .prepare_cached(
                        "INSERT INTO sessions (id_hash, token, binding, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![id_hash, r.token, r.binding, r.created_at, r.expires_at])?,
                None => tx
                    .prepare_cached("DELETE FROM sessions WHERE id_hash = ?1")?
                    .execute([id_hash])?,
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

pub(super) fn put_run(tx: &Connection, row: &RunRow) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO runs (id, plugin, status, started_at, record, alert) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT(id) DO UPDATE SET status = excluded.status, record = excluded.record",
    )?
    .execute(params![
        row.id,
        row.plugin,
        row.status,
        row.started_at,
        row.record,
        row.alert
    ])?;
    Ok(())
}

pub(super) fn insert_alert(tx: &Connection, row: &AlertRow) -> Result<bool, StoreError> {
    let a = &row.a;
    let n = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO alerts (fingerprint, starts_at, status, name, received_at, alert) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![a.fingerprint, a.starts_at, a.status, a.name, a.received_at, row.json])?;
    Ok(n == 1)
}

/// Applies a batch in one transaction. First whole, without savepoints
/// (two statements fewer per write); should any write fail, that attempt
/// is rolled back and the batch applied again write by write.
fn apply_batch(
    conn: &mut Connection,
    batch: &[Op],
) -> Result<Vec<Result<Done, StoreError>>, StoreError> {
    // An action's intent is the promise that a crash never acts twice: its
    // commit is synced to disk (`synchronous = FULL`), not only written to
    // the WAL, so even a power loss right after the action cannot take the
    // intent back (and with it, every earlier write in the WAL). Other
    // batches keep `NORMAL`: durable across a process crash.
    let intent = batch.iter().any(|op| matches!(op, Op::Intend { .. }));
    if intent {
        conn.pragma_update(None, "synchronous", "FULL")?;
    }
    let result = apply_batch_inner(conn, batch);
    if intent {
        conn.pragma_update(None, "synchronous", "NORMAL")?;
    }
    result
}

fn apply_batch_inner(
    conn: &mut Connection,
    batch: &[Op],
) -> Result<Vec<Result<Done, StoreError>>, StoreError> {
    {
        let tx = conn.transaction()?;
        let whole: Result<Vec<Done>, StoreError> =
            batch.iter().map(|op| guarded(&tx, op)).collect();
        if let Ok(done) = whole {
            tx.commit()?;
            return Ok(done.into_iter().map(Ok).collect());
        }
        // Dropping `tx` rolls the attempt back.
    }
    let mut tx = conn.transaction()?;
    let mut results = Vec::with_capacity(batch.len());
    for op in batch {
        results.push(apply_alone(&mut tx, op));
    }
    tx.commit()?;
    Ok(results)
}

/// How long the writer waits, once woken with room in its batch, for more
/// writes to join it. Every send wakes a writer asleep on the queue, and
/// at nice 0 it takes the core from the run that sent at once: in a
/// storm's drain it committed batches of ~7 rows, ~11,000 times a second,
/// each after a wake and a context switch. Asleep for this long instead,
/// it is woken once per batch. Measured at 200 µs against the build
/// before, alternating: `scripts/load.sh 8s 64` 31,600–34,200 runs/s `202`
/// and 36,400–39,400 `?wait=true` (seven runs) against 21,200–29,900 and
/// 25,100–36,400 (four); at a fixed 17,000/s p99 2.8–2.9 ms against
/// 3.9–4.2; storms' drain 30,000–34,800 runs/s against 27,900–33,300 and
/// posts p99 median 106 against 119 ms (ten each). But at half the new
/// maximum rate p99 went over 5 ms in two runs of six (5.0, 8.1 ms), and in
/// two of three more against 100 µs (5.3, 8.0 against 3.0–4.2 ms), which
/// kept the rate (34,000–34,100 `202`) and the storms' drain
/// (33,300–34,400). 100 µs it is.
const LINGER: Duration = Duration::from_micros(100);

/// The next batch: blocks for its first op, then takes what is waiting,
/// urgent ops first, up to [`BATCH`] rows; with room left, waits `linger`
/// for more, unless the batch holds an urgent write (a critical alert's,
/// which goes at once). `None` once every sender of the main queue is gone.
fn next_batch(
    rx: &mpsc::Receiver<Op>,
    urgent: &mpsc::Receiver<Op>,
    linger: Duration,
) -> Option<Vec<Op>> {
    let mut batch = Vec::new();
    let mut rows = 0;
    let mut has_urgent = false;
    let take = |batch: &mut Vec<Op>, rows: &mut usize, has_urgent: &mut bool| {
        while let Ok(op) = urgent.try_recv() {
            *has_urgent = true;
            *rows += weight(&op);
            batch.push(op);
        }
        while *rows < BATCH {
            match rx.try_recv() {
                Ok(op) => {
                    *rows += weight(&op);
                    batch.push(op);
                }
                Err(_) => break,
            }
        }
    };
    take(&mut batch, &mut rows, &mut has_urgent);
    if batch.is_empty() {
        let first = rx.recv().ok()?;
        rows += weight(&first);
        batch.push(first);
        take(&mut batch, &mut rows, &mut has_urgent);
    }
    if rows < BATCH && !has_urgent && !linger.is_zero() {
        std::thread::sleep(linger);
        take(&mut batch, &mut rows, &mut has_urgent);
    }
    Some(batch)
}

/// Applies ops until every sender is gone. Ops in `urgent` (a critical
/// alert's receipt and run records) go into the next batch ahead of
/// whatever a storm has queued in `rx`.
pub(super) fn write_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<Op>,
    urgent: mpsc::Receiver<Op>,
    handoff: super::checkpoint::Handoff,
    stats: &crate::store::WriteStats,
) {
    while let Some(batch) = next_batch(&rx, &urgent, LINGER) {
        let began = std::time::Instant::now();
        let applied = apply_batch(&mut conn, &batch);
        stats.committed(batch.len(), began.elapsed());
        match applied {
            Ok(results) => {
                for (op, res) in batch.into_iter().zip(results) {
                    match op {
                        Op::Run { ack, .. } | Op::Settle { ack, .. } => {
                            drop(ack.send(res.map(|_| ())))
                        }
                        Op::Decide { ack, .. } => {
                            drop(ack.send(res.map(|d| matches!(d, Done::Inserted(true)))))
                        }
                        Op::Setting { ack, .. } | Op::Session { ack, .. } => {
                            drop(ack.send(res.map(|_| ())))
                        }
                        Op::Receive { ack, .. } | Op::Prune { ack, .. } => {
                            drop(ack.send(res.map(|d| match d {
                                Done::Received(v) => v,
                                _ => Vec::new(),
                            })))
                        }
                        Op::Audit { ack: Some(ack), .. } => drop(ack.send(res.map(|_| ()))),
                        Op::Audit { ack: None, .. } | Op::Wake => {}
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
                        Op::Setting { ack, .. } | Op::Session { ack, .. } => {
                            drop(ack.send(Err(err())))
                        }
                        Op::Receive { ack, .. } | Op::Prune { ack, .. } => {
                            drop(ack.send(Err(err())))
                        }
                        Op::Audit { ack: Some(ack), .. } => drop(ack.send(Err(err()))),
                        Op::Audit { ack: None, .. } | Op::Wake => {}
                        Op::Intend { ack, .. } => drop(ack.send(Err(err()))),
                    }
                }
            }
        }
        // Between batches, once every write in this one is answered.
        handoff.finish(&conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, record: &str) -> RunRow {
        RunRow {
            id: id.into(),
            plugin: "p".into(),
            status: "running",
            started_at: "2026-11-28T00:00:00.000000Z".into(),
            record: record.into(),
            alert: None,
        }
    }

    /// A batch is applied whole first; one write that fails (here: one a
    /// trigger refuses) must cost the others nothing, and must leave
    /// nothing of itself behind.
    #[test]
    fn one_failing_write_in_a_batch_is_rolled_back_alone() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        migrate(&conn).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON runs WHEN NEW.id = 'bad' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
        let (ack, _) = oneshot::channel();
        let (ack2, _) = oneshot::channel();
        let (ack3, _) = oneshot::channel();
        let batch = vec![
            Op::Run {
                row: row("a", r#"{"id":"a"}"#),
                ack,
            },
            Op::Run {
                row: row("bad", r#"{"id":"bad"}"#),
                ack: ack2,
            },
            Op::Run {
                row: row("c", r#"{"id":"c"}"#),
                ack: ack3,
            },
        ];
        let results = apply_batch(&mut conn, &batch).unwrap();
        assert!(
            results[0].is_ok() && results[2].is_ok(),
            "{:?}",
            results[0].as_ref().err()
        );
        assert!(results[1].is_err());
        let ids: Vec<String> = conn
            .prepare("SELECT id FROM runs ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids, ["a", "c"]);
    }

    /// An intent's transaction commits with `synchronous = FULL` (the
    /// trigger refuses it otherwise), and the writer is back to `NORMAL`
    /// for the batches after it.
    #[test]
    fn an_intent_commits_synced_to_disk_and_other_writes_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = connect(&dir.path().join("remedy.db")).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        migrate(&conn).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER synced BEFORE INSERT ON actions \
             WHEN (SELECT synchronous FROM pragma_synchronous) != 2 \
             BEGIN SELECT RAISE(ABORT, 'intent not synced'); END;",
        )
        .unwrap();
        let level = |c: &Connection| -> i64 {
            c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap()
        };
        assert_eq!(level(&conn), 1, "NORMAL between batches");
        let (ack, _) = oneshot::channel();
        let intent = crate::guardrails::Intent {
            run_id: "r".into(),
            plugin: "p".into(),
            kind: crate::action::ActionKind::CacheDelete,
            target: "key:k".into(),
            reason: "test".into(),
            at: chrono::Utc::now(),
            budget: crate::action::Budget {
                max: 5,
                per: std::time::Duration::from_secs(3600),
            },
            cooldown: None,
            cooldown_key: "key:k".into(),
        };
        let batch = vec![Op::Intend {
            intent: Box::new(intent),
            ack,
        }];
        let results = apply_batch(&mut conn, &batch).unwrap();
        match &results[0] {
            Ok(Done::Intended(Ok(_))) => {}
            Ok(Done::Intended(Err(e))) => panic!("refused: {e}"),
            Err(e) => panic!("the intent was not stored synced: {e}"),
            Ok(_) => panic!("not an intent's answer"),
        }
        assert_eq!(level(&conn), 1, "back to NORMAL after the intent");
        let (ack, _) = oneshot::channel();
        let batch = vec![Op::Run {
            row: row("a", r#"{"id":"a"}"#),
            ack,
        }];
        assert!(apply_batch(&mut conn, &batch).unwrap()[0].is_ok());
    }

    fn event(name: &str) -> Op {
        Op::Audit {
            event: AuditEvent {
                seq: 0,
                at: "2026-11-28T00:00:00.000000Z".into(),
                run_id: None,
                plugin: None,
                event: name.into(),
                detail: serde_json::Value::Null,
            },
            ack: None,
        }
    }

    /// A critical alert's write, sent after a storm's thousand, is applied
    /// in the writer's next batch, ahead of them (audit rows number the
    /// order writes were applied in).
    #[test]
    fn an_urgent_write_goes_before_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("remedy.db");
        let conn = connect(&path).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        migrate(&conn).unwrap();
        let (tx, rx) = mpsc::sync_channel(8192);
        let (urgent, urgent_rx) = mpsc::channel();
        for _ in 0..1_000 {
            tx.send(event("storm")).unwrap();
        }
        urgent.send(event("critical")).unwrap();
        drop((tx, urgent));
        write_loop(
            conn,
            rx,
            urgent_rx,
            super::super::checkpoint::Handoff::default(),
            &crate::store::WriteStats::default(),
        );
        let reader = connect(&path).unwrap();
        let seq: i64 = reader
            .query_row("SELECT seq FROM audit WHERE event = 'critical'", [], |r| {
                r.get(0)
            })
            .unwrap();
        let n: i64 = reader
            .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
            .unwrap();
        assert_eq!((seq, n), (1, 1_001));
    }

    /// Woken by one write, the writer waits a moment for more to join its
    /// transaction: in a storm every run's record woke it for a batch of
    /// its own. A critical alert's write does not wait.
    #[test]
    fn a_small_batch_waits_for_more_but_not_an_urgent_one() {
        let (tx, rx) = mpsc::sync_channel(8192);
        let (urgent, urgent_rx) = mpsc::channel();
        let linger = Duration::from_millis(300);

        tx.send(event("first")).unwrap();
        let late = tx.clone();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            late.send(event("joins")).unwrap();
        });
        let batch = next_batch(&rx, &urgent_rx, linger).unwrap();
        sender.join().unwrap();
        assert_eq!(
            batch.len(),
            2,
            "the write sent 10 ms later joined the batch"
        );

        urgent.send(event("critical")).unwrap();
        let late = tx.clone();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            late.send(event("next")).unwrap();
        });
        let t0 = std::time::Instant::now();
        let batch = next_batch(&rx, &urgent_rx, linger).unwrap();
        assert!(
            t0.elapsed() < Duration::from_millis(100) && batch.len() == 1,
            "an urgent write went at once, alone"
        );
        sender.join().unwrap();

        // A full batch goes without waiting.
        for _ in 0..BATCH {
            tx.send(event("storm")).unwrap();
        }
        let t0 = std::time::Instant::now();
        let batch = next_batch(&rx, &urgent_rx, linger).unwrap();
        assert!(t0.elapsed() < linger, "a full batch waited");
        assert_eq!(
            batch.len(),
            BATCH,
            "the queued `next` and the storm's, to the limit"
        );
        assert_eq!(next_batch(&rx, &urgent_rx, linger).unwrap().len(), 1);
        drop((tx, urgent));
        assert!(next_batch(&rx, &urgent_rx, linger).is_none());
    }
}
