//! What Remedy says in Slack, as Block Kit: the plan message (updated in
//! place as it is decided) and the lines of its thread. The buttons carry
//! the run id and the plugin digest the plan was made by, nothing else:
//! whoever presses one is checked when the press arrives, and a plan made
//! by other code than the one loaded then is refused.

use serde_json::{json, Value};

use crate::record::{Applied, Decision, RunRecord, RunStatus, Trigger};

/// `action_id` of the Approve button.
pub const APPROVE: &str = "remedy.approve";
/// `action_id` of the Reject button.
pub const REJECT: &str = "remedy.reject";

/// Slack's limit of one section's text.
const SECTION_MAX: usize = 3000;

/// A button's `value`: `<run id> <plugin digest>`.
pub fn button_value(rec: &RunRecord) -> String {
    format!("{} {}", rec.id, rec.plugin_digest)
}

/// The run id and digest a button's `value` names.
pub fn parse_button_value(v: &str) -> Option<(&str, &str)> {
    let (id, digest) = v.split_once(' ')?;
    (!id.is_empty() && !digest.is_empty() && !digest.contains(' ')).then_some((id, digest))
}

/// How a decider is shown: a Slack user as a mention, anyone else by name.
pub fn who(by: &str) -> String {
    match by.strip_prefix("slack:") {
        Some(u) => format!("<@{u}>"),
        None => by.to_string(),
    }
}

/// A run's page in the console, when its address is known.
pub fn run_link(console: Option<&str>, id: &str) -> Option<String> {
    console.map(|c| format!("{}/runs/{id}", c.trim_end_matches('/')))
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Slack's mrkdwn treats `&`, `<` and `>` as markup: text from plugins and
/// alerts is escaped so that it cannot mention `@channel` or forge a link.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The plan message for `rec` as it stands: pending (with buttons, and
/// the approvals so far), or decided (who, when; no buttons).
pub fn plan_message(rec: &RunRecord, console: Option<&str>) -> Value {
    let Some(a) = rec.approval.as_ref() else {
        return json!({"text": format!("Run {} of {}", rec.id, rec.plugin)});
    };
    let (head, state) = match (rec.status, a.decision) {
        (RunStatus::PendingApproval, _) => (
            format!(":raising_hand: Plan waiting for approval: {}", rec.plugin),
            format!(
                "*Waiting* until {} · {}",
                a.expires_at.format("%Y-%m-%d %H:%M UTC"),
                a.progress()
            ),
        ),
        (_, Some(Decision::Approved)) => (
            format!(":white_check_mark: Plan approved: {}", rec.plugin),
            format!("*Approved* by {}", approvers(rec)),
        ),
        (_, Some(Decision::Rejected)) => (
            format!(":no_entry_sign: Plan rejected: {}", rec.plugin),
            format!(
                "*Rejected* by {}",
                a.decided_by.as_deref().map_or("?".into(), who)
            ),
        ),
        _ => (
            format!(":hourglass: Plan expired: {}", rec.plugin),
            "*Expired*: nobody decided in time; the buttons are gone. Start a new run to plan again."
                .to_string(),
        ),
    };
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": clip(&head, 150), "emoji": true}
    })];
    if let Trigger::Alert { alert } = &rec.trigger {
        let labels: Vec<String> = alert
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "alertname")
            .take(12)
            .map(|(k, v)| format!("`{}={}`", escape(k), escape(v)))
            .collect();
        blocks.push(section(&format!(
            "*Alert* {} {}",
            escape(&alert.name),
            labels.join(" ")
        )));
    }
    if let Some(d) = &rec.detection {
        let lines: Vec<String> = d
            .findings
            .iter()
            .take(5)
            .map(|f| format!("• {}", escape(&clip(&f.summary, 300))))
            .collect();
        if !lines.is_empty() {
            blocks.push(section(&format!("*Findings*\n{}", lines.join("\n"))));
        }
    }
    let planned: Vec<String> = a
        .plan
        .iter()
        .take(20)
        .map(|p| {
            let why = rec
                .actions
                .iter()
                .find(|x| {
                    x.kind == p.kind && x.target == p.target && x.applied == Applied::Simulated
                })
                .map(|x| format!(": {}", escape(&clip(&x.reason, 200))))
                .unwrap_or_default();
            format!("• `{}` on `{}`{why}", p.kind, escape(&p.target))
        })
        .collect();
    blocks.push(section(&format!(
        "*Planned actions*\n{}",
        planned.join("\n")
    )));
    blocks.push(section(&state));
    if rec.status == RunStatus::PendingApproval {
        let value = button_value(rec);
        blocks.push(json!({
            "type": "actions",
            "block_id": "remedy.decision",
            "elements": [
                {"type": "button", "action_id": APPROVE, "style": "primary", "value": value,
                 "text": {"type": "plain_text", "text": "Approve"}},
                {"type": "button", "action_id": REJECT, "style": "danger", "value": value,
                 "text": {"type": "plain_text", "text": "Reject"}},
            ]
        }));
    }
    let mut context = format!(
        "Remedy · run `{}` · {}",
        rec.id,
        short_digest(&rec.plugin_digest)
    );
    if let Some(link) = run_link(console, &rec.id) {
        context.push_str(&format!(" · <{link}|open in the console>"));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]}));
    json!({"text": clip(&head, 150), "blocks": blocks})
}

fn approvers(rec: &RunRecord) -> String {
    let a = rec.approval.as_ref();
    let votes: Vec<String> = a
        .map(|a| a.approvals.iter().map(|v| who(&v.by)).collect())
        .unwrap_or_default();
    if votes.is_empty() {
        a.and_then(|a| a.decided_by.as_deref())
            .map_or("?".into(), who)
    } else {
        votes.join(" and ")
    }
}

fn short_digest(d: &str) -> String {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    format!("sha256:{}", &hex[..hex.len().min(12)])
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(text, SECTION_MAX)}})
}

/// The thread line for a decision (or one more approval) on the plan.
pub fn decision_line(rec: &RunRecord) -> Option<String> {
    let a = rec.approval.as_ref()?;
    Some(match (rec.status, a.decision) {
        (RunStatus::PendingApproval, _) => {
            let last = a.approvals.last()?;
            format!("{} approved: {}.", who(&last.by), a.progress())
        }
        (_, Some(Decision::Approved)) => format!(
            "Approved by {}: live run `{}` carries the plan out.",
            approvers(rec),
            a.live_run.as_deref().unwrap_or("?")
        ),
        (_, Some(Decision::Rejected)) => format!(
            "Rejected by {}.",
            a.decided_by.as_deref().map_or("?".into(), who)
        ),
        _ => "Expired: nobody decided in time.".to_string(),
    })
}

/// The thread line for the live run that carried the plan out.
pub fn live_line(rec: &RunRecord, console: Option<&str>) -> String {
    let mut lines = vec![format!("Live run `{}` {}.", rec.id, rec.status.as_str())];
    for a in rec.actions.iter().take(20) {
        let mut l = format!(
            "• `{}` on `{}`: {}",
            a.kind,
            escape(&a.target),
            serde_json::to_value(a.applied)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        );
        if let Some(e) = &a.error {
            l.push_str(&format!(" ({})", escape(&clip(e, 200))));
        }
        lines.push(l);
    }
    if let Some(e) = &rec.error {
        lines.push(format!("Error: {}", escape(&clip(e, 300))));
    }
    if let Some(c) = console {
        lines.push(format!(
            "Report: <{}/v1/runs/{}/report|post-incident report>",
            c.trim_end_matches('/'),
            rec.id
        ));
    }
    lines.join("\n")
}

/// The thread line for the live run's verification.
pub fn verified_line(rec: &RunRecord) -> String {
    match rec.verification {
        Some(crate::record::Verification::Resolved) => format!(
            ":white_check_mark: Verification: *resolved* (detect ran again after run `{}` and found it healthy).",
            rec.id
        ),
        _ => format!(
            ":rotating_light: Verification: *not resolved* (detect still finds the problem after run `{}`); escalated.",
            rec.id
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn button_values_round_trip_and_junk_is_refused() {
        assert_eq!(
            parse_button_value("r-1 sha256:ab"),
            Some(("r-1", "sha256:ab"))
        );
        assert_eq!(parse_button_value("r-1"), None);
        assert_eq!(parse_button_value(" sha256:ab"), None);
        assert_eq!(parse_button_value("r-1 a b"), None);
    }

    #[test]
    fn markup_from_plugins_cannot_mention_or_link() {
        assert_eq!(
            escape("<!channel> <http://x|y> & co"),
            "&lt;!channel&gt; &lt;http://x|y&gt; &amp; co"
        );
        assert_eq!(who("slack:U1"), "<@U1>");
        assert_eq!(who("alice"), "alice");
    }
}
