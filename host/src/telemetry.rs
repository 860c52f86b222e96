//! Logs, and OpenTelemetry traces when asked for: `[telemetry]
//! otlp_endpoint` or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` /
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`. The spans are the ones the host
//! already makes — alert receipt, run (plugin, run id, digest), detect and
//! mitigate, each host call (capability, function, target, outcome,
//! duration), each action through the gate — exported over OTLP/HTTP
//! (protobuf) in batches, off the request path.
//!
//! `RUST_LOG` filters what is printed, not what is traced: the exporter
//! takes every `remedy` span at `info`, so turning logs down does not
//! blind the traces.

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

use crate::config::TelemetryConfig;

/// Flushes the spans still queued when dropped (at the end of `serve`).
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("warning: traces not all exported at exit: {e}");
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("[telemetry] otlp_endpoint `{0}` is not an http(s) URL")]
    Endpoint(String),
    #[error("[telemetry] trace_url `{0}` is not an http(s) URL")]
    TraceUrl(String),
    #[error("the OTLP trace exporter could not be built: {0}")]
    Exporter(String),
}

/// Where traces go, if anywhere: the config's base URL (with
/// `/v1/traces`), else whatever the standard variables say (the exporter
/// reads them itself), else nowhere.
fn endpoint(cfg: &TelemetryConfig) -> Result<Option<Option<String>>, TelemetryError> {
    if let Some(base) = cfg
        .otlp_endpoint
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        let base = base.trim().trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(TelemetryError::Endpoint(base.to_string()));
        }
        return Ok(Some(Some(format!("{base}/v1/traces"))));
    }
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || set("OTEL_EXPORTER_OTLP_ENDPOINT") {
        return Ok(Some(None));
    }
    Ok(None)
}

/// Starts logging to stderr (filtered by `RUST_LOG`, default `warn`) and,
/// when `cfg` or the environment name a collector, trace export. Must run
/// inside the tokio runtime the exporter's requests are sent from.
pub fn init(cfg: Option<&TelemetryConfig>) -> Result<Telemetry, TelemetryError> {
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        );
    let default = TelemetryConfig::default();
    let cfg = cfg.unwrap_or(&default);
    if let Some(u) = &cfg.trace_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return Err(TelemetryError::TraceUrl(u.clone()));
        }
    }
    let Some(endpoint) = endpoint(cfg)? else {
        tracing_subscriber::registry().with(fmt).init();
        return Ok(Telemetry { provider: None });
    };
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Sender::new());
    if let Some(e) = &endpoint {
        exporter = exporter.with_endpoint(e.clone());
    }
    let exporter = exporter
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let name = cfg
        .service_name
        .clone()
        .or_else(|| std::env::var("OTEL_SERVICE_NAME").ok())
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "remedy".into());
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(name)
                .build(),
        )
        .build();
    // `target` is ours (what a host call or action is aimed at), not the
    // Rust module the span was made in.
    let otel = tracing_opentelemetry::layer()
        .with_target(false)
        .with_tracer(provider.tracer("remedy"))
        .with_filter(
            tracing_subscriber::filter::Targets::new().with_target("remedy", tracing::Level::INFO),
        );
    tracing_subscriber::registry().with(fmt).with(otel).init();
    tracing::info!(
        endpoint = endpoint.as_deref().unwrap_or("(from OTEL_EXPORTER_OTLP_*)"),
        "exporting traces over OTLP/HTTP"
    );
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// The trace id of `span` (hex), when traces are exported.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// `span`, made a child of the current span in the exported trace only:
/// the tracing registry does not keep the current span open for it (an
/// alert's receipt ends when it is answered, not when its runs do).
pub fn detached_child(span: tracing::Span) -> tracing::Span {
    let current = tracing::Span::current();
    if !span.is_disabled() && !current.is_disabled() {
        let _ = span.set_parent(current.context());
    }
    span
}

/// Sends the exporter's requests with the service's reqwest, on the tokio
/// runtime it was made in (the batch exporter runs on a thread of its own,
/// outside any runtime).
#[derive(Debug)]
struct Sender {
    http: reqwest::Client,
    rt: Option<tokio::runtime::Handle>,
}

impl Sender {
    fn new() -> Self {
        Sender {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            rt: tokio::runtime::Handle::try_current().ok(),
        }
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Sender {
    async fn send_bytes(
        &self,
        request: axum::http::Request<bytes::Bytes>,
    ) -> Result<axum::http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let rt = self
            .rt
            .clone()
            .ok_or("no tokio runtime to send traces from")?;
        let http = self.http.clone();
        let send = async move {
            let (parts, body) = request.into_parts();
            let url = parts.uri.to_string();
            let resp = http
                .request(parts.method, url)
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let mut out = axum::http::Response::builder().status(resp.status());
            for (k, v) in resp.headers() {
                out = out.header(k, v);
            }
            let body = resp.bytes().await?;
            Ok::<_, opentelemetry_http::HttpError>(out.body(body)?)
        };
        rt.spawn(send).await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_endpoint_is_a_base_url_and_must_be_http() {
        let cfg = |e: &str| TelemetryConfig {
            otlp_endpoint: Some(e.into()),
            ..Default::default()
        };
        assert_eq!(
            endpoint(&cfg("http://collector:4318/")).ok().flatten(),
            Some(Some("http://collector:4318/v1/traces".into()))
        );
        assert!(matches!(
            endpoint(&cfg("collector:4318")),
            Err(TelemetryError::Endpoint(_))
        ));
    }
}
