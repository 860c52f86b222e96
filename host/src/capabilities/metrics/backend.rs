//! What `metrics` reads: the trait a Prometheus-compatible backend implements.

use async_trait::async_trait;

use crate::backends::BackendResult;

/// One sample of an instant query.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

#[async_trait]
pub trait MetricsBackend: Send + Sync {
    async fn query(&self, promql: &str) -> BackendResult<Vec<Sample>>;
}
