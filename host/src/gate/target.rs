//! What an action is and what it acts on, as the gate checks, counts and
//! records it.

use crate::action::ActionKind;
use crate::grants::{any_match, Scope};

/// What an action acts on, for the scope check.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A breaker, by name.
    Breaker(String),
    /// A database session, by the application that owns it (empty when
    /// the session could not be found).
    DatabaseSession { pid: i32, application: String },
    /// A cache key.
    CacheKey(String),
    /// Every cache key under a prefix (a flush).
    CachePrefix(String),
    /// A notify channel.
    Channel(String),
}

impl Target {
    /// What a cooldown is kept per (see [`crate::guardrails::Intent`]).
    pub fn cooldown_key(&self) -> String {
        match self {
            Target::DatabaseSession { application, .. } => format!("application:{application}"),
            other => other.label(),
        }
    }

    /// How the target appears in the run record.
    pub fn label(&self) -> String {
        match self {
            Target::Breaker(n) => format!("breaker:{n}"),
            Target::DatabaseSession { pid, .. } => format!("pid:{pid}"),
            Target::CacheKey(k) => format!("key:{k}"),
            Target::CachePrefix(p) => format!("prefix:{p}"),
            Target::Channel(c) => format!("channel:{c}"),
        }
    }

    /// How the target reads in a refusal.
    pub fn describe(&self) -> String {
        match self {
            Target::Breaker(n) => format!("breaker `{n}`"),
            Target::DatabaseSession { pid, application } => {
                format!("session {pid} of application `{application}`")
            }
            Target::CacheKey(k) => format!("cache key `{k}`"),
            Target::CachePrefix(p) => format!("cache prefix `{p}`"),
            Target::Channel(c) => format!("notify channel `{c}`"),
        }
    }

    /// Is the target inside `scope`?
    pub fn in_scope(&self, scope: &Scope) -> bool {
        let any = |patterns: &Option<Vec<String>>, text: &str| {
            any_match(patterns.as_deref().unwrap_or_default(), text)
        };
        match self {
            Target::Breaker(name) => any(&scope.breakers, name),
            Target::DatabaseSession { application, .. } => {
                any(&scope.database_applications, application)
            }
            // Plain prefixes: `tenant:acme:` must not match `tenant:acmex:`
            // the way a glob without its colon would.
            Target::CacheKey(key) | Target::CachePrefix(key) => scope
                .cache_prefixes
                .iter()
                .flatten()
                .any(|p| key.starts_with(p.as_str())),
            Target::Channel(name) => any(&scope.notify_channels, name),
        }
    }
}

/// One mutating call as the gate sees it.
#[derive(Debug, Clone)]
pub struct Action {
    pub kind: ActionKind,
    pub target: Target,
    pub reason: String,
}

impl Action {
    pub fn new(kind: ActionKind, target: Target, reason: impl Into<String>) -> Action {
        Action {
            kind,
            target,
            reason: reason.into(),
        }
    }
}
