//! A `remedy serve` process on a free port, and Alertmanager payloads.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Every variable through which the environment of the test process could
/// configure Remedy: a test's `remedy` sees only what the test gives it.
pub const REMEDY_ENV: [&str; 12] = [
    "DATABASE_URL",
    "REMEDY_DATABASE_URL",
    "REMEDY_PROMETHEUS_URL",
    "REMEDY_BREAKER_URL",
    "REMEDY_REDIS_URL",
    "REMEDY_ALERTMANAGER_URL",
    "REMEDY_STORE_URL",
    "REMEDY_LISTEN",
    "REMEDY_URL",
    "REMEDY_TOKEN",
    "REMEDY_CACHE_DIR",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The `remedy` binary of this build, with [`REMEDY_ENV`] removed.
pub fn remedy_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_remedy"));
    for var in REMEDY_ENV {
        c.env_remove(var);
    }
    c
}

/// A command's stdout and stderr, as one text.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A server process on a free port; killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub http: reqwest::Client,
    /// Sent with `get`, `post` and `finished` when set.
    pub token: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(dir: &Path, config: &str, env: &[(&str, &str)]) -> Server {
    spawn(dir, config, env, Stdio::inherit())
}

/// `start`, with the server's log (at `info`) appended to `dir/remedy.log`.
pub fn start_logged(dir: &Path, config: &str, env: &[(&str, &str)]) -> Server {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("remedy.log"))
        .unwrap();
    let mut env = env.to_vec();
    env.push(("RUST_LOG", "info"));
    spawn(dir, config, &env, Stdio::from(log))
}

fn spawn(dir: &Path, config: &str, env: &[(&str, &str)], stderr: Stdio) -> Server {
    let cfg = dir.join("remedy.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut child = remedy_command()
        .args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start remedy serve");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("remedy listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Server {
        child,
        base,
        http: reqwest::Client::new(),
        token: None,
    }
}

impl Server {
    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub async fn get(&self, path: &str) -> Value {
        self.auth(self.http.get(format!("{}{path}", self.base)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .auth(self.http.post(format!("{}{path}", self.base)))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// The body of a GET, as text (no token).
    pub async fn text(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// POST with a bearer token.
    pub async fn post_as(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// GET with a bearer token.
    pub async fn get_as(&self, token: &str, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Waits (at most 15 s) for the process to exit by itself.
    pub async fn exited(&mut self, why_not: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{why_not}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls a run until it leaves `queued` and `running`.
    pub async fn finished(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let rec = self.get(&format!("/v1/runs/{id}")).await;
            if rec["status"] != "running" && rec["status"] != "queued" {
                return rec;
            }
            assert!(Instant::now() < deadline, "run {id} never finished");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls run `id` (at most `secs`) until it reads `succeeded` here.
    pub async fn succeeded(&self, id: &str, what: &str, secs: u64) -> Value {
        eventually(what, secs, || async {
            let rec = self.get(&format!("/v1/runs/{id}")).await;
            (rec["status"] == "succeeded").then_some(rec)
        })
        .await
    }

    /// Polls `/healthz` (at most `secs`) until it answers `status`.
    pub async fn healthz_answers(&self, status: u16, what: &str, secs: u64) -> reqwest::Response {
        eventually(what, secs, || async {
            let r = self
                .http
                .get(format!("{}/healthz", self.base))
                .send()
                .await
                .ok()?;
            (r.status() == status).then_some(r)
        })
        .await
    }
}

/// Polls `check` every 50 ms until it answers `Some`, for at most `secs`
/// seconds: tests wait for what they expect, never for a fixed time.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The demo application (servio-sim) on a free port.
pub async fn sim() -> servio_sim::Sim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    servio_sim::spawn(listener).unwrap()
}

/// `[server]` lines, then circuit-breaker-open against `sim` with `extra`
/// lines in its section, then `tail` (more sections).
pub fn breaker_config(
    dir: &Path,
    sim: &servio_sim::Sim,
    server: &str,
    extra: &str,
    tail: &str,
) -> String {
    format!(
        r#"
        [server]
        data_dir = "{data}"
        {server}
        [backends]
        breaker_url = "{base}"
        [plugins.circuit-breaker-open]
        {extra}
        [plugins.circuit-breaker-open.scope]
        breakers = ["stripe", "supabase", "openai"]
        probe = ["{base}"]
        {tail}
        "#,
        data = dir.join("data").display(),
        base = sim.base_url()
    )
}

/// Replicas of one cluster on `db`'s PostgreSQL store, each with its home
/// (and log) in `dir/NAME`, serving circuit-breaker-open against `sim`:
/// `server` adds lines to `[server]` after the store, name and `lease`,
/// `plugin` to the plugin's section, `tail` sections after it.
pub struct PgCluster<'a> {
    pub dir: &'a Path,
    pub db: &'a Db,
    pub sim: &'a servio_sim::Sim,
    pub lease: &'a str,
    pub server: &'a str,
    pub plugin: &'a str,
    pub tail: &'a str,
}

impl PgCluster<'_> {
    /// Replica `name`, started with `env`.
    pub fn replica(&self, name: &str, env: &[(&str, &str)]) -> Server {
        let home = self.dir.join(name);
        std::fs::create_dir_all(&home).unwrap();
        let server = format!(
            "store = \"{}\"\nreplica = \"{name}\"\nlease = \"{}\"\n{}",
            self.db.url(),
            self.lease,
            self.server
        );
        let config = breaker_config(&home, self.sim, &server, self.plugin, self.tail);
        start_logged(&home, &config, env)
    }
}

/// circuit-breaker-open served against a servio-sim of its own whose
/// `stripe` breaker is stuck open: what most end-to-end runs act on.
/// Bind `dir` first, so that the server stops before its directory goes.
pub struct StuckBreaker {
    pub dir: tempfile::TempDir,
    pub sim: servio_sim::Sim,
    pub server: Server,
}

/// `breaker_config(server, plugin, tail)` served with `env`, `stripe` open.
pub async fn stuck_breaker(
    server: &str,
    plugin: &str,
    tail: &str,
    env: &[(&str, &str)],
) -> StuckBreaker {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    sim.open_breaker("stripe");
    let config = breaker_config(dir.path(), &sim, server, plugin, tail);
    let server = start(dir.path(), &config, env);
    StuckBreaker { dir, sim, server }
}

/// The actions of a record (JSON) on `target`.
pub fn actions_on<'a>(rec: &'a Value, target: &str) -> Vec<&'a Value> {
    rec["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["target"] == target)
        .collect()
}

pub fn alert(name: &str, status: &str, labels: Value, fingerprint: &str, starts_at: &str) -> Value {
    let mut l = labels;
    l["alertname"] = json!(name);
    json!({"status": status, "labels": l, "annotations": {"summary": "test"}, "startsAt": starts_at, "fingerprint": fingerprint})
}

pub fn payload(alerts: Vec<Value>) -> Value {
    json!({"version": "4", "status": "firing", "receiver": "remedy", "groupKey": "{}", "alerts": alerts})
}

/// A PostgreSQL database of the test's own (a store several replicas
/// share), dropped when the guard goes: tests run in parallel and twice.
pub struct Db {
    pub name: String,
}

impl Db {
    pub async fn new(tag: &str) -> Db {
        let name = format!(
            "remedy_{tag}_{}_{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        pg_admin(&format!("CREATE DATABASE {name}")).await;
        Db { name }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    /// The one number `sql` answers (a count).
    pub async fn one(&self, sql: &str) -> i64 {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }

    /// A client of this database.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (c, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(pg_admin(&format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
        })
        .join();
    }
}

async fn pg_admin(sql: &str) {
    admin_client().await.batch_execute(sql).await.unwrap();
}

/// A client of the `test` database: for what a test does to other
/// databases (create, drop, kill their sessions).
pub async fn admin_client() -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(
        "host=127.0.0.1 user=postgres dbname=test",
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    c
}

/// Sends `sig` (`-STOP`, `-CONT`) to a server, as a VM migration or a
/// swap storm pauses a process.
pub fn signal(server: &Server, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &server.child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig}");
}

/// An open event stream: events as (type, data).
pub struct Feed {
    pub resp: reqwest::Response,
    pub buf: String,
}

impl Feed {
    pub async fn open(server: &Server, token: &str) -> Feed {
        let mut req = server.http.get(format!("{}/v1/events", server.base));
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut feed = Feed {
            resp,
            buf: String::new(),
        };
        let (kind, ready) = feed.next().await;
        assert_eq!(kind, "ready", "{ready}");
        feed
    }

    /// The next event (at most 15 s away).
    pub async fn next(&mut self) -> (String, Value) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut kind = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(k) = line.strip_prefix("event: ") {
                        kind = k.to_string();
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return (kind, serde_json::from_str(&data).unwrap());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.resp.chunk())
                .await
                .expect("no event within 15 s")
                .unwrap()
                .expect("the feed ended");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next event of `kind` for `run` (any run when `None`); the events
    /// skipped on the way are returned too.
    pub async fn until(&mut self, kind: &str, run: Option<&str>) -> (Value, Vec<(String, Value)>) {
        let mut skipped = Vec::new();
        loop {
            let (k, v) = self.next().await;
            if k == kind && run.is_none_or(|r| v["run_id"] == r) {
                return (v, skipped);
            }
            skipped.push((k, v));
        }
    }
}
