//! `remedy serve`: the long-running service. It owns the store, the plugin
//! registry and the per-target single flight, and hands every trigger (HTTP,
//! Alertmanager, schedule) to the one invocation path, `Remedy::run`.

use anyhow::Context as _;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::Utc;
use tokio::sync::Notify;

use crate::config::Config;
use crate::killswitch::{KillSwitch, Pause};
use crate::remedy::{Remedy, Source};
use crate::runtime::Plugin;
use crate::store::{AuditEvent, Replica, SqliteStore, Store, StoreError};

pub mod approval;
mod chat;
pub mod cluster;
pub mod events;
mod flapping;
pub use flapping::valid_fingerprint;
mod heal;
mod incident;
mod lanes;
mod launch;
pub mod metrics;
mod plugins;
pub mod registry;
mod resume;
mod urgent;
pub mod verify;

pub use cluster::{Cluster, ClusterView};
pub use events::{Event, Events};
pub(crate) use launch::queued_record;
pub use launch::{own_target, Launch, Started};
pub use metrics::Metrics;
pub use registry::Registry;

/// How often the plugins directory is scanned for new or changed files.
pub const PLUGIN_SCAN_INTERVAL: Duration = Duration::from_secs(1);

pub struct Service {
    pub remedy: Arc<Remedy>,
    pub store: Arc<dyn Store>,
    pub registry: Registry,
    pub metrics: Metrics,
    pub data_dir: PathBuf,
    inflight: Mutex<HashSet<(String, String)>>,
    /// Ids of the runs claimed here and not ended (see `heal`).
    held: Mutex<HashSet<String>>,
    /// Finished runs whose record the store has not taken yet.
    unwritten: Mutex<heal::UnwrittenRuns>,
    permits: Arc<lanes::Lanes>,
    /// Run slots per plugin (see `server.max_runs_per_plugin`).
    plugin_permits: Mutex<HashMap<String, Arc<lanes::Lanes>>>,
    per_plugin: usize,
    running: AtomicUsize,
    idle: Notify,
    files: Mutex<HashMap<PathBuf, SeenFile>>,
    /// The kill switch, shared with every gate; persisted in the store.
    pub kill: KillSwitch,
    /// This replica and the others on the store.
    pub cluster: Cluster,
    /// `plugins_dir`, opened once as a capability: files are reached only
    /// relative to it, and a symlink leading out of it is refused.
    plugins_dir: Mutex<Option<Arc<cap_std::fs::Dir>>>,
    /// Where a P0/P1 alert's receipt and runs are polled (see `urgent`).
    pub urgent: urgent::SideRuntime,
    /// Where the other alerts' runs are polled, below the receipts.
    pub alert_runs: urgent::SideRuntime,
    /// The live feed of what happens here (`GET /v1/events`).
    pub events: Events,
    /// Slack, when `[chat.slack]` is configured.
    pub slack: Option<Arc<crate::chat::Slack>>,
}

/// A plugins_dir file as last seen: modified, length, the plugin name it
/// loaded as.
type SeenFile = (SystemTime, u64, Option<String>);

/// Where the store and the compiled-code cache live (`server.data_dir`).
pub fn data_dir(config: &Config) -> PathBuf {
    config
        .server
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("remedy-data"))
}

/// The PostgreSQL store's URL (`server.store`, else `REMEDY_STORE_URL`);
/// `None`: the embedded SQLite store under [`data_dir`].
pub fn store_url(config: &Config) -> Option<String> {
    config
        .server
        .store
        .as_ref()
        .map(|u| u.as_str().to_string())
        .or_else(|| {
            std::env::var("REMEDY_STORE_URL")
                .ok()
                .filter(|v| !v.trim().is_empty())
        })
}

pub(crate) fn now() -> String {
    crate::record::timestamp(Utc::now())
}

impl Service {
    /// Opens the store (marking runs a previous process left running as
    /// `interrupted`), restores the kill switch, loads every plugin and
    /// resumes the runs that were still queued. Plugins that fail to load
    /// are reported; the others serve.
    pub async fn start(config: Config) -> anyhow::Result<Arc<Service>> {
        let data_dir = data_dir(&config);
        let store_url = store_url(&config);
        let lease = config
            .server
            .lease
            .unwrap_or(crate::config::DEFAULT_LEASE)
            .get();
        let me = Replica::new(replica_name(config.server.replica.as_deref()), lease);
        let store: Arc<dyn Store> = match store_url {
            Some(url) => Arc::new(
                crate::store::PgStore::connect(&url, me.clone(), config.server.store_ca.as_ref())
                    .await
                    .context("opening the PostgreSQL store (server.store / REMEDY_STORE_URL)")?,
            ),
            None => Arc::new(SqliteStore::open(&data_dir)?),
        };
        Self::start_on(config, store, me).await
    }

    /// [`Service::start`] on a store already open (`me`: this replica, as
    /// the store knows it).
    pub async fn start_on(
        config: Config,
        store: Arc<dyn Store>,
        me: Replica,
    ) -> anyhow::Result<Arc<Service>> {
        let data_dir = data_dir(&config);
        let shared = store.shared();
        let max_runs = config.server.max_concurrent_runs.unwrap_or(256);
        let per_plugin = config
            .server
            .max_runs_per_plugin
            .unwrap_or(max_runs / 2)
            .clamp(1, max_runs.max(1));
        // The switch as the last process left it; the config can only add
        // a pause, never lift a stored one.
        let stored = store.pause().await?;
        let paused = match (config.server.paused.unwrap_or(false), stored) {
            (_, Some(p)) => Some(p),
            (true, None) => Some(Pause {
                by: "config (server.paused)".into(),
                at: now(),
                reason: None,
            }),
            (false, None) => None,
        };
        if let Some(p) = &paused {
            tracing::warn!(
                "{}: every run is a dry run until it is resumed",
                p.describe()
            );
        }
        let kill = KillSwitch::new(paused);
        let slack = chat::slack(&config, &store)?;
        let mut remedy = Remedy::for_service(config, data_dir.join("compiled"))?;
        remedy.ledger = Some(store.clone());
        remedy.kill = Some(kill.clone());
        let metrics = Metrics::default();
        metrics.set_paused(kill.get().is_some());
        if !shared {
            // Alone on its store: one replica, and it runs the schedules.
            metrics.set_cluster(1, true);
        }
        let events = match store.bus() {
            Some(bus) => Events::shared(bus, me.name.clone()),
            None => Events::default(),
        };
        let service = Arc::new(Service {
            remedy: Arc::new(remedy),
            store,
            registry: Registry::default(),
            metrics,
            data_dir,
            inflight: Mutex::default(),
            held: Mutex::default(),
            unwritten: Mutex::default(),
            permits: lanes::Lanes::new(max_runs.max(1)),
            plugin_permits: Mutex::default(),
            per_plugin,
            running: AtomicUsize::new(0),
            idle: Notify::new(),
            files: Mutex::default(),
            kill,
            cluster: Cluster::new(me, shared),
            plugins_dir: Mutex::default(),
            urgent: urgent::SideRuntime::urgent().context("starting the urgent runtime")?,
            alert_runs: urgent::SideRuntime::alert_runs()
                .context("starting the alert runs' runtime")?,
            events,
            slack,
        });
        for (name, source) in service.remedy.sources() {
            service.load(&name, &source).await;
        }
        service.scan_plugins_dir().await;
        // Shared: register, take the scheduler lease if free, and take over
        // replicas that died. Alone: what the previous process left.
        service.beat().await;
        if !shared {
            match service.store.take_over().await {
                Ok(orphans) => service.adopt(orphans).await,
                Err(e) => {
                    tracing::error!(error = %e, "unfinished work could not be read; queued runs stay queued")
                }
            }
        }
        Ok(service)
    }

    /// Best effort: an audit event that cannot be stored is logged.
    pub async fn audit(
        &self,
        run_id: Option<&str>,
        plugin: Option<&str>,
        event: &str,
        detail: serde_json::Value,
    ) {
        let ev = AuditEvent {
            seq: 0,
            at: now(),
            run_id: run_id.map(String::from),
            plugin: plugin.map(String::from),
            event: event.to_string(),
            detail,
        };
        if let Err(e) = self.store.audit(ev).await {
            tracing::error!(error = %e, event, "audit event not stored");
        }
    }

    /// Audits each of `actions`, taken by or for run `rec`.
    pub(crate) async fn audit_actions(
        &self,
        rec: &crate::record::RunRecord,
        actions: &[crate::record::ActionRecord],
    ) {
        for a in actions {
            self.audit(
                Some(&rec.id),
                Some(&rec.plugin),
                "action",
                serde_json::to_value(a).unwrap_or_default(),
            )
            .await;
        }
    }

    /// A run ended (or never started): metrics and the live feed.
    pub fn finished(&self, rec: &crate::record::RunRecord) {
        self.metrics.run_finished(rec);
        self.events.run_finished(rec);
        self.chat_run_ended(rec);
    }

    /// The kill switch changed (here, or on the replica `elsewhere`).
    pub(crate) fn pause_changed(&self, now: &Option<Pause>, elsewhere: Option<&str>) {
        self.metrics.set_paused(now.is_some());
        self.events.emit(
            "pause.changed",
            None,
            None,
            || serde_json::json!({"paused": now, "elsewhere": elsewhere}),
        );
    }

    /// The kill switch, if on.
    pub fn paused(&self) -> Option<Pause> {
        self.kill.get()
    }

    /// Turns the kill switch on (`pause = true`) or off, on behalf of
    /// `who`. It is stored before it takes effect, so an answer never
    /// reports a pause that a restart would forget; a pause that cannot be
    /// stored still takes effect here (stopping automation is never refused)
    /// and the error is returned.
    pub async fn set_paused(
        &self,
        pause: bool,
        who: &str,
        reason: Option<String>,
    ) -> Result<Option<Pause>, StoreError> {
        let new = pause.then(|| Pause {
            by: who.to_string(),
            at: now(),
            reason: reason.clone(),
        });
        let stored = self.store.set_pause(new.clone()).await;
        if stored.is_err() && !pause {
            // Resuming must not happen in memory only: the next restart
            // would pause again with nobody knowing why.
            return stored.map(|_| self.kill.get());
        }
        self.kill.set(new.clone());
        self.pause_changed(&new, None);
        let event = if pause {
            "admin.paused"
        } else {
            "admin.resumed"
        };
        tracing::warn!(
            by = who,
            event,
            reason = reason.as_deref().unwrap_or(""),
            "kill switch"
        );
        self.audit(
            None,
            None,
            event,
            serde_json::json!({"by": who, "reason": reason}),
        )
        .await;
        stored.map(|_| new)
    }

    /// Removes what is older than `server.retention` (default 90 days), in
    /// batches so the writer is never held long.
    pub async fn apply_retention(&self) {
        let keep = self
            .remedy
            .config
            .server
            .retention
            .unwrap_or(crate::config::DEFAULT_RETENTION)
            .get();
        let cutoff = |d: Duration| {
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| Utc::now().checked_sub_signed(d))
                .map_or_else(
                    || crate::record::timestamp(chrono::DateTime::<Utc>::MIN_UTC),
                    crate::record::timestamp,
                )
        };
        // Budgets count in the ledger over windows of up to a year.
        let ledger = keep.max(crate::units::MAX_DURATION);
        for _ in 0..100 {
            match self.store.prune(&cutoff(keep), &cutoff(ledger)).await {
                Ok(true) => tokio::task::yield_now().await,
                Ok(false) => return,
                Err(e) => {
                    tracing::error!(error = %e, "retention sweep failed");
                    return;
                }
            }
        }
    }

    /// Runs in flight here now.
    pub fn running_now(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Waits until no run is in flight, at most `bound`; returns how many
    /// are still running.
    pub async fn drain(&self, bound: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let notified = self.idle.notified();
            let n = self.running.load(Ordering::SeqCst);
            if n == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.running.load(Ordering::SeqCst);
            }
        }
    }
}

/// `server.replica`, else the host name and the process id.
fn replica_name(configured: Option<&str>) -> String {
    if let Some(name) = configured.filter(|n| !n.trim().is_empty()) {
        return name.to_string();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "remedy".into());
    format!("{host}-{}", std::process::id())
}

fn file_key(path: &Path) -> String {
    format!(
        "file:{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    )
}
