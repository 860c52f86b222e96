//! `breaker`: list and get (read); force-state (through the gate, scoped by
//! breaker name).

use std::sync::Arc;
use std::time::Duration;

use crate::action::ActionKind;
use crate::bindings::remedy::plugin::breaker::{BreakerStatus, Host, State};
use crate::bindings::types::{Applied, Error};
use crate::config::BackendsConfig;
use crate::gate::{glob_scope, Action, ActionTarget};
use crate::grants::{Capability, Scope};

use super::{HostCtx, Wiring};

pub mod api;
pub mod backend;
pub mod fixture;

use backend::{Breaker, BreakerBackend, BreakerState};

/// The backend `[backends]` configures (`breaker_url`), if any.
pub fn from_config(
    cfg: &BackendsConfig,
    timeout: Duration,
) -> anyhow::Result<Option<Arc<dyn BreakerBackend>>> {
    Ok(match &cfg.breaker_url {
        Some(u) => Some(Arc::new(api::BreakerApi::new(u.as_str(), timeout)?)),
        None => None,
    })
}

/// A breaker, by name.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerTarget(pub String);

impl ActionTarget for BreakerTarget {
    fn label(&self) -> String {
        format!("breaker:{}", self.0)
    }

    fn describe(&self) -> String {
        format!("breaker `{}`", self.0)
    }

    fn check_scope(&self, scope: &Scope, plugin: &str) -> Result<(), String> {
        glob_scope(self, &scope.breakers, &self.0, plugin)
    }
}

fn status(b: Breaker) -> BreakerStatus {
    BreakerStatus {
        name: b.name,
        state: match b.state {
            BreakerState::Closed => State::Closed,
            BreakerState::Open => State::Open,
            BreakerState::HalfOpen => State::HalfOpen,
        },
        failures: b.failures,
        opened_at: b.opened_at,
        status_url: b.status_url,
    }
}

const BREAKER: Wiring = Wiring {
    cap: Capability::Breaker,
    name: "breaker api",
    key: "breaker_url",
    env: "REMEDY_BREAKER_URL",
};

impl Host for HostCtx {
    async fn list(&mut self) -> Result<Vec<BreakerStatus>, Error> {
        let b = self.backend(&BREAKER, &self.backends.breaker)?;
        let all = self.read(&BREAKER, "list", "", b.list()).await?;
        Ok(all.into_iter().map(status).collect())
    }

    async fn get(&mut self, name: String) -> Result<Option<BreakerStatus>, Error> {
        let b = self.backend(&BREAKER, &self.backends.breaker)?;
        Ok(self
            .read(&BREAKER, "get", &name, b.get(&name))
            .await?
            .map(status))
    }

    async fn force_state(
        &mut self,
        name: String,
        state: State,
        reason: String,
    ) -> Result<Applied, Error> {
        let state = match state {
            State::Closed => BreakerState::Closed,
            State::Open => BreakerState::Open,
            State::HalfOpen => BreakerState::HalfOpen,
        };
        let action = Action::new(
            ActionKind::BreakerForceState,
            BreakerTarget(name.clone()),
            format!("{} → {}: {reason}", name, state.as_str()),
        );
        let backend = self.configured(&BREAKER, &self.backends.breaker);
        self.gate
            .act(action, backend, |backend, permit| async move {
                backend
                    .force_state(&permit, &name, state, &reason)
                    .await
                    .map(|_| ())
            })
            .await
    }
}
