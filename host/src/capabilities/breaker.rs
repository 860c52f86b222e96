//! `breaker`: list and get (read); force-state (through the gate, scoped by
//! breaker name).

use std::sync::Arc;

use crate::backends::{Breaker, BreakerBackend, BreakerState};
use crate::bindings::remedy::plugin::breaker::{BreakerStatus, Host, State};
use crate::bindings::types::{Applied, Error};
use crate::config::Capability;
use crate::gate::{Action, Target};

use super::HostCtx;

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

impl HostCtx {
    fn breakers(&self) -> Result<Arc<dyn BreakerBackend>, Error> {
        self.backend(
            Capability::Breaker,
            &self.backends.breaker,
            "breaker_url",
            "REMEDY_BREAKER_URL",
        )
    }
}

impl Host for HostCtx {
    async fn list(&mut self) -> Result<Vec<BreakerStatus>, Error> {
        let all = self.read("breaker api", self.breakers()?.list()).await?;
        Ok(all.into_iter().map(status).collect())
    }

    async fn get(&mut self, name: String) -> Result<Option<BreakerStatus>, Error> {
        Ok(self
            .read("breaker api", self.breakers()?.get(&name))
            .await?
            .map(status))
    }

    async fn force_state(
        &mut self,
        name: String,
        state: State,
        reason: String,
    ) -> Result<Applied, Error> {
        let backend = self.breakers()?;
        let state = match state {
            State::Closed => BreakerState::Closed,
            State::Open => BreakerState::Open,
            State::HalfOpen => BreakerState::HalfOpen,
        };
        let action = Action {
            kind: "breaker.force-state",
            capability: Capability::Breaker,
            target: Target::Breaker(name.clone()),
            reason: format!("{} → {}: {reason}", name, state.as_str()),
        };
        self.gate
            .act(action, || async move {
                backend.force_state(&name, state, &reason).await.map(|_| ())
            })
            .await
    }
}
