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

tokio::task_local! {
    /// The checked addresses of the host this task is probing: the only
    /// answer the client's resolver gives.
    static CHECKED: (String, Vec<std::net::IpAddr>);
}

/// The client's resolver: no lookup of its own, only the addresses the
/// probe resolved and checked before the request (see `reach`), so a DNS
/// answer that changes in between (rebinding) is never used.
struct CheckedOnly;

impl reqwest::dns::Resolve for CheckedOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let checked = CHECKED
            .try_with(|(h, addrs)| {
                (h.eq_ignore_ascii_case(&host) && !addrs.is_empty()).then(|| addrs.clone())
            })
            .ok()
            .flatten();
        Box::pin(async move {
            let addrs = checked.ok_or_else(|| {
                format!("{host} was not resolved and checked by this probe; not connecting")
            })?;
            let addrs = addrs.into_iter().map(|ip| std::net::SocketAddr::new(ip, 0));
            Ok(Box::new(addrs) as reqwest::dns::Addrs)
        })
    }
}

impl HttpProbe {
    pub fn new(timeout: Duration, body_cap: usize) -> anyhow::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .dns_resolver(std::sync::Arc::new(CheckedOnly))
                // A pooled connection went to an address checked for an
                // earlier probe (maybe another plugin's allow-list).
                .pool_max_idle_per_host(0)
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
    async fn resolve(&self, url: &reqwest::Url) -> BackendResult<Vec<std::net::IpAddr>> {
        if let Some(ip) = crate::grants::url_ip(url) {
            return Ok(vec![ip]);
        }
        let host = url.host_str().unwrap_or_default();
        let lookup = tokio::net::lookup_host((host, 0));
        let found = tokio::time::timeout(self.timeout, lookup)
            .await
            .map_err(|_| {
                BackendError::Unavailable(format!(
                    "probe: {host}: not resolved within {} ms",
                    self.timeout.as_millis()
                ))
            })?
            .map_err(|e| BackendError::Unavailable(format!("probe: cannot resolve {host}: {e}")))?;
        let mut addrs: Vec<std::net::IpAddr> = Vec::new();
        for a in found {
            if !addrs.contains(&a.ip()) {
                addrs.push(a.ip());
            }
        }
        if addrs.is_empty() {
            return Err(BackendError::Unavailable(format!(
                "probe: {host} resolves to no address"
            )));
        }
        Ok(addrs)
    }

    async fn get(
        &self,
        url: &reqwest::Url,
        addrs: &[std::net::IpAddr],
    ) -> BackendResult<ProbeResponse> {
        let started = Instant::now();
        let host = url.host_str().unwrap_or_default().to_string();
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
        // Resolved in this task (hyper connects in the caller's task), so
        // the resolver sees these addresses and no others.
        let fetch = CHECKED.scope((host, addrs.to_vec()), fetch);
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
