//! The kill switch: while it is on, nothing Remedy does touches production.
//!
//! It is consulted twice: when a run starts (a run that would act live runs
//! dry, with a note), and by the gate at the moment of every live action, so
//! a run that was queued or already running when an operator pulled the
//! switch cannot act after it. The service persists it in the store so a
//! restart never silently turns automation back on.

use crate::locks::MutexExt;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// The switch is on: who turned it on, when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Pause {
    pub by: String,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Pause {
    /// How a refused action or a forced dry run explains itself.
    pub fn describe(&self) -> String {
        let why = self
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        format!("kill switch on since {} (by {}{why})", self.at, self.by)
    }

    /// Why a live action was refused (the gate and the shared store's
    /// ledger say it the same way).
    pub fn refusal(&self) -> String {
        format!(
            "{}: live actions are not run while automation is paused",
            self.describe()
        )
    }
}

/// Shared by the service (which flips it) and every gate (which reads it).
#[derive(Debug, Clone, Default)]
pub struct KillSwitch(Arc<Mutex<Option<Pause>>>);

impl KillSwitch {
    pub fn new(initial: Option<Pause>) -> Self {
        Self(Arc::new(Mutex::new(initial)))
    }

    /// The pause, if the switch is on.
    pub fn get(&self) -> Option<Pause> {
        self.0.locked().clone()
    }

    pub fn set(&self, pause: Option<Pause>) {
        *self.0.locked() = pause;
    }

    /// Sets `pause` only if the switch still reads `expected`: a value
    /// read from the shared store before a local change must not undo it.
    pub fn replace_if(&self, expected: &Option<Pause>, pause: Option<Pause>) -> bool {
        let mut cur = self.0.locked();
        if *cur != *expected {
            return false;
        }
        *cur = pause;
        true
    }
}
