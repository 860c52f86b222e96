//! What `probe` fetches: the trait an HTTP prober implements.

use async_trait::async_trait;

use crate::backends::{BackendError, BackendResult};

/// A Statuspage overall indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Indicator {
    Operational,
    Minor,
    Major,
    Critical,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResponse {
    pub status: u16,
    pub body: String,
    pub truncated: bool,
    pub elapsed_ms: u32,
    pub indicator: Option<Indicator>,
    pub description: Option<String>,
}

#[async_trait]
pub trait ProbeBackend: Send + Sync {
    /// The addresses `url`'s host stands for (a literal address is itself),
    /// for the caller to check (see `reach`). A backend that reaches no
    /// network (a recorded world) has none.
    async fn resolve(&self, url: &reqwest::Url) -> BackendResult<Vec<std::net::IpAddr>>;

    /// GETs an URL that the caller has already checked against the
    /// allow-list, connecting only to `addrs` (what `resolve` said, checked).
    async fn get(
        &self,
        url: &reqwest::Url,
        addrs: &[std::net::IpAddr],
    ) -> BackendResult<ProbeResponse>;
}

/// A probe that reaches nothing (used while a plugin describes itself).
pub struct NoProbe;

#[async_trait]
impl ProbeBackend for NoProbe {
    async fn resolve(&self, url: &reqwest::Url) -> BackendResult<Vec<std::net::IpAddr>> {
        Err(BackendError::Unavailable(format!(
            "probe of {url} not available here"
        )))
    }

    async fn get(
        &self,
        url: &reqwest::Url,
        _: &[std::net::IpAddr],
    ) -> BackendResult<ProbeResponse> {
        Err(BackendError::Unavailable(format!(
            "probe of {url} not available here"
        )))
    }
}
