//! Slack as the tests speak it: the config of a Slack-connected Remedy,
//! and requests signed as Slack signs them (button presses, slash
//! commands), with waits on what they lead to.
#![allow(dead_code)]

use remedy::chat::slack::signing::sign;
use remedy_e2e::slack_api::{FakeSlack, BOT_TOKEN};
use serde_json::{json, Value};

use super::common::*;

pub const SECRET: &str = "remedy-test-signing-secret-8f742231b1";
pub const ALICE: &str = "U0ALICE";
pub const BOB: &str = "U0BOB";
pub const READER: &str = "U0READER";
pub const STRANGER: &str = "U0STRANGER";
pub const CHANNEL: &str = "C0INCIDENTS";

pub const ENV: [(&str, &str); 5] = [
    ("SLACK_BOT_TOKEN", BOT_TOKEN),
    ("SLACK_SIGNING_SECRET", SECRET),
    ("T_RUN", "run-token-0123456789"),
    ("T_ALICE", "alice-token-0123456789"),
    ("T_CAROL", "carol-token-0123456789"),
];

pub const TOKENS: &str = r#"
tokens = [
  { name = "ops-runner", env = "T_RUN", roles = ["run", "read", "approve"] },
  { name = "alice", env = "T_ALICE", roles = ["approve", "read"] },
  { name = "carol", env = "T_CAROL", roles = ["approve", "read"] },
]"#;

pub fn slack_section(fake: &FakeSlack, extra: &str) -> String {
    format!(
        r#"
        [chat.slack]
        channel = "{CHANNEL}"
        approvers = ["{ALICE}", "{BOB}"]
        readers = ["{READER}"]
        console_url = "http://remedy.example.test"
        api_url = "{}"
        {extra}
        "#,
        fake.base
    )
}

/// circuit-breaker-open in approve mode with `plugin` lines, Slack on
/// `fake`; `stripe` stuck open.
pub async fn serve(fake: &FakeSlack, server: &str, plugin: &str) -> StuckBreaker {
    let plugin = format!("mode = \"approve\"\ncooldown = \"0s\"\n{plugin}");
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    sim.open_breaker("stripe");
    let config = breaker_config(dir.path(), &sim, server, &plugin, &slack_section(fake, ""));
    let server = start_logged(dir.path(), &config, &ENV);
    StuckBreaker { dir, sim, server }
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Sends `body` to the interactions endpoint as Slack would, signed with
/// `secret` at `ts`; answers the status and body.
pub async fn send(server: &Server, body: &str, ts: i64, signature: &str) -> (u16, String) {
    let r = server
        .http
        .post(format!("{}/v1/slack/interactions", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", signature)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    (code, r.text().await.unwrap())
}

pub async fn signed(server: &Server, body: &str) -> (u16, String) {
    let ts = now();
    send(
        server,
        body,
        ts,
        &sign(SECRET.as_bytes(), &ts.to_string(), body.as_bytes()),
    )
    .await
}

/// A `block_actions` payload, as Slack sends it for a button press.
pub fn press_body(user: &str, action: &str, value: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": {"id": user, "username": user.to_lowercase(), "team_id": "T0TEAM"},
        "api_app_id": "A0REMEDY",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": "1700000000.000001", "channel_id": CHANNEL, "is_ephemeral": false},
        "trigger_id": format!("1.2.{}", uuid::Uuid::new_v4().simple()),
        "team": {"id": "T0TEAM", "domain": "servio"},
        "channel": {"id": CHANNEL, "name": "incidents"},
        "response_url": "https://hooks.slack.com/actions/T0TEAM/1/abc",
        "actions": [{
            "action_id": action, "block_id": "remedy.decision", "value": value, "type": "button",
            "text": {"type": "plain_text", "text": "Approve"},
            "action_ts": format!("{}.{}", now(), uuid::Uuid::new_v4().as_u128() % 1_000_000),
        }],
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
}

pub async fn press(server: &Server, user: &str, action: &str, value: &str) -> (u16, String) {
    signed(server, &press_body(user, action, value)).await
}

/// A slash command's form, as Slack sends it.
pub fn slash_body(user: &str, text: &str) -> String {
    serde_urlencoded::to_string([
        ("token", "legacy-verification-token"),
        ("team_id", "T0TEAM"),
        ("team_domain", "servio"),
        ("channel_id", CHANNEL),
        ("channel_name", "incidents"),
        ("user_id", user),
        ("user_name", "someone"),
        ("command", "/remedy"),
        ("text", text),
        ("api_app_id", "A0REMEDY"),
        (
            "response_url",
            "https://hooks.slack.com/commands/T0TEAM/1/abc",
        ),
        ("trigger_id", "1.2.3"),
    ])
    .unwrap()
}

pub async fn slash(server: &Server, user: &str, text: &str) -> (u16, Value) {
    let (code, body) = signed(server, &slash_body(user, text)).await;
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The plan message posted for run `id`: its ts and button value.
pub async fn posted_plan(fake: &FakeSlack, id: &str) -> (String, String) {
    eventually("the plan is posted to Slack", 15, || async {
        fake.messages().into_iter().find_map(|(ts, m)| {
            let value = m["blocks"]
                .as_array()?
                .iter()
                .find(|b| b["type"] == "actions")?["elements"][0]["value"]
                .as_str()?
                .to_string();
            value.starts_with(id).then_some((ts, value))
        })
    })
    .await
}

pub async fn plan(server: &Server) -> String {
    let (code, plan) = server
        .post("/v1/plugins/circuit-breaker-open/runs?wait=true", json!({}))
        .await;
    assert_eq!(code, 200, "{plan}");
    assert_eq!(plan["status"], "pending_approval", "{plan}");
    plan["id"].as_str().unwrap().to_string()
}

pub async fn audit_of(server: &Server, event: &str) -> Vec<Value> {
    server
        .get(&format!("/v1/audit?event={event}&limit=1000"))
        .await["events"]
        .as_array()
        .unwrap()
        .clone()
}

/// The live run an approval of plan `id` started, once it has.
pub async fn live_run_of(server: &Server, id: &str) -> String {
    eventually("the plan is approved", 10, || async {
        let rec = server.get(&format!("/v1/runs/{id}")).await;
        rec["approval"]["live_run"].as_str().map(String::from)
    })
    .await
}

/// Waits for run `id` to have `status`.
pub async fn status_becomes(server: &Server, id: &str, status: &str) {
    eventually(status, 10, || async {
        let rec = server.get(&format!("/v1/runs/{id}")).await;
        (rec["status"] == status).then_some(())
    })
    .await
}

/// The message's current text, all blocks joined.
pub fn message_text(m: &Value) -> String {
    m.to_string()
}
