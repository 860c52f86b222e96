//! `[answers.probe]`: URL → the response of a GET, in a fixture's world
//! and as a recorder keeps them (a failed GET is kept as its error).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::backend::{Indicator, ProbeBackend, ProbeResponse};
use crate::backends::{BackendError, BackendResult};
use crate::capabilities::world::{Recorder, World};

/// URL → the response of a GET.
pub type Answers = BTreeMap<String, ProbeAnswer>;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeAnswer {
    #[serde(default = "ok_status")]
    pub status: u16,
    #[serde(default)]
    pub body: String,
    /// A Statuspage indicator; read from `body` when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indicator: Option<Indicator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The GET fails (unreachable, timed out): `error = "…"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn ok_status() -> u16 {
    200
}

#[async_trait]
impl ProbeBackend for World {
    /// A recorded world reaches no network: nothing to check.
    async fn resolve(&self, _: &reqwest::Url) -> BackendResult<Vec<std::net::IpAddr>> {
        Ok(Vec::new())
    }

    async fn get(
        &self,
        url: &reqwest::Url,
        _: &[std::net::IpAddr],
    ) -> BackendResult<ProbeResponse> {
        let answer = self
            .answers()
            .probe
            .as_ref()
            .and_then(|p| p.get(url.as_str()).cloned());
        let Some(a) = answer else {
            return self.missing(
                format!("probe.get({:?})", url.as_str()),
                "the URL under [answers.probe]",
            );
        };
        if let Some(error) = a.error {
            return Err(BackendError::Unavailable(error));
        }
        let (indicator, description) = match a.indicator {
            Some(i) => (Some(i), a.description),
            None => match crate::capabilities::probe::http::parse_statuspage(a.body.as_bytes()) {
                Some((i, d)) => (Some(i), a.description.or(d)),
                None => (None, a.description),
            },
        };
        Ok(ProbeResponse {
            status: a.status,
            body: a.body,
            truncated: false,
            elapsed_ms: 1,
            indicator,
            description,
        })
    }
}

#[async_trait]
impl ProbeBackend for Recorder {
    /// A name that does not resolve is recorded as the probe's answer.
    async fn resolve(&self, url: &reqwest::Url) -> BackendResult<Vec<std::net::IpAddr>> {
        let r = self.real.probe.resolve(url).await;
        if let Err(e) = &r {
            self.record_probe(url, Err(e));
        }
        r
    }

    async fn get(
        &self,
        url: &reqwest::Url,
        addrs: &[std::net::IpAddr],
    ) -> BackendResult<ProbeResponse> {
        let r = self.real.probe.get(url, addrs).await;
        self.record_probe(url, r.as_ref());
        r
    }
}

impl Recorder {
    fn record_probe(&self, url: &reqwest::Url, r: Result<&ProbeResponse, &BackendError>) {
        let answer = match r {
            Ok(p) => ProbeAnswer {
                status: p.status,
                body: p.body.clone(),
                indicator: p.indicator,
                description: p.description.clone(),
                error: None,
            },
            Err(e) => ProbeAnswer {
                status: 0,
                body: String::new(),
                indicator: None,
                description: None,
                error: Some(e.to_string()),
            },
        };
        self.answers()
            .probe
            .get_or_insert_with(Default::default)
            .insert(url.to_string(), answer);
    }
}
