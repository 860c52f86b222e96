//! Durable history: run records, received alerts and audit events.
//!
//! SQLite in WAL mode under the data directory is the embedded default. One
//! writer thread batches writes into transactions (a run's record is
//! acknowledged only once its transaction committed, so an answer never
//! reports a record that a crash could lose); reads use their own connection.

pub mod bus;
mod cluster;
pub mod fence;
mod postgres;
pub(crate) mod rules;
mod sqlite;
mod urgency;

pub use cluster::{Orphans, Replica, ReplicaRow};
pub use postgres::PgStore;
pub use sqlite::{backup, Backup, SqliteStore};
pub use urgency::{mark_urgent_thread, on_urgent_thread};

use serde::{Deserialize, Serialize};

use crate::record::RunRecord;

/// What the service keeps durably, whatever keeps it: the embedded SQLite
/// store today; the seam a shared (PostgreSQL) store for several replicas
/// plugs into. Every write returns once it is durable. A store is also the
/// action ledger (budgets, cooldowns, the write-ahead intent of each live
/// action), so both are checked and recorded in one place.
#[async_trait::async_trait]
pub trait Store: crate::guardrails::Ledger + Send + Sync {
    /// Whether the store can still write (`/healthz` reports it).
    fn healthy(&self) -> bool;
    /// Inserts or replaces a run record; returns once it is committed.
    async fn put_run(&self, rec: &RunRecord) -> Result<(), StoreError>;
    /// A run's final record, and with `release_flight` the end of the
    /// single flight (plugin, target) it holds in a shared store, in one
    /// commit where the store can.
    async fn finish_run(&self, rec: &RunRecord, release_flight: bool) -> Result<(), StoreError> {
        self.put_run(rec).await?;
        match (release_flight, &rec.target) {
            (true, Some(target)) => self.release_flight(&rec.plugin, target, &rec.id).await,
            _ => Ok(()),
        }
    }
    /// Appends an audit event and waits for it to be committed.
    async fn audit(&self, event: AuditEvent) -> Result<(), StoreError>;
    /// Stores the alerts of one payload and, for each that is new, its
    /// queued runs, in one transaction; answers which alerts were new. The
    /// runs are lent: the caller starts them once the commit says so.
    async fn receive(
        &self,
        items: Vec<(StoredAlert, &[RunRecord])>,
    ) -> Result<Vec<bool>, StoreError>;
    /// [`Store::receive`], and on a shared store each new run's single
    /// flight claimed in the same transaction (where no other run holds
    /// it): answers which alerts were new and which runs hold their flight.
    async fn receive_and_claim(
        &self,
        items: Vec<(StoredAlert, &[RunRecord])>,
    ) -> Result<(Vec<bool>, std::collections::HashSet<String>), StoreError> {
        Ok((self.receive(items).await?, Default::default()))
    }
    /// Stores a plan's decision, or one more approval of it, if it is still
    /// `pending_approval` with `approvals_before` approvals: `false` when
    /// another decision or approval got there first (the caller reads the
    /// plan again). One conditional update, so across replicas each
    /// approval counts once and the plan is decided once.
    async fn decide(&self, rec: &RunRecord, approvals_before: usize) -> Result<bool, StoreError>;
    /// Removes finished runs, alerts and audit events older than `before`,
    /// and settled ledger entries older than `ledger_before`, in batches;
    /// answers whether any table still had more to remove.
    async fn prune(&self, before: &str, ledger_before: &str) -> Result<bool, StoreError>;
    /// Stores the kill switch (`None`: off).
    async fn set_pause(&self, pause: Option<crate::killswitch::Pause>) -> Result<(), StoreError>;
    /// The kill switch as last stored.
    async fn pause(&self) -> Result<Option<crate::killswitch::Pause>, StoreError>;
    /// Stores (`Some`) or removes a named value: where a plan's chat
    /// message is (`slack:<run id>`, removed with the run by the prune).
    async fn put_setting(&self, key: &str, value: Option<&str>) -> Result<(), StoreError>;
    /// A value [`Store::put_setting`] stored.
    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Every setting whose key starts with `prefix`, by key.
    async fn settings_under(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// For each key, the runs its plugin made for its alert (fingerprint
    /// and start), newest first, at most 50; answered in the keys' order.
    /// One read for all the repeats of a payload (an HA pair of
    /// Alertmanagers sends every payload twice, each alert a repeat).
    async fn runs_for_alerts(&self, keys: &[AlertKey]) -> Result<Vec<Vec<RunRecord>>, StoreError>;
    /// What stopped processes left: their running runs and unsettled
    /// intents marked `interrupted`, their queued runs and open
    /// verifications handed to this replica. SQLite: everything the
    /// previous process left, once, at start. PostgreSQL: whatever replica's
    /// heartbeat is older than its lease, on every call.
    async fn take_over(&self) -> Result<Orphans, StoreError>;

    // Cluster coordination; the defaults are a store with one replica.

    /// How its writes have gone since it opened (`/metrics`).
    fn write_stats(&self) -> Option<&WriteStats> {
        None
    }
    /// Whether several replicas may share this store.
    fn shared(&self) -> bool {
        false
    }
    /// How the replicas sharing this store hear each other's live events
    /// (`None`: a store of one process).
    fn bus(&self) -> Option<std::sync::Arc<dyn bus::Bus>> {
        None
    }
    /// The incarnation runs claimed now belong to (see [`fence`]); `None`:
    /// a store of one process, which fences nothing.
    fn incarnation(&self) -> Option<std::sync::Arc<str>> {
        None
    }
    /// Ids of the `queued` runs this incarnation owns, oldest first: the
    /// reconciler resumes those it no longer holds in memory.
    async fn own_queued(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
    /// Whether this incarnation still owns run `id` (a survivor that took
    /// the replica over owns its runs and their verifications now).
    async fn owns_run(&self, _id: &str) -> Result<bool, StoreError> {
        Ok(true)
    }
    /// The flights this incarnation holds in the store, as (plugin, target,
    /// run id): the reconciler releases those of runs that have ended.
    async fn own_flights(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        Ok(Vec::new())
    }
    /// Renews this replica's heartbeat; answers every replica registered.
    async fn heartbeat(&self) -> Result<Vec<ReplicaRow>, StoreError> {
        Ok(Vec::new())
    }
    /// Takes or renews the lease `name`; answers who holds it (this
    /// replica's id when it does).
    async fn lease(&self, _name: &str) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
    /// Claims one tick of a schedule; `false` when another replica did.
    async fn claim_tick(
        &self,
        _plugin: &str,
        _schedule: &str,
        _tick: &str,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }
    /// Claims the single flight of (plugin, target) for `run_id`; `false`
    /// when a run of another replica holds it.
    async fn claim_flight(
        &self,
        _plugin: &str,
        _target: &str,
        _run_id: &str,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }
    async fn release_flight(
        &self,
        _plugin: &str,
        _target: &str,
        _run_id: &str,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    /// Gives up every lease this replica holds.
    async fn release_leases(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// A clean stop: this replica's heartbeat is expired at once, so a
    /// survivor takes over what is left without waiting for the lease.
    async fn leave(&self) -> Result<(), StoreError> {
        Ok(())
    }

    // Console sessions, which every replica sharing the store knows (see
    // `triggers::http::auth`). Expired ones are removed by `prune`.

    /// Stores a session that expires `ttl` from now.
    async fn create_session(
        &self,
        _session: &StoredSession,
        _ttl: std::time::Duration,
    ) -> Result<(), StoreError> {
        Err(StoreError::Failed(
            "this store keeps no console sessions".into(),
        ))
    }
    /// The session whose id hashes to `id_hash`, unless it expired or ended.
    async fn session(&self, _id_hash: &str) -> Result<Option<StoredSession>, StoreError> {
        Err(StoreError::Failed(
            "this store keeps no console sessions".into(),
        ))
    }
    /// Ends a session on every replica (nothing when there is none).
    async fn end_session(&self, _id_hash: &str) -> Result<(), StoreError> {
        Err(StoreError::Failed(
            "this store keeps no console sessions".into(),
        ))
    }
    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError>;
    /// Newest first.
    async fn list_runs(&self, f: RunFilter) -> Result<Vec<RunRecord>, StoreError>;
    /// Newest first, at most `limit`.
    async fn list_alerts(&self, limit: u32) -> Result<Vec<StoredAlert>, StoreError>;
    async fn list_audit(&self, f: AuditFilter) -> Result<Vec<AuditEvent>, StoreError>;
    /// Runs started at or after `since` (RFC 3339), counted by the hour
    /// they started in (`YYYY-MM-DDTHH`) and their status.
    async fn run_counts(&self, since: &str) -> Result<Vec<HourCount>, StoreError>;
    /// How much of its budget for `kind` `plugin` has spent in the window
    /// `per` ending now, counted as the ledger counts it when it decides.
    async fn budget_used(
        &self,
        plugin: &str,
        kind: crate::action::ActionKind,
        per: std::time::Duration,
    ) -> Result<u32, StoreError>;
}

/// A store's commits since it opened, the writes they carried and the
/// time spent writing them: what tells an operator the store is the
/// bottleneck (commits that take long, or carry ever more writes each).
#[derive(Debug, Default)]
pub struct WriteStats {
    commits: std::sync::atomic::AtomicU64,
    writes: std::sync::atomic::AtomicU64,
    micros: std::sync::atomic::AtomicU64,
}

impl WriteStats {
    /// One commit of `writes` writes that took `took`.
    pub fn committed(&self, writes: usize, took: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        self.commits.fetch_add(1, Relaxed);
        self.writes.fetch_add(writes as u64, Relaxed);
        self.micros
            .fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Commits, writes, and seconds spent.
    pub fn read(&self) -> (u64, u64, f64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.commits.load(Relaxed),
            self.writes.load(Relaxed),
            self.micros.load(Relaxed) as f64 / 1e6,
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store (PostgreSQL): {0}")]
    Postgres(String),
    #[error("store: cannot create {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("store: record is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("store: the writer has stopped")]
    Closed,
    #[error("store: transaction failed: {0}")]
    Failed(String),
    /// The run belongs to another incarnation now (this replica was taken
    /// over while it stalled): the write was refused and the run is dropped.
    #[error("fenced: {0}")]
    Fenced(String),
}

impl StoreError {
    /// Whether trying the same write again may succeed (a dropped
    /// connection, a failover); a fenced write never will.
    pub fn transient(&self) -> bool {
        !matches!(self, StoreError::Fenced(_) | StoreError::Json(_))
    }
}

/// A console session as the store keeps it: never its id (the cookie's
/// value), never its token's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// SHA-256 of the session id, hex.
    pub id_hash: String,
    /// The name of the token it was opened with: its roles are read from
    /// the config on each request, so a token taken out of it ends its
    /// sessions.
    pub token: String,
    /// SHA-256 of the session id and the token's value: a token given a new
    /// value no longer holds the sessions of the old one.
    pub binding: String,
}

/// How many runs started in one hour (`YYYY-MM-DDTHH`, UTC) ended up in
/// one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourCount {
    pub hour: String,
    pub status: String,
    pub runs: u64,
}

/// One plugin's runs for one alert (fingerprint and start): what
/// [`Store::runs_for_alerts`] looks up.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlertKey {
    pub plugin: String,
    pub fingerprint: String,
    pub starts_at: String,
}

/// A received Alertmanager alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StoredAlert {
    pub fingerprint: String,
    pub starts_at: String,
    /// `firing` or `resolved`.
    pub status: String,
    pub name: String,
    pub received_at: String,
    /// The alert as received.
    pub alert: serde_json::Value,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditEvent {
    #[serde(default)]
    pub seq: i64,
    pub at: String,
    pub run_id: Option<String>,
    pub plugin: Option<String>,
    /// e.g. `run.started`, `run.finished`, `action`, `alert.received`, `plugin.loaded`.
    pub event: String,
    pub detail: serde_json::Value,
}

/// Filters of `GET /v1/runs`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
pub struct RunFilter {
    pub plugin: Option<String>,
    pub status: Option<String>,
    /// RFC 3339: runs started at or after.
    pub since: Option<String>,
    #[schemars(range(max = 1000))]
    pub limit: Option<u32>,
}

/// Filters of `GET /v1/audit`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
pub struct AuditFilter {
    pub run: Option<String>,
    pub plugin: Option<String>,
    /// Only events of this kind (`plugin.loaded`, `action.executed`, …).
    pub event: Option<String>,
    pub since: Option<String>,
    #[schemars(range(max = 10000))]
    pub limit: Option<u32>,
}
