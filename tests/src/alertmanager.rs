//! A real Alertmanager (Debian's `prometheus-alertmanager`) for the tests,
//! on a free loopback port with clustering off and its own storage; alerts
//! are posted to it as Prometheus would (`POST /api/v2/alerts`), and
//! resolved by posting them again with `endsAt` in the past.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub struct Alertmanager {
    pub base: String,
    child: Child,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

/// The binary: Debian names it `prometheus-alertmanager`.
fn binary() -> &'static str {
    for name in ["prometheus-alertmanager", "alertmanager"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return name;
        }
    }
    panic!("no Alertmanager: apt-get install prometheus-alertmanager (scripts/test.sh does)")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Alertmanager {
    pub async fn start() -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Alertmanager");
        let am = Alertmanager {
            base: format!("http://127.0.0.1:{port}"),
            child,
            _dir: dir,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = am
                .http
                .get(format!("{}/-/ready", am.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return am;
            }
            assert!(Instant::now() < deadline, "Alertmanager did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn post(&self, labels: &Value, ends_in: i64) {
        let now = std::time::SystemTime::now();
        let starts = now - Duration::from_secs(3600);
        let ends = if ends_in >= 0 {
            now + Duration::from_secs(ends_in as u64)
        } else {
            now - Duration::from_secs((-ends_in) as u64)
        };
        let body = json!([{
            "labels": labels,
            "annotations": {"summary": "test"},
            "startsAt": rfc3339(starts),
            "endsAt": rfc3339(ends),
        }]);
        let r = self
            .http
            .post(format!("{}/api/v2/alerts", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }

    /// The alert fires (for the next hour, as a rule evaluation would
    /// renew it); answers its fingerprint.
    pub async fn fire(&self, labels: Value) -> String {
        self.post(&labels, 3600).await;
        let alerts = self.alerts().await;
        alerts
            .iter()
            .find(|a| a["labels"] == labels)
            .and_then(|a| a["fingerprint"].as_str())
            .expect("the alert is listed")
            .to_string()
    }

    /// The alert resolved (its `endsAt` passed).
    pub async fn resolve(&self, labels: Value) {
        self.post(&labels, -1).await;
        let gone = || async { !self.alerts().await.iter().any(|a| a["labels"] == labels) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gone().await {
            assert!(Instant::now() < deadline, "the alert did not resolve");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn alerts(&self) -> Vec<Value> {
        self.list("alerts").await
    }

    pub async fn silences(&self) -> Vec<Value> {
        self.list("silences").await
    }

    async fn list(&self, what: &str) -> Vec<Value> {
        self.http
            .get(format!("{}/api/v2/{what}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Silences the alert with these exact labels, as a person would.
    pub async fn silence(&self, labels: &Value, by: &str, comment: &str) -> String {
        let now = std::time::SystemTime::now();
        let matchers: Vec<Value> = labels
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v, "isRegex": false, "isEqual": true}))
            .collect();
        let r: Value = self
            .http
            .post(format!("{}/api/v2/silences", self.base))
            .json(&json!({
                "matchers": matchers,
                "startsAt": rfc3339(now - Duration::from_secs(1)),
                "endsAt": rfc3339(now + Duration::from_secs(3600)),
                "createdBy": by,
                "comment": comment,
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["silenceID"].as_str().unwrap().to_string()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
