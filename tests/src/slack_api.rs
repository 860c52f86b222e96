//! A local Slack Web API for the tests. It checks what Slack checks — the
//! bot token (`Authorization: Bearer`), a JSON body, the documented fields
//! of `chat.postMessage`, `chat.update` and `chat.postEphemeral` and Block
//! Kit's limits — records each call, and answers as Slack does: `ok: true`
//! with the message's `channel` and `ts`, `ok: false` with an error code,
//! `429` with `Retry-After`. A test can script the next answers of a
//! method (rate limited, refused, stalled past the client's timeout).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// The bot token the fake accepts.
pub const BOT_TOKEN: &str = "xoxb-test-0000-remedy-bot-token";

/// A scripted answer to the next call of a method.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `429` with `Retry-After: secs`.
    RateLimited(u64),
    /// `ok: false` with this error code.
    Refuse(&'static str),
    /// Holds the request this long, then answers normally (longer than
    /// the client waits: the client sees a timeout, Slack did post).
    Stall(Duration),
}

/// One call as received, and what it was answered.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub body: Value,
    /// `ok` of the answer (false for refusals, rate limits, dropped).
    pub ok: bool,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    /// Messages by ts: their current body (after updates).
    messages: HashMap<String, Value>,
    next_ts: u64,
    script: HashMap<String, VecDeque<Answer>>,
}

#[derive(Clone)]
pub struct FakeSlack {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        let inner: Arc<Mutex<Inner>> = Arc::default();
        let app = Router::new()
            .route("/api/{method}", post(call))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/api", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeSlack { base, inner }
    }

    /// The next answers to `method`, in order (then normal ones again).
    pub fn script(&self, method: &str, answers: Vec<Answer>) {
        self.inner
            .lock()
            .unwrap()
            .script
            .insert(method.to_string(), answers.into());
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// Calls of `method` received (answered or not).
    pub fn received(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// Top-level messages posted (not thread replies), with their ts, as
    /// they are now (after updates).
    pub fn messages(&self) -> Vec<(String, Value)> {
        let inner = self.inner.lock().unwrap();
        let mut out: Vec<(String, Value)> = inner
            .messages
            .iter()
            .filter(|(_, m)| m.get("thread_ts").is_none())
            .map(|(ts, m)| (ts.clone(), m.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Texts of the replies in the thread of `ts`, in order.
    pub fn thread(&self, ts: &str) -> Vec<String> {
        let inner = self.inner.lock().unwrap();
        let mut replies: Vec<(&String, &Value)> = inner
            .messages
            .iter()
            .filter(|(_, m)| m["thread_ts"] == ts)
            .collect();
        replies.sort_by(|a, b| a.0.cmp(b.0));
        replies
            .into_iter()
            .map(|(_, m)| m["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Texts only `user` was shown.
    pub fn ephemerals(&self, user: &str) -> Vec<String> {
        self.received("chat.postEphemeral")
            .into_iter()
            .filter(|c| c.ok && c.body["user"] == user)
            .map(|c| c.body["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

fn slack_error(code: &str) -> Response {
    Json(json!({"ok": false, "error": code})).into_response()
}

async fn call(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let scripted = inner
        .lock()
        .unwrap()
        .script
        .get_mut(&method)
        .and_then(|q| q.pop_front());
    let record = |ok: bool| {
        inner.lock().unwrap().calls.push(Call {
            method: method.clone(),
            body: parsed.clone(),
            ok,
        })
    };
    match scripted {
        Some(Answer::RateLimited(secs)) => {
            record(false);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", secs.to_string())],
                "",
            )
                .into_response();
        }
        Some(Answer::Refuse(code)) => {
            record(false);
            return slack_error(code);
        }
        Some(Answer::Stall(_)) | None => {}
    }
    // A stalled answer is for a call Slack carried out: it is done (and
    // recorded) now, only the answer is late, and the client may be gone
    // by then.
    let stall = match scripted {
        Some(Answer::Stall(d)) => Some(d),
        _ => None,
    };
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("Bearer {BOT_TOKEN}") {
        record(false);
        return slack_error(if auth.is_empty() {
            "not_authed"
        } else {
            "invalid_auth"
        });
    }
    let json_body = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if !json_body || !parsed.is_object() {
        record(false);
        return slack_error("invalid_arguments");
    }
    let answer = match method.as_str() {
        "chat.postMessage" => post_message(&inner, &parsed),
        "chat.update" => update(&inner, &parsed),
        "chat.postEphemeral" => ephemeral(&parsed),
        _ => Err("unknown_method"),
    };
    let response = match answer {
        Ok(v) => {
            record(true);
            Json(v).into_response()
        }
        Err(code) => {
            record(false);
            slack_error(code)
        }
    };
    if let Some(d) = stall {
        tokio::time::sleep(d).await;
    }
    response
}

fn text_of(v: &Value) -> Option<&str> {
    v.as_str()
}

fn post_message(inner: &Mutex<Inner>, b: &Value) -> Result<Value, &'static str> {
    let channel = b["channel"]
        .as_str()
        .filter(|c| !c.is_empty())
        .ok_or("channel_not_found")?;
    let has_text = text_of(&b["text"]).is_some_and(|t| !t.is_empty());
    if !has_text && b.get("blocks").is_none() {
        return Err("no_text");
    }
    if let Some(blocks) = b.get("blocks") {
        check_blocks(blocks)?;
    }
    if let Some(t) = b.get("thread_ts") {
        let parent = t.as_str().ok_or("invalid_thread_ts")?;
        if !inner.lock().unwrap().messages.contains_key(parent) {
            return Err("thread_not_found");
        }
    }
    let mut i = inner.lock().unwrap();
    i.next_ts += 1;
    let ts = format!("1700000000.{:06}", i.next_ts);
    i.messages.insert(ts.clone(), b.clone());
    Ok(json!({"ok": true, "channel": channel, "ts": ts, "message": {"text": b["text"], "ts": ts}}))
}

fn update(inner: &Mutex<Inner>, b: &Value) -> Result<Value, &'static str> {
    let channel = b["channel"].as_str().ok_or("channel_not_found")?;
    let ts = b["ts"].as_str().ok_or("message_not_found")?;
    if let Some(blocks) = b.get("blocks") {
        check_blocks(blocks)?;
    }
    let mut i = inner.lock().unwrap();
    let m = i.messages.get_mut(ts).ok_or("message_not_found")?;
    if m["channel"] != channel {
        return Err("message_not_found");
    }
    let mut new = b.clone();
    new.as_object_mut().unwrap().remove("ts");
    *m = new;
    Ok(json!({"ok": true, "channel": channel, "ts": ts, "text": b["text"]}))
}

fn ephemeral(b: &Value) -> Result<Value, &'static str> {
    b["channel"]
        .as_str()
        .filter(|c| !c.is_empty())
        .ok_or("channel_not_found")?;
    b["user"]
        .as_str()
        .filter(|u| !u.is_empty())
        .ok_or("user_not_in_channel")?;
    text_of(&b["text"]).ok_or("no_text")?;
    Ok(json!({"ok": true, "message_ts": "1700000000.999999"}))
}

/// Block Kit's documented limits, for the blocks Remedy sends.
fn check_blocks(blocks: &Value) -> Result<(), &'static str> {
    let blocks = blocks.as_array().ok_or("invalid_blocks")?;
    if blocks.len() > 50 {
        return Err("invalid_blocks");
    }
    let plain = |t: &Value, max: usize| {
        t["type"] == "plain_text"
            && t["text"]
                .as_str()
                .is_some_and(|s| !s.is_empty() && s.chars().count() <= max)
    };
    for b in blocks {
        let ok = match b["type"].as_str() {
            Some("header") => plain(&b["text"], 150),
            Some("section") => {
                let t = &b["text"];
                let text_ok = t.is_null()
                    || (matches!(t["type"].as_str(), Some("mrkdwn" | "plain_text"))
                        && t["text"]
                            .as_str()
                            .is_some_and(|s| !s.is_empty() && s.chars().count() <= 3000));
                let fields_ok = b["fields"].as_array().is_none_or(|f| f.len() <= 10);
                text_ok && fields_ok && !(t.is_null() && b["fields"].is_null())
            }
            Some("context") => b["elements"]
                .as_array()
                .is_some_and(|e| !e.is_empty() && e.len() <= 10),
            Some("divider") => true,
            Some("actions") => b["elements"].as_array().is_some_and(|els| {
                !els.is_empty()
                    && els.len() <= 25
                    && els.iter().all(|e| {
                        e["type"] == "button"
                            && plain(&e["text"], 75)
                            && e["action_id"].as_str().is_some_and(|a| a.len() <= 255)
                            && e["value"].as_str().is_none_or(|v| v.len() <= 2000)
                            && e["style"]
                                .as_str()
                                .is_none_or(|s| s == "primary" || s == "danger")
                    })
            }),
            _ => false,
        };
        if !ok {
            return Err("invalid_blocks");
        }
    }
    Ok(())
}
