//! The Web API methods Remedy calls (`chat.postMessage`, `chat.update`,
//! `chat.postEphemeral`), with the bot token as a bearer token, and what each of
//! Slack's answers means for a retry: a rate limit (429 with `Retry-After`)
//! or a connection never made posted nothing and is tried again; a request
//! sent and never answered may have posted, so a new message is not sent
//! again (a duplicate in the incident channel is worse than a late one),
//! while an update, which is idempotent, is.

use std::time::Duration;

use serde_json::Value;

/// Tries per call, the first included.
pub const MAX_TRIES: usize = 4;

/// The longest wait a `Retry-After` is honoured with before the call gives
/// up (a plan is still decidable in the console meanwhile).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Why a call did not do what it asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SlackError {
    /// Slack answered `ok: false` with this error code.
    #[error("Slack refused {method}: {code}")]
    Refused { method: String, code: String },
    #[error("Slack is rate limiting {method} (Retry-After {after:?})")]
    RateLimited { method: String, after: Duration },
    /// Nothing was sent (the connection was never made).
    #[error("Slack cannot be reached for {method}: {why}")]
    Unreachable { method: String, why: String },
    /// Sent, and no usable answer: whether it took effect is unknown.
    #[error("Slack did not answer {method} ({why}): it may have taken effect")]
    Unknown { method: String, why: String },
}

impl SlackError {
    /// Whether trying again can duplicate what the call did.
    fn retryable(&self, idempotent: bool) -> bool {
        match self {
            SlackError::RateLimited { .. } | SlackError::Unreachable { .. } => true,
            SlackError::Unknown { .. } => idempotent,
            SlackError::Refused { code, .. } => {
                code == "ratelimited" || (code == "internal_error" && idempotent)
            }
        }
    }
}

/// A message as Slack answers it: where it is.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Posted {
    pub channel: String,
    pub ts: String,
}

pub struct WebApi {
    client: reqwest::Client,
    base: String,
    token: String,
    /// The first wait between tries when Slack gives no `Retry-After`.
    backoff: Duration,
}

impl WebApi {
    pub fn new(base: &str, token: String, timeout: Duration) -> anyhow::Result<Self> {
        Ok(WebApi {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            base: base.trim_end_matches('/').to_string(),
            token,
            backoff: Duration::from_millis(250),
        })
    }

    /// `chat.postMessage`; never sent twice once it may have been posted.
    pub async fn post(&self, body: &Value) -> Result<Posted, SlackError> {
        let v = self.call("chat.postMessage", body, false).await?;
        posted(&v).ok_or_else(|| SlackError::Unknown {
            method: "chat.postMessage".into(),
            why: "no channel and ts in the answer".into(),
        })
    }

    /// `chat.postEphemeral`: a line only `body.user` sees.
    pub async fn ephemeral(&self, body: &Value) -> Result<(), SlackError> {
        self.call("chat.postEphemeral", body, false).await.map(drop)
    }

    /// `chat.update` of the message at `to`.
    pub async fn update(&self, to: &Posted, mut body: Value) -> Result<(), SlackError> {
        body["channel"] = Value::String(to.channel.clone());
        body["ts"] = Value::String(to.ts.clone());
        self.call("chat.update", &body, true).await.map(drop)
    }

    async fn call(
        &self,
        method: &str,
        body: &Value,
        idempotent: bool,
    ) -> Result<Value, SlackError> {
        let mut wait = self.backoff;
        let mut tries = 0;
        loop {
            tries += 1;
            let err = match self.once(method, body).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if tries >= MAX_TRIES || !err.retryable(idempotent) {
                return Err(err);
            }
            let pause = match &err {
                SlackError::RateLimited { after, .. } if *after > MAX_RETRY_AFTER => {
                    return Err(err)
                }
                SlackError::RateLimited { after, .. } => *after,
                _ => wait,
            };
            tracing::warn!(method, error = %err, ?pause, "Slack call tried again");
            tokio::time::sleep(pause).await;
            wait *= 2;
        }
    }

    async fn once(&self, method: &str, body: &Value) -> Result<Value, SlackError> {
        let sent = self
            .client
            .post(format!("{}/{method}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                return Err(SlackError::Unreachable {
                    method: method.into(),
                    why: without_url(&e),
                })
            }
            Err(e) => {
                return Err(SlackError::Unknown {
                    method: method.into(),
                    why: without_url(&e),
                })
            }
        };
        if resp.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(Duration::from_secs(1), Duration::from_secs);
            return Err(SlackError::RateLimited {
                method: method.into(),
                after,
            });
        }
        let status = resp.status();
        let v: Value = match resp.json().await {
            Ok(v) => v,
            Err(e) => {
                return Err(SlackError::Unknown {
                    method: method.into(),
                    why: format!("HTTP {}: {}", status.as_u16(), without_url(&e)),
                })
            }
        };
        if v["ok"] == Value::Bool(true) {
            return Ok(v);
        }
        Err(SlackError::Refused {
            method: method.into(),
            code: v["error"].as_str().map_or_else(
                || format!("HTTP {}", status.as_u16()),
                |c| c.chars().take(100).collect(),
            ),
        })
    }
}

fn posted(v: &Value) -> Option<Posted> {
    Some(Posted {
        channel: v["channel"].as_str()?.to_string(),
        ts: v["ts"].as_str()?.to_string(),
    })
}

/// A client error without its URL (the base URL is configuration, not a
/// secret, but the message is shorter and the same on every machine).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(&format!(" for url ({u})"), "");
    }
    s
}
