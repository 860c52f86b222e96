//! `[answers.breaker]`: the breakers of a fixture's world (a forced one
//! has its new state), and as a recorder keeps them.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::backend::{Breaker, BreakerBackend, BreakerState};
use crate::backends::{BackendError, BackendResult, Permit};
use crate::capabilities::world::{unconfigured, Recorder, World};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answers {
    #[serde(default)]
    pub breakers: Vec<Breaker>,
}

#[async_trait]
impl BreakerBackend for World {
    async fn list(&self) -> BackendResult<Vec<Breaker>> {
        match &self.answers().breaker {
            Some(b) => Ok(b.breakers.clone()),
            None => self.missing("breaker.list()".into(), "[[answers.breaker.breakers]]"),
        }
    }

    async fn get(&self, name: &str) -> BackendResult<Option<Breaker>> {
        match &self.answers().breaker {
            Some(b) => Ok(b.breakers.iter().find(|x| x.name == name).cloned()),
            None => self.missing(
                format!("breaker.get({name:?})"),
                "[[answers.breaker.breakers]]",
            ),
        }
    }

    async fn force_state(
        &self,
        _: &Permit,
        name: &str,
        state: BreakerState,
        _reason: &str,
    ) -> BackendResult<Breaker> {
        let mut a = self.answers();
        let found = a
            .breaker
            .as_mut()
            .and_then(|b| b.breakers.iter_mut().find(|x| x.name == name));
        match found {
            Some(b) => {
                b.state = state;
                if state == BreakerState::Closed {
                    b.failures = 0;
                    b.opened_at = None;
                }
                Ok(b.clone())
            }
            None => Err(BackendError::Invalid(format!("no breaker named `{name}`"))),
        }
    }
}

impl Recorder {
    fn keep_breaker(&self, b: &Breaker) {
        let mut a = self.answers();
        let breakers = &mut a.breaker.get_or_insert_with(Default::default).breakers;
        if !breakers.iter().any(|x| x.name == b.name) {
            breakers.push(b.clone());
        }
    }
}

#[async_trait]
impl BreakerBackend for Recorder {
    async fn list(&self) -> BackendResult<Vec<Breaker>> {
        let Some(real) = &self.real.breaker else {
            return unconfigured("breaker");
        };
        let r = real.list().await;
        if let Ok(all) = &r {
            all.iter().for_each(|b| self.keep_breaker(b));
        }
        r
    }

    async fn get(&self, name: &str) -> BackendResult<Option<Breaker>> {
        let Some(real) = &self.real.breaker else {
            return unconfigured("breaker");
        };
        let r = real.get(name).await;
        if let Ok(Some(b)) = &r {
            self.keep_breaker(b);
        }
        r
    }

    async fn force_state(
        &self,
        permit: &Permit,
        name: &str,
        state: BreakerState,
        reason: &str,
    ) -> BackendResult<Breaker> {
        match &self.real.breaker {
            Some(real) => real.force_state(permit, name, state, reason).await,
            None => unconfigured("breaker"),
        }
    }
}

impl crate::capabilities::PublicValues for Answers {}
