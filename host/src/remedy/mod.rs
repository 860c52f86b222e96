//! The facade the CLI and the HTTP service drive: settings resolution
//! (`settings`), plugin loading, and the one invocation path for every
//! trigger.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use tracing::Instrument;

use crate::bundled;
use crate::capabilities::types as conv;
use crate::capabilities::Backends;
use crate::config::{Config, Mode};
use crate::escalation::Policy;
use crate::gate::{error_text, RunGate};
use crate::journal::{Journal, LOG_CAP};
use crate::record::{RunRecord, RunStatus, Trigger};
use crate::runtime::invoke::CallSetup;
use crate::runtime::{CallError, CodeCache, LoadError, Plugin, PluginSettings, Runtime};

pub mod settings;

pub use settings::Overrides;

/// Where a plugin comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Bundled(&'static str),
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Bundled(_) => write!(f, "bundled"),
            Source::File(p) => write!(f, "{}", p.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(
        "no plugin named `{0}` (bundled: {1}); configure one with [plugins.{0}] path = \"...\""
    )]
    Unknown(String, String),
    // Not `source`: the message carries the cause already, and the CLI
    // prints the chain (it read "No such file…: No such file…").
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{origin}: {error}")]
    Load { origin: String, error: LoadError },
    #[error("{origin} reports the name `{reported}`, but is configured as [plugins.{configured}]: a plugin's name and its config section must agree")]
    Misnamed {
        origin: String,
        reported: String,
        configured: String,
    },
    #[error("{origin}: {error}")]
    Signature {
        origin: String,
        error: crate::signature::SignatureError,
    },
    #[error("{origin}: digest {digest} does not match the sha256 pinned for plugin `{name}`")]
    Pin {
        origin: String,
        name: String,
        digest: String,
    },
}

/// What a trigger asks of a run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub trigger: Trigger,
    /// `None`: the plugin's mode decides.
    pub dry_run: Option<bool>,
    /// Config keys for this run only, over the plugin's config.
    pub params: BTreeMap<String, String>,
    /// Planning for approval, or carrying out an approved plan.
    pub stage: crate::guardrails::Stage,
}

pub struct Remedy {
    pub runtime: Arc<Runtime>,
    pub backends: Arc<Backends>,
    /// Where escalations go, by priority, and the templates.
    pub escalation: Arc<Policy>,
    pub config: Config,
    pub overrides: Overrides,
    /// Compiled code is cached here, keyed by digest and engine config.
    cache: Option<CodeCache>,
    /// Budgets, cooldowns and the write-ahead record of live actions
    /// (the service's store; one-shot CLI runs have none).
    pub ledger: Option<Arc<dyn crate::guardrails::Ledger>>,
    /// The service's kill switch, consulted by the gate at each live action.
    pub kill: Option<crate::killswitch::KillSwitch>,
    /// Alertmanager, asked before a run's first live action (see
    /// [`crate::alertmanager::guard`]); `None` when not configured.
    pub alerts: Option<Arc<dyn crate::alertmanager::AlertSource>>,
    /// The silences this process holds while runs act and verify.
    pub silences: Arc<crate::alertmanager::lease::SilenceLeases>,
}

impl Remedy {
    pub fn new(config: Config, overrides: Overrides) -> anyhow::Result<Remedy> {
        let backends = Backends::from_config(&config.backends)?;
        Self::with_backends(config, overrides, Arc::new(backends))
    }

    /// With given backends (tests and benchmarks use in-memory ones).
    pub fn with_backends(
        config: Config,
        overrides: Overrides,
        backends: Arc<Backends>,
    ) -> anyhow::Result<Remedy> {
        let alerts = crate::alertmanager::api::from_config(&config.backends)?;
        let mut r = Self::build(config, overrides, backends, Runtime::new()?);
        r.alerts = alerts;
        Ok(r)
    }

    fn build(
        config: Config,
        overrides: Overrides,
        backends: Arc<Backends>,
        runtime: Arc<Runtime>,
    ) -> Remedy {
        Remedy {
            runtime,
            backends,
            escalation: Arc::new(Policy::new(&config.escalation, &config.templates)),
            config,
            overrides,
            cache: None,
            ledger: None,
            kill: None,
            alerts: None,
            silences: Arc::default(),
        }
    }

    /// The same runtime, config and compiled plugins over other backends
    /// (a fixture's answers, or the real ones behind a recorder); one-shot,
    /// so without the service's ledger and kill switch.
    pub fn with_backends_of(&self, backends: Arc<Backends>) -> Remedy {
        Remedy {
            runtime: self.runtime.clone(),
            backends,
            escalation: self.escalation.clone(),
            config: self.config.clone(),
            overrides: self.overrides.clone(),
            cache: self.cache.clone(),
            ledger: None,
            kill: None,
            alerts: None,
            silences: Arc::default(),
        }
    }

    /// Caches compiled plugins in `dir`, so a restart does not recompile.
    pub fn set_cache_dir(&mut self, dir: PathBuf) {
        self.cache = Some(CodeCache { dir, tiered: false });
    }

    /// A long-lived service's Remedy: a plugin its cache (`dir`) misses
    /// starts on quick code and is optimised in the background (see
    /// `runtime::tiers`).
    pub fn for_service(config: Config, dir: PathBuf) -> anyhow::Result<Remedy> {
        let backends = Arc::new(Backends::from_config(&config.backends)?);
        let alerts = crate::alertmanager::api::from_config(&config.backends)?;
        let mut remedy = Self::build(
            config,
            Overrides::default(),
            backends,
            Runtime::for_service()?,
        );
        crate::runtime::plugin::remove_unfinished_cache_writes(&dir);
        remedy.cache = Some(CodeCache { dir, tiered: true });
        remedy.alerts = alerts;
        Ok(remedy)
    }

    /// Bundled defaults, then the config file, then command-line overrides.
    pub fn settings(&self, name: &str) -> PluginSettings {
        self.settings_for(name, true)
    }

    /// Settings of plugin `name`; the bundled defaults (grants and scope)
    /// apply only to the bundled plugin itself (`bundled`), never to a file
    /// that merely reports the same name.
    pub fn settings_for(&self, name: &str, bundled: bool) -> PluginSettings {
        settings::resolve(
            bundled.then(|| bundled::find(name)).flatten(),
            self.config.plugins.get(name),
            &self.overrides,
        )
    }

    /// Whether a request runs dry for this plugin.
    pub fn dry_run_for(plugin: &Plugin, req_dry_run: Option<bool>) -> bool {
        req_dry_run.unwrap_or(plugin.settings.mode != Mode::Auto)
    }

    /// Every plugin Remedy knows: the bundled ones and the configured files.
    pub fn sources(&self) -> Vec<(String, Source)> {
        let mut out: BTreeMap<String, Source> = bundled::BUNDLED
            .iter()
            .map(|b| (b.name.to_string(), Source::Bundled(b.name)))
            .collect();
        for (name, pc) in &self.config.plugins {
            if let Some(p) = &pc.path {
                out.insert(name.clone(), Source::File(p.clone()));
            }
        }
        out.into_iter().collect()
    }

    /// Loads a plugin by name (bundled or configured).
    pub async fn load_named(&self, name: &str) -> Result<Plugin, PluginError> {
        let source = self
            .sources()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
            .ok_or_else(|| {
                let names: Vec<&str> = bundled::BUNDLED.iter().map(|b| b.name).collect();
                PluginError::Unknown(name.to_string(), names.join(", "))
            })?;
        self.load_source(&source).await
    }

    pub async fn load_source(&self, source: &Source) -> Result<Plugin, PluginError> {
        match source {
            Source::Bundled(name) => {
                let b = bundled::find(name)
                    .ok_or_else(|| PluginError::Unknown(name.to_string(), String::new()))?;
                self.load_bytes(b.wasm, source).await
            }
            Source::File(path) => self.load_file(path).await,
        }
    }

    /// Loads a `.wasm` file (and its `.minisig`, if any); its settings are
    /// those of the name it reports.
    pub async fn load_file(&self, path: &Path) -> Result<Plugin, PluginError> {
        let bytes = std::fs::read(path).map_err(|error| PluginError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let sig = crate::signature::read_sig(std::fs::File::open(crate::signature::sig_path(path)));
        self.load_file_bytes(&bytes, sig.as_deref(), path).await
    }

    /// Loads a `.wasm` file's bytes and signature, read by the caller (the
    /// service reads `plugins_dir` through a capability handle).
    pub async fn load_file_bytes(
        &self,
        bytes: &[u8],
        sig: Option<&str>,
        path: &Path,
    ) -> Result<Plugin, PluginError> {
        let source = Source::File(path.to_path_buf());
        let refuse = |error| PluginError::Signature {
            origin: source.to_string(),
            error,
        };
        // Before compiling: bytes nobody trusted never reach the compiler
        // (including an unsigned file at the path of a plugin with keys).
        if let (None, Some(name)) = (sig, self.keyed_plugin_at(path)) {
            return Err(refuse(self.missing_for(path, name)));
        }
        let signed = self.signature(bytes, sig, path, None).map_err(refuse)?;
        let mut plugin = self.load_bytes(bytes, &source).await?;
        // The key must be trusted for the name the plugin reports.
        if let crate::signature::Signed::By(_) = &signed {
            plugin.signed = self
                .signature(bytes, sig, path, Some(plugin.name()))
                .map_err(refuse)?;
            plugin.signed_at = sig.and_then(crate::signature::signed_at);
        } else if self.has_own_keys(plugin.name()) {
            // Deleting the `.minisig` must not unpin a plugin.
            return Err(refuse(self.missing_for(path, plugin.name())));
        } else {
            plugin.signed = signed;
        }
        Ok(plugin)
    }

    fn has_own_keys(&self, name: &str) -> bool {
        self.config
            .plugins
            .get(name)
            .is_some_and(|pc| !pc.trusted_keys.is_empty())
    }

    /// The configured plugin with its own keys whose `path` is this file.
    fn keyed_plugin_at(&self, path: &Path) -> Option<&str> {
        let real = path.canonicalize().ok();
        let same = |p: &Path| p == path || (real.is_some() && p.canonicalize().ok() == real);
        self.config
            .plugins
            .iter()
            .find(|(_, pc)| !pc.trusted_keys.is_empty() && pc.path.as_deref().is_some_and(same))
            .map(|(n, _)| n.as_str())
    }

    fn missing_for(&self, path: &Path, name: &str) -> crate::signature::SignatureError {
        let sig_name = crate::signature::sig_path(path)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        crate::signature::SignatureError::MissingForPlugin(sig_name, name.to_string())
    }

    /// Checks a file's signature: with `name`, against the keys trusted for
    /// that plugin; without, against every trusted key (before the name is
    /// known).
    fn signature(
        &self,
        bytes: &[u8],
        sig: Option<&str>,
        path: &Path,
        name: Option<&str>,
    ) -> Result<crate::signature::Signed, crate::signature::SignatureError> {
        let server = &self.config.server;
        let plugin_keys = self
            .config
            .plugins
            .iter()
            .filter(|(n, _)| name.is_none_or(|name| name == n.as_str()))
            .flat_map(|(_, pc)| &pc.trusted_keys);
        let keys: Vec<_> = server.trusted_keys.iter().chain(plugin_keys).collect();
        let sig_name = crate::signature::sig_path(path)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let checked =
            crate::signature::check(bytes, sig, &sig_name, &keys, server.require_signature);
        match (checked, name) {
            (Err(crate::signature::SignatureError::Invalid(_)), Some(name)) => {
                // It verified against some key before: one of another plugin.
                let all: Vec<_> = server
                    .trusted_keys
                    .iter()
                    .chain(self.config.plugins.values().flat_map(|pc| &pc.trusted_keys))
                    .collect();
                let by = crate::signature::check(bytes, sig, &sig_name, &all, false)
                    .ok()
                    .and_then(|s| match s {
                        crate::signature::Signed::By(k) => Some(k),
                        _ => None,
                    })
                    .unwrap_or_default();
                Err(crate::signature::SignatureError::NotForPlugin(
                    sig_name,
                    by,
                    name.to_string(),
                ))
            }
            (r, _) => r,
        }
    }

    async fn load_bytes(&self, bytes: &[u8], source: &Source) -> Result<Plugin, PluginError> {
        let plugin = self
            .runtime
            .load(bytes, self.cache.as_ref(), |name| {
                self.settings_for(name, matches!(source, Source::Bundled(_)))
            })
            .await
            .map_err(|error| PluginError::Load {
                origin: source.to_string(),
                error,
            })?;
        // A configured file serves under its section's name, or not at all:
        // otherwise `[plugins.a] path = …` could load as `b`, with b's grants.
        if let Source::File(path) = source {
            let configured = self
                .config
                .plugins
                .iter()
                .find(|(_, pc)| pc.path.as_deref() == Some(path.as_path()))
                .map(|(n, _)| n.clone());
            if let Some(configured) = configured.filter(|c| c != plugin.name()) {
                return Err(PluginError::Misnamed {
                    origin: source.to_string(),
                    reported: plugin.name().to_string(),
                    configured,
                });
            }
        }
        if let Some(pin) = &plugin.settings.pin {
            if !pin.matches(&plugin.digest) {
                return Err(PluginError::Pin {
                    origin: source.to_string(),
                    name: plugin.name().to_string(),
                    digest: plugin.digest.clone(),
                });
            }
        }
        Ok(plugin)
    }

    /// The one invocation path: detect, then (when unhealthy and the alert
    /// still fires) mitigate; every trigger ends up here.
    pub async fn run(&self, plugin: &Plugin, req: RunRequest) -> RunRecord {
        self.run_with_id(plugin, req, crate::record::new_run_id())
            .await
    }

    /// `run` with an id the caller already handed out (the service stores
    /// a `running` record under it before the run starts).
    pub async fn run_with_id(&self, plugin: &Plugin, req: RunRequest, id: String) -> RunRecord {
        let span = tracing::info_span!("run", plugin = %plugin.name(), run_id = %id, digest = %plugin.digest);
        self.run_inner(plugin, req, id).instrument(span).await
    }

    /// What a live action of this run must ask Alertmanager first: the
    /// plugin's and the server's blocking alerts, and whether the alert
    /// that started it still fires.
    fn alert_guard(
        &self,
        settings: &crate::runtime::PluginSettings,
        trigger: &crate::record::Trigger,
        run_id: &str,
    ) -> Option<crate::alertmanager::guard::AlertGuard> {
        let limits = &settings.limits;
        let mut blockers = limits.block_while_firing.clone();
        blockers.extend(
            self.config
                .server
                .block_while_firing
                .iter()
                .flatten()
                .cloned(),
        );
        let alert = match trigger {
            crate::record::Trigger::Alert { alert } => Some(alert),
            _ => None,
        };
        crate::alertmanager::guard::AlertGuard::for_run(
            self.alerts.clone(),
            alert,
            limits.act_only_while_firing,
            limits.act_if_alertmanager_down,
            blockers,
            limits.silence_lease.map(|lease| crate::alertmanager::guard::SilenceWhileActing {
                run_id: run_id.to_string(),
                lease,
                comment: format!(
                    "Remedy run {run_id} is acting on this alert; the silence ends when its verification does, or within {}s if Remedy stops",
                    lease.as_secs()
                ),
                leases: self.silences.clone(),
            }),
        )
    }

    async fn run_inner(&self, plugin: &Plugin, req: RunRequest, id: String) -> RunRecord {
        let started = Utc::now();
        let clock = std::time::Instant::now();
        let settings = &plugin.settings;
        let dry_run = Self::dry_run_for(plugin, req.dry_run);
        let mut config = settings.config.clone();
        config.extend(req.params.clone());
        let config: Vec<(String, String)> = config.into_iter().collect();
        let ctx = conv::context(&id, &req.trigger, &config, dry_run);
        let journal = Journal::new(LOG_CAP);
        let run = Arc::new(RunGate {
            plugin: plugin.name().to_string(),
            run_id: id.clone(),
            grants: settings.grants.clone(),
            limits: settings.limits.clone(),
            dry_run,
            stage: req.stage.clone(),
            journal: journal.clone(),
            ledger: self.ledger.clone(),
            kill: self.kill.clone(),
            subject: req.trigger.subject().map(String::from),
            alert_guard: self.alert_guard(settings, &req.trigger, &id).map(Arc::new),
        });
        let setup = || CallSetup {
            run: &run,
            settings,
            backends: &self.backends,
            escalation: &self.escalation,
        };
        let mut rec = RunRecord::begin(
            id.clone(),
            &plugin.plugin_ref(),
            req.trigger.clone(),
            dry_run,
            RunStatus::Running,
        );
        rec.started_at = started;
        rec.trace_id = crate::telemetry::trace_id(&tracing::Span::current());
        let (status, error) = match self
            .runtime
            .detect(plugin, setup(), ctx.clone())
            .instrument(tracing::info_span!("detect"))
            .await
        {
            Err(e) => call_failed("detect", e),
            Ok(Err(e)) => plugin_failed("detect", &e),
            Ok(Ok(det)) => {
                let (detection, notes) = conv::detection(&det);
                rec.detection = Some(detection);
                notes.into_iter().for_each(|n| journal.logs.host_line(n));
                let resolved = matches!(&req.trigger, Trigger::Alert { alert } if !alert.firing);
                let verifying = matches!(req.stage, crate::guardrails::Stage::Verify);
                if det.healthy || verifying {
                    (RunStatus::Succeeded, None)
                } else if resolved {
                    journal
                        .logs
                        .line("[remedy] alert is resolved: no mitigation".into());
                    (RunStatus::Succeeded, None)
                } else {
                    match self
                        .runtime
                        .mitigate(plugin, setup(), ctx, det)
                        .instrument(tracing::info_span!("mitigate"))
                        .await
                    {
                        Err(e) => call_failed("mitigate", e),
                        Ok(Err(e)) => plugin_failed("mitigate", &e),
                        Ok(Ok(outcome)) => {
                            let (outcome, notes) = conv::outcome(outcome);
                            rec.outcome = Some(outcome);
                            notes.into_iter().for_each(|n| journal.logs.host_line(n));
                            (RunStatus::Succeeded, None)
                        }
                    }
                }
            }
        };
        rec.status = status;
        rec.error = error;
        rec.actions = journal.actions();
        rec.silence = self.silences.id_of(&id);
        let dropped = journal.dropped_actions();
        if dropped > 0 {
            journal.logs.host_line(format!(
                "[remedy] {dropped} more refused or simulated actions were not kept (at most {} per run)",
                crate::journal::MAX_ACTIONS
            ));
        }
        rec.logs = journal.logs.lines();
        rec.finished_at = Some(Utc::now());
        rec.duration_ms = Some(clock.elapsed().as_millis() as u64);
        tracing::info!(
            status = rec.status.as_str(),
            actions = rec.actions.len(),
            duration_ms = rec.duration_ms,
            "run finished"
        );
        rec
    }
}

fn call_failed(phase: &str, e: CallError) -> (RunStatus, Option<String>) {
    let status = match e {
        CallError::TimedOut(_) => RunStatus::TimedOut,
        CallError::OutOfMemory(_) => RunStatus::OutOfMemory,
        CallError::Trapped(_) => RunStatus::Trapped,
    };
    (status, Some(format!("{phase}: {e}")))
}

fn plugin_failed(phase: &str, e: &crate::bindings::types::Error) -> (RunStatus, Option<String>) {
    let status = match e {
        crate::bindings::types::Error::Denied(_) => RunStatus::Denied,
        _ => RunStatus::Failed,
    };
    let text = conv::cut(&error_text(e), conv::caps::MESSAGE);
    (status, Some(format!("{phase}: {text}")))
}
