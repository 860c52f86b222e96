//! `POST /v1/slack/interactions`: what Slack sends when someone presses a
//! plan's Approve or Reject button, or types `/remedy pause|resume|status`.
//! No bearer token: a request is Slack's when its signature says so
//! (`chat::slack::signing`), and the Slack user's role comes from
//! `[chat.slack]`. Decisions go through the one store decision every other
//! door uses. Slack waits three seconds for an answer, so the answer comes
//! first and the work after, its outcome posted back to the user.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState, Peer};
use crate::chat::slack::{blocks, Slack, SlackRole};
use crate::service::Service;

/// The largest request taken: an interaction carries the message it came
/// from, and Remedy's messages are a few KiB.
pub const MAX_SLACK_BODY: usize = 128 << 10;

/// How long a slash command's work may take before the answer goes out
/// without its result (Slack gives up at three seconds).
const ANSWER_WITHIN: Duration = Duration::from_millis(2_500);

#[derive(Deserialize)]
struct Interaction {
    #[serde(rename = "type")]
    kind: String,
    user: SlackUserRef,
    #[serde(default)]
    channel: Option<Named>,
    #[serde(default)]
    actions: Vec<Pressed>,
}

#[derive(Deserialize)]
struct SlackUserRef {
    id: String,
}

#[derive(Deserialize)]
struct Named {
    id: String,
}

#[derive(Deserialize)]
struct Pressed {
    action_id: String,
    #[serde(default)]
    value: Option<String>,
}

/// A slash command's answer, as Slack shows it.
fn say(visible_to_all: bool, text: impl Into<String>) -> Response {
    let kind = if visible_to_all {
        "in_channel"
    } else {
        "ephemeral"
    };
    Json(json!({"response_type": kind, "text": text.into()})).into_response()
}

pub(super) async fn interactions(
    State(s): State<Arc<AppState>>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(slack) = s.service.slack.clone() else {
        // Unsigned is unsigned, configured or not.
        if header("x-slack-request-timestamp").is_none() || header("x-slack-signature").is_none() {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                "not signed: X-Slack-Request-Timestamp and X-Slack-Signature are required",
            )
            .into_response();
        }
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "slack_not_configured",
            "Slack is not configured here: add [chat.slack] to remedy.toml",
        )
        .into_response();
    };
    let throttle = s.auth.throttle();
    let started = Instant::now();
    if let Err(wait) = throttle.check(peer, started) {
        return ApiError::throttled(wait).into_response();
    }
    let now = chrono::Utc::now().timestamp();
    if let Err(why) = slack.verify(
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
        &body,
        now,
    ) {
        throttle.failed(peer, started);
        let peer = peer.map_or("unknown".to_string(), |p| p.to_string());
        tracing::warn!(%peer, reason = %why, "refused a Slack request");
        s.service
            .audit(
                None,
                None,
                "slack.refused",
                json!({"reason": why.to_string(), "peer": peer}),
            )
            .await;
        return ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", why.to_string())
            .into_response();
    }
    let form: HashMap<String, String> = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(e) => return ApiError::bad_request(format!("not a form: {e}")).into_response(),
    };
    if let Some(payload) = form.get("payload") {
        return interaction(&s.service, &slack, payload).await;
    }
    if form.contains_key("command") {
        return command(&s.service, &slack, &form).await;
    }
    if form.get("ssl_check").is_some_and(|v| v == "1") {
        return StatusCode::OK.into_response();
    }
    ApiError::bad_request("neither an interaction (`payload`) nor a slash command (`command`)")
        .into_response()
}

/// A button press: acknowledged at once, decided after.
async fn interaction(service: &Arc<Service>, slack: &Arc<Slack>, payload: &str) -> Response {
    let i: Interaction = match serde_json::from_str(payload) {
        Ok(i) => i,
        Err(e) => return ApiError::bad_request(format!("`payload`: {e}")).into_response(),
    };
    if i.kind != "block_actions" {
        // Nothing else is asked of Slack (no modals, no shortcuts).
        return StatusCode::OK.into_response();
    }
    let Some(pressed) = i.actions.first() else {
        return ApiError::bad_request("`payload`: no action").into_response();
    };
    let approve = match pressed.action_id.as_str() {
        blocks::APPROVE => true,
        blocks::REJECT => false,
        _ => return StatusCode::OK.into_response(),
    };
    let Some((id, digest)) = pressed
        .value
        .as_deref()
        .and_then(blocks::parse_button_value)
    else {
        return ApiError::bad_request("`payload`: the button names no plan").into_response();
    };
    let (id, digest) = (id.to_string(), digest.to_string());
    let user = i.user.id;
    let channel = i.channel.map(|c| c.id).unwrap_or_default();
    let by = format!("slack:{user}");
    let decision = if approve { "approve" } else { "reject" };
    if slack.role(&user) != Some(SlackRole::Approve) {
        service
            .audit(
                Some(&id),
                None,
                "slack.refused",
                json!({"by": by, "asked": decision, "reason": "not an approver ([chat.slack] approvers)"}),
            )
            .await;
        let slack = slack.clone();
        tokio::spawn(async move {
            slack
                .tell(&channel, &user, &format!("You are not one of Remedy's approvers: the plan is unchanged. (Run `{id}`.)"))
                .await
        });
        return StatusCode::OK.into_response();
    }
    let service = service.clone();
    let slack = slack.clone();
    tokio::spawn(async move {
        let told = match decide(&service, &id, &digest, approve, &by).await {
            Ok(line) => line,
            Err(why) => {
                service
                    .audit(
                        Some(&id),
                        None,
                        "slack.refused",
                        json!({"by": by, "asked": decision, "reason": why}),
                    )
                    .await;
                format!("Not done: {why}")
            }
        };
        slack.tell(&channel, &user, &told).await;
    });
    StatusCode::OK.into_response()
}

/// The decision a press asks for, on the plan its button was made for.
async fn decide(
    service: &Arc<Service>,
    id: &str,
    digest: &str,
    approve: bool,
    by: &str,
) -> Result<String, String> {
    let rec = service
        .store
        .get_run(id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no run `{id}`"))?;
    // The button was made for this plan, by this code: a press on another
    // message (or a forged value) decides nothing.
    if rec.plugin_digest != digest {
        return Err(format!(
            "the button was made for {digest}, and run {id} was planned by {}",
            rec.plugin_digest
        ));
    }
    let d = service
        .decide(id, approve, by)
        .await
        .map_err(|e| e.to_string())?;
    Ok(match (&d.live_run, d.plan.approval.as_ref()) {
        (Some(live), _) => format!("Approved: live run `{live}` carries the plan out."),
        (None, Some(a)) if approve => format!("Counted: {}.", a.progress()),
        _ => "Rejected.".to_string(),
    })
}

/// `/remedy pause <reason>`, `/remedy resume`, `/remedy status`.
async fn command(
    service: &Arc<Service>,
    slack: &Arc<Slack>,
    form: &HashMap<String, String>,
) -> Response {
    let user = form.get("user_id").cloned().unwrap_or_default();
    let text = form.get("text").map(|t| t.trim()).unwrap_or_default();
    let (verb, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let by = format!("slack:{user}");
    let role = slack.role(&user);
    match verb {
        "pause" | "resume" if role != Some(SlackRole::Approve) => {
            refuse(service, &user, verb, "approvers").await
        }
        "pause" => {
            let reason = (!rest.trim().is_empty()).then(|| rest.trim().to_string());
            let work = {
                let service = service.clone();
                let by = by.clone();
                tokio::spawn(async move { service.set_paused(true, &by, reason).await })
            };
            match tokio::time::timeout(ANSWER_WITHIN, work).await {
                Ok(Ok(Ok(_))) => say(true, format!("Remedy is paused by <@{user}>: every run is a dry run until `/remedy resume`.")),
                Ok(Ok(Err(e))) => say(true, format!("Remedy is paused by <@{user}> in this replica, but the pause was not stored ({e}): other replicas and a restart do not know it.")),
                _ => say(true, "Pausing… (the store is slow; `/remedy status` tells when it is done)"),
            }
        }
        "resume" => {
            let work = {
                let service = service.clone();
                let by = by.clone();
                tokio::spawn(async move { service.set_paused(false, &by, None).await })
            };
            match tokio::time::timeout(ANSWER_WITHIN, work).await {
                Ok(Ok(Ok(_))) => say(true, format!("Remedy is resumed by <@{user}>: runs act again as their mode says.")),
                Ok(Ok(Err(e))) => say(false, format!("Not resumed: the store did not take it ({e}). Try again.")),
                _ => say(false, "Resuming… (the store is slow; `/remedy status` tells when it is done)"),
            }
        }
        "status" | "" if role.is_none() => {
            refuse(service, &user, verb, "readers (or approvers)").await
        }
        "status" | "" => say(false, status(service, slack).await),
        _ => say(
            false,
            "`/remedy pause <reason>` stops every live action (runs go on, dry) · `/remedy resume` · `/remedy status`",
        ),
    }
}

/// A command the user's role does not allow: audited, and said to them.
async fn refuse(service: &Service, user: &str, verb: &str, needs: &str) -> Response {
    service
        .audit(
            None,
            None,
            "slack.refused",
            json!({"by": format!("slack:{user}"), "asked": format!("/remedy {verb}"), "reason": format!("needs {needs}")}),
        )
        .await;
    say(
        false,
        format!(
            "You may not do that: `/remedy {verb}` needs {needs} in Remedy's [chat.slack] config."
        ),
    )
}

/// What `/remedy status` says: the switch, runs in flight, plans waiting.
async fn status(service: &Arc<Service>, slack: &Slack) -> String {
    let mut lines = vec![match service.paused() {
        Some(p) => format!(
            ":octagonal_sign: *Paused* since {} by {}{}",
            p.at,
            blocks::who(&p.by),
            p.reason
                .map(|r| format!(": {}", blocks::escape(&r)))
                .unwrap_or_default()
        ),
        None => ":large_green_circle: *Acting*: the kill switch is off.".to_string(),
    }];
    lines.push(format!("Runs in flight here: {}", service.running_now()));
    let pending = service
        .store
        .list_runs(crate::store::RunFilter {
            status: Some(crate::record::RunStatus::PendingApproval.as_str().into()),
            limit: Some(20),
            ..Default::default()
        })
        .await;
    match pending {
        Ok(plans) if plans.is_empty() => lines.push("No plan waits for approval.".into()),
        Ok(plans) => {
            lines.push(format!("Plans waiting for approval: {}", plans.len()));
            let console = slack.config.console_url.as_ref().map(|u| u.as_str());
            for p in plans.iter().take(5) {
                let progress = p
                    .approval
                    .as_ref()
                    .map(|a| a.progress())
                    .unwrap_or_default();
                let link = blocks::run_link(console, &p.id)
                    .map(|l| format!(" <{l}|open>"))
                    .unwrap_or_default();
                lines.push(format!("• `{}` {} ({progress}){link}", p.id, p.plugin));
            }
        }
        Err(e) => lines.push(format!(
            "Plans waiting: unknown (the store did not answer: {e})"
        )),
    }
    lines.join("\n")
}
