//! The Prometheus backend against a real Prometheus (Debian's `prometheus`)
//! scraping servio-sim; `REMEDY_TEST_PROMETHEUS` names another binary.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use remedy::backends::prometheus::Prometheus;
use remedy::backends::{BackendError, MetricsBackend};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn prometheus_binary() -> String {
    if let Ok(p) = std::env::var("REMEDY_TEST_PROMETHEUS") {
        return p;
    }
    for p in ["/usr/bin/prometheus", "/usr/local/bin/prometheus"] {
        if std::path::Path::new(p).exists() {
            return p.to_string();
        }
    }
    panic!("this test needs a real Prometheus: `apt-get install prometheus` (or set REMEDY_TEST_PROMETHEUS)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_vectors_scalars_and_invalid_queries() {
    let sim = common::servio_sim().await;
    sim.open_breaker("stripe");
    let target = sim.base_url().trim_start_matches("http://").to_string();

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: servio\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(prometheus_binary())
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let _guard = Killed(child);

    let prom =
        Prometheus::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2)).unwrap();
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
