//! Chaos (issue 28): two real replicas on one real PostgreSQL take an
//! alert stream while their store connections are killed every 0.7 s, one
//! replica is stopped (SIGSTOP) past its lease with queued and running
//! live runs, and the database goes through a failover-like outage (every
//! connection dropped and none accepted for a while). Afterwards: every
//! live action happened at most once (counted at the backend, the breaker
//! admin API, not in the records), every acknowledged alert's runs ended,
//! no flight was left behind, and a new alert for every target acts.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::*;

const LEASE_SECS: u64 = 3;
const BREAKERS: [&str; 3] = ["stripe", "supabase", "openai"];

fn replica(dir: &Path, sim: &servio_sim::Sim, db: &Db, name: &str) -> Server {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let wasm = home.join("hostile.wasm");
    std::fs::copy(remedy_e2e::test_plugin("hostile"), &wasm).unwrap();
    let server = format!(
        "store = \"{}\"\nreplica = \"{name}\"\nlease = \"{LEASE_SECS}s\"\nmax_concurrent_runs = 2",
        db.url()
    );
    let plugin = "mode = \"auto\"\nverify_after = \"1h\"\ncooldown = \"0s\"\n\
                  retry_after = \"1s\"\ntarget_labels = [\"alertname\", \"breaker\"]\n\
                  budgets = { \"breaker.force-state\" = { max = 10000, per = \"1h\" } }";
    let tail = format!(
        "[plugins.hostile]\npath = \"{}\"\nalerts = [\"ChaosDry\"]\n\
         config = {{ behave = \"sleep\", sleep_ms = 300 }}\n",
        wasm.display()
    );
    start_logged(
        &home,
        &breaker_config(&home, sim, &server, plugin, &tail),
        &[],
    )
}

async fn kill_sessions(c: &tokio_postgres::Client, db: &str) {
    let _ = c
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db],
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_under_stalls_connection_kills_and_a_failover_act_at_most_once_and_heal() {
    let db = Db::new("chaos").await;
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    let a = replica(dir.path(), &sim, &db, "a");
    let b = replica(dir.path(), &sim, &db, "b");
    // Each admin read takes a while, so live runs are caught running.
    sim.set_admin_delay(150, 0);

    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        let name = db.name.clone();
        tokio::spawn(async move {
            let c = admin_client().await;
            let mut kills = 0;
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(700)).await;
                kill_sessions(&c, &name).await;
                kills += 1;
            }
            kills
        })
    };

    let started = Instant::now();
    let mut acknowledged: Vec<String> = Vec::new();
    let (mut posted, mut refused) = (0, 0);
    let mut stalled = false;
    let mut failed_over = false;
    let mut round = 0u32;
    while started.elapsed() < Duration::from_secs(14) {
        round += 1;
        for name in BREAKERS {
            sim.open_breaker(name);
        }
        let breaker = BREAKERS[round as usize % 3];
        let mut alerts = vec![alert(
            "CircuitBreakerOpen",
            "firing",
            json!({"breaker": breaker}),
            &format!("cb-{round}"),
            &format!("2026-12-07T00:00:{:02}.{round:06}Z", round % 60),
        )];
        for k in 0..3 {
            alerts.push(alert(
                "ChaosDry",
                "firing",
                json!({"instance": format!("i-{round}-{k}")}),
                &format!("dry-{round}-{k}"),
                "2026-12-07T00:00:00Z",
            ));
        }
        // A replica stopped takes no posts: Alertmanager's retries go to the other.
        let to = if stalled && !failed_over || round.is_multiple_of(2) {
            &b
        } else {
            &a
        };
        posted += 1;
        let r = to
            .http
            .post(format!("{}/v1/alerts", to.base))
            .json(&payload(alerts))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => {
                let body: Value = r.json().await.unwrap();
                for run in body["runs"].as_array().unwrap() {
                    acknowledged.push(run["run_id"].as_str().unwrap().to_string());
                }
            }
            _ => refused += 1,
        }
        let t = started.elapsed();
        if !stalled && t > Duration::from_secs(3) {
            signal(&a, "-STOP");
            stalled = true;
        }
        if stalled && !failed_over && t > Duration::from_secs(3 + LEASE_SECS + 2) {
            signal(&a, "-CONT");
            failed_over = true;
            // The failover: no new sessions for 1.5 s, every session dropped.
            let c = admin_client().await;
            c.batch_execute(&format!(
                "ALTER DATABASE {} ALLOW_CONNECTIONS false",
                db.name
            ))
            .await
            .unwrap();
            kill_sessions(&c, &db.name).await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            c.batch_execute(&format!(
                "ALTER DATABASE {} ALLOW_CONNECTIONS true",
                db.name
            ))
            .await
            .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let kills = killer.await.unwrap();
    let storm_ended = Instant::now();
    assert!(failed_over, "the stream ended before the failover");
    assert!(
        acknowledged.len() > 40,
        "too few runs acknowledged ({} of {posted} posts, {refused} refused)",
        acknowledged.len()
    );

    // Every acknowledged alert's runs end.
    eventually("every acknowledged run ends", 60, || async {
        let c = db.client().await;
        let open: i64 = c
            .query_one(
                "SELECT count(*) FROM runs WHERE id = ANY($1) AND status IN ('queued', 'running')",
                &[&acknowledged],
            )
            .await
            .unwrap()
            .get(0);
        (open == 0).then_some(())
    })
    .await;
    let stored: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM runs WHERE id = ANY($1)",
            &[&acknowledged],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        stored as usize,
        acknowledged.len(),
        "acknowledged runs missing"
    );
    // No flight is left behind.
    eventually("no flight left", LEASE_SECS + 5, || async {
        (db.one("SELECT count(*) FROM flights").await == 0).then_some(())
    })
    .await;

    // At most once: the backend's count against the ledger's.
    let doubles = db
        .one(
            "SELECT count(*) FROM (SELECT run_id, target FROM actions WHERE status = 'executed' \
         GROUP BY run_id, target HAVING count(*) > 1) d",
        )
        .await;
    assert_eq!(doubles, 0, "an action of one run executed twice");
    let executed = db
        .one("SELECT count(*) FROM actions WHERE status = 'executed'")
        .await;
    let late = db.one("SELECT count(*) FROM audit WHERE event = 'action.late' AND detail::json->>'status' = 'executed'",
    )
    .await;
    let unsettled = db
        .one("SELECT count(*) FROM actions WHERE status IN ('intent', 'interrupted', 'unknown')")
        .await;
    let forced = sim.forced() as i64;
    assert!(
        executed + late <= forced && forced <= executed + late + unsettled,
        "breaker changed {forced} times; ledger: {executed} executed, {late} late, {unsettled} unsettled"
    );
    assert!(executed > 0, "nothing acted: the test proves nothing");

    // No target is skipped once the storm is over: a new alert for each
    // breaker, on each replica, acts.
    for (i, server) in [&a, &b].into_iter().enumerate() {
        server.healthz_answers(200, "healthz answers ok", 20).await;
        for (k, name) in BREAKERS.iter().enumerate() {
            sim.open_breaker(name);
            let (code, receipt) = server
                .post(
                    "/v1/alerts",
                    payload(vec![alert(
                        "CircuitBreakerOpen",
                        "firing",
                        json!({"breaker": name}),
                        &format!("after-{i}-{k}"),
                        "2026-12-07T01:00:00Z",
                    )]),
                )
                .await;
            assert_eq!(code, 202, "{receipt}");
            let run = &receipt["runs"][0];
            assert_eq!(run["status"], "queued", "{receipt}");
            let rec = server.finished(run["run_id"].as_str().unwrap()).await;
            assert_eq!(rec["status"], "succeeded", "{rec}");
            assert_eq!(
                actions_on(&rec, &format!("breaker:{name}"))[0]["applied"],
                "executed",
                "{rec}"
            );
        }
    }
    assert!(
        storm_ended.elapsed() < Duration::from_secs(60),
        "{:?}",
        storm_ended.elapsed()
    );
    eprintln!(
        "chaos: {posted} posts ({refused} refused), {} runs acknowledged, {kills} connection kills, \
         {forced} breaker changes, {executed} executed, {late} late, {unsettled} unsettled",
        acknowledged.len()
    );
}
