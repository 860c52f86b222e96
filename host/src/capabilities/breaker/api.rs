//! Breaker backend: the application's breaker admin API over HTTP, as
//! specified in docs/breaker-api.md.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::backend::{Breaker, BreakerBackend, BreakerState};
use crate::backends::{transport_error, write_error, BackendError, BackendResult, Permit};

pub struct BreakerApi {
    client: reqwest::Client,
    base: String,
}

/// A breaker on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireBreaker {
    pub name: String,
    pub state: String,
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub opened_at: Option<String>,
    #[serde(default)]
    pub status_url: Option<String>,
}

#[derive(Deserialize)]
struct WireList {
    breakers: Vec<WireBreaker>,
}

#[derive(Deserialize)]
struct WireError {
    error: WireErrorBody,
}

#[derive(Deserialize)]
struct WireErrorBody {
    message: String,
}

fn to_breaker(w: WireBreaker) -> BackendResult<Breaker> {
    let state = BreakerState::parse(&w.state).ok_or_else(|| {
        BackendError::Failed(format!(
            "breaker api: breaker {} has unknown state `{}`",
            w.name, w.state
        ))
    })?;
    Ok(Breaker {
        name: w.name,
        state,
        failures: w.failures,
        opened_at: w.opened_at,
        status_url: w.status_url,
    })
}

/// Largest answer read from the breaker admin API.
pub const MAX_BODY: usize = 1 << 20;

impl BreakerApi {
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<Self> {
        reqwest::Url::parse(base)?;
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/admin/breakers{path}", self.base)
    }

    /// Reads a JSON answer; 404 is `None`, other non-2xx statuses are errors
    /// carrying the API's message.
    async fn read<T: for<'de> Deserialize<'de>>(
        &self,
        resp: reqwest::Response,
    ) -> BackendResult<Option<T>> {
        let status = resp.status();
        let body = crate::backends::read_capped("breaker api", resp, MAX_BODY).await?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let msg = serde_json::from_slice::<WireError>(&body)
                .map(|e| e.error.message)
                .unwrap_or_else(|_| {
                    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
                });
            let msg = format!("breaker api: HTTP {}: {msg}", status.as_u16());
            return Err(if status.is_client_error() {
                BackendError::Invalid(msg)
            } else {
                BackendError::Failed(msg)
            });
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| BackendError::Failed(format!("breaker api: malformed answer: {e}")))
    }
}

#[async_trait]
impl BreakerBackend for BreakerApi {
    async fn list(&self) -> BackendResult<Vec<Breaker>> {
        let resp = self
            .client
            .get(self.url(""))
            .send()
            .await
            .map_err(|e| transport_error("breaker api", e))?;
        let list: WireList = self
            .read(resp)
            .await?
            .ok_or_else(|| BackendError::Failed("breaker api: /admin/breakers not found".into()))?;
        list.breakers
            .into_iter()
            .take(1000)
            .map(to_breaker)
            .collect()
    }

    async fn get(&self, name: &str) -> BackendResult<Option<Breaker>> {
        let resp = self
            .client
            .get(self.url(&format!("/{}", urlencode(name))))
            .send()
            .await
            .map_err(|e| transport_error("breaker api", e))?;
        self.read::<WireBreaker>(resp)
            .await?
            .map(to_breaker)
            .transpose()
    }

    async fn force_state(
        &self,
        _: &Permit,
        name: &str,
        state: BreakerState,
        reason: &str,
    ) -> BackendResult<Breaker> {
        let resp = self
            .client
            .post(self.url(&format!("/{}/state", urlencode(name))))
            .json(&serde_json::json!({ "state": state.as_str(), "reason": reason }))
            .send()
            .await
            .map_err(|e| write_error("breaker api", e))?;
        match self.read::<WireBreaker>(resp).await? {
            Some(b) => to_breaker(b),
            None => Err(BackendError::Invalid(format!("no breaker named `{name}`"))),
        }
    }
}

/// What a path segment keeps as is: RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a path segment.
fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_breaker_name_is_one_path_segment() {
        assert_eq!(super::urlencode("stripe-eu_1.v~2"), "stripe-eu_1.v~2");
        assert_eq!(super::urlencode("a b/../ü?"), "a%20b%2F..%2F%C3%BC%3F");
    }
}
