//! The HTTP probe backend against a local server: timeout, body cap, no
//! redirects, Statuspage parsing.

use std::time::{Duration, Instant};

use axum::response::Redirect;
use axum::routing::get;
use axum::Router;
use remedy::backends::probe_http::{HttpProbe, BODY_CAP};
use remedy::backends::{BackendError, Indicator, ProbeBackend};

async fn server() -> String {
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "late"
            }),
        )
        .route("/big", get(|| async { "x".repeat(BODY_CAP * 3) }))
        .route("/moved", get(|| async { Redirect::temporary("http://example.invalid/") }))
        .route(
            "/api/v2/status.json",
            get(|| async { r#"{"page":{"id":"x"},"status":{"indicator":"critical","description":"Major outage"}}"# }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn url(s: String) -> reqwest::Url {
    reqwest::Url::parse(&s).unwrap()
}

#[tokio::test]
async fn timeout_body_cap_redirects_and_statuspage() {
    let base = server().await;
    let probe = HttpProbe::new(Duration::from_millis(300), BODY_CAP).unwrap();

    let started = Instant::now();
    match probe.get(&url(format!("{base}/slow"))).await {
        Err(BackendError::Unavailable(msg)) => {
            assert!(msg.contains("300 ms") || msg.contains("timed out"), "{msg}")
        }
        other => panic!("a slow upstream must time out, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );

    let big = probe.get(&url(format!("{base}/big"))).await.unwrap();
    assert!(big.truncated);
    assert_eq!(big.body.len(), BODY_CAP);
    assert_eq!(big.indicator, None);

    let moved = probe.get(&url(format!("{base}/moved"))).await.unwrap();
    assert_eq!(moved.status, 307, "redirects are answered, not followed");

    let status = probe
        .get(&url(format!("{base}/api/v2/status.json")))
        .await
        .unwrap();
    assert_eq!(status.status, 200);
    assert_eq!(status.indicator, Some(Indicator::Critical));
    assert_eq!(status.description.as_deref(), Some("Major outage"));
}
