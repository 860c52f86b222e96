//! Shared helpers of the end-to-end tests (the tests themselves are in
//! `tests/tests/`). The test plugins are compiled by build.rs.

use std::path::PathBuf;

/// Directory holding the compiled test plugins (`hostile.wasm`, ...).
pub const TEST_PLUGIN_DIR: &str = env!("REMEDY_TEST_PLUGIN_DIR");

/// Path of a compiled test plugin, e.g. `test_plugin("hostile")`.
pub fn test_plugin(name: &str) -> PathBuf {
    PathBuf::from(TEST_PLUGIN_DIR).join(format!("{}.wasm", name.replace('-', "_")))
}

pub mod prom;

pub mod pg {
    //! Real PostgreSQL sessions for tests: unique names, a sleeper blocked in
    //! `pg_sleep(600)`, liveness checks and clean-up.

    use std::time::{Duration, Instant};

    use tokio_postgres::{Client, NoTls};

    /// The PostgreSQL the tests talk to.
    pub fn pg_url() -> String {
        std::env::var("REMEDY_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    /// A unique name for this test's objects.
    pub fn unique(prefix: &str) -> String {
        format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        )
    }

    pub async fn connect(application_name: &str) -> Client {
        let mut cfg: tokio_postgres::Config = pg_url().parse().expect("valid url");
        cfg.application_name(application_name);
        let (client, conn) = cfg
            .connect(NoTls)
            .await
            .expect("postgres at 127.0.0.1:5432");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// A session of `application_name` blocked in `pg_sleep(600)`; returns its
    /// pid once it has been running for at least `min`.
    pub async fn sleeper(application_name: &str, min: Duration) -> i32 {
        let client = connect(application_name).await;
        // If this test process dies, the server notices within a second and
        // ends the sleep instead of holding a connection for ten minutes.
        client
            .batch_execute("SET client_connection_check_interval = '1s'")
            .await
            .expect("set check interval");
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("pid")
            .get(0);
        tokio::spawn(async move {
            let _ = client.simple_query("SELECT pg_sleep(600)").await;
        });
        let watcher = connect("remedy-test-watcher").await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let row = watcher
                .query_opt(
                    "SELECT (extract(epoch from now() - query_start) * 1000)::int8 FROM pg_stat_activity \
                     WHERE pid = $1 AND state = 'active' AND query LIKE '%pg_sleep%'",
                    &[&pid],
                )
                .await
                .expect("pg_stat_activity");
            if row.is_some_and(|r| r.get::<_, i64>(0) >= min.as_millis() as i64) {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "sleeper {pid} never became active"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `pid` is still a session, waiting up to 2 s for it to go when
    /// `expect_gone`.
    pub async fn alive(pid: i32, expect_gone: bool) -> bool {
        let watcher = connect("remedy-test-watcher").await;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let alive = watcher
                .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])
                .await
                .expect("pg_stat_activity")
                .is_some();
            if !alive || !expect_gone || Instant::now() >= deadline {
                return alive;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Ends a test's leftover sessions.
    pub async fn terminate(pids: &[i32]) {
        let watcher = connect("remedy-test-watcher").await;
        for pid in pids {
            let _ = watcher
                .execute("SELECT pg_terminate_backend($1)", &[pid])
                .await;
        }
    }
}

pub mod alertmanager;
pub mod incident_api;
pub mod slack_api;

pub mod sink {
    //! A local HTTP server that records every JSON body posted to `/{name}`:
    //! the Slack, PagerDuty and webhook endpoints of the tests.
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, State};
    use axum::routing::post;
    use axum::{Json, Router};
    use serde_json::Value;

    pub type Seen = Arc<Mutex<Vec<(String, Value)>>>;

    /// Starts a sink; answers its base URL and what it has received.
    pub async fn start() -> (String, Seen) {
        let seen: Seen = Arc::default();
        let app = Router::new()
            .route(
                "/{name}",
                post(
                    |State(seen): State<Seen>,
                     Path(name): Path<String>,
                     Json(body): Json<Value>| async move {
                        seen.lock().unwrap().push((name, body));
                        "ok"
                    },
                ),
            )
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base, seen)
    }

    /// Bodies received on `name`.
    pub fn on(seen: &Seen, name: &str) -> Vec<Value> {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

pub mod proxy {
    //! A TCP proxy the test controls, between Remedy and a real service: it
    //! passes bytes, cuts every connection (and refuses new ones), or
    //! black-holes them (reads and drops every byte, as a dead middlebox
    //! does: a black-holed connection stays dead after `Pass` returns; only
    //! new connections work again).
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::watch;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Mode {
        Pass,
        Cut,
        Blackhole,
    }

    pub struct Proxy {
        pub addr: SocketAddr,
        mode: watch::Sender<Mode>,
    }

    impl Proxy {
        /// Listens on a free loopback port, forwarding to `upstream`.
        pub async fn start(upstream: SocketAddr) -> Proxy {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (mode, rx) = watch::channel(Mode::Pass);
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    if *rx.borrow() == Mode::Cut {
                        drop(client);
                        continue;
                    }
                    let rx = rx.clone();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        tokio::join!(pipe(cr, sw, rx.clone()), pipe(sr, cw, rx));
                    });
                }
            });
            Proxy { addr, mode }
        }

        pub fn set(&self, mode: Mode) {
            let _ = self.mode.send(mode);
        }
    }

    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut mode: watch::Receiver<Mode>,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        let mut dead = false;
        loop {
            tokio::select! {
                n = from.read(&mut buf) => {
                    let n = match n {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    match *mode.borrow() {
                        Mode::Cut => return,
                        Mode::Blackhole => dead = true,
                        Mode::Pass => {}
                    }
                    if !dead && to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                changed = mode.changed() => {
                    if changed.is_err() || *mode.borrow() == Mode::Cut {
                        return;
                    }
                }
            }
        }
    }
}

/// `git ARGS` in `dir` as a developer would run it — their own identity,
/// no user or system config — asserting it succeeds: its stdout, trimmed.
pub fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
