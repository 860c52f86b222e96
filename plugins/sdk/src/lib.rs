//! The Remedy plugin SDK: the `remedy:plugin` bindings plus the small helpers
//! every runbook needs (typed config lookup, findings, logging).
//!
//! A plugin implements [`Guest`] and exports it:
//!
//! ```ignore
//! use remedy_plugin_sdk::*;
//! struct MyRunbook;
//! impl Guest for MyRunbook { /* describe, detect, mitigate */ }
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
pub use bindings::remedy::plugin::{breaker, cache, database, log, metrics, notify, probe};
pub use bindings::{export, Guest};

mod config;
pub mod query;
mod report;

pub use config::Config;
pub use report::{finding, Actions};

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
