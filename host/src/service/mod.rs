//! `remedy serve`: the long-running service. It owns the store, the plugin
//! registry and the per-target single flight, and hands every trigger (HTTP,
//! Alertmanager, schedule) to the one invocation path, `Remedy::run`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::Utc;
use tokio::sync::{Notify, Semaphore};

use crate::config::Config;
use crate::killswitch::{KillSwitch, Pause};
use crate::remedy::{Overrides, Remedy, Source};
use crate::runtime::Plugin;
use crate::store::{AuditEvent, SqliteStore, StoreError};

pub mod approval;
mod launch;
pub mod metrics;
pub mod registry;
pub mod verify;

pub use launch::{Launch, Started};
pub use metrics::Metrics;
pub use registry::Registry;

/// How often the plugins directory is scanned for new or changed files.
pub const PLUGIN_SCAN_INTERVAL: Duration = Duration::from_secs(1);

pub struct Service {
    pub remedy: Arc<Remedy>,
    pub store: SqliteStore,
    pub registry: Registry,
    pub metrics: Metrics,
    pub data_dir: PathBuf,
    inflight: Mutex<HashSet<(String, String)>>,
    permits: Arc<Semaphore>,
    /// Run slots per plugin (see `server.max_runs_per_plugin`).
    plugin_permits: Mutex<HashMap<String, Arc<Semaphore>>>,
    per_plugin: usize,
    running: AtomicUsize,
    idle: Notify,
    files: Mutex<HashMap<PathBuf, SeenFile>>,
    /// The kill switch, shared with every gate; persisted in the store.
    pub kill: KillSwitch,
    /// `plugins_dir`, opened once as a capability: files are reached only
    /// relative to it, and a symlink leading out of it is refused.
    plugins_dir: Mutex<Option<Arc<cap_std::fs::Dir>>>,
}

/// A plugins_dir file as last seen: modified, length, the plugin name it
/// loaded as.
type SeenFile = (SystemTime, u64, Option<String>);

pub(crate) fn now() -> String {
    crate::record::timestamp(Utc::now())
}

impl Service {
    /// Opens the store (marking runs a previous process left running as
    /// `interrupted`), restores the kill switch, loads every plugin and
    /// resumes the runs that were still queued. Plugins that fail to load
    /// are reported; the others serve.
    pub async fn start(config: Config) -> anyhow::Result<Arc<Service>> {
        let data_dir = config
            .server
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("remedy-data"));
        let store = SqliteStore::open(&data_dir)?;
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
        let mut remedy = Remedy::new(config, Overrides::default())?;
        remedy.set_cache_dir(data_dir.join("compiled"));
        remedy.ledger = Some(Arc::new(store.clone()));
        remedy.kill = Some(kill.clone());
        let metrics = Metrics::default();
        metrics.set_paused(kill.get().is_some());
        let service = Arc::new(Service {
            remedy: Arc::new(remedy),
            store,
            registry: Registry::default(),
            metrics,
            data_dir,
            inflight: Mutex::default(),
            permits: Arc::new(Semaphore::new(max_runs.max(1))),
            plugin_permits: Mutex::default(),
            per_plugin,
            running: AtomicUsize::new(0),
            idle: Notify::new(),
            files: Mutex::default(),
            kill,
            plugins_dir: Mutex::default(),
        });
        for (name, source) in service.remedy.sources() {
            service.load(&name, &source).await;
        }
        service.scan_plugins_dir().await;
        service.resume_queued().await;
        service.resume_verifications().await;
        Ok(service)
    }

    async fn load(&self, key: &str, source: &Source) {
        match self.remedy.load_source(source).await {
            Ok(p) => self.loaded(source.to_string(), p).await,
            Err(e) => {
                self.load_failed(key, source.to_string(), e.to_string())
                    .await
            }
        }
    }

    async fn loaded(&self, source: String, p: Plugin) {
        tracing::info!(plugin = %p.name(), digest = %p.digest, %source, "plugin loaded");
        self.audit(
            None,
            Some(p.name()),
            "plugin.loaded",
            serde_json::json!({"source": source, "digest": p.digest, "version": p.info.version}),
        )
        .await;
        self.registry.set_loaded(source, p);
    }

    async fn load_failed(&self, key: &str, source: String, error: String) {
        tracing::warn!(%source, %error, "plugin failed to load");
        self.metrics.load_failed(&source);
        self.audit(
            None,
            Some(key),
            "plugin.load_failed",
            serde_json::json!({"source": source, "error": error}),
        )
        .await;
        self.registry.set_error(key, source, error);
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

    /// Loads new or changed `.wasm` files of the plugins directory; a file
    /// that fails leaves the version loaded before serving.
    pub async fn scan_plugins_dir(&self) {
        let Some(dir) = self.remedy.config.server.plugins_dir.clone() else {
            return;
        };
        let mut seen = Vec::new();
        let handle = match self.plugins_dir_handle(&dir) {
            Ok(h) => h,
            Err(e) => {
                self.load_failed(
                    &format!("dir:{}", dir.display()),
                    dir.display().to_string(),
                    format!("cannot open plugins directory: {e}"),
                )
                .await;
                return;
            }
        };
        let entries = match handle.entries() {
            Ok(e) => e,
            Err(e) => {
                self.load_failed(
                    &format!("dir:{}", dir.display()),
                    dir.display().to_string(),
                    format!("cannot read plugins directory: {e}"),
                )
                .await;
                return;
            }
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let path = dir.join(&file_name);
            if path.extension().is_none_or(|x| x != "wasm") {
                continue;
            }
            seen.push(path.clone());
            let Ok(meta) = entry.metadata() else { continue };
            let stamp = (
                meta.modified()
                    .map(|t| t.into_std())
                    .unwrap_or(SystemTime::UNIX_EPOCH),
                meta.len(),
            );
            let previous = self
                .files
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&path)
                .cloned();
            if previous.as_ref().is_some_and(|(m, l, _)| (*m, *l) == stamp) {
                continue;
            }
            let old_name = previous.and_then(|p| p.2);
            let bytes = handle.read(&file_name);
            let name = self.load_file(&path, bytes, old_name.as_deref()).await;
            self.files
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(path, (stamp.0, stamp.1, name.or(old_name)));
        }
        // Files that disappeared take their plugin with them.
        let gone: Vec<(PathBuf, Option<String>)> = {
            let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
            let gone: Vec<_> = files
                .keys()
                .filter(|p| !seen.contains(p))
                .cloned()
                .collect();
            gone.into_iter()
                .map(|p| {
                    let n = files.remove(&p).and_then(|e| e.2);
                    (p, n)
                })
                .collect()
        };
        for (path, name) in gone {
            tracing::info!(file = %path.display(), "plugin file removed");
            self.registry
                .remove(&name.unwrap_or_else(|| file_key(&path)));
        }
    }

    /// The handle of `plugins_dir`, opened on first use.
    fn plugins_dir_handle(&self, dir: &Path) -> std::io::Result<Arc<cap_std::fs::Dir>> {
        let mut slot = self.plugins_dir.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = slot.as_ref() {
            return Ok(h.clone());
        }
        let h = Arc::new(cap_std::fs::Dir::open_ambient_dir(
            dir,
            cap_std::ambient_authority(),
        )?);
        *slot = Some(h.clone());
        Ok(h)
    }

    /// Returns the plugin name the file loaded as.
    async fn load_file(
        &self,
        path: &Path,
        bytes: std::io::Result<Vec<u8>>,
        old_name: Option<&str>,
    ) -> Option<String> {
        let key = old_name.map(String::from).unwrap_or_else(|| file_key(path));
        let loaded = match bytes {
            Ok(b) => self.remedy.load_file_bytes(&b, path).await,
            Err(e) => Err(crate::remedy::PluginError::Read {
                path: path.to_path_buf(),
                source: e,
            }),
        };
        match loaded {
            Ok(p) => {
                let name = p.name().to_string();
                // A file in plugins_dir may not take over a name another
                // source serves (a bundled runbook, a configured file,
                // another file): it would inherit that name's place in
                // routing and config.
                let owner = self.registry.source_of(&name);
                let file = path.display().to_string();
                if let Some(owner) = owner.filter(|o| *o != file) {
                    self.load_failed(
                        &key,
                        file.clone(),
                        format!(
                            "{file} reports the plugin name `{name}`, which {owner} already serves; give the plugin a name of its own"
                        ),
                    )
                    .await;
                    return None;
                }
                if old_name.is_none() {
                    self.registry.remove(&file_key(path));
                }
                self.loaded(path.display().to_string(), p).await;
                Some(name)
            }
            Err(e) => {
                self.load_failed(&key, path.display().to_string(), e.to_string())
                    .await;
                None
            }
        }
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
        self.metrics.set_paused(new.is_some());
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

fn file_key(path: &Path) -> String {
    format!(
        "file:{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    )
}
