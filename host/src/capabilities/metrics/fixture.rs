//! `[answers.metrics]`: PromQL query → a number, samples or an error, in
//! a fixture's world and as a recorder keeps them.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::backend::{MetricsBackend, Sample};
use crate::backends::{BackendError, BackendResult};
use crate::capabilities::world::{unconfigured, Recorder, World};

/// PromQL query → its result.
pub type Answers = BTreeMap<String, MetricAnswer>;

/// The result of one PromQL query.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetricAnswer {
    /// One sample without labels.
    Value(f64),
    Samples(Vec<MetricSample>),
    /// The query fails: `{ error = "…" }`.
    Error {
        error: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSample {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[async_trait]
impl MetricsBackend for World {
    async fn query(&self, promql: &str) -> BackendResult<Vec<Sample>> {
        let answer = self
            .answers()
            .metrics
            .as_ref()
            .and_then(|m| m.get(promql).cloned());
        match answer {
            None => self.missing(
                format!("metrics.query({promql:?})"),
                "the query under [answers.metrics]",
            ),
            Some(MetricAnswer::Value(value)) => Ok(vec![Sample {
                labels: vec![],
                value,
            }]),
            Some(MetricAnswer::Samples(s)) => Ok(s
                .into_iter()
                .map(|s| Sample {
                    labels: s.labels.into_iter().collect(),
                    value: s.value,
                })
                .collect()),
            Some(MetricAnswer::Error { error }) => Err(BackendError::Failed(error)),
        }
    }
}

#[async_trait]
impl MetricsBackend for Recorder {
    async fn query(&self, promql: &str) -> BackendResult<Vec<Sample>> {
        let Some(real) = &self.real.metrics else {
            return unconfigured("metrics");
        };
        let r = real.query(promql).await;
        let answer = match &r {
            Ok(samples) => MetricAnswer::Samples(
                samples
                    .iter()
                    .map(|s| MetricSample {
                        labels: s.labels.iter().cloned().collect(),
                        value: s.value,
                    })
                    .collect(),
            ),
            Err(e) => MetricAnswer::Error {
                error: e.to_string(),
            },
        };
        self.answers()
            .metrics
            .get_or_insert_with(Default::default)
            .insert(promql.to_string(), answer);
        r
    }
}

impl crate::capabilities::PublicValues for Answers {}
