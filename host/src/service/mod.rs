//! `remedy serve`: the long-running service. It owns the store, the plugin
//! registry and the per-target single flight, and hands every trigger (HTTP,
//! Alertmanager, schedule) to the one invocation path, `Remedy::run`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::Utc;
use tokio::sync::{Notify, Semaphore};

use crate::config::{Config, Mode};
use crate::guardrails::Stage;
use crate::record::{Applied, Approval, PlannedAction, RunRecord, RunStatus, Trigger};
use crate::remedy::{Overrides, Remedy, RunRequest, Source};
use crate::runtime::Plugin;
use crate::store::{AuditEvent, SqliteStore, StoreError};

pub mod approval;
pub mod metrics;
pub mod registry;
pub mod verify;

pub use metrics::Metrics;
pub use registry::Registry;

/// How often the plugins directory is scanned for new or changed files.
pub const PLUGIN_SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// What starting a run came to.
pub enum Started {
    /// Running; the handle yields the final (stored) record.
    Running {
        id: String,
        handle: tokio::task::JoinHandle<RunRecord>,
    },
    /// Another run of the plugin for the same target is in flight.
    Skipped(RunRecord),
}

pub struct Service {
    pub remedy: Arc<Remedy>,
    pub store: SqliteStore,
    pub registry: Registry,
    pub metrics: Metrics,
    pub data_dir: PathBuf,
    inflight: Mutex<HashSet<(String, String)>>,
    permits: Arc<Semaphore>,
    running: AtomicUsize,
    idle: Notify,
    files: Mutex<HashMap<PathBuf, SeenFile>>,
    /// The kill switch: who turned it on and when.
    paused: Mutex<Option<Pause>>,
}

/// The kill switch is on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pause {
    pub by: String,
    pub at: String,
}

/// How a run is to be started.
pub struct Launch {
    pub trigger: Trigger,
    /// `None`: the plugin's mode.
    pub mode: Option<Mode>,
    pub params: BTreeMap<String, String>,
    /// Single-flight key with the plugin name.
    pub target: String,
    /// Carrying out this approved plan (run id, plan).
    pub approved: Option<(String, Arc<crate::guardrails::Plan>)>,
}

/// A plugins_dir file as last seen: modified, length, the plugin name it
/// loaded as.
type SeenFile = (SystemTime, u64, Option<String>);

/// Removes the (plugin, target) pair from the in-flight set however the run ends.
struct FlightGuard {
    service: Arc<Service>,
    key: (String, String),
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.service
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        if self.service.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.service.idle.notify_waiters();
        }
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl Service {
    /// Opens the store (marking runs a previous process left in flight as
    /// `interrupted`) and loads every plugin. Plugins that fail to load are
    /// reported; the others serve.
    pub async fn start(config: Config) -> anyhow::Result<Arc<Service>> {
        let data_dir = config
            .server
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("remedy-data"));
        let store = SqliteStore::open(&data_dir)?;
        let max_runs = config.server.max_concurrent_runs.unwrap_or(256);
        let paused = config.server.paused.unwrap_or(false).then(|| Pause {
            by: "config (server.paused)".into(),
            at: now(),
        });
        let mut remedy = Remedy::new(config, Overrides::default())?;
        remedy.set_cache_dir(data_dir.join("compiled"));
        remedy.ledger = Some(Arc::new(store.clone()));
        let service = Arc::new(Service {
            remedy: Arc::new(remedy),
            store,
            registry: Registry::default(),
            metrics: Metrics::default(),
            data_dir,
            inflight: Mutex::default(),
            permits: Arc::new(Semaphore::new(max_runs.max(1))),
            running: AtomicUsize::new(0),
            idle: Notify::new(),
            files: Mutex::default(),
            paused: Mutex::new(paused),
        });
        for (name, source) in service.remedy.sources() {
            service.load(&name, &source).await;
        }
        service.scan_plugins_dir().await;
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
        let entries = match std::fs::read_dir(&dir) {
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
            let path = entry.path();
            if path.extension().is_none_or(|x| x != "wasm") {
                continue;
            }
            seen.push(path.clone());
            let Ok(meta) = entry.metadata() else { continue };
            let stamp = (
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
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
            let name = self.load_file(&path, old_name.as_deref()).await;
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

    /// Returns the plugin name the file loaded as.
    async fn load_file(&self, path: &Path, old_name: Option<&str>) -> Option<String> {
        let key = old_name.map(String::from).unwrap_or_else(|| file_key(path));
        match self.remedy.load_file(path).await {
            Ok(p) => {
                let name = p.name().to_string();
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
        self.paused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Turns the kill switch on (`Some(who)`) or off (`None`).
    pub async fn set_paused(&self, by: Option<&str>, who: &str) {
        let pause = by.map(|b| Pause {
            by: b.to_string(),
            at: now(),
        });
        *self.paused.lock().unwrap_or_else(|p| p.into_inner()) = pause.clone();
        self.metrics.set_paused(pause.is_some());
        let event = if pause.is_some() {
            "admin.paused"
        } else {
            "admin.resumed"
        };
        tracing::warn!(by = who, event, "kill switch");
        self.audit(None, None, event, serde_json::json!({"by": who}))
            .await;
    }

    /// Starts a run of `plugin` for `target` unless one is in flight: the
    /// record is stored (`running`, or `skipped`) before this returns.
    pub async fn start_run(
        self: &Arc<Self>,
        plugin: Arc<Plugin>,
        trigger: Trigger,
        mode: Option<Mode>,
        params: BTreeMap<String, String>,
        target: String,
    ) -> Result<Started, StoreError> {
        self.launch(
            plugin,
            Launch {
                trigger,
                mode,
                params,
                target,
                approved: None,
            },
        )
        .await
    }

    /// The one way a run starts in the service: mode, kill switch, single
    /// flight, concurrency bound, then `Remedy::run_with_id`; afterwards the
    /// plan (approve mode) or the verification (live mitigation).
    pub async fn launch(
        self: &Arc<Self>,
        plugin: Arc<Plugin>,
        l: Launch,
    ) -> Result<Started, StoreError> {
        let key = (plugin.name().to_string(), l.target);
        let mode = l.mode.unwrap_or(plugin.settings.mode);
        let planning = mode == Mode::Approve && l.approved.is_none();
        let mut dry = mode != Mode::Auto && l.approved.is_none();
        let mut note = None;
        if let Some(p) = self.paused() {
            if !dry {
                dry = true;
                note = Some(format!(
                    "kill switch on since {} (by {}): this run was forced to dry-run",
                    p.at, p.by
                ));
            }
        }
        let id = uuid::Uuid::new_v4().to_string();
        let fresh = self
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        if !fresh {
            let mut rec = RunRecord::begin(id, &plugin, l.trigger, dry, RunStatus::Skipped);
            rec.error = Some(format!(
                "a run of {} for target `{}` is already in flight",
                key.0, key.1
            ));
            rec.finished_at = Some(rec.started_at);
            rec.duration_ms = Some(0);
            self.store.put_run(&rec).await?;
            self.metrics.run_finished(&rec);
            return Ok(Started::Skipped(rec));
        }
        self.running.fetch_add(1, Ordering::SeqCst);
        let guard = FlightGuard {
            service: self.clone(),
            key,
        };
        // The semaphore is never closed, so this only waits.
        let permit = self.permits.clone().acquire_owned().await.ok();
        let mut rec = RunRecord::begin(
            id.clone(),
            &plugin,
            l.trigger.clone(),
            dry,
            RunStatus::Running,
        );
        rec.note = note.clone();
        if planning {
            rec.mode = Mode::Approve.as_str().into();
        }
        rec.approval_of = l.approved.as_ref().map(|(of, _)| of.clone());
        self.store.put_run(&rec).await?;
        let service = self.clone();
        let run_id = id.clone();
        let stage = match (&l.approved, planning) {
            (Some((_, plan)), _) => Stage::Approved(plan.clone()),
            (None, true) => Stage::Plan,
            (None, false) => Stage::Normal,
        };
        let handle = tokio::spawn(async move {
            let _guard = guard;
            let _permit = permit;
            let req = RunRequest {
                trigger: l.trigger,
                dry_run: Some(dry),
                params: l.params,
                stage,
            };
            let mut rec = service.remedy.run_with_id(&plugin, req, run_id).await;
            rec.note = note;
            rec.approval_of = l.approved.map(|(of, _)| of);
            if planning {
                service.plan_for_approval(&plugin, &mut rec);
            }
            if let Some(n) = &rec.note {
                rec.logs.push(format!("[remedy] {n}"));
            }
            if let Err(e) = service.store.put_run(&rec).await {
                tracing::error!(run_id = %rec.id, error = %e, "run record not stored");
            }
            for a in &rec.actions {
                service
                    .audit(
                        Some(&rec.id),
                        Some(&rec.plugin),
                        "action",
                        serde_json::to_value(a).unwrap_or_default(),
                    )
                    .await;
            }
            service.metrics.run_finished(&rec);
            if !rec.dry_run && rec.actions.iter().any(|a| a.applied == Applied::Executed) {
                service.clone().verify_later(plugin.clone(), rec.clone());
            }
            rec
        });
        Ok(Started::Running { id, handle })
    }

    /// Turns a finished planning run into a plan waiting for approval (or
    /// leaves it finished when mitigation wanted nothing).
    fn plan_for_approval(&self, plugin: &Plugin, rec: &mut RunRecord) {
        rec.mode = Mode::Approve.as_str().into();
        let plan: Vec<PlannedAction> = rec
            .actions
            .iter()
            .filter(|a| a.applied == Applied::Simulated)
            .map(|a| PlannedAction {
                kind: a.kind.clone(),
                target: a.target.clone(),
            })
            .collect();
        if rec.status != RunStatus::Succeeded || plan.is_empty() {
            return;
        }
        let ttl = chrono::Duration::from_std(plugin.settings.limits.approval_ttl)
            .unwrap_or(chrono::Duration::hours(1));
        rec.status = RunStatus::PendingApproval;
        rec.approval = Some(Approval {
            plan,
            expires_at: Utc::now() + ttl,
            decision: None,
            decided_by: None,
            decided_at: None,
            live_run: None,
        });
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
