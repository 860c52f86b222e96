//! The facade the CLI and the HTTP service drive: settings resolution
//! (`settings`), plugin loading (`load`), and the one invocation path for
//! every trigger (`invoke`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

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

mod invoke;
mod load;
pub mod settings;

pub use load::{PluginError, Source};
pub use settings::Overrides;

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
}
