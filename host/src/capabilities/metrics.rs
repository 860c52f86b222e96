//! `metrics`: PromQL instant queries (read-only).

use crate::bindings::remedy::plugin::metrics::{Host, Sample};
use crate::bindings::types::Error;
use crate::config::Capability;

use super::HostCtx;

impl Host for HostCtx {
    async fn query(&mut self, promql: String) -> Result<Vec<Sample>, Error> {
        let backend = self.backend(
            Capability::Metrics,
            &self.backends.metrics,
            "prometheus_url",
            "REMEDY_PROMETHEUS_URL",
        )?;
        let samples = self.read("prometheus", backend.query(&promql)).await?;
        Ok(samples
            .into_iter()
            .map(|s| Sample {
                labels: s.labels,
                value: s.value,
            })
            .collect())
    }
}
