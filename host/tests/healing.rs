//! Writes that heal (issue 28): a store that refuses some writes for a
//! while, as a PgBouncer restart or a failover does, must neither freeze a
//! target nor fail a run that never ran. The refusals come from a trigger
//! in the test's own database, switched on and off by the test: the same
//! error the replica sees when its connection dies mid-write.

use std::time::Duration;

use serde_json::json;

mod common;
use common::*;

const LEASE_SECS: u64 = 3;

/// A trigger refusing what `chaos_refuse` names: `final` (run records that
/// are neither queued nor running), `start` (records going `running`),
/// `release` (flight deletes), `claim` (flight inserts).
const REFUSALS: &str = r#"
CREATE TABLE chaos_refuse (what TEXT PRIMARY KEY);
CREATE FUNCTION chaos_runs() RETURNS trigger AS $$
BEGIN
  IF NEW.status NOT IN ('queued', 'running') AND EXISTS (SELECT 1 FROM chaos_refuse WHERE what = 'final') THEN
    RAISE EXCEPTION 'injected: run record refused';
  END IF;
  IF NEW.status = 'running' AND EXISTS (SELECT 1 FROM chaos_refuse WHERE what = 'start') THEN
    RAISE EXCEPTION 'injected: run start refused';
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER chaos_runs BEFORE INSERT OR UPDATE ON runs FOR EACH ROW EXECUTE FUNCTION chaos_runs();
CREATE FUNCTION chaos_flights() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'DELETE' AND EXISTS (SELECT 1 FROM chaos_refuse WHERE what = 'release') THEN
    RAISE EXCEPTION 'injected: flight release refused';
  END IF;
  IF TG_OP = 'INSERT' AND EXISTS (SELECT 1 FROM chaos_refuse WHERE what = 'claim') THEN
    RAISE EXCEPTION 'injected: flight claim refused';
  END IF;
  IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER chaos_flights BEFORE INSERT OR DELETE ON flights FOR EACH ROW EXECUTE FUNCTION chaos_flights();
"#;

fn replica(dir: &std::path::Path, sim: &servio_sim::Sim, db: &Db) -> Server {
    replica_in(dir, sim, db, "dry-run")
}

/// `replica`, with the breaker runbook in `mode`.
fn replica_in(dir: &std::path::Path, sim: &servio_sim::Sim, db: &Db, mode: &str) -> Server {
    let server = format!(
        "store = \"{}\"\nreplica = \"h\"\nlease = \"{LEASE_SECS}s\"",
        db.url()
    );
    let plugin = format!(
        "mode = \"{mode}\"\ncooldown = \"0s\"\ntarget_labels = [\"alertname\", \"breaker\"]\nretry_after = \"1h\"\nverify_after = \"1h\""
    );
    start_logged(dir, &breaker_config(dir, sim, &server, &plugin, ""), &[])
}

async fn refuse(db: &Db, what: &str, on: bool) {
    let sql = if on {
        format!("INSERT INTO chaos_refuse VALUES ('{what}') ON CONFLICT DO NOTHING")
    } else {
        format!("DELETE FROM chaos_refuse WHERE what = '{what}'")
    };
    db.client().await.batch_execute(&sql).await.unwrap();
}

/// Posts one CircuitBreakerOpen alert for `stripe`; answers the receipt.
async fn post_alert(server: &Server, fingerprint: &str) -> serde_json::Value {
    let (code, r) = server
        .post(
            "/v1/alerts",
            payload(vec![alert(
                "CircuitBreakerOpen",
                "firing",
                json!({"breaker": "stripe"}),
                fingerprint,
                "2026-12-07T00:00:00Z",
            )]),
        )
        .await;
    assert_eq!(code, 202, "{r}");
    r
}

/// [`post_alert`], whose run must be queued; answers its id.
async fn queued_run(server: &Server, fingerprint: &str) -> String {
    let r = post_alert(server, fingerprint).await;
    assert_eq!(r["runs"][0]["status"], "queued", "{r}");
    r["runs"][0]["run_id"].as_str().unwrap().to_string()
}

/// Finding 2: the final record and the flight release fail while the
/// replica lives. The record is kept and stored at a heartbeat, the flight
/// is released then, `/healthz` says so while it waits past two leases,
/// and the next alert for the target runs instead of being skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_record_and_flight_release_that_fail_heal_and_the_target_is_not_frozen() {
    let db = Db::new("heal_final").await;
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    sim.open_breaker("stripe");
    let server = replica(dir.path(), &sim, &db);
    db.client().await.batch_execute(REFUSALS).await.unwrap();
    refuse(&db, "final", true).await;
    refuse(&db, "release", true).await;

    let first = queued_run(&server, "heal-1").await;
    eventually("the store refuses the record", 15, || async {
        let log = std::fs::read_to_string(dir.path().join("remedy.log")).unwrap_or_default();
        log.contains("run record not stored; kept").then_some(())
    })
    .await;
    assert_eq!(db.one("SELECT count(*) FROM flights").await, 1);
    let health = server
        .healthz_answers(503, "healthz reports the unwritten record", 15)
        .await;
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["error"]["code"], "records_unwritten", "{body}");

    // Meanwhile the target is this run's: a second alert is skipped.
    let r = post_alert(&server, "heal-2").await;
    assert_eq!(r["runs"][0]["status"], "skipped", "{r}");

    refuse(&db, "final", false).await;
    refuse(&db, "release", false).await;
    let rec = server
        .succeeded(&first, "the record is stored at a heartbeat", 10)
        .await;
    assert_eq!(rec["dry_run"], true, "{rec}");
    eventually("the flight is released", 5, || async {
        (db.one("SELECT count(*) FROM flights").await == 0).then_some(())
    })
    .await;
    assert_eq!(server.get("/healthz").await["status"], "ok");
    // The second alert's `skipped` could not be stored either: its run
    // stayed queued, and is resumed, to end like any other.
    eventually("every run ends", 20, || async {
        let open = db
            .one("SELECT count(*) FROM runs WHERE status IN ('queued', 'running')")
            .await;
        (open == 0).then_some(())
    })
    .await;
    let next = queued_run(&server, "heal-3").await;
    let rec = server.finished(&next).await;
    assert_eq!(rec["status"], "succeeded", "{rec}");
}

/// Finding 3: the single-flight claim cannot be stored for a while. The
/// run is not failed: it stays queued and runs once the store answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_claim_the_store_refused_stays_queued_and_runs_later() {
    let db = Db::new("heal_claim").await;
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    sim.open_breaker("stripe");
    let server = replica(dir.path(), &sim, &db);
    db.client().await.batch_execute(REFUSALS).await.unwrap();
    refuse(&db, "claim", true).await;
    let id = queued_run(&server, "claim-1").await;
    // Longer than the claim's retries (about 3 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rec = server.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(rec["status"], "queued", "not failed: {rec}");
    refuse(&db, "claim", false).await;
    let rec = server
        .succeeded(&id, "the queued run is resumed and ends", 20)
        .await;
    assert!(rec["error"].is_null(), "{rec}");
}

/// Finding 4b: a live run whose `running` write fails does not start (so
/// no later failure of its final write can leave a record that a restart
/// would resume into a second action); it stays queued, and runs once the
/// store answers — acting exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_run_whose_start_was_not_stored_does_not_act_until_it_is() {
    let db = Db::new("heal_start").await;
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    sim.open_breaker("stripe");
    let server = replica_in(dir.path(), &sim, &db, "auto");
    db.client().await.batch_execute(REFUSALS).await.unwrap();
    refuse(&db, "start", true).await;
    let id = queued_run(&server, "start-1").await;
    eventually("the start is refused", 15, || async {
        let log = std::fs::read_to_string(dir.path().join("remedy.log")).unwrap_or_default();
        log.contains("`running` not stored").then_some(())
    })
    .await;
    // Past a heartbeat's resumption, still refused: nothing acted.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sim.forced(), 0, "a run acted without its start stored");
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");
    let rec = server.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(rec["status"], "queued", "{rec}");

    refuse(&db, "start", false).await;
    resumed_and_acted_once(&server, &sim, &id, 1).await;
}

/// Finding 4a: a receipt whose COMMIT went through while its answer was
/// lost leaves `queued` runs in the store that this replica never spawned.
/// The state is made directly (a queued copy of a finished run, owned by
/// the replica, older than the reconciler's grace): the reconciler resumes
/// it at a heartbeat, without a restart, and it acts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_runs_a_lost_receipt_answer_left_are_resumed_without_a_restart() {
    let db = Db::new("heal_receipt").await;
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    sim.open_breaker("stripe");
    let server = replica_in(dir.path(), &sim, &db, "auto");
    let first = queued_run(&server, "receipt-1").await;
    let rec = server.finished(&first).await;
    assert_eq!(rec["status"], "succeeded", "{rec}");
    assert_eq!(sim.forced(), 1);
    sim.open_breaker("stripe");

    // What the lost answer leaves: the run stored, queued, never spawned.
    let lost = db
        .client()
        .await
        .query_one(
            "INSERT INTO runs (id, plugin, status, started_at, alert_fingerprint, alert_starts_at, replica, record) \
             SELECT gen_random_uuid()::text, plugin, 'queued', \
                    to_char((now() AT TIME ZONE 'UTC') - interval '10 seconds', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                    'receipt-2', alert_starts_at, replica, record \
             FROM runs WHERE id = $1 RETURNING id",
            &[&first],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    db.client()
        .await
        .execute(
            "UPDATE runs SET record = (record::jsonb || jsonb_build_object( \
                 'id', id, 'status', 'queued', 'started_at', started_at, \
                 'finished_at', NULL, 'duration_ms', NULL, 'actions', '[]'::jsonb, \
                 'detection', NULL, 'outcome', NULL, 'error', NULL, 'logs', '[]'::jsonb))::text \
             WHERE id = $1",
            &[&lost],
        )
        .await
        .unwrap();
    resumed_and_acted_once(&server, &sim, &lost, 2).await;
}

/// Waits for run `id` to be resumed and succeed with its breaker action
/// executed; then the breaker API must have counted `forced` state changes
/// in all, and no more a moment later.
async fn resumed_and_acted_once(server: &Server, sim: &servio_sim::Sim, id: &str, forced: u64) {
    let rec = server
        .succeeded(id, "the run is resumed and ends", 30)
        .await;
    assert_eq!(
        actions_on(&rec, "breaker:stripe")[0]["applied"],
        "executed",
        "{rec}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.forced(), forced, "acted more than once");
}
