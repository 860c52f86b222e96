//! `metrics`: PromQL instant queries (read-only).

use std::sync::Arc;
use std::time::Duration;

use crate::bindings::remedy::plugin::metrics::{Host, Sample};
use crate::bindings::types::Error;
use crate::config::BackendsConfig;
use crate::grants::Capability;

use super::{HostCtx, Wiring};

pub mod backend;
pub mod fixture;
pub mod prometheus;

use backend::MetricsBackend;

/// The backend `[backends]` configures (`prometheus_url`), if any.
pub fn from_config(
    cfg: &BackendsConfig,
    timeout: Duration,
) -> anyhow::Result<Option<Arc<dyn MetricsBackend>>> {
    Ok(match &cfg.prometheus_url {
        Some(u) => Some(Arc::new(prometheus::Prometheus::new(u.as_str(), timeout)?)),
        None => None,
    })
}

const METRICS: Wiring = Wiring {
    cap: Capability::Metrics,
    name: "prometheus",
    key: "prometheus_url",
    env: "REMEDY_PROMETHEUS_URL",
};

impl Host for HostCtx {
    async fn query(&mut self, promql: String) -> Result<Vec<Sample>, Error> {
        let backend = self.backend(&METRICS, &self.backends.metrics)?;
        let samples = self
            .read(&METRICS, "query", &promql, backend.query(&promql))
            .await?;
        Ok(samples
            .into_iter()
            .map(|s| Sample {
                labels: s.labels,
                value: s.value,
            })
            .collect())
    }
}
