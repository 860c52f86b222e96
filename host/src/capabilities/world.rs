//! A fixture's world and a recording run's recorder: the two stand-ins
//! for every backend. Each capability answers from the world and records
//! into the recorder in its own folder (`<capability>/fixture.rs`); this
//! file holds only what they share — the answers as live state, the calls
//! left unanswered, the real backends behind a recorder.

use crate::locks::MutexExt;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::backends::{BackendError, BackendResult};
use crate::capabilities::notify::backend::NotifyMessage;

use super::{Answers, Backends};

/// The fixture's answers as live state, and the calls they did not cover.
/// Mutations change it (a terminated session is gone, a forced breaker has
/// its new state), so a runbook that re-reads after acting sees what it did.
pub struct World {
    answers: Mutex<Answers>,
    unanswered: Mutex<Vec<String>>,
    /// Every message sent (notifications are the world's output).
    pub sent: Mutex<Vec<NotifyMessage>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.locked()
}

impl World {
    pub fn new(answers: Answers) -> Arc<World> {
        Arc::new(World {
            answers: Mutex::new(answers),
            unanswered: Mutex::new(Vec::new()),
            sent: Mutex::new(Vec::new()),
        })
    }

    /// Every capability answered from this world.
    pub fn backends(self: &Arc<Self>) -> Backends {
        Backends::all(self)
    }

    /// The calls the fixture did not answer, each with where its answer goes.
    pub fn unanswered(&self) -> Vec<String> {
        lock(&self.unanswered).clone()
    }

    /// Notes a call the fixture does not answer; the plugin gets
    /// `unavailable` saying so, and the case fails.
    pub(crate) fn missing<T>(&self, call: String, hint: &str) -> BackendResult<T> {
        let line = format!("{call} is not answered by the fixture (add {hint})");
        let mut u = lock(&self.unanswered);
        if !u.contains(&line) {
            u.push(line.clone());
        }
        Err(BackendError::Unavailable(line))
    }

    pub(crate) fn answers(&self) -> MutexGuard<'_, Answers> {
        lock(&self.answers)
    }
}

/// The real backends, and what they answered (`remedy run --record`).
pub struct Recorder {
    pub(crate) real: Backends,
    answers: Mutex<Answers>,
}

impl Recorder {
    pub fn new(real: Backends) -> Arc<Recorder> {
        Arc::new(Recorder {
            real,
            answers: Mutex::new(Answers::default()),
        })
    }

    /// The real backends behind recording wrappers (an unconfigured one
    /// stays unconfigured).
    pub fn backends(self: &Arc<Self>) -> Backends {
        self.real.wrapped(self)
    }

    /// What the real backends answered so far.
    pub fn answers(&self) -> MutexGuard<'_, Answers> {
        lock(&self.answers)
    }
}

/// What a recorder answers for a capability that is not configured.
pub(crate) fn unconfigured<T>(what: &str) -> BackendResult<T> {
    Err(BackendError::Unavailable(format!(
        "no {what} backend configured"
    )))
}
