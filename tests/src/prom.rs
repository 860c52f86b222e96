//! A real Prometheus (Debian's `prometheus`, or `REMEDY_TEST_PROMETHEUS`)
//! scraping test targets four times a second, so runbooks with short
//! windows see a fault within seconds.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Prom {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Prom {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn binary() -> String {
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

/// Starts Prometheus scraping `base_url` (an `http://host:port`) every 250 ms.
pub fn start(base_url: &str) -> Prom {
    let target = base_url.trim_start_matches("http://");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 250ms\n  scrape_timeout: 250ms\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: servio\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(binary())
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
    Prom {
        url: format!("http://127.0.0.1:{port}"),
        child,
        _dir: dir,
    }
}

impl Prom {
    /// Polls `promql` until its first value satisfies `ok` (30 s at most):
    /// tests wait for what the runbook will see, never for a fixed time.
    pub async fn wait_until(&self, promql: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let last = self.value(promql).await;
            if let Ok(Some(v)) = &last {
                if v.is_finite() && ok(*v) {
                    return *v;
                }
            }
            assert!(
                Instant::now() < deadline,
                "`{promql}` never reached the expected value; last answer {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The first value of an instant query (`None`: no sample).
    pub async fn value(&self, promql: &str) -> Result<Option<f64>, String> {
        let r = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let v: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
        let first = &v["data"]["result"][0]["value"][1];
        Ok(first.as_str().and_then(|s| s.parse().ok()))
    }
}
