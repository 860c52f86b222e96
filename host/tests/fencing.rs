//! Exactly once when a replica stalls past its lease (issue 28): real
//! `remedy serve` processes on one PostgreSQL, paused with SIGSTOP. A
//! replica that was taken over while it stood still must not act for the
//! runs a survivor took: each action is counted at the backend (the
//! breaker admin API), not in Remedy's own records.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

mod common;
use common::*;

/// The shortest lease allowed.
const LEASE_SECS: u64 = 3;

/// A `[plugins.hostile]` section: sleeps `ms` in detect.
fn sleeper(dir: &Path, ms: u64) -> String {
    let wasm = dir.join("hostile.wasm");
    std::fs::copy(remedy_e2e::test_plugin("hostile"), &wasm).unwrap();
    format!(
        "[plugins.hostile]\npath = \"{}\"\ntimeout_ms = 20000\nconfig = {{ behave = \"sleep\", sleep_ms = {ms} }}\n",
        wasm.display()
    )
}

/// Replica `name` on `db`: circuit-breaker-open live against `sim` with a
/// 1 h cooldown, one run slot, and the sleeper.
fn replica(dir: &Path, sim: &servio_sim::Sim, db: &Db, name: &str, sleep_ms: u64) -> Server {
    replica_verifying(dir, sim, db, name, sleep_ms, "1h")
}

/// `replica`, verifying `verify_after` after a live mitigation.
fn replica_verifying(
    dir: &Path,
    sim: &servio_sim::Sim,
    db: &Db,
    name: &str,
    sleep_ms: u64,
    verify_after: &str,
) -> Server {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let server = format!(
        "store = \"{}\"\nreplica = \"{name}\"\nlease = \"{LEASE_SECS}s\"\nmax_concurrent_runs = 1",
        db.url()
    );
    // Deadlines far above the slow admin API of the second test and above
    // a stall on a loaded machine: a run that timed out during the stall
    // would never reach the action the second test is about.
    let plugin = format!(
        "mode = \"auto\"\nverify_after = \"{verify_after}\"\ncooldown = \"1h\"\n\
         timeout_ms = 60000\nmitigate_timeout_ms = 60000"
    );
    let tail = sleeper(&home, sleep_ms);
    start_logged(
        &home,
        &breaker_config(&home, sim, &server, &plugin, &tail),
        &[],
    )
}

async fn executed(db: &Db, run: &str) -> i64 {
    db.client()
        .await
        .query_one(
            "SELECT count(*) FROM actions WHERE run_id = $1 AND status = 'executed'",
            &[&run],
        )
        .await
        .unwrap()
        .get(0)
}

fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name).join("remedy.log")).unwrap_or_default()
}

async fn status_of(server: &Server, id: &str) -> String {
    server.get(&format!("/v1/runs/{id}")).await["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Finding 1: a live run queued on A behind a slow dry run; A stops for
/// longer than its lease; B takes the run over and executes it; the
/// breaker is opened again and A resumed. A must drop its copy of the run
/// (fenced) instead of executing it a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stalled_past_its_lease_does_not_run_a_taken_over_run_again() {
    let db = Db::new("fence_queued").await;
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    sim.open_breaker("stripe");
    let a = replica(dir.path(), &sim, &db, "a", 6000);
    let b = replica(dir.path(), &sim, &db, "b", 6000);

    let (code, r) = a
        .post("/v1/plugins/hostile/runs", json!({"dry_run": true}))
        .await;
    assert_eq!(code, 202, "{r}");
    let slow = r["run_id"].as_str().unwrap().to_string();
    eventually("the slow run holds the slot", 10, || async {
        (status_of(&a, &slow).await == "running").then_some(())
    })
    .await;
    let (code, r) = a
        .post("/v1/plugins/circuit-breaker-open/runs", json!({}))
        .await;
    assert_eq!(code, 202, "{r}");
    let y = r["run_id"].as_str().unwrap().to_string();
    assert_eq!(status_of(&a, &y).await, "queued");

    signal(&a, "-STOP");
    let rec = b
        .succeeded(&y, "B takes the queued run over and runs it", 20)
        .await;
    assert_eq!(
        actions_on(&rec, "breaker:stripe")[0]["applied"],
        "executed",
        "{rec}"
    );
    assert_eq!(sim.forced(), 1);
    // Stuck again: a second run of Y would act again if it could.
    sim.open_breaker("stripe");
    signal(&a, "-CONT");

    // Until A drops its copy, or acts a second time (before the fix).
    eventually("A drops its copy of the run, or acts", 20, || async {
        (log(dir.path(), "a").contains("fenced out: run dropped without acting")
            || sim.forced() != 1)
            .then_some(())
    })
    .await;
    assert_eq!(sim.forced(), 1, "the breaker was forced a second time");
    // A lives on as a new incarnation and serves.
    eventually("A is back in the cluster", 10, || async {
        let c = b.get("/v1/cluster").await;
        let alive = c["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["alive"] == true)
            .count();
        (alive == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.forced(), 1, "the breaker was forced a second time");
    assert_eq!(executed(&db, &y).await, 1);
    let rec = b.get(&format!("/v1/runs/{y}")).await;
    assert_eq!(rec["status"], "succeeded", "{rec}");
    assert_eq!(actions_on(&rec, "breaker:stripe").len(), 1, "{rec}");
    // The slow dry run A had running was marked interrupted by B and A's
    // late record of it did not overwrite that.
    let slow_rec = b.get(&format!("/v1/runs/{slow}")).await;
    assert_eq!(slow_rec["status"], "interrupted", "{slow_rec}");
    assert_eq!(a.get("/healthz").await["status"], "ok");
}

/// Finding 1, second half: a live run *running* on A when A stops (its
/// detection waiting on a slow admin API). B marks it interrupted. When A
/// wakes, the plugin goes on to its action: the intent is refused, the
/// breaker is not touched, and A does not overwrite the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_run_of_a_replica_taken_over_acts_no_more_when_it_wakes() {
    let db = Db::new("fence_running").await;
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    sim.open_breaker("stripe");
    let a = replica(dir.path(), &sim, &db, "a", 10);
    let b = replica(dir.path(), &sim, &db, "b", 10);
    // Each read of the breaker admin API takes 3 s: detect and mitigate
    // each read once, so the action comes ~6 s after the start.
    sim.set_admin_delay(3000, 0);
    let (code, r) = a
        .post("/v1/plugins/circuit-breaker-open/runs", json!({}))
        .await;
    assert_eq!(code, 202, "{r}");
    let id = r["run_id"].as_str().unwrap().to_string();
    assert_eq!(status_of(&a, &id).await, "running");
    signal(&a, "-STOP");
    eventually("B marks the run interrupted", 20, || async {
        (status_of(&b, &id).await == "interrupted").then_some(())
    })
    .await;
    signal(&a, "-CONT");
    eventually("A's action is refused, or taken", 40, || async {
        (log(dir.path(), "a").contains("fenced out: action refused") || sim.forced() != 0)
            .then_some(())
    })
    .await;
    assert_eq!(sim.forced(), 0, "a run already interrupted acted");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.forced(), 0, "a run already interrupted acted");
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");
    assert_eq!(executed(&db, &id).await, 0);
    let rec = b.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(rec["status"], "interrupted", "{rec}");
    assert!(
        log(dir.path(), "a").contains("fenced out: run record dropped"),
        "{}",
        log(dir.path(), "a")
    );
}

/// A verification is the replica's that owns the run: when A stalls after
/// a live mitigation, B takes its verification over; A, waking past the
/// due time, must not verify (and escalate) a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_taken_over_runs_once() {
    let db = Db::new("fence_verify").await;
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    sim.open_breaker("stripe");
    let a = replica_verifying(dir.path(), &sim, &db, "a", 10, "8s");
    let b = replica_verifying(dir.path(), &sim, &db, "b", 10, "8s");
    let (code, r) = a
        .post("/v1/plugins/circuit-breaker-open/runs?wait=true", json!({}))
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["status"], "succeeded", "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(sim.forced(), 1);
    signal(&a, "-STOP");
    // Not resolved when verified: the breaker opened again.
    sim.open_breaker("stripe");
    let verifications = || async {
        let n: i64 = db
            .client()
            .await
            .query_one(
                "SELECT count(*) FROM audit WHERE run_id = $1 AND event = 'verification'",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        n
    };
    eventually("B verifies the run it took over", 30, || async {
        (verifications().await == 1).then_some(())
    })
    .await;
    signal(&a, "-CONT");
    eventually(
        "A drops its verification, or verifies again",
        20,
        || async {
            (log(dir.path(), "a").contains("verification dropped") || verifications().await > 1)
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(verifications().await, 1, "verified twice");
    let rec = b.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(rec["verification"], "not_resolved", "{rec}");
}
