//! OpenTelemetry traces: a real `remedy serve` exports over OTLP/HTTP to a
//! recording receiver in this test, which decodes the protobuf and checks
//! the structure an operator would look for: alert receipt → run → detect /
//! mitigate → host calls → the gate's decision on each action, with the run
//! id and plugin digest as attributes and the trace id in the run record.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::json;

/// Spans received, as decoded.
type Received = Arc<Mutex<Vec<Span>>>;

/// A collector's OTLP/HTTP trace endpoint on a free port (its base URL).
async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let store = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let store = store.clone();
                async move {
                    assert_eq!(headers["content-type"], "application/x-protobuf");
                    let req =
                        ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
                    for rs in req.resource_spans {
                        let service = rs
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|a| a.key == "service.name")
                            .and_then(|a| a.value.as_ref()?.value.clone());
                        assert_eq!(service, Some(Any::StringValue("remedy-traces-test".into())));
                        for ss in rs.scope_spans {
                            store.lock().unwrap().extend(ss.spans);
                        }
                    }
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, got)
}

fn attr(s: &Span, key: &str) -> Option<String> {
    s.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            Any::StringValue(v) => Some(v.clone()),
            Any::BoolValue(v) => Some(v.to_string()),
            Any::IntValue(v) => Some(v.to_string()),
            Any::DoubleValue(v) => Some(v.to_string()),
            _ => None,
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alerts_run_is_one_trace_from_receipt_to_each_action() {
    let (collector, got) = receiver().await;
    // Batches every 100 ms rather than 5 s; RUST_LOG silences the log,
    // not the traces.
    let StuckBreaker {
        dir: _dir,
        sim: _sim,
        server,
    } = stuck_breaker(
        "",
        "mode = \"auto\"\nverify_after = \"1h\"",
        &format!(
            "[telemetry]\notlp_endpoint = \"{collector}\"\nservice_name = \"remedy-traces-test\""
        ),
        &[("OTEL_BSP_SCHEDULE_DELAY", "100"), ("RUST_LOG", "off")],
    )
    .await;
    let alert = alert(
        "CircuitBreakerOpen",
        "firing",
        json!({"breaker": "stripe"}),
        "tracefp1",
        "2026-11-28T10:00:00Z",
    );
    let (code, receipt) = server.post("/v1/alerts", payload(vec![alert])).await;
    assert_eq!(code, 202, "{receipt}");
    let run_id = receipt["runs"][0]["run_id"].as_str().unwrap().to_string();
    let rec = server.finished(&run_id).await;
    assert_eq!(rec["status"], "succeeded", "{rec}");
    let trace_id = rec["trace_id"]
        .as_str()
        .expect("the record names its trace")
        .to_string();
    assert_eq!(trace_id.len(), 32, "{trace_id}");

    // Every span of the trace, once the gate's last decision is in.
    let spans: Vec<Span> = eventually("the run's spans exported", 15, || async {
        let spans: Vec<Span> = got
            .lock()
            .unwrap()
            .iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .cloned()
            .collect();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        // `service.run` ends last: after the record is stored and the
        // actions audited, which a loaded machine may take a while to do.
        (names.contains(&"alert.receipt")
            && names.contains(&"gate.action")
            && names.contains(&"run")
            && names.contains(&"service.run"))
        .then_some(spans)
    })
    .await;
    let by_id: HashMap<Vec<u8>, &Span> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    let parent = |s: &Span| by_id.get(&s.parent_span_id).map(|p| p.name.clone());
    let one = |name: &str| {
        let v: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
        assert_eq!(
            v.len(),
            1,
            "one `{name}` span: {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        v[0]
    };

    let receipt = one("alert.receipt");
    assert!(receipt.parent_span_id.is_empty(), "the receipt is the root");
    assert_eq!(attr(receipt, "alerts").as_deref(), Some("1"));
    let service_run = one("service.run");
    assert_eq!(parent(service_run).as_deref(), Some("alert.receipt"));
    assert_eq!(
        attr(service_run, "run_id").as_deref(),
        Some(run_id.as_str())
    );
    let run = one("run");
    assert_eq!(parent(run).as_deref(), Some("service.run"));
    assert_eq!(attr(run, "run_id").as_deref(), Some(run_id.as_str()));
    assert_eq!(attr(run, "plugin").as_deref(), Some("circuit-breaker-open"));
    assert_eq!(
        attr(run, "digest").as_deref(),
        rec["plugin_digest"].as_str()
    );
    assert_eq!(parent(one("detect")).as_deref(), Some("run"));
    assert_eq!(parent(one("mitigate")).as_deref(), Some("run"));

    // Host calls under detect and mitigate, each with its capability,
    // function, target, outcome and duration.
    let calls: Vec<&Span> = spans.iter().filter(|s| s.name == "host_call").collect();
    assert!(
        calls.iter().any(|c| parent(c).as_deref() == Some("detect")),
        "detect's host calls"
    );
    for c in &calls {
        for key in ["capability", "function", "target", "outcome", "duration_ms"] {
            assert!(
                attr(c, key).is_some(),
                "host call without `{key}`: {:?}",
                c.attributes
            );
        }
    }
    let action = one("gate.action");
    let call = by_id[&action.parent_span_id];
    assert_eq!(call.name, "host_call");
    assert_eq!(parent(call).as_deref(), Some("mitigate"));
    assert_eq!(attr(action, "kind").as_deref(), Some("breaker.force-state"));
    assert_eq!(attr(action, "target").as_deref(), Some("breaker:stripe"));
    assert_eq!(attr(action, "outcome").as_deref(), Some("executed"));
    assert_eq!(attr(action, "dry_run").as_deref(), Some("false"));
    for s in &spans {
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano, "{}", s.name);
    }
    // The receipt ended when Alertmanager was answered, not with the run.
    assert!(receipt.end_time_unix_nano <= run.end_time_unix_nano);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_collector_nothing_is_traced_and_a_bad_endpoint_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    let config = breaker_config(dir.path(), &sim, "", "", "");
    let server = start(dir.path(), &config, &[]);
    let (code, rec) = server
        .post("/v1/plugins/circuit-breaker-open/runs?wait=true", json!({}))
        .await;
    assert_eq!(code, 200, "{rec}");
    assert!(
        rec.get("trace_id").is_none(),
        "no trace id without export: {rec}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[telemetry]\notlp_endpoint = \"collector:4318\"\n").unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args([
            "serve",
            "--config",
            bad.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("otlp_endpoint") && err.contains("collector:4318"),
        "{err}"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
