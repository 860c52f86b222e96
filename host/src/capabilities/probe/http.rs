//! Probe backend: HTTP GET with a timeout, a body cap and no redirects (a
//! redirect could lead outside the allow-list); understands Statuspage
//! `/api/v2/status.json` documents.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;

use super::backend::{Indicator, ProbeBackend, ProbeResponse};
use crate::backends::{transport_error, BackendError, BackendResult};

/// Most body bytes handed to a plugin.
pub const BODY_CAP: usize = 64 * 1024;

pub struct HttpProbe {
    client: reqwest::Client,
    timeout: Duration,
    body_cap: usize,
}

/// Resolves probe host names, refusing any name that resolves to a
/// loopback, link-local (cloud metadata at 169.254.169.254) or unspecified
/// address: an allow-list entry such as `https://*.example.com` must not
/// reach this machine or its metadata service through a DNS record someone
/// else controls. An address written literally in the URL (and so in the
/// allow-list) is not resolved and not affected.
struct PublicOnly;

fn forbidden(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_link_local())
        }
    }
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| forbidden(a.ip())) {
                return Err(format!(
                    "{host} resolves to {}, an address probes may not reach through a name",
                    bad.ip()
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl HttpProbe {
    pub fn new(timeout: Duration, body_cap: usize) -> anyhow::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .dns_resolver(std::sync::Arc::new(PublicOnly))
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("remedy/", env!("CARGO_PKG_VERSION")))
                .build()?,
            timeout,
            body_cap,
        })
    }
}

#[derive(Deserialize)]
struct StatusDoc {
    status: StatusBody,
}

#[derive(Deserialize)]
struct StatusBody {
    indicator: String,
    #[serde(default)]
    description: Option<String>,
}

/// The indicator and description of a Statuspage status document.
pub fn parse_statuspage(body: &[u8]) -> Option<(Indicator, Option<String>)> {
    let doc: StatusDoc = serde_json::from_slice(body).ok()?;
    let indicator = match doc.status.indicator.as_str() {
        "none" => Indicator::Operational,
        "minor" => Indicator::Minor,
        "major" => Indicator::Major,
        "critical" => Indicator::Critical,
        _ => return None,
    };
    Some((indicator, doc.status.description))
}

#[async_trait]
impl ProbeBackend for HttpProbe {
    async fn get(&self, url: &reqwest::Url) -> BackendResult<ProbeResponse> {
        let started = Instant::now();
        let fetch = async {
            let mut resp = self
                .client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| transport_error("probe", e))?;
            let status = resp.status().as_u16();
            let mut body = Vec::new();
            let mut truncated = false;
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| transport_error("probe", e))?
            {
                let room = self.body_cap - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, BackendError>((status, body, truncated))
        };
        let (status, body, truncated) =
            tokio::time::timeout(self.timeout, fetch)
                .await
                .map_err(|_| {
                    BackendError::Unavailable(format!(
                        "probe: {url}: no answer within {} ms",
                        self.timeout.as_millis()
                    ))
                })??;
        let parsed = if truncated {
            None
        } else {
            parse_statuspage(&body)
        };
        Ok(ProbeResponse {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            truncated,
            elapsed_ms: started.elapsed().as_millis().min(u32::MAX as u128) as u32,
            indicator: parsed.as_ref().map(|p| p.0),
            description: parsed.and_then(|p| p.1),
        })
    }
}
