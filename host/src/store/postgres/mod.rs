//! The PostgreSQL store (`server.store = "postgres://…"`): what several
//! replicas will share. A pool (deadpool-postgres) over the same
//! tokio-postgres client the database backend uses; the schema is versioned
//! by refinery, embedded in the binary and applied at start, and a database
//! whose schema has migrations this binary does not know is refused rather
//! than written with an older idea of it.
//!
//! Each guarantee is the database's, not timing's: an alert is stored once
//! (its primary key), a plan is decided once (a conditional update), and
//! budgets, cooldowns and the kill switch are checked and the intent
//! recorded in one transaction under a transaction-scoped advisory lock per
//! plugin (safe behind PgBouncer, unlike session locks). How replicas
//! coordinate (heartbeats, leases, flights, ticks, take-over) is in
//! `cluster`.

use crate::locks::RwLockExt;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

use super::rules::*;
use super::{
    AuditEvent, AuditFilter, Orphans, Replica, ReplicaRow, RunFilter, Store, StoreError,
    StoredAlert,
};
use crate::guardrails::{Intent, Ledger, Refusal};
use crate::record::{timestamp as ts, Applied, RunRecord, Trigger};

mod batch;
mod bus;
mod cluster;

mod embedded {
    refinery::embed_migrations!("src/store/postgres/migrations");
}

/// Claims the single flight of (plugin, target) for a run. The same run
/// claiming again (a resumed run) keeps its claim, and a run of the same
/// incarnation takes the row over: the claimer holds the target in this
/// process's memory, where single flight is decided first, so a row of
/// another run of its own is one on its way out (a run that ended and is
/// releasing it, or one a receipt claimed for and that lost the target in
/// memory to this run).
pub(super) const CLAIM_FLIGHT: &str = "INSERT INTO flights (plugin, target, run_id, replica) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (plugin, target) DO UPDATE SET replica = excluded.replica, run_id = excluded.run_id \
     WHERE flights.run_id = excluded.run_id OR flights.replica = excluded.replica";

/// Most rows one listing returns (as the SQLite store).
const MAX_ROWS: u32 = 1000;
/// Most rows of one table one prune removes.
const PRUNE_BATCH: i64 = 5_000;
const KILL_SWITCH: &str = "kill_switch";
/// Connections per replica for everything but urgent work.
const POOL: usize = 16;
/// Connections per replica kept for urgent work.
const URGENT_POOL: usize = 2;

pub struct PgStore {
    pool: Pool,
    /// Connections kept for urgent work (see `store::urgency`): in a storm
    /// thousands of queued runs wait for `pool`, first come, first served,
    /// and a critical alert's receipt and run records waited behind them
    /// (p99 ~1.1 s from receipt to run start).
    urgent: Pool,
    /// The replica this process is.
    me: Replica,
    /// Its incarnation now (see `store::fence`): it owns the runs it writes.
    incarnation: RwLock<Arc<str>>,
    /// Bumped each time this replica finds it was taken over.
    generation: AtomicU64,
    /// Cleared when a write finds the database gone; set again by the next
    /// write that succeeds.
    healthy: Arc<AtomicBool>,
    /// Group commit of run records, audit events and flights (`batch`).
    batch: batch::Batcher,
    /// The cluster's live events (`bus`).
    bus: Arc<bus::PgBus>,
}

/// A PostgreSQL or pool error with its causes (a TLS handshake failure
/// says which certificate check failed only in its source).
pub(super) fn pg(e: impl std::error::Error) -> StoreError {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = cause.source();
    }
    StoreError::Postgres(text)
}

impl PgStore {
    /// Connects, applies the migrations this binary carries (refusing a
    /// newer schema) and registers `me` as a live replica. What stopped
    /// replicas left is taken over by [`Store::take_over`]. TLS follows the
    /// URL's `sslmode`, as for the database backend; with `ca`, the server's
    /// certificate must chain to it.
    pub async fn connect(
        url: &str,
        me: Replica,
        ca: Option<&crate::config::CaFile>,
    ) -> Result<PgStore, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(pg)?;
        if config.get_application_name().is_none() {
            config.application_name("remedy-store");
        }
        let tls = crate::backends::pg_tls::tls_config(ca.map(|c| &c.certs[..]))
            .map_err(StoreError::Postgres)?;
        let manager = |config| {
            Manager::from_config(
                config,
                tokio_postgres_rustls::MakeRustlsConnect::new(tls.clone()),
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            )
        };
        let listener = config.clone();
        let pool = Pool::builder(manager(config.clone()))
            .max_size(POOL)
            .build()
            .map_err(pg)?;
        let urgent = Pool::builder(manager(config))
            .max_size(URGENT_POOL)
            .build()
            .map_err(pg)?;
        migrate(&pool).await?;
        let bus = Arc::new(bus::PgBus::start(
            listener,
            tokio_postgres_rustls::MakeRustlsConnect::new(tls.clone()),
            me.id.clone(),
            me.name.clone(),
        ));
        let healthy = Arc::new(AtomicBool::new(true));
        let store = PgStore {
            batch: batch::Batcher::start(pool.clone(), healthy.clone(), stall_bound(me.lease)),
            bus,
            pool,
            urgent,
            incarnation: RwLock::new(super::fence::incarnation(&me.id, 0)),
            generation: AtomicU64::new(0),
            me,
            healthy,
        };
        store.register().await?;
        Ok(store)
    }

    /// A transaction that locks this incarnation's row (fenced writes) is
    /// ended by the server if this process stalls inside it for half a
    /// lease: otherwise a replica stopped mid-transaction would keep the
    /// lock, and the survivors could not take its work over until it woke.
    async fn bound_stall(&self, tx: &deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
        tx.batch_execute(&stall_bound(self.me.lease))
            .await
            .map_err(pg)
    }

    /// This replica's incarnation now.
    pub(super) fn current(&self) -> Arc<str> {
        self.incarnation.read_locked().clone()
    }

    /// The incarnation a write is made for: the run's (inside one), else
    /// the current one.
    fn owner(&self) -> Arc<str> {
        super::fence::owner().unwrap_or_else(|| self.current())
    }

    /// After a take-over: a new incarnation, so nothing claimed by the old
    /// one can be written as this replica's again.
    pub(super) fn reincarnate(&self) -> Arc<str> {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let next = super::fence::incarnation(&self.me.id, generation);
        *self.incarnation.write_locked() = next.clone();
        next
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        let pool = if super::on_urgent_thread() {
            &self.urgent
        } else {
            &self.pool
        };
        let c = pool.get().await.map_err(|e| {
            self.healthy.store(false, Ordering::SeqCst);
            pg(e)
        })?;
        self.healthy.store(true, Ordering::SeqCst);
        Ok(c)
    }
}

/// Applies the embedded migrations, all in one transaction. Replicas that
/// start together on an empty database race to create the schema: the
/// losers' transactions fail and roll back whole, and they try again and
/// find it applied. A schema with migrations this binary does not know is
/// refused.
async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    const ATTEMPTS: u32 = 5;
    let mut attempt = 1;
    loop {
        let mut client = pool.get().await.map_err(pg)?;
        let r = embedded::migrations::runner()
            .set_abort_missing(true)
            .set_grouped(true)
            .run_async(&mut **client)
            .await;
        match r {
            Ok(_) => return Ok(()),
            Err(e)
                if attempt < ATTEMPTS
                    && !matches!(
                        e.kind(),
                        refinery::error::Kind::MissingVersion(_)
                            | refinery::error::Kind::DivergentVersion(..)
                    ) =>
            {
                tracing::info!(attempt, error = %e, "schema migration raced another replica; trying again");
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(e) => {
                return Err(StoreError::Postgres(format!(
                    "schema migration failed: {e} (a schema newer than this binary is refused: run the newer Remedy, or a fresh database)"
                )))
            }
        }
    }
}

/// The statement that ends a transaction this replica stalls inside for
/// half its lease (see [`PgStore::bound_stall`]).
fn stall_bound(lease: std::time::Duration) -> String {
    let ms = (lease.as_millis() / 2).max(500);
    format!("SET LOCAL idle_in_transaction_session_timeout = {ms}")
}

/// The alert columns of a run (a repeat looks its runs up by them).
fn alert_of(rec: &RunRecord) -> (Option<&str>, Option<&str>) {
    match &rec.trigger {
        Trigger::Alert { alert } => (Some(&alert.fingerprint), Some(&alert.starts_at)),
        _ => (None, None),
    }
}

pub(super) async fn put_run_in(
    c: &impl deadpool_postgres::GenericClient,
    writer: &str,
    rec: &RunRecord,
    fence: Fence,
) -> Result<(), StoreError> {
    put_runs_in(c, writer, &[rec], fence).await
}

/// How a run write treats the row it may replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fence {
    /// Last write wins and `writer` becomes the owner: writes made outside
    /// a run (an escalation, a verification) and the take-over's own.
    Unfenced,
    /// A run's own write (see `store::fence`): only while `writer` is a
    /// registered incarnation (its row locked against a take-over) and
    /// owns the row; a `running` write only over `queued` or `running`, so
    /// a run starts at most once.
    Owner,
}

/// Inserts or replaces run records in one statement (arrays, `unnest`): an
/// alert storm's payload costs one round trip, not one per run. A fenced
/// write that did not land on every record answers `Fenced`.
async fn put_runs_in(
    c: &impl deadpool_postgres::GenericClient,
    writer: &str,
    recs: &[&RunRecord],
    fence: Fence,
) -> Result<(), StoreError> {
    if recs.is_empty() {
        return Ok(());
    }
    let cols = RunColumns::of(recs, writer)?;
    let sql = match fence {
        Fence::Unfenced => PUT_RUNS_SQL,
        Fence::Owner => PUT_RUNS_FENCED_SQL,
    };
    let n = c.execute(sql, &cols.params()).await.map_err(pg)?;
    if fence == Fence::Owner && n < recs.len() as u64 {
        return Err(StoreError::Fenced(format!(
            "run {} is no longer owned by this replica's incarnation {writer} (it was taken over while this replica stalled)",
            cols.ids.join(", ")
        )));
    }
    Ok(())
}

/// Run records as the arrays the run statements take (`$1`–`$8`).
struct RunColumns {
    ids: Vec<String>,
    plugins: Vec<String>,
    statuses: Vec<String>,
    started: Vec<String>,
    fingerprints: Vec<Option<String>>,
    starts: Vec<Option<String>>,
    records: Vec<String>,
    writer: String,
}

impl RunColumns {
    fn of(recs: &[&RunRecord], writer: &str) -> Result<RunColumns, StoreError> {
        let mut c = RunColumns {
            ids: Vec::with_capacity(recs.len()),
            plugins: Vec::with_capacity(recs.len()),
            statuses: Vec::with_capacity(recs.len()),
            started: Vec::with_capacity(recs.len()),
            fingerprints: Vec::with_capacity(recs.len()),
            starts: Vec::with_capacity(recs.len()),
            records: Vec::with_capacity(recs.len()),
            writer: writer.to_string(),
        };
        for rec in recs {
            let (fingerprint, starts_at) = alert_of(rec);
            c.ids.push(rec.id.clone());
            c.plugins.push(rec.plugin.clone());
            c.statuses.push(rec.status.as_str().to_string());
            c.started.push(ts(rec.started_at));
            c.fingerprints.push(fingerprint.map(String::from));
            c.starts.push(starts_at.map(String::from));
            c.records.push(serde_json::to_string(rec)?);
        }
        Ok(c)
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 8] {
        [
            &self.ids,
            &self.plugins,
            &self.statuses,
            &self.started,
            &self.fingerprints,
            &self.starts,
            &self.records,
            &self.writer,
        ]
    }
}

const PUT_RUNS_SQL: &str = "INSERT INTO runs (id, plugin, status, started_at, alert_fingerprint, alert_starts_at, record, replica) \
     SELECT id, plugin, status, started_at, fp, sa, record, $8 \
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) \
       AS t(id, plugin, status, started_at, fp, sa, record) \
     ON CONFLICT (id) DO UPDATE SET status = excluded.status, record = excluded.record, replica = excluded.replica";

/// `FOR KEY SHARE` conflicts with the take-over's `FOR UPDATE` and
/// `DELETE` of the incarnation's row, not with its heartbeat's `UPDATE`.
const PUT_RUNS_FENCED_SQL: &str = "WITH alive AS (SELECT id FROM replicas WHERE id = $8 FOR KEY SHARE) \
     INSERT INTO runs (id, plugin, status, started_at, alert_fingerprint, alert_starts_at, record, replica) \
     SELECT id, plugin, status, started_at, fp, sa, record, $8 \
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) \
       AS t(id, plugin, status, started_at, fp, sa, record) \
     WHERE EXISTS (SELECT 1 FROM alive) \
     ON CONFLICT (id) DO UPDATE SET status = excluded.status, record = excluded.record \
     WHERE runs.replica = excluded.replica \
       AND (excluded.status <> 'running' OR runs.status IN ('queued', 'running'))";

pub(super) fn records(rows: Vec<tokio_postgres::Row>) -> Result<Vec<RunRecord>, StoreError> {
    rows.iter()
        .map(|r| Ok(serde_json::from_str(r.get(0))?))
        .collect()
}

#[async_trait::async_trait]
impl Store for PgStore {
    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    async fn put_run(&self, rec: &RunRecord) -> Result<(), StoreError> {
        self.write_run(rec, false).await
    }

    async fn finish_run(&self, rec: &RunRecord, release_flight: bool) -> Result<(), StoreError> {
        self.write_run(rec, release_flight).await
    }

    async fn audit(&self, e: AuditEvent) -> Result<(), StoreError> {
        if !super::on_urgent_thread() {
            return self.batch.write(batch::Write::Audit(e)).await.map(drop);
        }
        self.client()
            .await?
            .execute(
                "INSERT INTO audit (at, run_id, plugin, event, detail) VALUES ($1, $2, $3, $4, $5)",
                &[&e.at, &e.run_id, &e.plugin, &e.event, &e.detail.to_string()],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn receive(
        &self,
        items: Vec<(StoredAlert, &[RunRecord])>,
    ) -> Result<Vec<bool>, StoreError> {
        Ok(self.receive_tx(items, false).await?.0)
    }

    async fn receive_and_claim(
        &self,
        items: Vec<(StoredAlert, &[RunRecord])>,
    ) -> Result<(Vec<bool>, HashSet<String>), StoreError> {
        self.receive_tx(items, true).await
    }

    async fn decide(&self, rec: &RunRecord, approvals_before: usize) -> Result<bool, StoreError> {
        let before = i32::try_from(approvals_before).unwrap_or(i32::MAX);
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE runs SET status = $2, record = $3 WHERE id = $1 AND status = 'pending_approval' \
                 AND coalesce(jsonb_array_length(record::jsonb -> 'approval' -> 'approvals'), 0) = $4",
                &[&rec.id, &rec.status.as_str(), &serde_json::to_string(rec)?, &before],
            )
            .await
            .map_err(pg)?;
        Ok(n == 1)
    }

    async fn prune(&self, before: &str, ledger_before: &str) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let mut more = false;
        for (sql, cutoff) in [
            ("DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE started_at < $1 \
              AND status NOT IN ('queued', 'running', 'pending_approval') LIMIT $2)", before),
            ("DELETE FROM alerts WHERE (fingerprint, starts_at, status) IN (SELECT fingerprint, starts_at, status \
              FROM alerts WHERE received_at < $1 LIMIT $2)", before),
            ("DELETE FROM audit WHERE seq IN (SELECT seq FROM audit WHERE at < $1 LIMIT $2)", before),
            ("DELETE FROM actions WHERE id IN (SELECT id FROM actions WHERE at < $1 AND status <> 'intent' LIMIT $2)", ledger_before),
        ] {
            let n = c.execute(sql, &[&cutoff, &PRUNE_BATCH]).await.map_err(pg)?;
            more |= n == PRUNE_BATCH as u64;
        }
        // A tick claim matters only while replicas may still reach its
        // tick: a day is plenty.
        let n = c
            .execute(
                "DELETE FROM ticks WHERE ctid IN (SELECT ctid FROM ticks \
                 WHERE claimed_at < now() - interval '1 day' LIMIT $1)",
                &[&PRUNE_BATCH],
            )
            .await
            .map_err(pg)?;
        more |= n == PRUNE_BATCH as u64;
        let n = c
            .execute(
                "DELETE FROM sessions WHERE id_hash IN (SELECT id_hash FROM sessions \
                 WHERE expires_at < now() LIMIT $1)",
                &[&PRUNE_BATCH],
            )
            .await
            .map_err(pg)?;
        more |= n == PRUNE_BATCH as u64;
        // Where pruned plans' chat messages were: nothing updates them.
        let n = c
            .execute(
                "DELETE FROM settings WHERE key IN (SELECT key FROM settings WHERE key LIKE 'slack:%' \
                 AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.id = substr(settings.key, 7)) LIMIT $1)",
                &[&PRUNE_BATCH],
            )
            .await
            .map_err(pg)?;
        more |= n == PRUNE_BATCH as u64;
        Ok(more)
    }

    async fn create_session(
        &self,
        session: &super::StoredSession,
        ttl: std::time::Duration,
    ) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO sessions (id_hash, token, binding, expires_at) \
                 VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
                &[
                    &session.id_hash,
                    &session.token,
                    &session.binding,
                    &ttl.as_secs_f64(),
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn session(&self, id_hash: &str) -> Result<Option<super::StoredSession>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT token, binding FROM sessions WHERE id_hash = $1 AND expires_at > now()",
                &[&id_hash],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| super::StoredSession {
            id_hash: id_hash.to_string(),
            token: r.get(0),
            binding: r.get(1),
        }))
    }

    async fn end_session(&self, id_hash: &str) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute("DELETE FROM sessions WHERE id_hash = $1", &[&id_hash])
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn set_pause(&self, pause: Option<crate::killswitch::Pause>) -> Result<(), StoreError> {
        let c = self.client().await?;
        match pause {
            Some(p) => c
                .execute(
                    "INSERT INTO settings (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[&KILL_SWITCH, &serde_json::to_string(&p)?],
                )
                .await
                .map_err(pg)?,
            None => c
                .execute("DELETE FROM settings WHERE key = $1", &[&KILL_SWITCH])
                .await
                .map_err(pg)?,
        };
        Ok(())
    }

    async fn put_setting(&self, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        let c = self.client().await?;
        match value {
            Some(v) => c
                .execute(
                    "INSERT INTO settings (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[&key, &v],
                )
                .await
                .map_err(pg)?,
            None => c
                .execute("DELETE FROM settings WHERE key = $1", &[&key])
                .await
                .map_err(pg)?,
        };
        Ok(())
    }

    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT value FROM settings WHERE key = $1", &[&key])
            .await
            .map_err(pg)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn settings_under(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT key, value FROM settings WHERE left(key, length($1)) = $1 ORDER BY key",
                &[&prefix],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn pause(&self) -> Result<Option<crate::killswitch::Pause>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT value FROM settings WHERE key = $1", &[&KILL_SWITCH])
            .await
            .map_err(pg)?;
        Ok(row.map(|r| serde_json::from_str(r.get(0))).transpose()?)
    }

    async fn runs_for_alerts(
        &self,
        keys: &[super::AlertKey],
    ) -> Result<Vec<Vec<RunRecord>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let plugins: Vec<&str> = keys.iter().map(|k| k.plugin.as_str()).collect();
        let fingerprints: Vec<&str> = keys.iter().map(|k| k.fingerprint.as_str()).collect();
        let starts: Vec<&str> = keys.iter().map(|k| k.starts_at.as_str()).collect();
        // One round trip for a payload's repeats: each key's newest 50,
        // tagged with the key's position.
        let rows = self
            .client()
            .await?
            .query(
                "SELECT k.i, r.record FROM unnest($1::text[], $2::text[], $3::text[]) \
                 WITH ORDINALITY AS k(plugin, fingerprint, starts_at, i) \
                 CROSS JOIN LATERAL (SELECT record, started_at FROM runs \
                   WHERE plugin = k.plugin AND alert_fingerprint = k.fingerprint \
                   AND alert_starts_at = k.starts_at ORDER BY started_at DESC LIMIT 50) r \
                 ORDER BY k.i, r.started_at DESC",
                &[&plugins, &fingerprints, &starts],
            )
            .await
            .map_err(pg)?;
        let mut found = vec![Vec::new(); keys.len()];
        for row in rows {
            let i: i64 = row.get(0);
            let rec: RunRecord = serde_json::from_str(row.get(1))?;
            found[(i - 1) as usize].push(rec);
        }
        Ok(found)
    }

    async fn take_over(&self) -> Result<Orphans, StoreError> {
        self.take_over_dead().await
    }

    fn shared(&self) -> bool {
        true
    }

    fn write_stats(&self) -> Option<&super::WriteStats> {
        Some(self.batch.stats())
    }

    fn bus(&self) -> Option<Arc<dyn super::bus::Bus>> {
        Some(self.bus.clone())
    }

    fn incarnation(&self) -> Option<Arc<str>> {
        Some(self.current())
    }

    async fn own_queued(&self) -> Result<Vec<String>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id FROM runs WHERE replica = $1 AND status = 'queued' ORDER BY started_at LIMIT 10000",
                &[&&*self.current()],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn owns_run(&self, id: &str) -> Result<bool, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT replica = $2 FROM runs WHERE id = $1",
                &[&id, &&*self.current()],
            )
            .await
            .map_err(pg)?;
        Ok(row.is_some_and(|r| r.get::<_, Option<bool>>(0).unwrap_or(false)))
    }

    async fn own_flights(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT plugin, target, run_id FROM flights WHERE replica = $1",
                &[&&*self.current()],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    async fn heartbeat(&self) -> Result<Vec<ReplicaRow>, StoreError> {
        self.beat().await
    }

    async fn lease(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.renew_lease(name).await
    }

    async fn claim_tick(
        &self,
        plugin: &str,
        schedule: &str,
        tick: &str,
    ) -> Result<bool, StoreError> {
        self.claim_tick_row(plugin, schedule, tick).await
    }

    async fn claim_flight(
        &self,
        plugin: &str,
        target: &str,
        run_id: &str,
    ) -> Result<bool, StoreError> {
        self.claim_flight_row(plugin, target, run_id).await
    }

    async fn release_flight(
        &self,
        plugin: &str,
        target: &str,
        run_id: &str,
    ) -> Result<(), StoreError> {
        self.release_flight_row(plugin, target, run_id).await
    }

    async fn release_leases(&self) -> Result<(), StoreError> {
        self.drop_leases().await
    }

    async fn leave(&self) -> Result<(), StoreError> {
        self.expire_self().await
    }

    async fn run_counts(&self, since: &str) -> Result<Vec<super::HourCount>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(RUN_COUNTS_SQL, &[&since])
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| super::HourCount {
                hour: r.get(0),
                status: r.get(1),
                runs: r.get::<_, i64>(2).max(0) as u64,
            })
            .collect())
    }

    async fn budget_used(
        &self,
        plugin: &str,
        kind: crate::action::ActionKind,
        per: std::time::Duration,
    ) -> Result<u32, StoreError> {
        let since = ts(window_start(chrono::Utc::now(), per));
        let used: i64 = self
            .client()
            .await?
            .query_one(BUDGET_USED_SQL.as_str(), &[&plugin, &kind.as_str(), &since])
            .await
            .map_err(pg)?
            .get(0);
        Ok(u32::try_from(used).unwrap_or(u32::MAX))
    }

    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT record FROM runs WHERE id = $1", &[&id])
            .await
            .map_err(pg)?;
        Ok(row.map(|r| serde_json::from_str(r.get(0))).transpose()?)
    }

    async fn list_runs(&self, f: RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        let limit = i64::from(f.limit.unwrap_or(100).min(MAX_ROWS));
        let rows = self
            .client()
            .await?
            .query(
                "SELECT record FROM runs WHERE ($1::TEXT IS NULL OR plugin = $1) \
                 AND ($2::TEXT IS NULL OR status = $2) AND ($3::TEXT IS NULL OR started_at >= $3) \
                 ORDER BY started_at DESC, id LIMIT $4",
                &[&f.plugin, &f.status, &f.since, &limit],
            )
            .await
            .map_err(pg)?;
        records(rows)
    }

    async fn list_alerts(&self, limit: u32) -> Result<Vec<StoredAlert>, StoreError> {
        let limit = i64::from(limit.min(MAX_ROWS));
        let rows = self
            .client()
            .await?
            .query(
                "SELECT fingerprint, starts_at, status, name, received_at, alert FROM alerts \
                 ORDER BY received_at DESC LIMIT $1",
                &[&limit],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                Ok(StoredAlert {
                    fingerprint: r.get(0),
                    starts_at: r.get(1),
                    status: r.get(2),
                    name: r.get(3),
                    received_at: r.get(4),
                    alert: serde_json::from_str(r.get(5))?,
                })
            })
            .collect()
    }

    async fn list_audit(&self, f: AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let limit = i64::from(f.limit.unwrap_or(1000).min(10 * MAX_ROWS));
        let rows = self
            .client()
            .await?
            .query(
                "SELECT seq, at, run_id, plugin, event, detail FROM audit \
                 WHERE ($1::TEXT IS NULL OR run_id = $1) AND ($2::TEXT IS NULL OR plugin = $2) \
                 AND ($3::TEXT IS NULL OR at >= $3) AND ($5::TEXT IS NULL OR event = $5) \
                 ORDER BY seq LIMIT $4",
                &[&f.run, &f.plugin, &f.since, &limit, &f.event],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                Ok(AuditEvent {
                    seq: r.get(0),
                    at: r.get(1),
                    run_id: r.get(2),
                    plugin: r.get(3),
                    event: r.get(4),
                    detail: serde_json::from_str(r.get(5))?,
                })
            })
            .collect()
    }
}

impl PgStore {
    /// The alerts of one payload and the runs of the new ones, and with
    /// `claim` those runs' single flights (a run whose target another run
    /// holds is left to claim it when it starts, as before), in one
    /// transaction. A claim the database refuses does not fail the
    /// receipt: it is written again without claims, and the runs claim
    /// their flights when they start, as they would without this.
    async fn receive_tx(
        &self,
        items: Vec<(StoredAlert, &[RunRecord])>,
        claim: bool,
    ) -> Result<(Vec<bool>, HashSet<String>), StoreError> {
        match self.receipt(&items, claim).await {
            Err(Receipt::Claims(e)) => {
                tracing::warn!(error = %e, "single flights not claimed with the receipt; written without them, the runs claim them when they start");
                self.receipt(&items, false)
                    .await
                    .map_err(Receipt::into_error)
            }
            r => r.map_err(Receipt::into_error),
        }
    }

    /// One attempt of [`PgStore::receive_tx`], in four round trips:
    /// `BEGIN`; the stall bound with the alerts' insert; the runs' and the
    /// claims' inserts together; the commit. Statements are prepared once
    /// per connection.
    async fn receipt(
        &self,
        items: &[(StoredAlert, &[RunRecord])],
        claim: bool,
    ) -> Result<(Vec<bool>, HashSet<String>), Receipt> {
        // One statement for the alerts, one for the runs of the new ones. A
        // key repeated within the payload is new at most once (its first
        // occurrence), as if inserted one by one.
        let key = |a: &StoredAlert| (a.fingerprint.clone(), a.starts_at.clone(), a.status.clone());
        let mut seen = std::collections::HashSet::new();
        let first: Vec<bool> = items.iter().map(|(a, _)| seen.insert(key(a))).collect();
        let candidates: Vec<&StoredAlert> = items
            .iter()
            .zip(&first)
            .filter(|(_, f)| **f)
            .map(|((a, _), _)| a)
            .collect();
        let column = |f: fn(&StoredAlert) -> String| -> Vec<String> {
            candidates.iter().map(|a| f(a)).collect()
        };
        let mut c = self.client().await?;
        let alerts_sql = c.prepare_cached(RECEIVE_ALERTS_SQL).await.map_err(pg)?;
        let runs_sql = c.prepare_cached(PUT_RUNS_FENCED_SQL).await.map_err(pg)?;
        let claims_sql = c.prepare_cached(CLAIM_AT_RECEIPT_SQL).await.map_err(pg)?;
        // A transaction object, so that a receipt abandoned half-way (its
        // request cancelled) is rolled back, never left open on a pooled
        // connection.
        let tx = c.transaction().await.map_err(pg)?;
        // As `bound_stall`: the fenced insert locks this incarnation's row.
        let stall = stall_bound(self.me.lease);
        let (fingerprints, starts, statuses) = (
            column(|a| a.fingerprint.clone()),
            column(|a| a.starts_at.clone()),
            column(|a| a.status.clone()),
        );
        let (names, received, bodies) = (
            column(|a| a.name.clone()),
            column(|a| a.received_at.clone()),
            column(|a| a.alert.to_string()),
        );
        // Sent together, in this order.
        let alerts: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
            &fingerprints,
            &starts,
            &statuses,
            &names,
            &received,
            &bodies,
        ];
        let (bounded, inserted) =
            tokio::join!(tx.batch_execute(&stall), tx.query(&alerts_sql, &alerts),);
        bounded.map_err(pg)?;
        let inserted = inserted.map_err(pg)?;
        let inserted: std::collections::HashSet<(String, String, String)> = inserted
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let new: Vec<bool> = items
            .iter()
            .zip(&first)
            .map(|((a, _), f)| *f && inserted.contains(&key(a)))
            .collect();
        let runs: Vec<&RunRecord> = items
            .iter()
            .zip(&new)
            .filter(|(_, n)| **n)
            .flat_map(|((_, runs), _)| runs.iter())
            .collect();
        // Fenced: a receipt that commits after a take-over of this
        // incarnation would leave runs no live replica owns.
        let owner = self.owner();
        let rows = RunColumns::of(&runs, &owner)?;
        let flights: Vec<(&str, &str, &str)> = runs
            .iter()
            .filter_map(|r| Some((r.plugin.as_str(), r.target.as_deref()?, r.id.as_str())))
            .filter(|_| claim)
            .collect();
        let (fp, ft, fr) = (
            flights.iter().map(|f| f.0).collect::<Vec<_>>(),
            flights.iter().map(|f| f.1).collect::<Vec<_>>(),
            flights.iter().map(|f| f.2).collect::<Vec<_>>(),
        );
        // DO NOTHING, never taking a row over: a run of this replica may
        // hold the target in memory and not yet in the store.
        let (written, claims) = tokio::join!(
            async {
                match runs.is_empty() {
                    true => Ok(0),
                    false => tx.execute(&runs_sql, &rows.params()).await,
                }
            },
            async {
                match flights.is_empty() {
                    true => Ok(Vec::new()),
                    false => tx.query(&claims_sql, &[&fp, &ft, &fr, &&*owner]).await,
                }
            },
        );
        // Any error: the transaction is dropped, so rolled back.
        match written.map_err(pg)? {
            n if n < runs.len() as u64 => {
                return Err(Receipt::Failed(StoreError::Fenced(format!(
                    "the receipt's runs are no longer this replica's: its incarnation {owner} was taken over while it stalled"
                ))))
            }
            _ => {}
        }
        let claimed = claims
            .map_err(|e| Receipt::Claims(pg(e)))?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        tx.commit().await.map_err(pg)?;
        Ok((new, claimed))
    }
}

/// Why a receipt was not written: the claims alone (written again without
/// them), or anything else.
enum Receipt {
    Claims(StoreError),
    Failed(StoreError),
}

impl From<StoreError> for Receipt {
    fn from(e: StoreError) -> Receipt {
        Receipt::Failed(e)
    }
}

impl Receipt {
    fn into_error(self) -> StoreError {
        match self {
            Receipt::Claims(e) | Receipt::Failed(e) => e,
        }
    }
}

const RECEIVE_ALERTS_SQL: &str =
    "INSERT INTO alerts (fingerprint, starts_at, status, name, received_at, alert) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) \
     ON CONFLICT DO NOTHING RETURNING fingerprint, starts_at, status";

const CLAIM_AT_RECEIPT_SQL: &str = "INSERT INTO flights (plugin, target, run_id, replica) \
     SELECT p, t, r, $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS f(p, t, r) \
     ON CONFLICT DO NOTHING RETURNING run_id";

impl PgStore {
    /// A run's record (and the end of its single flight, with `release`),
    /// through the group commit, or straight to the connections kept for
    /// urgent work.
    async fn write_run(&self, rec: &RunRecord, release: bool) -> Result<(), StoreError> {
        let (writer, fence) = match super::fence::owner() {
            Some(owner) => (owner, Fence::Owner),
            None => (self.current(), Fence::Unfenced),
        };
        if !super::on_urgent_thread() {
            let row = batch::RunRow::new(rec, writer, fence, release)?;
            return self.batch.write(batch::Write::Run(row)).await.map(drop);
        }
        // One connection for both: the urgent pool is two connections, and
        // runs holding one while waiting for another would wait forever.
        let mut c = self.client().await?;
        let target = rec.target.as_deref().filter(|_| release);
        let Some(target) = target else {
            return put_run_in(&c, &writer, rec, fence).await;
        };
        let tx = c.transaction().await.map_err(pg)?;
        self.bound_stall(&tx).await?;
        put_run_in(&tx, &writer, rec, fence).await?;
        let (plugins, targets, ids) = ([rec.plugin.as_str()], [target], [rec.id.as_str()]);
        tx.execute(
            batch::RELEASE_OWN_SQL,
            &[&&plugins[..], &&targets[..], &&ids[..], &&*writer],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    /// Whether action `id` already reads as this settle wrote it (an
    /// earlier attempt whose answer was lost committed).
    async fn settled_as(&self, id: i64, status: &str, at: &str) -> bool {
        let Ok(c) = self.client().await else {
            return false;
        };
        matches!(
            c.query_opt("SELECT status, settled_at FROM actions WHERE id = $1", &[&id]).await,
            Ok(Some(row)) if row.get::<_, String>(0) == status && row.get::<_, Option<String>>(1).as_deref() == Some(at)
        )
    }

    /// Budget and cooldown, then the intent, in one transaction holding
    /// the plugin's ledger lock: two replicas never both take the last
    /// unit of a budget.
    async fn intend_tx(&self, i: &Intent) -> Result<Result<i64, String>, StoreError> {
        let fenced = super::fence::owner();
        let owner = fenced.clone().unwrap_or_else(|| self.current());
        let owner: &str = &owner;
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        self.bound_stall(&tx).await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('remedy.ledger'), hashtext($1))",
            &[&i.plugin],
        )
        .await
        .map_err(pg)?;
        // A run's action only while its incarnation is registered (the row
        // locked against a take-over until this commits) and owns the run,
        // which is `running`: a replica that stalled past its lease finds
        // its runs moved or interrupted and acts on nothing.
        if fenced.is_some() {
            let alive = tx
                .query_opt(
                    "SELECT 1 FROM replicas WHERE id = $1 FOR KEY SHARE",
                    &[&owner],
                )
                .await
                .map_err(pg)?
                .is_some();
            let status: Option<String> = tx
                .query_opt(
                    "SELECT status FROM runs WHERE id = $1 AND replica = $2",
                    &[&i.run_id, &owner],
                )
                .await
                .map_err(pg)?
                .map(|r| r.get(0));
            if !alive || status.as_deref() != Some("running") {
                return Err(StoreError::Fenced(format!(
                    "run {} is no longer this replica's (incarnation {owner} {}): the action was not run",
                    i.run_id,
                    if alive { "does not own it as running" } else { "was taken over" }
                )));
            }
        }
        // Another replica may have pulled the kill switch a moment ago: the
        // stored switch, read under the same lock, is what counts.
        if !i.kind.is_notification() {
            if let Some(row) = tx
                .query_opt("SELECT value FROM settings WHERE key = $1", &[&KILL_SWITCH])
                .await
                .map_err(pg)?
            {
                let pause: crate::killswitch::Pause = serde_json::from_str(row.get(0))?;
                return Ok(Err(pause.refusal()));
            }
        }
        let since = ts(window_start(i.at, i.budget.per));
        let used: i64 = tx
            .query_one(
                BUDGET_USED_SQL.as_str(),
                &[&i.plugin, &i.kind.as_str(), &since],
            )
            .await
            .map_err(pg)?
            .get(0);
        if used >= i64::from(i.budget.max) {
            return Ok(Err(budget_refusal(i, used as u32)));
        }
        if let Some(cooldown) = i.cooldown {
            let since = ts(window_start(i.at, cooldown));
            let last: Option<String> = tx
                .query_one(
                    &format!(
                        "SELECT max(at) FROM actions WHERE plugin = $1 AND coalesce(cooldown_key, target) = $2 \
                         AND at >= $3 AND NOT (run_id = $4 AND replica = $5) AND status IN {COUNTED} AND kind IN {}",
                        cooled_kinds()
                    ),
                    // A run is exempt from the cooldown its own actions
                    // started only within one incarnation.
                    &[&i.plugin, &i.cooldown_key, &since, &i.run_id, &owner],
                )
                .await
                .map_err(pg)?
                .get(0);
            if let Some(last) = last {
                return Ok(Err(cooldown_refusal(i, &last, cooldown)));
            }
        }
        let id: i64 = tx
            .query_one(
                "INSERT INTO actions (run_id, plugin, kind, target, reason, status, at, cooldown_key, replica) \
                 VALUES ($1, $2, $3, $4, $5, 'intent', $6, $7, $8) RETURNING id",
                &[&i.run_id, &i.plugin, &i.kind.as_str(), &i.target, &i.reason, &ts(i.at), &i.cooldown_key, &owner],
            )
            .await
            .map_err(pg)?
            .get(0);
        tx.commit().await.map_err(pg)?;
        Ok(Ok(id))
    }
}

#[async_trait::async_trait]
impl Ledger for PgStore {
    async fn intend(&self, intent: Intent) -> Result<i64, Refusal> {
        match self.intend_tx(&intent).await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(guardrail)) => Err(Refusal::Guardrail(guardrail)),
            Err(StoreError::Fenced(why)) => {
                tracing::error!(run_id = %intent.run_id, %why, "fenced out: action refused");
                Err(Refusal::Fenced(why))
            }
            Err(e) => Err(Refusal::Unavailable(e.to_string())),
        }
    }

    async fn settle(&self, id: i64, applied: Applied, error: Option<String>) {
        let status = settled_status(applied);
        let now = ts(chrono::Utc::now());
        // Idempotent (only an `intent` is settled), so retried through a
        // blip: an action that ran is not left reading `interrupted`.
        let mut waits = [50u64, 200, 800, 2000].into_iter();
        let r = loop {
            let r = match self.client().await {
                Ok(c) => c
                    .execute(
                        "UPDATE actions SET status = $2, error = $3, settled_at = $4 WHERE id = $1 AND status = 'intent'",
                        &[&id, &status, &error, &now],
                    )
                    .await
                    .map_err(pg),
                Err(e) => Err(e),
            };
            match (r, waits.next()) {
                (Err(e), Some(ms)) => {
                    tracing::warn!(action_id = id, error = %e, "action result not stored; trying again in {ms} ms");
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
                (r, _) => break r,
            }
        };
        match r {
            // A take-over settled it `interrupted` first (this replica
            // stalled between the intent and the call): that row stays as
            // the survivor counted it, and what really happened is audited.
            Ok(0) if self.settled_as(id, status, &now).await => {}
            Ok(0) => {
                tracing::error!(
                    action_id = id,
                    status,
                    "action settled after this replica was taken over; audited as action.late"
                );
                let detail = serde_json::json!({"action_id": id, "status": status, "error": error});
                if let Ok(c) = self.client().await {
                    let _ = c
                        .execute(
                            "INSERT INTO audit (at, run_id, plugin, event, detail) \
                             SELECT $2, run_id, plugin, 'action.late', $3 FROM actions WHERE id = $1",
                            &[&id, &now, &detail.to_string()],
                        )
                        .await;
                }
            }
            Ok(_) => {}
            // The intent stays: it reads `interrupted` later rather than lost.
            Err(e) => tracing::error!(action_id = id, error = %e, "action result not stored"),
        }
    }
}
