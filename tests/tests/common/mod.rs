//! Helpers shared by the end-to-end tests: real PostgreSQL sessions, a
//! servio-sim on a free port, Remedy built from a config string.

#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use remedy::config::Config;
use remedy::remedy::Overrides;
use remedy::{Remedy, RunRecord, RunRequest, Trigger};
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

pub fn remedy(toml: &str) -> Remedy {
    let cfg = Config::parse(toml, Path::new("test.toml")).expect("test config parses");
    Remedy::new(cfg, Overrides::default()).expect("remedy starts")
}

pub fn manual(dry_run: bool) -> RunRequest {
    RunRequest {
        trigger: Trigger::Manual { by: "test".into() },
        dry_run: Some(dry_run),
        params: Default::default(),
    }
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

/// Actions of `record` on `target`.
pub fn actions_on<'a>(
    record: &'a RunRecord,
    target: &str,
) -> Vec<&'a remedy::record::ActionRecord> {
    record
        .actions
        .iter()
        .filter(|a| a.target == target)
        .collect()
}

/// A servio-sim on a free loopback port.
pub async fn servio_sim() -> servio_sim::Sim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    servio_sim::spawn(listener).expect("servio-sim")
}
