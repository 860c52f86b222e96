//! The Remedy plugin SDK: the `remedy:plugin` bindings plus the small helpers
//! every runbook needs (typed config lookup and [`settings!`], findings,
//! the [`Actions`] tally with per-run limits, [`escalate`], Statuspage
//! verdicts, logging).
//!
//! A plugin implements [`Guest`] and exports it:
//!
//! ```ignore
//! use remedy_plugin_sdk::*;
//! struct MyRunbook;
//! impl Guest for MyRunbook {
//!     fn describe() -> PluginInfo {
//!         plugin_info!("Says what it detects and does", ["MyAlert"])
//!     }
//!     /* detect, mitigate */
//! }
//! remedy_plugin_sdk::export!(MyRunbook);
//! ```

// The generated code names this crate by its public path, also from inside it.
extern crate self as remedy_plugin_sdk;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Generated bindings for the `runbook` world.
pub mod bindings {
    wit_bindgen::generate!({
        world: "runbook",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "remedy_plugin_sdk::bindings",
        runtime_path: "remedy_plugin_sdk::__wit_bindgen::rt",
    });
}

pub use bindings::remedy::plugin::types::{
    Alert, Applied, Context, Detection, Error, Finding, Outcome, PluginInfo, Severity, Trigger,
};
pub use bindings::remedy::plugin::{
    breaker, cache, database, deploy, log, logs, metrics, notify, probe,
};
pub use bindings::{export, Guest};

mod config;
pub mod query;
mod report;

pub use config::{Config, Setting};
pub use report::{finding, sample, Actions};

/// The plugin's [`PluginInfo`] from a description and the alert names it
/// handles; name and version come from its Cargo package
/// (`CARGO_PKG_NAME`, `CARGO_PKG_VERSION`), so they follow Cargo.toml.
///
/// ```ignore
/// plugin_info!("Checks the cache hit rate", ["LowCacheHitRate"])
/// ```
#[macro_export]
macro_rules! plugin_info {
    ($description:expr, [$($alert:expr),* $(,)?] $(,)?) => {
        $crate::PluginInfo {
            name: ::core::env!("CARGO_PKG_NAME").into(),
            version: ::core::env!("CARGO_PKG_VERSION").into(),
            description: ::core::convert::Into::into($description),
            alerts: ::std::vec![$(::core::convert::Into::into($alert)),*],
        }
    };
}

/// Writes an `info` line to the run's log.
pub fn info(message: &str) {
    log::log(log::Level::Info, message);
}

/// Writes a `warn` line to the run's log.
pub fn warn(message: &str) {
    log::log(log::Level::Warn, message);
}

/// A finding's evidence value for a ratio, as a percentage.
pub fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// `kind: message` for a host error, as operators read it in outcomes.
pub fn error_text(e: &Error) -> String {
    let (kind, msg) = match e {
        Error::Denied(m) => ("denied", m),
        Error::Unavailable(m) => ("unavailable", m),
        Error::Invalid(m) => ("invalid", m),
        Error::Refused(m) => ("refused", m),
        Error::Failed(m) => ("failed", m),
    };
    format!("{kind}: {msg}")
}

/// Sends a message to every channel the escalation policy routes
/// `priority` to (`notify.escalate`, one gated action per channel). The
/// host routes by policy and ignores the message's channel; the helper
/// names the priority there (`P1`), never an empty channel.
pub fn escalate(
    priority: notify::Priority,
    severity: Severity,
    title: impl Into<String>,
    body: impl Into<String>,
    evidence: Vec<(String, String)>,
) -> Result<Applied, Error> {
    notify::escalate(
        priority,
        &notify::Message {
            channel: priority.to_string(),
            severity,
            title: title.into(),
            body: body.into(),
            evidence,
        },
    )
}

/// Reading the Statuspage documents (`/api/v2/status.json`) that
/// [`probe::get`] fetches.
pub mod statuspage {
    use crate::probe::{Indicator, Response};

    /// What a status page says about its upstream.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Verdict {
        /// Indicator `none` in a 2xx answer.
        Operational,
        /// Any other indicator (or `none` in an answer that is not 2xx).
        Unhealthy(Indicator),
        /// Not a Statuspage document: `HTTP <status>, not a Statuspage document`.
        Unknown(String),
    }

    /// The verdict of one `probe.get` answer.
    pub fn verdict(r: &Response) -> Verdict {
        match r.indicator {
            Some(Indicator::Operational) if (200..300).contains(&r.status) => Verdict::Operational,
            Some(i) => Verdict::Unhealthy(i),
            None => Verdict::Unknown(format!("HTTP {}, not a Statuspage document", r.status)),
        }
    }
}

/// The WIT name: `operational`, `minor`, `major`, `critical`.
impl core::fmt::Display for probe::Indicator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            probe::Indicator::Operational => "operational",
            probe::Indicator::Minor => "minor",
            probe::Indicator::Major => "major",
            probe::Indicator::Critical => "critical",
        })
    }
}

/// As the application's breaker API spells it: `CLOSED`, `OPEN`, `HALF_OPEN`.
impl core::fmt::Display for breaker::State {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            breaker::State::Closed => "CLOSED",
            breaker::State::Open => "OPEN",
            breaker::State::HalfOpen => "HALF_OPEN",
        })
    }
}

/// `P0` … `P3`, as the escalation policy names them.
impl core::fmt::Display for notify::Priority {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            notify::Priority::P0 => "P0",
            notify::Priority::P1 => "P1",
            notify::Priority::P2 => "P2",
            notify::Priority::P3 => "P3",
        })
    }
}

impl Context {
    /// The plugin's configuration with typed, defaulted lookups.
    pub fn cfg(&self) -> Config<'_> {
        Config::new(&self.config)
    }

    /// The alert that triggered this run, if any.
    pub fn alert(&self) -> Option<&Alert> {
        match &self.trigger {
            Trigger::Alert(a) => Some(a),
            _ => None,
        }
    }

    /// A label of the triggering alert.
    pub fn alert_label(&self, name: &str) -> Option<&str> {
        self.alert()?
            .labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}
