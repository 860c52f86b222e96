//! The HTTP probe backend against a local server: timeout, body cap, no
//! redirects, Statuspage parsing, and which addresses it may reach.

use std::time::{Duration, Instant};

use axum::response::Redirect;
use axum::routing::get;
use axum::Router;
use remedy::backends::BackendError;
use remedy::capabilities::probe::backend::{Indicator, ProbeBackend, ProbeResponse};
use remedy::capabilities::probe::http::{HttpProbe, BODY_CAP};
use remedy::capabilities::probe::reach::{self, Refused};
use remedy::grants::AllowPattern;

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

/// `probe.get` as a plugin's call makes it: resolved, checked against
/// `allowed`, fetched from the checked addresses.
async fn fetch(
    probe: &HttpProbe,
    u: String,
    allowed: &[String],
) -> Result<Result<ProbeResponse, Refused>, BackendError> {
    let allowed: Vec<AllowPattern> = allowed
        .iter()
        .map(|p| AllowPattern::parse(p).unwrap())
        .collect();
    reach::fetch(probe, &url(u), &allowed).await
}

#[tokio::test]
async fn timeout_body_cap_redirects_and_statuspage() {
    let base = server().await;
    let probe = HttpProbe::new(Duration::from_millis(300), BODY_CAP).unwrap();
    let allowed = [base.clone()];
    let get = |path: &str| fetch(&probe, format!("{base}{path}"), &allowed);

    let started = Instant::now();
    match get("/slow").await {
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

    let big = get("/big").await.unwrap().unwrap();
    assert!(big.truncated);
    assert_eq!(big.body.len(), BODY_CAP);
    assert_eq!(big.indicator, None);

    let moved = get("/moved").await.unwrap().unwrap();
    assert_eq!(moved.status, 307, "redirects are answered, not followed");

    let status = get("/api/v2/status.json").await.unwrap().unwrap();
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

/// A name that resolves to this machine reaches it only when the
/// allow-list names that host (a glob that matches it is not enough); an
/// address, likewise, only when written out or inside a named network.
#[tokio::test]
async fn inside_addresses_are_reached_only_when_the_allow_list_names_them() {
    let base = server().await;
    let port = url(base.clone()).port().unwrap();
    let probe = HttpProbe::new(Duration::from_secs(2), BODY_CAP).unwrap();
    let by_name = format!("http://localhost:{port}/api/v2/status.json");
    let by_address = format!("{base}/api/v2/status.json");

    let refused = |r: Result<Result<ProbeResponse, Refused>, BackendError>| match r {
        Ok(Err(Refused(m))) => m,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let m = refused(fetch(&probe, by_name.clone(), &[format!("http://local*:{port}")]).await);
    assert!(
        m.contains("localhost resolves to") && m.contains("a loopback address"),
        "{m}"
    );
    let m = refused(fetch(&probe, by_address.clone(), &["http://127.0.0.*:*".into()]).await);
    assert!(m.contains("127.0.0.1 is a loopback address"), "{m}");

    for allowed in [
        vec![format!("http://localhost:{port}")],
        vec![
            format!("http://local*:{port}"),
            "http://127.0.0.0/8:*".into(),
            "http://[::1]:*".into(),
        ],
    ] {
        let ok = fetch(&probe, by_name.clone(), &allowed)
            .await
            .unwrap()
            .unwrap_or_else(|r| panic!("{allowed:?}: {r}"));
        assert_eq!(ok.indicator, Some(Indicator::Critical), "{allowed:?}");
    }
    let ok = fetch(&probe, by_address, std::slice::from_ref(&base))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ok.indicator, Some(Indicator::Critical));
}

/// The connection goes to the addresses that were checked, never to a
/// second lookup of the name: handed 127.0.0.2 for `localhost`, the probe
/// connects there (nothing listens: refused), and handed nothing, it does
/// not connect at all.
#[tokio::test]
async fn the_connection_goes_to_the_checked_addresses_only() {
    let base = server().await;
    let port = url(base).port().unwrap();
    let probe = HttpProbe::new(Duration::from_secs(2), BODY_CAP).unwrap();
    let by_name = url(format!("http://localhost:{port}/api/v2/status.json"));
    assert!(
        probe
            .get(&by_name, &["127.0.0.1".parse().unwrap()])
            .await
            .is_ok(),
        "the checked address is reached"
    );
    match probe.get(&by_name, &["127.0.0.2".parse().unwrap()]).await {
        Err(BackendError::Unavailable(m)) => assert!(m.contains("onnect"), "{m}"),
        other => panic!("localhost was looked up again: {other:?}"),
    }
    match probe.get(&by_name, &[]).await {
        Err(BackendError::Unavailable(m)) => {
            assert!(m.contains("was not resolved and checked"), "{m}")
        }
        other => panic!("an unchecked name was connected to: {other:?}"),
    }
}
