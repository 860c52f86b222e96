//! What an action is and what it acts on, as the gate checks, counts and
//! records it. Each capability defines its own target types (a breaker, a
//! database session, a cache key, a channel) in its own folder.

use std::fmt::Debug;
use std::sync::Arc;

use crate::action::ActionKind;
use crate::grants::{any_match, Scope};

/// What an action acts on.
pub trait ActionTarget: Debug + Send + Sync {
    /// How the target appears in the run record and plans (`breaker:stripe`).
    fn label(&self) -> String;

    /// How it reads in a refusal (``breaker `stripe` ``).
    fn describe(&self) -> String;

    /// `Err` with the reason when `scope` does not cover it.
    fn check_scope(&self, scope: &Scope, plugin: &str) -> Result<(), String>;

    /// What a cooldown is kept per (see [`crate::guardrails::Intent`]): the
    /// thing remediated, which is the label unless the handle acted on is
    /// new every time (a database session's pid).
    fn cooldown_key(&self) -> String {
        self.label()
    }
}

/// The usual refusal of [`ActionTarget::check_scope`].
pub fn outside(target: &dyn ActionTarget, plugin: &str) -> String {
    format!(
        "{} is outside the scope granted to {plugin}",
        target.describe()
    )
}

/// The usual [`ActionTarget::check_scope`] of a target named `name` and
/// granted by glob `patterns` (unset: nothing is granted).
pub fn glob_scope(
    target: &dyn ActionTarget,
    patterns: &Option<Vec<String>>,
    name: &str,
    plugin: &str,
) -> Result<(), String> {
    match any_match(patterns.as_deref().unwrap_or_default(), name) {
        true => Ok(()),
        false => Err(outside(target, plugin)),
    }
}

/// One mutating call as the gate sees it.
#[derive(Debug, Clone)]
pub struct Action {
    pub kind: ActionKind,
    pub target: Arc<dyn ActionTarget>,
    pub reason: String,
    /// The incident it opens or follows up, kept in its record.
    pub incident: Option<String>,
    /// What it produced, set by the backend call that executed it and
    /// kept in its record (see [`Action::result_cell`]).
    pub result: Arc<std::sync::OnceLock<String>>,
}

impl Action {
    pub fn new(
        kind: ActionKind,
        target: impl ActionTarget + 'static,
        reason: impl Into<String>,
    ) -> Action {
        Action {
            kind,
            target: Arc::new(target),
            reason: reason.into(),
            incident: None,
            result: Arc::default(),
        }
    }

    /// Where the call that executes the action says what it produced.
    pub fn result_cell(&self) -> Arc<std::sync::OnceLock<String>> {
        self.result.clone()
    }

    /// The action opens or follows up incident `key`.
    pub fn with_incident(mut self, key: String) -> Action {
        self.incident = Some(key);
        self
    }
}
