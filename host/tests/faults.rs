//! Backends failing under load (issue 9): PostgreSQL, Redis, a Prometheus
//! query API and the breaker admin API each sit behind a TCP proxy the test
//! controls, and their connections are cut, black-holed and restored while
//! alerts keep arriving. Nothing acknowledged may be lost, every run must
//! end in a documented status, and the service must recover without a
//! restart. The shared services themselves are never touched.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use remedy_e2e::proxy::{Mode, Proxy};
use serde_json::{json, Value};

mod common;
use common::*;

const PLUGINS: [&str; 4] = [
    "db-connection-exhaustion",
    "circuit-breaker-open",
    "cache-health",
    "high-latency",
];

/// Answers every instant query with an empty vector.
async fn fake_prometheus() -> SocketAddr {
    let app = axum::Router::new().route(
        "/api/v1/query",
        axum::routing::post(|| async {
            axum::Json(json!({"status": "success", "data": {"resultType": "vector", "result": []}}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn firing(i: usize) -> Value {
    payload(vec![alert(
        "FaultTest",
        "firing",
        json!({"instance": format!("i-{i}")}),
        &format!("fault-{i}"),
        "2026-11-28T01:00:00Z",
    )])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_and_black_holed_backends_lose_nothing_and_the_service_recovers_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sim = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        servio_sim::spawn(l).unwrap()
    };
    sim.open_breaker("stripe");
    let sim_addr: SocketAddr = sim
        .base_url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let pg = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let redis = Proxy::start("127.0.0.1:6379".parse().unwrap()).await;
    let prom = Proxy::start(fake_prometheus().await).await;
    let breaker = Proxy::start(sim_addr).await;
    let proxies = [&pg, &redis, &prom, &breaker];
    let set = |m: Mode| proxies.iter().for_each(|p| p.set(m));

    let mut cfg = format!(
        "[server]\ndata_dir = \"{data}\"\n[backends]\n\
         database_url = \"postgres://postgres@{pg}/test\"\n\
         redis_url = \"redis://{redis}/\"\n\
         prometheus_url = \"http://{prom}\"\n\
         breaker_url = \"http://{breaker}\"\n\
         request_timeout_ms = 1500\n",
        data = dir.path().join("data").display(),
        pg = pg.addr,
        redis = redis.addr,
        prom = prom.addr,
        breaker = breaker.addr,
    );
    for p in PLUGINS {
        cfg.push_str(&format!("[plugins.{p}]\nalerts = [\"FaultTest\"]\n"));
        if p == "circuit-breaker-open" {
            // Live, so that actions cross the proxy too.
            cfg.push_str(&format!(
                "mode = \"auto\"\ncooldown = \"0s\"\nverify_after = \"1h\"\n\
                 budgets = {{ \"breaker.force-state\" = {{ max = 1000, per = \"1h\" }} }}\n\
                 [plugins.{p}.scope]\nprobe = [\"{}\"]\n",
                sim.base_url()
            ));
        }
    }
    let server = start(dir.path(), &cfg, &[]);

    // Alerts keep arriving, 10 a second, through every phase.
    let (http, base) = (server.http.clone(), server.base.clone());
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut i = 0;
        loop {
            let r = http
                .post(format!("{base}/v1/alerts"))
                .json(&firing(i))
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            assert_eq!(code, 202, "alert {i}: {body}");
            acked.push((i, body));
            i += 1;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stop_rx.changed() => return acked,
            }
        }
    });
    let phase = Duration::from_secs(3);
    tokio::time::sleep(phase).await;
    set(Mode::Cut);
    tokio::time::sleep(phase).await;
    set(Mode::Blackhole);
    tokio::time::sleep(phase).await;
    set(Mode::Pass);
    tokio::time::sleep(phase).await;
    stop_tx.send(true).unwrap();
    let acked = load.await.unwrap();
    assert!(acked.len() >= 100, "{} alerts posted", acked.len());

    // Every acknowledged alert is stored and started a run per plugin.
    let stored = server.get("/v1/alerts?limit=1000").await;
    let fps: Vec<&str> = stored["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["fingerprint"].as_str().unwrap())
        .collect();
    let mut run_ids = Vec::new();
    for (i, receipt) in &acked {
        assert!(
            fps.contains(&format!("fault-{i}").as_str()),
            "alert {i} lost"
        );
        let runs = receipt["runs"].as_array().unwrap();
        assert_eq!(runs.len(), PLUGINS.len(), "{receipt}");
        run_ids.extend(
            runs.iter()
                .map(|r| r["run_id"].as_str().unwrap().to_string()),
        );
    }

    // Every run ends, in a documented status, however its backend failed.
    let documented = [
        "succeeded",
        "failed",
        "timed_out",
        "skipped",
        "denied",
        "trapped",
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for id in &run_ids {
        let rec = loop {
            let rec = server.get(&format!("/v1/runs/{id}")).await;
            if rec["status"] != "queued" && rec["status"] != "running" {
                break rec;
            }
            assert!(Instant::now() < deadline, "run {id} never ended: {rec}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let status = rec["status"].as_str().unwrap().to_string();
        assert!(documented.contains(&status.as_str()), "{rec}");
        *statuses
            .entry(format!("{} {status}", rec["plugin"].as_str().unwrap()))
            .or_default() += 1;
    }
    eprintln!("statuses under faults: {statuses:?}");
    assert!(
        statuses.keys().any(|k| !k.ends_with("succeeded")),
        "the faults were felt: {statuses:?}"
    );

    // Recovered, without a restart: a new alert's runs all succeed, and
    // their backends answered (no `unavailable` anywhere).
    assert_eq!(server.text("/healthz").await, r#"{"status":"ok"}"#);
    let (code, r) = server.post("/v1/alerts", firing(100_000)).await;
    assert_eq!(code, 202, "{r}");
    for run in r["runs"].as_array().unwrap() {
        let rec = server.finished(run["run_id"].as_str().unwrap()).await;
        assert_eq!(rec["status"], "succeeded", "{rec}");
        assert!(rec["error"].is_null(), "{rec}");
        let text = rec.to_string();
        for dead in [
            "did not answer",
            "cannot connect",
            "no answer within",
            "timed out",
        ] {
            assert!(
                !text.contains(dead),
                "{} still sees a dead backend ({dead}): {rec}",
                rec["plugin"]
            );
        }
    }
}
