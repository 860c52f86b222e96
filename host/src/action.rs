//! The vocabulary of mutations: every action kind the gate knows, with the
//! capability it belongs to, its default budget and whether a cooldown
//! applies. The gate, the capabilities, config validation, the ledger and
//! the report all read it from here.

use std::fmt;
use std::time::Duration;

use crate::grants::Capability;

/// One kind of mutating host call (`interface.function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum ActionKind {
    DatabaseCancel,
    DatabaseTerminate,
    BreakerForceState,
    CacheDelete,
    CacheExpire,
    CacheFlush,
    NotifySend,
    NotifyEscalate,
    /// The host acknowledges an incident a run opened (PagerDuty).
    NotifyAcknowledge,
    /// The host resolves it.
    NotifyResolve,
    /// The host marks a live action or a verification on dashboards (Grafana).
    NotifyAnnotate,
    /// A revert of a deployed commit, pushed to the deployed branch.
    DeployRollback,
}

/// At most `max` actions per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max: u32,
    pub per: Duration,
}

const HOUR: Duration = Duration::from_secs(3600);

impl ActionKind {
    pub const ALL: [ActionKind; 12] = [
        ActionKind::DatabaseCancel,
        ActionKind::DatabaseTerminate,
        ActionKind::BreakerForceState,
        ActionKind::CacheDelete,
        ActionKind::CacheExpire,
        ActionKind::CacheFlush,
        ActionKind::NotifySend,
        ActionKind::NotifyEscalate,
        ActionKind::NotifyAcknowledge,
        ActionKind::NotifyResolve,
        ActionKind::NotifyAnnotate,
        ActionKind::DeployRollback,
    ];

    /// The name in records, budgets and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::DatabaseCancel => "database.cancel",
            ActionKind::DatabaseTerminate => "database.terminate",
            ActionKind::BreakerForceState => "breaker.force-state",
            ActionKind::CacheDelete => "cache.delete",
            ActionKind::CacheExpire => "cache.expire",
            ActionKind::CacheFlush => "cache.flush",
            ActionKind::NotifySend => "notify.send",
            ActionKind::NotifyEscalate => "notify.escalate",
            ActionKind::NotifyAcknowledge => "notify.acknowledge",
            ActionKind::NotifyResolve => "notify.resolve",
            ActionKind::NotifyAnnotate => "notify.annotate",
            ActionKind::DeployRollback => "deploy.rollback",
        }
    }

    pub fn parse(s: &str) -> Option<ActionKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn capability(self) -> Capability {
        match self {
            ActionKind::DatabaseCancel | ActionKind::DatabaseTerminate => Capability::Database,
            ActionKind::BreakerForceState => Capability::Breaker,
            ActionKind::CacheDelete | ActionKind::CacheExpire | ActionKind::CacheFlush => {
                Capability::Cache
            }
            ActionKind::NotifySend
            | ActionKind::NotifyEscalate
            | ActionKind::NotifyAcknowledge
            | ActionKind::NotifyResolve
            | ActionKind::NotifyAnnotate => Capability::Notify,
            ActionKind::DeployRollback => Capability::Deploy,
        }
    }

    /// Conservative defaults: a runbook that goes wrong can never do much
    /// damage in an hour before a human notices.
    pub fn default_budget(self) -> Budget {
        let max = match self {
            ActionKind::DatabaseTerminate => 5,
            ActionKind::DatabaseCancel => 10,
            ActionKind::BreakerForceState => 6,
            ActionKind::CacheDelete | ActionKind::CacheExpire => 1000,
            ActionKind::CacheFlush => 1,
            ActionKind::NotifySend
            | ActionKind::NotifyEscalate
            | ActionKind::NotifyAcknowledge
            | ActionKind::NotifyResolve => 30,
            // One per live action and verification.
            ActionKind::NotifyAnnotate => 120,
            // A rollback a human could not review an hour later is a
            // second incident.
            ActionKind::DeployRollback => 1,
        };
        Budget { max, per: HOUR }
    }

    /// Telling a human twice is no harm: notifications have no cooldown,
    /// and they go out while automation is paused.
    pub fn is_notification(self) -> bool {
        self.capability() == Capability::Notify
    }

    /// Kinds whose simulation says nothing (a flush cannot be undone, and
    /// what it would hit a minute later is unknown): they run only when an
    /// operator has put the plugin in `auto` on purpose, or are planned for
    /// an approval; a plain dry run refuses them.
    pub fn never_simulated(self) -> bool {
        self == ActionKind::CacheFlush
    }

    /// The kinds a cooldown applies to (the ledger counts only these).
    pub fn cooled() -> impl Iterator<Item = ActionKind> {
        Self::ALL.into_iter().filter(|k| !k.is_notification())
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `kind == "database.cancel"`, as records and tests read.
impl PartialEq<&str> for ActionKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for ActionKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl TryFrom<String> for ActionKind {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ActionKind::parse(&s).ok_or_else(|| {
            let all: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
            format!("`{s}` is not an action kind; one of {}", all.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_belong_to_their_interface() {
        for k in ActionKind::ALL {
            assert_eq!(ActionKind::parse(k.as_str()), Some(k));
            let interface = k.as_str().split('.').next().unwrap();
            assert_eq!(k.capability().as_str(), interface);
        }
        assert!(ActionKind::try_from("database.terminat".to_string())
            .unwrap_err()
            .contains("not an action kind"));
        assert_eq!(ActionKind::cooled().count(), 7);
    }
}
