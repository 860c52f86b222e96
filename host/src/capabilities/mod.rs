//! The host side of each WIT interface: one module per interface, each with
//! its grant and scope checks. Reads go straight to the backend; mutations go
//! through the action gate.

use std::sync::Arc;

use crate::backends::{BackendResult, Backends};
use crate::bindings::types::Error as WitError;
use crate::config::Capability;
use crate::gate::{wit_error, Gate};

pub mod breaker;
pub mod cache;
pub mod database;
pub mod log;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod types;

/// What host functions of one guest call can reach.
pub struct HostCtx {
    pub backends: Arc<Backends>,
    pub gate: Gate,
    pub probe_allow: Arc<Vec<probe::AllowPattern>>,
    /// The run this call belongs to (for messages that leave the host).
    pub run_id: String,
    /// The directory the plugin may read, preopened read-only as `/data`.
    pub files: Option<std::path::PathBuf>,
}

impl HostCtx {
    /// `denied` unless `cap` is granted. Loading already refuses plugins that
    /// import an ungranted interface; this keeps every call honest anyway.
    fn granted(&self, cap: Capability) -> Result<(), WitError> {
        if self.gate.grants.has(cap) {
            Ok(())
        } else {
            Err(WitError::Denied(format!(
                "interface `{}` is not granted to {}",
                cap.as_str(),
                self.gate.plugin
            )))
        }
    }
}

impl HostCtx {
    /// The backend of a granted capability, or `unavailable` naming the
    /// setting that would configure it.
    fn backend<T: ?Sized>(
        &self,
        cap: Capability,
        backend: &Option<Arc<T>>,
        key: &str,
        env: &str,
    ) -> Result<Arc<T>, WitError> {
        self.granted(cap)?;
        backend
            .clone()
            .ok_or_else(|| unconfigured(cap.as_str(), key, env))
    }
}

impl HostCtx {
    /// A backend read, bounded by the guest call's deadline: a backend that
    /// hangs answers the plugin `unavailable`, naming it, while the plugin
    /// still has time to say so — instead of the whole run reading
    /// `timed_out` with nobody told why.
    async fn read<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = BackendResult<T>>,
    ) -> Result<T, WitError> {
        let Some(deadline) = self.gate.deadline else {
            return fut.await.map_err(wit_error);
        };
        let by = deadline
            .checked_sub(crate::gate::DEADLINE_MARGIN)
            .unwrap_or(deadline);
        match tokio::time::timeout_at(by, fut).await {
            Ok(r) => r.map_err(wit_error),
            Err(_) => Err(WitError::Unavailable(format!(
                "{what} did not answer before the run's deadline"
            ))),
        }
    }
}

/// `unavailable`, naming the setting that would configure the backend.
fn unconfigured(what: &str, key: &str, env: &str) -> WitError {
    WitError::Unavailable(format!(
        "no {what} backend configured: set backends.{key} in remedy.toml or {env}"
    ))
}
