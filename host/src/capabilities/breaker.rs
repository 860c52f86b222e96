//! `breaker`: list and get (read); force-state (through the gate, scoped by
//! breaker name).

use crate::action::ActionKind;
use crate::backends::{Breaker, BreakerState};
use crate::bindings::remedy::plugin::breaker::{BreakerStatus, Host, State};
use crate::bindings::types::{Applied, Error};
use crate::gate::{Action, Target};
use crate::grants::Capability;

use super::{HostCtx, Wiring};

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
            Target::Breaker(name.clone()),
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
