//! `probe`: HTTP GET to allow-listed upstreams. The URL is checked against the
//! plugin's `scope.probe` patterns, and the addresses its host resolves to
//! against what may be reached (`reach`), before any connection is made.

use std::time::Duration;

use crate::bindings::remedy::plugin::probe::{Host, Indicator, Response};
use crate::bindings::types::Error;
use crate::config::BackendsConfig;
use crate::grants::Capability;

use super::{HostCtx, Wiring};

pub mod backend;
pub mod fixture;
pub mod http;
pub mod reach;

/// The prober always exists (what it may reach is the plugin's allow-list),
/// so no "not configured" message ever names `key` or `env`.
const PROBE: Wiring = Wiring {
    cap: Capability::Probe,
    name: "probe",
    key: "probe_timeout_ms",
    env: "",
};

/// The prober, with `probe_timeout_ms` (default 2 s): always there, since
/// what it may reach is the plugin's allow-list.
pub fn from_config(
    cfg: &BackendsConfig,
) -> anyhow::Result<std::sync::Arc<dyn backend::ProbeBackend>> {
    let timeout = cfg
        .probe_timeout_ms
        .map_or(Duration::from_millis(2_000), |t| t.get());
    Ok(std::sync::Arc::new(http::HttpProbe::new(
        timeout,
        http::BODY_CAP,
    )?))
}

impl Host for HostCtx {
    async fn get(&mut self, url: String) -> Result<Response, Error> {
        self.granted(Capability::Probe)?;
        let parsed =
            reqwest::Url::parse(&url).map_err(|e| Error::Invalid(format!("`{url}`: {e}")))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(Error::Invalid(format!(
                "`{url}`: credentials in probe URLs are not allowed"
            )));
        }
        let mut allowed = self.gate.grants.scope.probe.iter().flatten();
        if !allowed.any(|p| p.allows(&parsed)) {
            let msg = format!(
                "probe of {url} denied: outside the allow-list of {}",
                self.gate.plugin
            );
            self.gate.note(msg.clone());
            return Err(Error::Denied(msg));
        }
        let probe = self.backends.probe.clone();
        let allowed: Vec<_> = self
            .gate
            .grants
            .scope
            .probe
            .iter()
            .flatten()
            .cloned()
            .collect();
        let r = self
            .read(
                &PROBE,
                "get",
                &url,
                reach::fetch(&*probe, &parsed, &allowed),
            )
            .await?
            .map_err(|refused| {
                self.gate.note(refused.0.clone());
                Error::Denied(refused.0)
            })?;
        if r.truncated {
            self.gate.note(format!(
                "probe of {url}: body cut at {} bytes",
                r.body.len()
            ));
        }
        Ok(Response {
            status: r.status,
            body: r.body,
            truncated: r.truncated,
            elapsed_ms: r.elapsed_ms,
            indicator: r.indicator.map(|i| match i {
                backend::Indicator::Operational => Indicator::Operational,
                backend::Indicator::Minor => Indicator::Minor,
                backend::Indicator::Major => Indicator::Major,
                backend::Indicator::Critical => Indicator::Critical,
            }),
            description: r.description,
        })
    }
}
