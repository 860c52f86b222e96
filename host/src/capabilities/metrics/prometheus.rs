//! Metrics backend: the Prometheus HTTP API (`/api/v1/query`), which Thanos,
//! Mimir and VictoriaMetrics speak too.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::backend::{MetricsBackend, Sample};
use crate::backends::{read_capped, transport_error, BackendError, BackendResult};

/// Most samples one query may return to a plugin.
pub const MAX_SAMPLES: usize = 1000;

/// Largest answer read from the query API.
pub const MAX_BODY: usize = 16 << 20;

pub struct Prometheus {
    client: reqwest::Client,
    query_url: reqwest::Url,
}

impl Prometheus {
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<Self> {
        let base = reqwest::Url::parse(base.trim_end_matches('/'))?;
        let query_url = reqwest::Url::parse(&format!(
            "{}/api/v1/query",
            base.as_str().trim_end_matches('/')
        ))?;
        Ok(Self {
            // A redirect could take the query (and its answer) elsewhere.
            client: reqwest::Client::builder()
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            query_url,
        })
    }
}

#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    data: Option<ApiData>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorItem {
    metric: std::collections::BTreeMap<String, String>,
    value: (f64, String),
}

fn parse_value(s: &str) -> BackendResult<f64> {
    // Prometheus writes special values as "NaN", "+Inf", "-Inf".
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s
            .parse()
            .map_err(|_| BackendError::Failed(format!("unparsable sample value `{s}`"))),
    }
}

/// Turns a Prometheus API answer into samples or the error it reports.
pub fn parse_response(http_status: u16, body: &[u8]) -> BackendResult<Vec<Sample>> {
    let resp: ApiResponse = serde_json::from_slice(body).map_err(|e| {
        BackendError::Failed(format!(
            "HTTP {http_status}: not a Prometheus API answer: {e}"
        ))
    })?;
    if resp.status != "success" {
        let kind = resp.error_type.unwrap_or_default();
        let msg = format!("{kind}: {}", resp.error.unwrap_or_default());
        return Err(match kind.as_str() {
            "bad_data" => BackendError::Invalid(msg),
            "unavailable" => BackendError::Unavailable(msg),
            _ => BackendError::Failed(msg),
        });
    }
    let data = resp
        .data
        .ok_or_else(|| BackendError::Failed("success answer without data".into()))?;
    match data.result_type.as_str() {
        "vector" => {
            let items: Vec<VectorItem> = serde_json::from_value(data.result)
                .map_err(|e| BackendError::Failed(format!("malformed vector: {e}")))?;
            if items.len() > MAX_SAMPLES {
                return Err(BackendError::Failed(format!(
                    "query returned {} series, more than the {MAX_SAMPLES} a plugin may receive",
                    items.len()
                )));
            }
            items
                .into_iter()
                .map(|i| {
                    Ok(Sample {
                        labels: i.metric.into_iter().collect(),
                        value: parse_value(&i.value.1)?,
                    })
                })
                .collect()
        }
        "scalar" => {
            let (_, v): (f64, String) = serde_json::from_value(data.result)
                .map_err(|e| BackendError::Failed(format!("malformed scalar: {e}")))?;
            Ok(vec![Sample {
                labels: vec![],
                value: parse_value(&v)?,
            }])
        }
        other => Err(BackendError::Invalid(format!(
            "query returned a {other}; only instant vectors and scalars are supported"
        ))),
    }
}

#[async_trait]
impl MetricsBackend for Prometheus {
    async fn query(&self, promql: &str) -> BackendResult<Vec<Sample>> {
        let resp = self
            .client
            .post(self.query_url.clone())
            .form(&[("query", promql)])
            .send()
            .await
            .map_err(|e| transport_error("prometheus", e))?;
        let status = resp.status().as_u16();
        let body = read_capped("prometheus", resp, MAX_BODY).await?;
        parse_response(status, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_scalar_and_errors() {
        let v = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"x"},"value":[1.5,"1"]},{"metric":{},"value":[1.5,"NaN"]}]}}"#;
        let s = parse_response(200, v).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0].labels,
            vec![("__name__".into(), "up".into()), ("job".into(), "x".into())]
        );
        assert_eq!(s[0].value, 1.0);
        assert!(s[1].value.is_nan());

        let sc = br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"+Inf"]}}"#;
        assert_eq!(parse_response(200, sc).unwrap()[0].value, f64::INFINITY);

        let bad = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        assert_eq!(
            parse_response(400, bad),
            Err(BackendError::Invalid(
                "bad_data: parse error at char 4".into()
            ))
        );
        let m = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(matches!(
            parse_response(200, m),
            Err(BackendError::Invalid(_))
        ));
        assert!(matches!(
            parse_response(502, b"<html>"),
            Err(BackendError::Failed(_))
        ));
    }
}
