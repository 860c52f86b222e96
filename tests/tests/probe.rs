//! The HTTP probe backend against a local server: timeout, body cap, no
//! redirects, Statuspage parsing.

use std::time::{Duration, Instant};

use axum::response::Redirect;
use axum::routing::get;
use axum::Router;
use remedy::backends::BackendError;
use remedy::capabilities::probe::backend::{Indicator, ProbeBackend};
use remedy::capabilities::probe::http::{HttpProbe, BODY_CAP};

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

mod common;

/// Probes inside real runbooks, many runs at once: the slow upstream costs
/// each run its timeout, not the run's deadline; the huge body is cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_of_real_runbooks_slow_upstreams_time_out_and_big_bodies_are_cut() {
    let sim = common::servio_sim().await;
    sim.open_breaker("stripe");
    sim.open_breaker("supabase");
    let base = server().await;
    let remedy = std::sync::Arc::new(common::remedy(&format!(
        r#"
        [backends]
        breaker_url = "{sim}"
        probe_timeout_ms = 1000
        [plugins.circuit-breaker-open]
        timeout_ms = 5000
        config = {{ "status_url.stripe" = "{base}/slow", "status_url.supabase" = "{base}/big" }}
        [plugins.circuit-breaker-open.scope]
        probe = ["{base}"]
        "#,
        sim = sim.base_url()
    )));
    let plugin = std::sync::Arc::new(remedy.load_named("circuit-breaker-open").await.unwrap());

    let started = Instant::now();
    let runs: Vec<_> = (0..16)
        .map(|_| {
            let (remedy, plugin) = (remedy.clone(), plugin.clone());
            tokio::spawn(async move { remedy.run(&plugin, common::manual(true)).await })
        })
        .collect();
    for run in runs {
        let rec = run.await.unwrap();
        assert_eq!(rec.status, remedy::RunStatus::Succeeded, "{rec:#?}");
        let findings = &rec.detection.as_ref().unwrap().findings;
        let detail = |b: &str| {
            findings
                .iter()
                .find(|f| f.evidence["breaker"] == b)
                .map(|f| f.evidence["upstream_detail"].clone())
                .unwrap()
        };
        // reqwest's own timeout or the probe's overall bound, whichever fires first.
        let stripe = detail("stripe");
        assert!(
            stripe.contains("timed out") || stripe.contains("no answer within 1000 ms"),
            "{findings:#?}"
        );
        assert!(
            detail("supabase").contains("not a Statuspage document"),
            "{findings:#?}"
        );
        assert!(
            rec.logs
                .iter()
                .any(|l| l.contains("/big: body cut at 65536 bytes")),
            "{:#?}",
            rec.logs
        );
        assert!(
            rec.actions.is_empty(),
            "unknown upstream health must not reset"
        );
    }
    // 16 runs × (detect + mitigate) probes of a 10 s upstream: only the
    // 1 s timeout keeps this short (the runs overlap).
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "took {:?}",
        started.elapsed()
    );
}

/// A name that resolves to this machine (or a link-local metadata address)
/// is refused: an allow-list wildcard plus someone else's DNS record must
/// not reach loopback. The address written literally still works.
#[tokio::test]
async fn names_resolving_to_loopback_are_refused_literal_addresses_are_not() {
    let base = server().await;
    let probe = HttpProbe::new(Duration::from_secs(2), BODY_CAP).unwrap();
    let by_name = base.replace("127.0.0.1", "localhost");
    match probe
        .get(&url(format!("{by_name}/api/v2/status.json")))
        .await
    {
        Err(BackendError::Unavailable(m)) => {
            assert!(m.contains("may not reach through a name"), "{m}")
        }
        other => panic!("localhost was probed: {other:?}"),
    }
    let ok = probe
        .get(&url(format!("{base}/api/v2/status.json")))
        .await
        .unwrap();
    assert_eq!(ok.indicator, Some(Indicator::Critical));
}
