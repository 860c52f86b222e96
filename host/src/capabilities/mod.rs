//! The capabilities: one folder per WIT interface, holding its host impl,
//! its backend trait and implementations, its action targets and how
//! `[backends]` configures it. Reads go straight to the backend (granted,
//! bounded by the call's deadline, traced); mutations go through the gate.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::backends::BackendResult;
use crate::bindings::types::Error as WitError;
use crate::config::BackendsConfig;
use crate::escalation::Policy;
use crate::gate::{finish_span, host_call_span, wit_error, Gate};
use crate::grants::Capability;

pub mod breaker;
pub mod cache;
pub mod database;
pub mod deploy;
pub mod log;
pub mod logs;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod types;
pub mod world;

/// The registry of capabilities with a backend: one line each below makes
/// the process's [`Backends`] (configured from `[backends]`), a fixture's
/// [`Answers`] (a table per capability, `[answers.NAME]`, answered by its
/// `NAME::fixture`), and the world and recorder that stand in for them all.
/// `probe` is apart: its backend always exists (what a plugin may reach is
/// its allow-list).
macro_rules! registry {
    ($($cap:ident: $Backend:ident),* $(,)?) => {
        /// The backends of one Remedy process, one per capability; `None` is
        /// unconfigured (its calls answer `unavailable`).
        #[derive(Clone)]
        pub struct Backends {
            $(pub $cap: Option<Arc<dyn $cap::backend::$Backend>>,)*
            pub probe: Arc<dyn probe::backend::ProbeBackend>,
        }

        impl Backends {
            /// Nothing configured: every call but probe answers `unavailable`.
            pub fn none() -> Backends {
                Backends {
                    $($cap: None,)*
                    probe: Arc::new(probe::backend::NoProbe),
                }
            }

            /// Real backends from config. Nothing connects here: connections
            /// are made on first use, so an unreachable backend never stops
            /// start-up.
            pub fn from_config(cfg: &BackendsConfig) -> anyhow::Result<Backends> {
                let timeout = cfg
                    .request_timeout_ms
                    .map_or(std::time::Duration::from_millis(5_000), |t| t.get());
                Ok(Backends {
                    $($cap: $cap::from_config(cfg, timeout)?,)*
                    probe: probe::from_config(cfg)?,
                })
            }

            /// Every capability answered by `one` (a fixture's world).
            pub fn all<B>(one: &Arc<B>) -> Backends
            where
                B: $($cap::backend::$Backend +)* probe::backend::ProbeBackend + 'static,
            {
                Backends {
                    $($cap: Some(one.clone() as _),)*
                    probe: one.clone(),
                }
            }

            /// `one` in front of every backend configured here (a recorder);
            /// an unconfigured one stays unconfigured.
            pub fn wrapped<B>(&self, one: &Arc<B>) -> Backends
            where
                B: $($cap::backend::$Backend +)* probe::backend::ProbeBackend + 'static,
            {
                Backends {
                    $($cap: self.$cap.as_ref().map(|_| one.clone() as _),)*
                    probe: one.clone(),
                }
            }
        }

        /// The answers of a fixture, one table per capability
        /// (`[answers.metrics]`, `[answers.database]`, …), each described by
        /// its capability's `fixture::Answers`. A capability without a
        /// table answers nothing.
        #[derive(Debug, Clone, Default, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Answers {
            $(
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $cap: Option<$cap::fixture::Answers>,
            )*
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub probe: Option<probe::fixture::Answers>,
        }

        impl Answers {
            /// Values in the answers that name content rather than hide it
            /// (commit ids): a recorded fixture keeps them, wherever they
            /// appear, so that a replay still matches what the run said.
            pub fn public_values(&self) -> Vec<String> {
                let mut out = Vec::new();
                $(if let Some(a) = &self.$cap {
                    out.extend(PublicValues::public_values(a));
                })*
                out
            }
        }
    };
}

/// What a capability's fixture answers hold that names content (see
/// [`Answers::public_values`]); nothing, unless the capability says.
pub trait PublicValues {
    fn public_values(&self) -> Vec<String> {
        Vec::new()
    }
}

registry! {
    metrics: MetricsBackend,
    database: DatabaseBackend,
    breaker: BreakerBackend,
    cache: CacheBackend,
    notify: NotifyBackend,
    logs: LogsBackend,
    deploy: DeployBackend,
}

/// What host functions of one guest call can reach.
pub struct HostCtx {
    pub backends: Arc<Backends>,
    /// Where `notify.escalate` sends each priority, and the templates.
    pub escalation: Arc<Policy>,
    pub gate: Gate,
    /// The directory the plugin may read, preopened read-only as `/data`.
    pub files: Option<std::path::PathBuf>,
}

/// Where a capability's backend is configured, for `unavailable` messages.
struct Wiring {
    cap: Capability,
    /// What the backend is called in messages.
    name: &'static str,
    key: &'static str,
    env: &'static str,
}

impl HostCtx {
    /// `denied` unless `cap` is granted. Loading already refuses plugins that
    /// import an ungranted interface; this keeps every call honest anyway.
    fn granted(&self, cap: Capability) -> Result<(), WitError> {
        self.gate
            .grants
            .check(cap, &self.gate.plugin)
            .map_err(WitError::Denied)
    }

    /// The backend, or `unavailable` naming the setting that would
    /// configure it (for actions: the gate checks the grant first).
    fn configured<T: ?Sized>(
        &self,
        w: &Wiring,
        backend: &Option<Arc<T>>,
    ) -> Result<Arc<T>, WitError> {
        backend.clone().ok_or_else(|| {
            WitError::Unavailable(format!(
                "no {} backend configured: set backends.{} in remedy.toml or {}",
                w.cap.as_str(),
                w.key,
                w.env
            ))
        })
    }

    /// The backend of a granted capability, for a read.
    fn backend<T: ?Sized>(&self, w: &Wiring, backend: &Option<Arc<T>>) -> Result<Arc<T>, WitError> {
        self.granted(w.cap)?;
        self.configured(w, backend)
    }

    /// A backend read in a span of its own (capability, function, target,
    /// outcome, duration), bounded by the guest call's deadline: a backend
    /// that hangs answers the plugin `unavailable`, naming it, while the
    /// plugin still has time to say so — instead of the whole run reading
    /// `timed_out` with nobody told why.
    async fn read<T>(
        &self,
        w: &Wiring,
        function: &'static str,
        target: &str,
        fut: impl std::future::Future<Output = BackendResult<T>>,
    ) -> Result<T, WitError> {
        let span = host_call_span(w.cap.as_str(), function, target);
        let started = Instant::now();
        let deadline = self.gate.deadline;
        let r = async {
            let Some(deadline) = deadline else {
                return fut.await.map_err(wit_error);
            };
            let by = deadline
                .checked_sub(crate::gate::DEADLINE_MARGIN)
                .unwrap_or(deadline);
            match tokio::time::timeout_at(by, fut).await {
                Ok(r) => r.map_err(wit_error),
                Err(_) => Err(WitError::Unavailable(format!(
                    "{} did not answer before the run's deadline",
                    w.name
                ))),
            }
        }
        .instrument(span.clone())
        .await;
        finish_span(&span, started, r.as_ref().map(|_| "ok"));
        r
    }
}
