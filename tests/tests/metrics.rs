//! The Prometheus backend against a real Prometheus (Debian's `prometheus`)
//! scraping servio-sim; `REMEDY_TEST_PROMETHEUS` names another binary.

mod common;

use std::time::{Duration, Instant};

use common::prom::{self, free_port};
use remedy::backends::BackendError;
use remedy::capabilities::metrics::backend::MetricsBackend;
use remedy::capabilities::metrics::prometheus::Prometheus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_vectors_scalars_and_invalid_queries() {
    let sim = common::servio_sim().await;
    sim.open_breaker("stripe");
    let server = prom::start(sim.base_url());
    let prom = Prometheus::new(&server.url, Duration::from_secs(2)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let samples = loop {
        match prom.query("servio_circuit_breaker_state").await {
            Ok(s) if s.len() == 3 => break s,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "prometheus never scraped servio-sim: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    let stripe = samples
        .iter()
        .find(|s| {
            s.labels
                .iter()
                .any(|(k, v)| k == "breaker" && v == "stripe")
        })
        .expect("stripe series");
    assert_eq!(stripe.value, 1.0, "stripe is open");
    assert!(stripe
        .labels
        .iter()
        .any(|(k, v)| k == "job" && v == "servio"));

    let scalar = prom
        .query("scalar(sum(servio_circuit_breaker_state))")
        .await
        .unwrap();
    assert_eq!(scalar.len(), 1);
    assert!(scalar[0].labels.is_empty());
    assert_eq!(scalar[0].value, 1.0);

    match prom.query("sum(servio_circuit_breaker_state").await {
        Err(BackendError::Invalid(msg)) => assert!(
            msg.contains("bad_data") && msg.contains("parse error"),
            "{msg}"
        ),
        other => panic!("an invalid query must be invalid, got {other:?}"),
    }
    match prom.query("servio_circuit_breaker_state[1m]").await {
        Err(BackendError::Invalid(msg)) => assert!(msg.contains("matrix"), "{msg}"),
        other => panic!("a range vector must be invalid, got {other:?}"),
    }

    let down = Prometheus::new(
        &format!("http://127.0.0.1:{}", free_port()),
        Duration::from_secs(1),
    )
    .unwrap();
    assert!(matches!(
        down.query("up").await,
        Err(BackendError::Unavailable(_))
    ));
}

/// A query API that redirects or answers without end is refused, not
/// followed or buffered (issue 9: the Prometheus client followed redirects
/// and read any body whole).
#[tokio::test]
async fn redirects_are_not_followed_and_huge_answers_are_refused() {
    use axum::routing::post;
    let ok = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#;
    let app = axum::Router::new()
        .route(
            "/moved/api/v1/query",
            post(|| async { axum::response::Redirect::temporary("/fine/api/v1/query") }),
        )
        .route("/fine/api/v1/query", post(move || async move { ok }))
        .route(
            "/huge/api/v1/query",
            post(|| async { format!("{{\"pad\":\"{}\"}}", "x".repeat(17 << 20)) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let q = |path: &str| {
        let p = Prometheus::new(&format!("{base}/{path}"), Duration::from_secs(5)).unwrap();
        async move { p.query("1").await }
    };
    assert!(q("fine").await.is_ok());
    let moved = q("moved").await;
    assert!(moved.is_err(), "followed a redirect: {moved:?}");
    match q("huge").await {
        Err(BackendError::Failed(m)) => assert!(m.contains("larger than"), "{m}"),
        other => panic!("a 17 MiB answer was read: {other:?}"),
    }
}
