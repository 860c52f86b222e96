//! The run record: what a run was asked, what it found, what it
//! did and how it ended. The same JSON is printed by `remedy run --json` and
//! served by the HTTP API.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::action::ActionKind;

/// Which plugin a record is about: its name, version and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginRef {
    pub name: String,
    pub version: String,
    pub digest: String,
}

/// How much of what a plugin hands the host a record keeps (bytes or
/// entries): a plugin cannot make a record larger than these.
pub mod caps {
    pub const FINDINGS: usize = 100;
    /// A finding's summary, an outcome's manual step.
    pub const LINE: usize = 1024;
    pub const EVIDENCE_ENTRIES: usize = 32;
    pub const EVIDENCE_KEY: usize = 128;
    pub const EVIDENCE_VALUE: usize = 2048;
    /// All evidence values of one detection together.
    pub const EVIDENCE_TOTAL: usize = 256 * 1024;
    pub const OUTCOME_SUMMARY: usize = 4096;
    pub const MANUAL_STEPS: usize = 50;
    /// A plugin's error message, an action's reason.
    pub const MESSAGE: usize = 2048;
}

/// A time as the store, the audit log and the API write it: RFC 3339, UTC,
/// microseconds (so that text order is time order).
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The wire name of a record enum (`critical`, `simulated`, `succeeded`).
pub fn wire<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// `s` cut to at most `max` bytes (at a char boundary), marked with `…`.
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// How a run ended (or where it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Denied,
    Trapped,
    TimedOut,
    OutOfMemory,
    PendingApproval,
    Rejected,
    Expired,
    Interrupted,
    Skipped,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Denied => "denied",
            Self::Trapped => "trapped",
            Self::TimedOut => "timed_out",
            Self::OutOfMemory => "out_of_memory",
            Self::PendingApproval => "pending_approval",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
            Self::Interrupted => "interrupted",
            Self::Skipped => "skipped",
        }
    }
}

/// One Alertmanager alert as a run sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AlertInfo {
    pub name: String,
    pub firing: bool,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub fingerprint: String,
}

/// What started a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    Alert {
        alert: AlertInfo,
    },
    Schedule {
        schedule: String,
        /// The tick this run serves (RFC 3339), as claimed in the store.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tick: Option<String>,
    },
    Manual {
        by: String,
    },
}

impl Trigger {
    /// What the run is about, when that outlives the run: its alert's
    /// fingerprint. Incidents are keyed by it, so that every escalation
    /// about one alert lands in one PagerDuty incident.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Trigger::Alert { alert } if !alert.fingerprint.is_empty() => Some(&alert.fingerprint),
            _ => None,
        }
    }
}

/// The urgency an alert's labels claim: `priority` (`P0`…`P3`), else P0
/// for `severity=critical`.
pub fn alert_priority(labels: &BTreeMap<String, String>) -> Option<crate::escalation::Priority> {
    let labelled = labels
        .get("priority")
        .and_then(|p| crate::escalation::Priority::parse(p));
    let critical = labels
        .get("severity")
        .is_some_and(|s| s.eq_ignore_ascii_case("critical"));
    labelled.or(critical.then_some(crate::escalation::Priority::P0))
}

/// P0/P1 (or critical): what goes ahead of a storm.
pub fn urgent_alert(labels: &BTreeMap<String, String>) -> bool {
    alert_priority(labels).is_some_and(|p| p <= crate::escalation::Priority::P1)
}

impl Trigger {
    /// The urgency an alert claims for itself: its `priority` label
    /// (`P0`…`P3`), else P0 for `severity=critical`; `None` for anything
    /// else and for runs not started by an alert.
    pub fn alert_priority(&self) -> Option<crate::escalation::Priority> {
        let Trigger::Alert { alert } = self else {
            return None;
        };
        alert_priority(&alert.labels)
    }

    /// A P0/P1 (or critical) alert's run: its writes go before a storm's.
    pub fn urgent(&self) -> bool {
        matches!(self, Trigger::Alert { alert } if urgent_alert(&alert.labels))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Finding {
    pub severity: Severity,
    pub summary: String,
    pub evidence: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Detection {
    pub healthy: bool,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Outcome {
    pub summary: String,
    pub mitigated: bool,
    pub manual_steps: Vec<String>,
}

/// What the gate did with an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    /// Carried out against the real system.
    Executed,
    /// Dry-run: recorded, not carried out.
    Simulated,
    /// Not granted or target out of scope.
    Denied,
    /// A guardrail said no (e.g. a mutation during detect).
    Refused,
    /// Passed the gate; the backend failed to carry it out.
    Failed,
    /// The intent was stored, then the process stopped (or the run's
    /// deadline fired) before the result was: whether it took effect is
    /// unknown.
    Interrupted,
    /// The request was sent and never answered (a timeout): whether it took
    /// effect is unknown. Counts against budgets and cooldowns.
    Unknown,
}

/// One action of a plan waiting for approval.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct PlannedAction {
    #[schemars(with = "String")]
    pub kind: ActionKind,
    pub target: String,
}

/// An alert's state as Alertmanager sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// What verification found, `verify_after` a live mitigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verification {
    /// Detect found the system healthy.
    Resolved,
    /// Detect still found the problem (the priority's route was told).
    NotResolved,
}

impl Verification {
    pub fn as_str(self) -> &'static str {
        match self {
            Verification::Resolved => "resolved",
            Verification::NotResolved => "not_resolved",
        }
    }
}

impl std::fmt::Display for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A decision on a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approved,
    Rejected,
    /// Nobody decided within `approval_ttl`.
    Expired,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approved => "approved",
            Decision::Rejected => "rejected",
            Decision::Expired => "expired",
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The approval of a run in `approve` mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Approval {
    /// What mitigation wanted to do (its simulated actions).
    pub plan: Vec<PlannedAction>,
    pub expires_at: DateTime<Utc>,
    /// `None` while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    /// The live run that carried the approved plan out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_run: Option<String>,
    /// How many distinct people must approve before the plan runs.
    #[serde(default = "one_approval")]
    pub required: u32,
    /// The approvals given so far, oldest first; the one that makes
    /// `required` is also the decision's `decided_by`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<Vote>,
}

fn one_approval() -> u32 {
    1
}

impl Approval {
    /// A plan waiting for `required` approvals until `expires_at`.
    pub fn new(plan: Vec<PlannedAction>, expires_at: DateTime<Utc>, required: u32) -> Self {
        Approval {
            plan,
            expires_at,
            decision: None,
            decided_by: None,
            decided_at: None,
            live_run: None,
            required: required.max(1),
            approvals: Vec::new(),
        }
    }

    /// `1 of 2 approvals, by alice` (what the console and Slack show while
    /// a plan waits for more than one person).
    pub fn progress(&self) -> String {
        let by: Vec<&str> = self.approvals.iter().map(|v| v.by.as_str()).collect();
        let mut s = format!("{} of {} approvals", by.len(), self.required);
        if !by.is_empty() {
            s.push_str(", by ");
            s.push_str(&by.join(", "));
        }
        s
    }
}

/// One person's approval of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Vote {
    /// Who: a token's name (API, CLI, console) or `slack:<user id>`.
    pub by: String,
    pub at: DateTime<Utc>,
}

/// One mutating host call, whatever became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ActionRecord {
    /// `interface.function`, e.g. `database.terminate`.
    #[schemars(with = "String")]
    pub kind: ActionKind,
    /// What it acts on, e.g. `pid:4242` or `breaker:stripe`.
    pub target: String,
    pub reason: String,
    pub applied: Applied,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    pub at: DateTime<Utc>,
    /// The incident this action opened or followed up (PagerDuty's
    /// `dedup_key`): the host acknowledges and resolves it later.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub incident: Option<String>,
    /// What an executed action produced, when it is worth naming (the
    /// revert commit a rollback pushed).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub result: Option<String>,
}

/// The run record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RunRecord {
    pub id: String,
    pub plugin: String,
    pub plugin_version: String,
    pub plugin_digest: String,
    pub trigger: Trigger,
    /// How the run's mitigation ran.
    pub mode: crate::config::Mode,
    pub dry_run: bool,
    pub status: RunStatus,
    pub detection: Option<Detection>,
    pub actions: Vec<ActionRecord>,
    pub outcome: Option<Outcome>,
    /// What detect found when it ran again after a live mitigation; `null`
    /// until then.
    pub verification: Option<Verification>,
    pub error: Option<String>,
    pub logs: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
    /// Why a run that would have acted ran dry (the kill switch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// For a run in `approve` mode: the plan and the decision on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// The plan this live run carries out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_of: Option<String>,
    /// The Alertmanager silence Remedy held on the run's alert while it
    /// acted and verified (`silence_while_acting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence: Option<String>,
    /// When verification decided `verification`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<DateTime<Utc>>,
    /// Config keys given for this run only (a manual or scheduled run's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// What the run acts for, as single flight keys it (e.g.
    /// `alertname=X,instance=db-1`, `schedule:nightly`): one run at a time
    /// per plugin and target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The OpenTelemetry trace of this run, when traces are exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// A fresh run id: a UUID whose first 48 bits are the time (version 7).
/// Ids made one after another sort one after another, so the store's
/// primary-key index grows at its end: with random (version 4) ids every
/// insert landed on a random page of that index, and a commit of a few
/// hundred runs dirtied a few hundred of its pages.
pub fn new_run_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl RunRecord {
    /// A record for a run of `plugin` that starts (or is skipped) now.
    pub fn begin(
        id: String,
        plugin: &PluginRef,
        trigger: Trigger,
        dry_run: bool,
        status: RunStatus,
    ) -> RunRecord {
        RunRecord {
            id,
            plugin: plugin.name.clone(),
            plugin_version: plugin.version.clone(),
            plugin_digest: plugin.digest.clone(),
            trigger,
            mode: if dry_run {
                crate::config::Mode::DryRun
            } else {
                crate::config::Mode::Auto
            },
            dry_run,
            status,
            detection: None,
            actions: vec![],
            outcome: None,
            verification: None,
            error: None,
            logs: vec![],
            started_at: Utc::now(),
            finished_at: None,
            duration_ms: None,
            note: None,
            approval: None,
            approval_of: None,
            silence: None,
            verified_at: None,
            params: BTreeMap::new(),
            target: None,
            trace_id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    /// The store's primary-key index grows at its end only if ids made
    /// later sort later, within one millisecond too.
    #[test]
    fn run_ids_made_one_after_another_sort_one_after_another() {
        let ids: Vec<String> = (0..10_000).map(|_| super::new_run_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert!(ids.iter().all(|id| uuid::Uuid::parse_str(id).is_ok()));
    }
}
