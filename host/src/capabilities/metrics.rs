//! `metrics`: PromQL instant queries (read-only).

use crate::bindings::remedy::plugin::metrics::{Host, Sample};
use crate::bindings::types::Error;
use crate::grants::Capability;

use super::{HostCtx, Wiring};

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
