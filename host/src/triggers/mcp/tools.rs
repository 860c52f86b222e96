//! The tools an agent may call, with typed input schemas. Reads answer
//! from the store; `detect` is a dry run; `propose` is a run in mode
//! `approve` whose plan waits for a human. Nothing here approves, resumes,
//! reconfigures or runs live: the agent's powers are this list.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use rmcp::model::{JsonObject, Tool};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use super::limits::{AgentLimits, MAX_PENDING};
use crate::config::Mode;
use crate::record::{RunRecord, RunStatus, Trigger};
use crate::service::{Launch, Started};
use crate::store::RunFilter;
use crate::triggers::http::AppState;

/// Longest string an agent gets back anywhere in a result: findings, alert
/// labels and log lines come from the systems observed, not from Remedy.
const MAX_TEXT: usize = 2048;
/// Longest reason an agent may give for a proposal.
const MAX_REASON: usize = 1000;

static LIMITS: LazyLock<AgentLimits> = LazyLock::new(AgentLimits::default);

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("no tool named `{0}`")]
    Unknown(String),
    #[error("invalid arguments: {0}")]
    Invalid(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("failed: {0}")]
    Failed(String),
}

impl ToolError {
    pub fn json(&self) -> Value {
        let (kind, message) = match self {
            ToolError::Unknown(m) => ("unknown_tool", m),
            ToolError::Invalid(m) => ("invalid", m),
            ToolError::NotFound(m) => ("not_found", m),
            ToolError::Refused(m) => ("refused", m),
            ToolError::Failed(m) => ("failed", m),
        };
        json!({"error": kind, "message": message})
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Nothing {}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Limit {
    /// At most this many (default 20, at most 100).
    limit: Option<u32>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Runs {
    /// Only runs of this runbook.
    runbook: Option<String>,
    /// Only runs in this status (`succeeded`, `pending_approval`, …).
    status: Option<String>,
    /// At most this many (default 20, at most 100).
    limit: Option<u32>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RunId {
    /// A run's id.
    id: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Runbook {
    /// A runbook's name (see list_runbooks).
    runbook: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Proposal {
    /// A runbook's name (see list_runbooks).
    runbook: String,
    /// Why the agent proposes it: shown to the humans who decide.
    reason: String,
}

fn schema<T: JsonSchema>() -> Arc<JsonObject> {
    let v = serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default();
    Arc::new(v.as_object().cloned().unwrap_or_default())
}

/// Every tool, described for the agent.
pub fn all() -> Vec<Tool> {
    vec![
        Tool::new("list_runbooks", "The runbooks Remedy runs: name, description, the alerts each handles, the interfaces it may use and its mode.", schema::<Nothing>()),
        Tool::new("list_alerts", "The alerts Remedy received, newest first.", schema::<Limit>()),
        Tool::new("list_runs", "Runs, newest first: what Remedy did and planned.", schema::<Runs>()),
        Tool::new("get_run", "One run's record: detection, findings, actions, outcome, approval, verification.", schema::<RunId>()),
        Tool::new("get_report", "One run's post-incident report, as Markdown.", schema::<RunId>()),
        Tool::new("detect", "Runs a runbook's detection now, as a dry run (nothing is changed): health and findings with their evidence.", schema::<Runbook>()),
        Tool::new("propose", "Runs a runbook's detection and a dry mitigation and stores its plan for a human to approve (never run by this call). Answers the plan and where a human approves it.", schema::<Proposal>()),
        Tool::new("get_plan_status", "Where a proposed plan is: pending, approved by whom, rejected, expired; the live run that carried it out, and its verification.", schema::<RunId>()),
    ]
}

fn args<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ToolError> {
    serde_json::from_value(v).map_err(|e| ToolError::Invalid(e.to_string()))
}

/// `v` with every string cut to [`MAX_TEXT`]: what plugins and alert
/// senders wrote reaches an agent as bounded data.
fn capped(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::String(s) if s.len() > MAX_TEXT => {
                let mut end = MAX_TEXT;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
                s.push('…');
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            Value::Object(o) => o.values_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

fn limit(l: Option<u32>) -> u32 {
    l.unwrap_or(20).clamp(1, 100)
}

fn failed(e: impl std::fmt::Display) -> ToolError {
    ToolError::Failed(e.to_string())
}

async fn run_of(s: &AppState, id: &str) -> Result<RunRecord, ToolError> {
    s.service
        .store
        .get_run(id)
        .await
        .map_err(failed)?
        .ok_or_else(|| ToolError::NotFound(format!("no run with id `{id}`")))
}

/// The trigger an agent's runs carry: who, through which client.
fn agent_trigger(who: &str, client: &str, reason: Option<&str>) -> Trigger {
    let mut by = format!("agent:{who} ({client})");
    if let Some(r) = reason {
        by.push_str(": ");
        by.push_str(r);
    }
    Trigger::Manual { by }
}

/// Runs `runbook` in `mode`, waited for: its record.
async fn launch(
    s: &AppState,
    runbook: &str,
    mode: Mode,
    trigger: Trigger,
) -> Result<RunRecord, ToolError> {
    let plugin = s
        .service
        .registry
        .get(runbook)
        .ok_or_else(|| ToolError::NotFound(format!("no runbook named `{runbook}`")))?;
    let l = Launch {
        id: None,
        trigger,
        mode: Some(mode),
        params: BTreeMap::new(),
        target: crate::service::own_target(),
        approved: None,
        waited: true,
    };
    match s.service.launch(plugin, l).await.map_err(failed)? {
        Started::Running { handle, .. } => handle.await.map_err(failed),
        Started::Skipped(rec) => Ok(*rec),
    }
}

/// Proposals of `who` waiting for a human.
async fn pending_of(s: &AppState, who: &str) -> Result<usize, ToolError> {
    let prefix = format!("agent:{who} (");
    let runs = s
        .service
        .store
        .list_runs(RunFilter {
            status: Some("pending_approval".into()),
            limit: Some(1000),
            ..RunFilter::default()
        })
        .await
        .map_err(failed)?;
    Ok(runs
        .iter()
        .filter(|r| matches!(&r.trigger, Trigger::Manual { by } if by.starts_with(&prefix)))
        .count())
}

fn findings(rec: &RunRecord) -> Value {
    json!({
        "healthy": rec.detection.as_ref().map(|d| d.healthy),
        "findings": rec.detection.as_ref().map(|d| &d.findings),
    })
}

/// Calls tool `name` for `who`: a short text and the structured result.
pub async fn call(
    s: &AppState,
    who: &str,
    client: &str,
    name: &str,
    a: Value,
) -> Result<(String, Value), ToolError> {
    LIMITS.call(who).map_err(ToolError::Refused)?;
    let (text, v) = match name {
        "list_runbooks" => {
            let _: Nothing = args(a)?;
            let views = serde_json::to_value(s.service.registry.views()).map_err(failed)?;
            let n = views.as_array().map_or(0, Vec::len);
            (format!("{n} runbook(s)"), json!({"runbooks": views}))
        }
        "list_alerts" => {
            let l: Limit = args(a)?;
            let alerts = s
                .service
                .store
                .list_alerts(limit(l.limit))
                .await
                .map_err(failed)?;
            (
                format!("{} alert(s)", alerts.len()),
                json!({"alerts": alerts}),
            )
        }
        "list_runs" => {
            let r: Runs = args(a)?;
            let runs = s
                .service
                .store
                .list_runs(RunFilter {
                    plugin: r.runbook,
                    status: r.status,
                    since: None,
                    limit: Some(limit(r.limit)),
                })
                .await
                .map_err(failed)?;
            (format!("{} run(s)", runs.len()), json!({"runs": runs}))
        }
        "get_run" => {
            let r: RunId = args(a)?;
            let rec = run_of(s, &r.id).await?;
            (
                format!("run {} of {}: {:?}", rec.id, rec.plugin, rec.status),
                serde_json::to_value(rec).map_err(failed)?,
            )
        }
        "get_report" => {
            let r: RunId = args(a)?;
            let md = crate::report::for_run(s.service.store.as_ref(), &r.id)
                .await
                .map_err(failed)?
                .ok_or_else(|| ToolError::NotFound(format!("no run with id `{}`", r.id)))?;
            (
                format!("the report of run {}", r.id),
                json!({"run_id": r.id, "markdown": md}),
            )
        }
        "detect" => {
            let r: Runbook = args(a)?;
            let rec = launch(
                s,
                &r.runbook,
                Mode::DryRun,
                agent_trigger(who, client, None),
            )
            .await?;
            let healthy = rec.detection.as_ref().map(|d| d.healthy);
            let mut v = findings(&rec);
            v["run_id"] = json!(rec.id);
            v["status"] = json!(rec.status);
            (
                format!(
                    "{}: {}",
                    r.runbook,
                    match healthy {
                        Some(true) => "healthy",
                        Some(false) => "unhealthy",
                        None => "no detection",
                    }
                ),
                v,
            )
        }
        "propose" => {
            let p: Proposal = args(a)?;
            let reason = p.reason.trim();
            if reason.is_empty() || reason.len() > MAX_REASON {
                return Err(ToolError::Invalid(format!(
                    "`reason`: say why, in 1 to {MAX_REASON} bytes"
                )));
            }
            let pending = pending_of(s, who).await?;
            if pending >= MAX_PENDING {
                return Err(ToolError::Refused(format!(
                    "{pending} proposals of `{who}` already wait for a human (at most {MAX_PENDING}): wait for a decision"
                )));
            }
            let rec = launch(
                s,
                &p.runbook,
                Mode::Approve,
                agent_trigger(who, client, Some(reason)),
            )
            .await?;
            if rec.approval.is_some() {
                s.service.metrics.agent_proposed(who, &rec.plugin);
            }
            s.service
                .audit(
                    Some(&rec.id),
                    Some(&rec.plugin),
                    "agent.proposed",
                    json!({"by": who, "client": client, "reason": reason, "status": rec.status}),
                )
                .await;
            let mut v = findings(&rec);
            v["run_id"] = json!(rec.id);
            v["status"] = json!(rec.status);
            v["plan"] = json!(rec.approval.as_ref().map(|a| &a.plan));
            v["approve_at"] = json!(format!("/runs/{}", rec.id));
            let text = if rec.status == RunStatus::PendingApproval {
                format!(
                    "plan of {} stored as run {}: it waits for a human to approve it",
                    p.runbook, rec.id
                )
            } else {
                format!("{}: no plan to approve ({:?})", p.runbook, rec.status)
            };
            (text, v)
        }
        "get_plan_status" => {
            let r: RunId = args(a)?;
            let rec = run_of(s, &r.id).await?;
            let approval = rec.approval.clone();
            let live = match approval.as_ref().and_then(|a| a.live_run.clone()) {
                Some(id) => s.service.store.get_run(&id).await.map_err(failed)?,
                None => None,
            };
            let state = match (&approval, &live) {
                (None, _) => "no plan".to_string(),
                (Some(a), _) if a.decision.is_none() => "pending".to_string(),
                (Some(_), Some(l)) if l.verification.is_some() => {
                    format!("verified: {}", l.verification.map_or("", |v| v.as_str()))
                }
                (Some(_), Some(l)) if l.status == RunStatus::Succeeded => "executed".to_string(),
                (Some(a), _) => a.decision.map_or("", |d| d.as_str()).to_string(),
            };
            let v = json!({
                "run_id": rec.id,
                "state": state,
                "approval": approval,
                "live_run": live.as_ref().map(|l| json!({
                    "id": l.id,
                    "status": l.status,
                    "actions": l.actions,
                    "verification": l.verification,
                })),
            });
            (format!("plan of run {}: {state}", rec.id), v)
        }
        other => return Err(ToolError::Unknown(other.to_string())),
    };
    Ok((text, capped(v)))
}

/// A run record (`remedy://runs/{id}`) or its report
/// (`remedy://runs/{id}/report`), as an agent cites them: the text and its
/// MIME type.
pub async fn resource(
    s: &AppState,
    who: &str,
    uri: &str,
) -> Result<(String, &'static str), ToolError> {
    LIMITS.call(who).map_err(ToolError::Refused)?;
    let rest = uri.strip_prefix("remedy://runs/").ok_or_else(|| {
        ToolError::NotFound(format!(
            "no resource `{uri}`: remedy://runs/ID or remedy://runs/ID/report"
        ))
    })?;
    match rest.split_once('/') {
        None => {
            let rec = run_of(s, rest).await?;
            let v = capped(serde_json::to_value(rec).map_err(failed)?);
            Ok((v.to_string(), "application/json"))
        }
        Some((id, "report")) => {
            let md = crate::report::for_run(s.service.store.as_ref(), id)
                .await
                .map_err(failed)?
                .ok_or_else(|| ToolError::NotFound(format!("no run with id `{id}`")))?;
            Ok((md, "text/markdown"))
        }
        Some(_) => Err(ToolError::NotFound(format!("no resource `{uri}`"))),
    }
}
