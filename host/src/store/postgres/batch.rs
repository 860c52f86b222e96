//! Group commit for the PostgreSQL store: run records, audit events,
//! single-flight claims and releases that arrive together share one
//! transaction and one commit, as the SQLite store's writer batches its
//! writes.
//!
//! Each write used to be a round trip and a commit of its own through the
//! pool, so a storm's thousands of run records queued for the pool's
//! sixteen connections, one fsync each. Now a few writer tasks take every
//! write waiting when they come free, and write them as one statement per
//! kind (`unnest` over arrays, statements prepared once per connection,
//! sent pipelined) in one transaction. Every caller still returns only
//! once its write is committed: durability is unchanged
//! (`synchronous_commit` stays the server's).
//!
//! A batch that fails for a reason of the database's (a constraint, not a
//! dropped connection) is written again one write at a time, so that one
//! bad write fails alone. Urgent writes (a critical alert's) do not queue
//! here: they go straight to the connections kept for them.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::Statement;

use super::{pg, Fence, PUT_RUNS_FENCED_SQL, PUT_RUNS_SQL};
use crate::record::RunRecord;
use crate::store::{AuditEvent, StoreError, WriteStats};

/// Writer tasks: while one commits, the next collects a batch, and the
/// server merges their commits' flushes.
const WRITERS: usize = 4;
/// Most writes in one batch: bounds a transaction's size and the time the
/// first write of a batch waits for the last.
const MAX_BATCH: usize = 512;
/// Writes waiting for a writer before callers wait to hand theirs over.
const QUEUE: usize = 16 * 1024;

/// One write as the batch writes it.
pub(super) enum Write {
    Run(RunRow),
    Audit(AuditEvent),
    /// Claims the single flight of (plugin, target) for a run; answers
    /// whether it holds it.
    Claim {
        plugin: String,
        target: String,
        run_id: String,
        owner: Arc<str>,
    },
    /// Ends the single flight a run holds (a no-op when it holds none).
    Release {
        plugin: String,
        target: String,
        run_id: String,
    },
}

/// A run record's columns, and how it is written.
pub(super) struct RunRow {
    pub id: String,
    pub plugin: String,
    pub status: String,
    pub started_at: String,
    pub fingerprint: Option<String>,
    pub starts_at: Option<String>,
    pub record: String,
    pub writer: Arc<str>,
    pub fence: Fence,
    /// The run's single flight, ended in the same transaction once its
    /// final record lands (the target).
    pub release: Option<String>,
}

impl RunRow {
    pub(super) fn new(
        rec: &RunRecord,
        writer: Arc<str>,
        fence: Fence,
        release: bool,
    ) -> Result<RunRow, StoreError> {
        let (fingerprint, starts_at) = super::alert_of(rec);
        Ok(RunRow {
            id: rec.id.clone(),
            plugin: rec.plugin.clone(),
            status: rec.status.as_str().to_string(),
            started_at: crate::record::timestamp(rec.started_at),
            fingerprint: fingerprint.map(String::from),
            starts_at: starts_at.map(String::from),
            record: serde_json::to_string(rec)?,
            writer,
            fence,
            release: if release { rec.target.clone() } else { None },
        })
    }
}

/// What a write came to once committed: `true` but for a claim another
/// run holds.
type Reply = oneshot::Sender<Result<bool, StoreError>>;

struct Job {
    write: Write,
    reply: Reply,
}

/// The sending side, owned by the store; the writers end with it.
pub(super) struct Batcher {
    tx: mpsc::Sender<Job>,
    stats: Arc<WriteStats>,
}

impl Batcher {
    /// `stall`: the statement bounding how long a transaction that locks
    /// this incarnation's row may stall (`PgStore::bound_stall`'s).
    pub(super) fn start(pool: Pool, healthy: Arc<AtomicBool>, stall: String) -> Batcher {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let stats = Arc::new(WriteStats::default());
        let fenced_begin: Arc<str> = Arc::from(format!("BEGIN; {stall}"));
        for _ in 0..WRITERS {
            tokio::spawn(writer(
                rx.clone(),
                pool.clone(),
                healthy.clone(),
                stats.clone(),
                fenced_begin.clone(),
            ));
        }
        Batcher { tx, stats }
    }

    pub(super) fn stats(&self) -> &WriteStats {
        &self.stats
    }

    /// Hands `write` to a writer and waits for its commit.
    pub(super) async fn write(&self, write: Write) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { write, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// Takes every write waiting (up to [`MAX_BATCH`]) and commits them
/// together, until the store is dropped.
async fn writer(
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    pool: Pool,
    healthy: Arc<AtomicBool>,
    stats: Arc<WriteStats>,
    fenced_begin: Arc<str>,
) {
    let mut carried: Option<Job> = None;
    loop {
        let mut batch = Vec::new();
        {
            let mut rx = rx.lock().await;
            let first = match carried.take() {
                Some(job) => job,
                None => match rx.recv().await {
                    Some(job) => job,
                    None => return,
                },
            };
            let mut keys = Keys::default();
            keys.admit(&first.write);
            batch.push(first);
            while batch.len() < MAX_BATCH {
                let Ok(job) = rx.try_recv() else { break };
                // A second write to the same row in one statement is an
                // error in PostgreSQL: it starts the next batch instead.
                if !keys.admit(&job.write) {
                    carried = Some(job);
                    break;
                }
                batch.push(job);
            }
        }
        let (writes, replies): (Vec<Write>, Vec<Reply>) =
            batch.into_iter().map(|j| (j.write, j.reply)).unzip();
        let began = std::time::Instant::now();
        // The store is down only when it cannot be reached: a write the
        // database refuses (a constraint) says it is up.
        let (answers, reached) = match commit(&pool, &writes, &fenced_begin).await {
            Err(e) if writes.len() > 1 && e.from_database => {
                // One write may be the cause: each alone, so it fails alone.
                let mut answers = Vec::with_capacity(writes.len());
                let mut reached = true;
                for w in &writes {
                    answers.push(
                        match commit(&pool, std::slice::from_ref(w), &fenced_begin).await {
                            Ok(mut a) => a.remove(0),
                            Err(e) => {
                                reached &= e.from_database;
                                Err(e.error)
                            }
                        },
                    );
                }
                (answers, reached)
            }
            Ok(answers) => (answers, true),
            Err(e) => {
                let text = e.error.to_string();
                let answers = writes
                    .iter()
                    .map(|_| Err(StoreError::Postgres(text.clone())))
                    .collect();
                (answers, e.from_database)
            }
        };
        stats.committed(writes.len(), began.elapsed());
        healthy.store(reached, Ordering::SeqCst);
        for (reply, answer) in replies.into_iter().zip(answers) {
            let _ = reply.send(answer);
        }
    }
}

/// The rows a batch writes, so that none is written twice by one statement.
#[derive(Default)]
struct Keys {
    runs: HashSet<String>,
    claims: HashSet<(String, String)>,
}

impl Keys {
    fn admit(&mut self, w: &Write) -> bool {
        match w {
            Write::Run(r) => self.runs.insert(r.id.clone()),
            Write::Claim { plugin, target, .. } => {
                self.claims.insert((plugin.clone(), target.clone()))
            }
            Write::Audit(_) | Write::Release { .. } => true,
        }
    }
}

struct Failed {
    error: StoreError,
    /// The database refused the batch (rather than the connection failing):
    /// one write of it may be the cause.
    from_database: bool,
}

impl Failed {
    fn new(e: tokio_postgres::Error) -> Failed {
        Failed {
            from_database: e.as_db_error().is_some(),
            error: pg(e),
        }
    }
}

/// Writes `writes` in one transaction: explicit releases, then runs by
/// writer (and the flights their final records end), then claims, then
/// audit events, sent pipelined in that order. Answers each write's
/// outcome in order.
/// `fenced_begin` starts a transaction holding fenced writes (with the
/// stall bound).
async fn commit(
    pool: &Pool,
    writes: &[Write],
    fenced_begin: &str,
) -> Result<Vec<Result<bool, StoreError>>, Failed> {
    let c = pool.get().await.map_err(|e| Failed {
        error: pg(e),
        from_database: false,
    })?;
    let cols = Columns::of(writes);
    // Prepared once per connection (cached), before anything is sent.
    let prepared = Prepared::for_(&c, &cols).await.map_err(Failed::new)?;
    // The whole transaction in one round trip: `BEGIN`, the statements
    // and `COMMIT` sent at once, in this order (each request goes out when
    // its future is first polled, and `join_all` polls them in order). A
    // statement that fails aborts the transaction, so `COMMIT` rolls it
    // back; every answer is awaited before the connection goes back.
    // A fenced write locks this incarnation's row: as
    // `PgStore::bound_stall`, a stall must not hold it past half a lease.
    let begin = if cols.fenced { fenced_begin } else { "BEGIN" };
    let client: &tokio_postgres::Client = &c;
    let mut sent: Vec<futures_util::future::BoxFuture<'_, Result<Done, tokio_postgres::Error>>> =
        vec![Box::pin(async move {
            client.batch_execute(begin).await.map(|()| Done::Nothing)
        })];
    sent.extend(cols.statements(client, &prepared));
    sent.push(Box::pin(async move {
        client.batch_execute("COMMIT").await.map(|()| Done::Nothing)
    }));
    let results = futures_util::future::join_all(sent).await;
    let mut landed: HashSet<String> = HashSet::new();
    let mut claimed: HashSet<String> = HashSet::new();
    for r in results {
        match r.map_err(Failed::new)? {
            Done::Landed(ids) => landed.extend(ids),
            Done::Claimed(ids) => claimed.extend(ids),
            Done::Nothing => {}
        }
    }
    Ok(writes
        .iter()
        .map(|w| match w {
            Write::Run(r) if r.fence == Fence::Owner && !landed.contains(&r.id) => {
                Err(StoreError::Fenced(format!(
                    "run {} is no longer owned by this replica's incarnation {} (it was taken over while this replica stalled)",
                    r.id, r.writer
                )))
            }
            Write::Claim { run_id, .. } => Ok(claimed.contains(run_id)),
            _ => Ok(true),
        })
        .collect())
}

/// What one statement of a batch reports.
enum Done {
    /// Fenced run writes that landed.
    Landed(Vec<String>),
    /// Claims the runs now hold.
    Claimed(Vec<String>),
    Nothing,
}

type Text = Vec<String>;
type MaybeText = Vec<Option<String>>;

/// A batch's writes as the arrays its statements take.
#[derive(Default)]
struct Columns {
    /// plugin, target, run id.
    releases: [Text; 3],
    /// plugin, target, run id, owner.
    claims: [Text; 4],
    runs: Vec<RunGroup>,
    /// at, run id, plugin, event, detail.
    audits: [MaybeText; 5],
    fenced: bool,
}

/// The runs of one writer, written one way.
struct RunGroup {
    writer: String,
    fence: Fence,
    /// id, plugin, status, started_at, record.
    text: [Text; 5],
    /// alert fingerprint, alert start.
    alert: [MaybeText; 2],
    /// plugin, target, run id of the flights their final records end.
    released: [Text; 3],
}

impl Columns {
    fn of(writes: &[Write]) -> Columns {
        let mut c = Columns::default();
        for w in writes {
            match w {
                Write::Run(r) => {
                    let i = match c
                        .runs
                        .iter()
                        .position(|g| g.writer == *r.writer && g.fence == r.fence)
                    {
                        Some(i) => i,
                        None => {
                            c.runs.push(RunGroup {
                                writer: r.writer.to_string(),
                                fence: r.fence,
                                text: Default::default(),
                                alert: Default::default(),
                                released: Default::default(),
                            });
                            c.runs.len() - 1
                        }
                    };
                    let g = &mut c.runs[i];
                    push_row(
                        &mut g.text,
                        [&r.id, &r.plugin, &r.status, &r.started_at, &r.record],
                    );
                    g.alert[0].push(r.fingerprint.clone());
                    g.alert[1].push(r.starts_at.clone());
                    if let Some(target) = &r.release {
                        push_row(&mut g.released, [&r.plugin, target, &r.id]);
                    }
                    c.fenced |= r.fence == Fence::Owner;
                }
                Write::Audit(e) => {
                    let detail = e.detail.to_string();
                    for (col, v) in c.audits.iter_mut().zip([
                        Some(&e.at),
                        e.run_id.as_ref(),
                        e.plugin.as_ref(),
                        Some(&e.event),
                        Some(&detail),
                    ]) {
                        col.push(v.cloned());
                    }
                }
                Write::Claim {
                    plugin,
                    target,
                    run_id,
                    owner,
                } => {
                    push_row(&mut c.claims, [plugin, target, run_id, &owner.to_string()]);
                }
                Write::Release {
                    plugin,
                    target,
                    run_id,
                } => {
                    push_row(&mut c.releases, [plugin, target, run_id]);
                }
            }
        }
        c
    }

    /// The statements in the order they are to be sent: a claim comes
    /// after the release of a run that ends in the same batch.
    fn statements<'a>(
        &'a self,
        tx: &'a tokio_postgres::Client,
        p: &'a Prepared,
    ) -> Vec<futures_util::future::BoxFuture<'a, Result<Done, tokio_postgres::Error>>> {
        use tokio_postgres::types::ToSql;
        let mut out: Vec<futures_util::future::BoxFuture<'a, _>> = Vec::new();
        if let Some(s) = &p.release {
            let [a, b, c] = &self.releases;
            out.push(Box::pin(async move {
                tx.execute(s, &[a, b, c]).await?;
                Ok(Done::Nothing)
            }));
        }
        for g in &self.runs {
            let [id, plugin, status, started, record] = &g.text;
            let [fp, sa] = &g.alert;
            let params: [&(dyn ToSql + Sync); 8] =
                [id, plugin, status, started, fp, sa, record, &g.writer];
            match g.fence {
                Fence::Unfenced => out.push(Box::pin(async move {
                    tx.execute(&p.runs, &params).await?;
                    Ok(Done::Nothing)
                })),
                Fence::Owner => out.push(Box::pin(async move {
                    let rows = tx.query(&p.fenced_runs, &params).await?;
                    Ok(Done::Landed(rows.iter().map(|r| r.get(0)).collect()))
                })),
            }
            if !g.released[0].is_empty() {
                // Only where this writer still holds the flight: after a
                // take-over the survivor's claim is left alone.
                let [a, b, c] = &g.released;
                out.push(Box::pin(async move {
                    tx.execute(&p.release_own, &[a, b, c, &g.writer]).await?;
                    Ok(Done::Nothing)
                }));
            }
        }
        if let Some(s) = &p.claim {
            let [a, b, c, d] = &self.claims;
            out.push(Box::pin(async move {
                let rows = tx.query(s, &[a, b, c, d]).await?;
                Ok(Done::Claimed(rows.iter().map(|r| r.get(0)).collect()))
            }));
        }
        if let Some(s) = &p.audit {
            let [a, b, c, d, e] = &self.audits;
            out.push(Box::pin(async move {
                tx.execute(s, &[a, b, c, d, e]).await?;
                Ok(Done::Nothing)
            }));
        }
        out
    }
}

/// Appends one row's values to the columns they belong to.
fn push_row<const N: usize>(columns: &mut [Text; N], row: [&String; N]) {
    for (column, value) in columns.iter_mut().zip(row) {
        column.push(value.clone());
    }
}

/// The statements a batch needs, prepared on its connection.
struct Prepared {
    release: Option<Statement>,
    claim: Option<Statement>,
    audit: Option<Statement>,
    runs: Statement,
    fenced_runs: Statement,
    release_own: Statement,
}

impl Prepared {
    async fn for_(
        tx: &deadpool_postgres::Object,
        c: &Columns,
    ) -> Result<Prepared, tokio_postgres::Error> {
        let maybe = |needed: bool, sql: &'static str| async move {
            match needed {
                true => tx.prepare_cached(sql).await.map(Some),
                false => Ok(None),
            }
        };
        Ok(Prepared {
            release: maybe(!c.releases[0].is_empty(), RELEASE_SQL).await?,
            claim: maybe(!c.claims[0].is_empty(), CLAIM_SQL).await?,
            audit: maybe(!c.audits[0].is_empty(), AUDIT_SQL).await?,
            runs: tx.prepare_cached(PUT_RUNS_SQL).await?,
            fenced_runs: tx.prepare_cached(&PUT_RUNS_FENCED_RETURNING_SQL).await?,
            release_own: tx.prepare_cached(RELEASE_OWN_SQL).await?,
        })
    }
}

/// See [`super::CLAIM_FLIGHT`]: one statement for the batch's claims.
const CLAIM_SQL: &str = "INSERT INTO flights (plugin, target, run_id, replica) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) \
     ON CONFLICT (plugin, target) DO UPDATE SET replica = excluded.replica, run_id = excluded.run_id \
     WHERE flights.run_id = excluded.run_id OR flights.replica = excluded.replica \
     RETURNING run_id";

const RELEASE_SQL: &str = "DELETE FROM flights f \
     USING unnest($1::text[], $2::text[], $3::text[]) AS r(plugin, target, run_id) \
     WHERE f.plugin = r.plugin AND f.target = r.target AND f.run_id = r.run_id";

/// Ends the flights of runs whose final records `$4` wrote, only where
/// that writer still holds them: after a take-over the survivor's claim
/// is left alone.
pub(super) const RELEASE_OWN_SQL: &str = "DELETE FROM flights f \
     USING unnest($1::text[], $2::text[], $3::text[]) AS r(plugin, target, run_id) \
     WHERE f.plugin = r.plugin AND f.target = r.target AND f.run_id = r.run_id \
     AND f.replica = $4";

/// In order, so that `seq` follows the order the events were handed over.
const AUDIT_SQL: &str = "INSERT INTO audit (at, run_id, plugin, event, detail) \
     SELECT at, run_id, plugin, event, detail \
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) \
       WITH ORDINALITY AS t(at, run_id, plugin, event, detail, n) ORDER BY n";

static PUT_RUNS_FENCED_RETURNING_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{PUT_RUNS_FENCED_SQL} RETURNING id"));
