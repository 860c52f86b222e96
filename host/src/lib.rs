//! Remedy: runs production runbooks as sandboxed WebAssembly plugins.
//!
//! The layout follows the architecture: `runtime` loads and invokes plugins
//! (one invocation path for every trigger), `capabilities` implements each WIT
//! interface on top of `backends`, and every mutating host call passes the
//! one action gate in `gate`.

pub mod action;
pub mod alertmanager;
pub mod backends;
pub mod bindings;
pub mod bundled;
pub mod capabilities;
pub mod chat;
pub mod config;
pub mod escalation;
pub mod fixture;
pub mod gate;
pub mod grants;
pub mod guardrails;
pub mod journal;
pub mod killswitch;
pub mod locks;
pub mod permit;
pub mod private_fs;
pub mod record;
pub mod redact;
pub mod remedy;
pub mod report;
pub mod runtime;
pub mod serve;
pub mod service;
pub mod signature;
pub mod store;
pub mod telemetry;
pub mod triggers;
pub mod units;

pub use config::Config;
pub use record::{RunRecord, RunStatus, Trigger};
pub use remedy::{Remedy, RunRequest};
