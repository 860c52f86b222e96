//! Several `remedy serve` processes on one PostgreSQL store (issue 12):
//! each alert stored and run once, budgets that hold cluster-wide, each
//! schedule tick run once (and on after the scheduler is killed), a dead
//! replica's work taken over, one approval decided once, one kill switch.
//! Each test has a database of its own.

use std::path::Path;
use std::time::{Duration, Instant};

use remedy_e2e::pg;
use serde_json::{json, Value};

mod common;
use common::*;

/// The lease the replicas here run with (the shortest allowed).
const LEASE_SECS: u64 = 3;

fn cluster_server(dir: &Path, db: &Db, name: &str) -> String {
    format!(
        "data_dir = \"{}\"\nstore = \"{}\"\nreplica = \"{name}\"\nlease = \"{LEASE_SECS}s\"\n",
        dir.join(name).join("data").display(),
        db.url()
    )
}

/// Three replicas, each given `config(server_section_lines)`.
fn three(
    dir: &Path,
    db: &Db,
    config: impl Fn(&str) -> String,
    env: &[(&str, &str)],
) -> Vec<Server> {
    ["r1", "r2", "r3"]
        .iter()
        .map(|name| {
            let home = dir.join(name);
            std::fs::create_dir_all(&home).unwrap();
            start_logged(&home, &config(&cluster_server(dir, db, name)), env)
        })
        .collect()
}

/// A replica named `name` running circuit-breaker-open against `sim`.
fn breaker_replica(
    dir: &Path,
    sim: &servio_sim::Sim,
    db: &Db,
    name: &str,
    plugin: &str,
    env: &[(&str, &str)],
) -> Server {
    let lease = format!("{LEASE_SECS}s");
    PgCluster {
        dir,
        db,
        sim,
        lease: &lease,
        server: "",
        plugin,
        tail: "",
    }
    .replica(name, env)
}

/// Waits (at most 30 s) until no run in the store is queued or running.
async fn every_run_finished(db: &Db) {
    eventually("every run finished", 30, || async {
        let open = db
            .one("SELECT count(*) FROM runs WHERE status IN ('queued', 'running')")
            .await;
        (open == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_store_each_alert_once_and_start_one_run_for_it() {
    let db = Db::new("storm").await;
    let dir = tempfile::tempdir().unwrap();
    let replicas = three(
        dir.path(),
        &db,
        |server| {
            format!("[server]\n{server}\n[plugins.db-connection-exhaustion]\nmode = \"dry-run\"\n")
        },
        &[],
    );
    // 100 distinct alerts, each sent to every replica, all at once.
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..100 {
        for r in &replicas {
            let (http, url) = (r.http.clone(), format!("{}/v1/alerts", r.base));
            let body = payload(vec![alert(
                "DatabaseConnectionExhaustion",
                "firing",
                json!({"instance": format!("db-{i}")}),
                &format!("storm-{i}"),
                "2026-11-27T03:10:00Z",
            )]);
            posts.spawn(async move {
                let r = http.post(url).json(&body).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 202);
                r.json::<Value>().await.unwrap()
            });
        }
    }
    let receipts = posts.join_all().await;
    let sum = |k: &str| receipts.iter().map(|r| r[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum("new"), sum("duplicates")), (100, 200));
    let started: usize = receipts
        .iter()
        .map(|r| r["runs"].as_array().unwrap().len())
        .sum();
    assert_eq!(
        started, 100,
        "only the replica that stored an alert starts its run"
    );
    every_run_finished(&db).await;
    assert_eq!(db.one("SELECT count(*) FROM runs").await, 100);
    assert_eq!(db.one("SELECT count(*) FROM alerts").await, 100);
    // Every replica lists the same history.
    for r in &replicas {
        let runs = r.get("/v1/runs?limit=1000").await;
        assert_eq!(runs["runs"].as_array().unwrap().len(), 100);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_of_three_holds_across_three_replicas_against_real_sessions() {
    let db = Db::new("budget3").await;
    let dir = tempfile::tempdir().unwrap();
    let app = pg::unique("remedy-test-cluster-budget");
    let mut pids = Vec::new();
    for _ in 0..8 {
        pids.push(pg::sleeper(&app, Duration::from_millis(300)).await);
    }
    let config = |server: &str| {
        format!(
            r#"
            [server]
            {server}
            [backends]
            database_url = "{url}"
            [plugins.db-connection-exhaustion]
            mode = "auto"
            config = {{ long_query_ms = 200, max_terminations = 10, protected_applications = "" }}
            budgets = {{ "database.terminate" = {{ max = 3, per = "1h" }} }}
            verify_after = "1h"
            [plugins.db-connection-exhaustion.scope]
            database_applications = ["{app}"]
            "#,
            url = pg::pg_url(),
        )
    };
    let replicas = three(dir.path(), &db, config, &[]);
    // 50 alerts over five instances, spread over the replicas, at once.
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..50 {
        let r = &replicas[i % 3];
        let (http, url) = (r.http.clone(), format!("{}/v1/alerts", r.base));
        let body = payload(vec![alert(
            "DatabaseConnectionExhaustion",
            "firing",
            json!({"instance": format!("db-{}", i % 5)}),
            &format!("{app}-{i}"),
            "2026-11-27T03:10:00Z",
        )]);
        posts.spawn(async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 202);
        });
    }
    posts.join_all().await;
    every_run_finished(&db).await;
    let mut gone = 0;
    for pid in &pids {
        if !pg::alive(*pid, false).await {
            gone += 1;
        }
    }
    assert_eq!(gone, 3, "exactly the budget of sessions was terminated");
    // Every replica's records count the same three, and the refusals.
    for r in &replicas {
        let runs = r
            .get("/v1/runs?plugin=db-connection-exhaustion&limit=1000")
            .await;
        let actions: Vec<&Value> = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|rec| rec["actions"].as_array().unwrap())
            .filter(|a| a["kind"] == "database.terminate")
            .collect();
        let executed = actions
            .iter()
            .filter(|a| a["applied"] == "executed")
            .count();
        let refused = actions
            .iter()
            .filter(|a| {
                a["applied"] == "refused" && a["error"].as_str().unwrap().contains("budget")
            })
            .count();
        assert_eq!(executed, 3, "{}", r.base);
        assert!(refused > 0, "later runs met the budget");
    }
}

/// The ticks of the runs the schedule made, in order.
async fn ticks(db: &Db) -> Vec<chrono::DateTime<chrono::Utc>> {
    let rows = db
        .client()
        .await
        .query("SELECT record FROM runs", &[])
        .await
        .unwrap();
    let mut ticks: Vec<_> = rows
        .iter()
        .filter_map(|r| {
            let rec: Value = serde_json::from_str(r.get(0)).unwrap();
            let tick = rec["trigger"]["tick"].as_str()?.to_string();
            Some(
                chrono::DateTime::parse_from_rfc3339(&tick)
                    .unwrap()
                    .to_utc(),
            )
        })
        .collect();
    ticks.sort();
    ticks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schedule_ticks_once_across_replicas_and_goes_on_when_its_scheduler_is_killed() {
    let db = Db::new("ticks").await;
    let dir = tempfile::tempdir().unwrap();
    let config = |server: &str| {
        format!(
            "[server]\n{server}\n[plugins.db-connection-exhaustion]\nmode = \"dry-run\"\n\
             [[plugins.db-connection-exhaustion.schedules]]\nname = \"sweep\"\nevery = \"1s\"\n"
        )
    };
    let mut replicas = three(dir.path(), &db, config, &[]);
    let from = chrono::Utc::now() + chrono::Duration::seconds(1);
    tokio::time::sleep(Duration::from_secs(11)).await;
    let to = from + chrono::Duration::seconds(10);
    let all = ticks(&db).await;
    let mut distinct = all.clone();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        all.len(),
        "never two runs for one tick: {all:?}"
    );
    let window = all.iter().filter(|t| **t >= from && **t < to).count();
    assert!((9..=11).contains(&window), "{window} runs in 10 s: {all:?}");

    // Kill the scheduler; another replica takes the lease and ticks on.
    let scheduler = replicas[0].get("/v1/cluster").await["scheduler"]
        .as_str()
        .unwrap()
        .to_string();
    let mut at = None;
    for (i, r) in replicas.iter().enumerate() {
        if r.get("/v1/cluster").await["replica"] == scheduler.as_str() {
            at = Some(i);
        }
    }
    let mut victim = replicas.remove(at.expect("the scheduler is one of the three"));
    victim.child.kill().unwrap(); // SIGKILL
    victim.child.wait().unwrap();
    let killed = chrono::Utc::now();
    let survivor = &replicas[0];
    let new = eventually(
        "another replica holds the scheduler",
        LEASE_SECS + 5,
        || async {
            let c = survivor.get("/v1/cluster").await;
            let s = c["scheduler"].as_str().map(String::from);
            s.filter(|s| *s != scheduler)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = ticks(&db).await;
    let mut distinct = all.clone();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        all.len(),
        "never two runs for one tick: {all:?}"
    );
    let after = all.iter().filter(|t| **t > killed).count();
    assert!(after >= 2, "ticks go on from {new}: {all:?}");
    // The guaranteed bound: a lease, a heartbeat and a tick.
    let gap = all
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap()
        .to_std()
        .unwrap();
    assert!(
        gap <= Duration::from_secs(LEASE_SECS + 2),
        "longest gap {gap:?}: {all:?}"
    );
    let metrics = survivor.text("/metrics").await;
    assert!(metrics.contains("remedy_replicas 2"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_between_intent_and_result_is_taken_over_by_a_survivor() {
    let db = Db::new("crash").await;
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    sim.open_breaker("stripe");
    let breaker = "mode = \"auto\"";
    let survivor = breaker_replica(dir.path(), &sim, &db, "b", breaker, &[]);
    let mut doomed = breaker_replica(
        dir.path(),
        &sim,
        &db,
        "a",
        breaker,
        &[("REMEDY_FAULT_ABORT_AFTER_INTENT", "1")],
    );
    let (code, r) = doomed
        .post("/v1/plugins/circuit-breaker-open/runs", json!({}))
        .await;
    assert_eq!(code, 202, "{r}");
    let id = r["run_id"].as_str().unwrap().to_string();
    doomed.exited("the fault did not fire").await;
    let died = Instant::now();
    assert_eq!(
        sim.breaker_state("stripe").unwrap(),
        "OPEN",
        "never executed"
    );
    let rec = eventually(
        "the survivor marks the run interrupted",
        LEASE_SECS + 5,
        || async {
            let rec = survivor.get(&format!("/v1/runs/{id}")).await;
            (rec["status"] == "interrupted").then_some(rec)
        },
    )
    .await;
    assert!(
        died.elapsed() <= Duration::from_secs(LEASE_SECS + 2),
        "{:?}",
        died.elapsed()
    );
    let a = actions_on(&rec, "breaker:stripe");
    assert_eq!(a.len(), 1, "{rec}");
    assert_eq!(a[0]["applied"], "interrupted");
    assert!(
        a[0]["error"].as_str().unwrap().contains("replica a"),
        "{rec}"
    );
    let (_, report) = survivor.get_as("", &format!("/v1/runs/{id}/report")).await;
    assert!(report.contains("was interrupted"), "{report}");
    let audit = survivor.get("/v1/audit").await;
    let lost: Vec<&Value> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "replica.lost")
        .collect();
    assert_eq!(lost.len(), 1, "{audit}");
    assert_eq!(lost[0]["detail"]["actions_interrupted"], 1);
    // The replica list is re-read at the survivor's next heartbeat.
    eventually("the cluster lists the survivor alone", 3, || async {
        let cluster = survivor.get("/v1/cluster").await;
        (cluster["replicas"].as_array().unwrap().len() == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_approval_decided_on_two_replicas_runs_once_and_a_pause_reaches_both() {
    let db = Db::new("approve").await;
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    sim.open_breaker("stripe");
    let breaker = "mode = \"approve\"\nverify_after = \"1h\"";
    let a = breaker_replica(dir.path(), &sim, &db, "a", breaker, &[]);
    let b = breaker_replica(dir.path(), &sim, &db, "b", breaker, &[]);
    let (code, plan) = a
        .post("/v1/plugins/circuit-breaker-open/runs?wait=true", json!({}))
        .await;
    assert_eq!(code, 200, "{plan}");
    assert_eq!(plan["status"], "pending_approval", "{plan}");
    let id = plan["id"].as_str().unwrap();
    let path = format!("/v1/runs/{id}/approve");
    let (x, y) = tokio::join!(a.post(&path, json!({})), b.post(&path, json!({})));
    let mut codes = [x.0, y.0];
    codes.sort();
    assert_eq!(codes, [202, 409], "{x:?} {y:?}");
    let won = if x.0 == 202 { &x.1 } else { &y.1 };
    let live = won["live_run"].as_str().unwrap();
    let rec = b.finished(live).await;
    assert_eq!(
        actions_on(&rec, "breaker:stripe")[0]["applied"],
        "executed",
        "{rec}"
    );
    let live_runs = a.get("/v1/runs?limit=100").await["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["approval_of"] == id)
        .count();
    assert_eq!(live_runs, 1);

    // The kill switch pulled on one replica holds on the other within a
    // heartbeat.
    let (code, _) = a
        .post("/v1/admin/pause", json!({"reason": "maintenance"}))
        .await;
    assert_eq!(code, 200);
    let pulled = Instant::now();
    eventually("the other replica is paused", 3, || async {
        let p = b.get("/v1/admin/pause").await;
        (!p["paused"].is_null()).then_some(())
    })
    .await;
    // A heartbeat (1 s) and the requests around it; the bound is loose
    // because the suite shares two cores (live actions see the pause at
    // once, in the ledger, whatever this delay).
    assert!(
        pulled.elapsed() < Duration::from_secs(2),
        "{:?}",
        pulled.elapsed()
    );
    assert!(b.text("/metrics").await.contains("remedy_paused 1"));
}

/// A run of `plugin` on `r`, finished (`?wait=true`): its id.
async fn finished_run(r: &Server, plugin: &str) -> String {
    let (code, rec) = r
        .post(
            &format!("/v1/plugins/{plugin}/runs?wait=true"),
            json!({"dry_run": true}),
        )
        .await;
    assert_eq!(code, 200, "{rec}");
    rec["id"].as_str().unwrap().to_string()
}

/// Reads `feed` until every run of `runs` has finished in it; answers each
/// run's event types in the order they came, and the replica they named.
async fn until_finished(
    feed: &mut Feed,
    runs: &[String],
) -> std::collections::HashMap<String, (Vec<String>, Vec<Value>)> {
    let mut seen: std::collections::HashMap<String, (Vec<String>, Vec<Value>)> =
        std::collections::HashMap::new();
    while !runs.iter().all(|r| {
        seen.get(r)
            .is_some_and(|(kinds, _)| kinds.iter().any(|k| k == "run.finished"))
    }) {
        let (kind, ev) = feed.next().await;
        if let Some(run) = ev["run_id"].as_str() {
            let entry = seen.entry(run.to_string()).or_default();
            entry.0.push(kind);
            entry.1.push(ev["replica"].clone());
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_replica_s_feed_shows_the_whole_cluster_s_runs_in_order() {
    let db = Db::new("events").await;
    let dir = tempfile::tempdir().unwrap();
    let plugin = "db-connection-exhaustion";
    let replicas = three(
        dir.path(),
        &db,
        |server| format!("[server]\n{server}\n[plugins.{plugin}]\nmode = \"dry-run\"\n"),
        &[],
    );
    let (r1, r2, r3) = (&replicas[0], &replicas[1], &replicas[2]);
    let mut on_r1 = Feed::open(r1, "").await;
    let mut on_r3 = Feed::open(r3, "").await;
    // The other replicas hear that a feed is watched within moments of
    // its opening: until then a run of theirs may be missed, so the first
    // is repeated until it shows.
    let mut shown = false;
    for _ in 0..20 {
        let first = finished_run(r2, plugin).await;
        let got = tokio::time::timeout(
            Duration::from_secs(2),
            until_finished(&mut on_r1, std::slice::from_ref(&first)),
        )
        .await;
        if got.is_ok() {
            shown = true;
            break;
        }
    }
    assert!(shown, "r1's feed never showed a run of r2");

    let mut runs = Vec::new();
    let mut from = std::collections::HashMap::new();
    for (r, name) in [(r2, "r2"), (r3, "r3"), (r1, "r1"), (r2, "r2"), (r3, "r3")] {
        for _ in 0..3 {
            let id = finished_run(r, plugin).await;
            from.insert(id.clone(), name);
            runs.push(id);
        }
    }
    for (feed, watcher) in [(&mut on_r1, "r1"), (&mut on_r3, "r3")] {
        let seen = until_finished(feed, &runs).await;
        for id in &runs {
            let (kinds, replicas) = &seen[id];
            let started = kinds.iter().position(|k| k == "run.started");
            let finished = kinds.iter().position(|k| k == "run.finished");
            assert!(
                matches!((started, finished), (Some(s), Some(f)) if s < f),
                "{watcher}'s feed: run {id} of {}: {kinds:?}",
                from[id]
            );
            assert!(
                replicas.iter().all(|r| r == from[id]),
                "{watcher}'s feed names the replica each event happened on: {replicas:?}"
            );
        }
    }

    // An alert received by r3 shows in r1's feed with the run it started.
    let (code, receipt) = r3
        .post(
            "/v1/alerts",
            payload(vec![alert(
                "DatabaseConnectionExhaustion",
                "firing",
                json!({"instance": "db-feed"}),
                "feed-1",
                "2026-12-07T03:10:00Z",
            )]),
        )
        .await;
    assert_eq!(code, 202, "{receipt}");
    let run = receipt["runs"][0]["run_id"].as_str().unwrap().to_string();
    let (received, _) = on_r1.until("alert.received", None).await;
    assert_eq!(received["replica"], "r3", "{received}");
    assert_eq!(received["detail"]["runs"][0]["run_id"], run.as_str());
    let (finished, _) = on_r1.until("run.finished", Some(&run)).await;
    assert_eq!(finished["replica"], "r3", "{finished}");
}
