//! The PostgreSQL store against the real server on 127.0.0.1:5432, each
//! test in a database of its own (dropped at the end): what the database
//! itself guarantees when several replicas share it.

use std::sync::Arc;
use std::time::Duration;

use remedy::action::{ActionKind, Budget};
use remedy::guardrails::{Intent, Ledger, Refusal};
use remedy::record::{Applied, PluginRef, RunRecord, RunStatus, Trigger};
use remedy::store::{PgStore, Replica, Store, StoredAlert};

use common::Db;

/// A replica with a lease of `ms` (tests go below the configurable 3 s).
fn replica(name: &str, ms: u64) -> Replica {
    Replica::new(name.into(), Duration::from_millis(ms))
}

async fn connect(db: &Db, name: &str) -> PgStore {
    PgStore::connect(&db.url(), replica(name, 5_000), None)
        .await
        .unwrap()
}

fn run(id: &str, status: RunStatus) -> RunRecord {
    let mut r = RunRecord::begin(
        id.to_string(),
        &PluginRef {
            name: "db".into(),
            version: "1".into(),
            digest: "sha256:0".into(),
        },
        Trigger::Manual { by: "test".into() },
        false,
        status,
    );
    r.target = Some("t".into());
    r
}

fn terminate(run: &str, max: u32) -> Intent {
    Intent {
        run_id: run.into(),
        plugin: "db".into(),
        kind: ActionKind::DatabaseTerminate,
        target: format!("pid:{run}"),
        reason: "test".into(),
        at: chrono::Utc::now(),
        budget: Budget {
            max,
            per: Duration::from_secs(3600),
        },
        cooldown: None,
        cooldown_key: format!("application:{run}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_alerts_approvals_and_the_kill_switch_hold_across_two_replicas() {
    let db = Db::new("contract").await;
    // Replicas starting together on an empty database all get the schema.
    let (a, b, c) = tokio::join!(connect(&db, "a"), connect(&db, "b"), connect(&db, "c"));
    c.leave().await.unwrap();
    assert!(a.healthy());

    // A run written by one replica is read by the other.
    a.put_run(&run("r1", RunStatus::Succeeded)).await.unwrap();
    let got = b.get_run("r1").await.unwrap().unwrap();
    assert_eq!(got.status, RunStatus::Succeeded);
    assert_eq!(b.list_runs(Default::default()).await.unwrap().len(), 1);
    // The console's chart: counted by hour and status, by the database.
    let counts = b.run_counts("2000-01-01T00:00:00Z").await.unwrap();
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert_eq!(
        (counts[0].status.as_str(), counts[0].runs),
        ("succeeded", 1)
    );
    assert_eq!(counts[0].hour.len(), 13, "YYYY-MM-DDTHH: {counts:?}");

    // One alert, received by both replicas at once: stored once, its run once.
    let alert = StoredAlert {
        fingerprint: "f1".into(),
        starts_at: "2026-01-01T00:00:00Z".into(),
        status: "firing".into(),
        name: "X".into(),
        received_at: remedy::record::timestamp(chrono::Utc::now()),
        alert: serde_json::json!({"labels": {}}),
    };
    let (from_a, from_b) = (
        [run("from-a", RunStatus::Queued)],
        [run("from-b", RunStatus::Queued)],
    );
    let (x, y) = tokio::join!(
        a.receive(vec![(alert.clone(), &from_a[..])]),
        b.receive(vec![(alert.clone(), &from_b[..])]),
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(
        [x[0], y[0]].iter().filter(|n| **n).count(),
        1,
        "{x:?} {y:?}"
    );
    assert_eq!(a.list_alerts(10).await.unwrap().len(), 1);
    let queued = remedy::store::RunFilter {
        status: Some("queued".into()),
        ..Default::default()
    };
    assert_eq!(a.list_runs(queued).await.unwrap().len(), 1);

    // A plan decided on both replicas at once: one wins.
    a.put_run(&run("plan", RunStatus::PendingApproval))
        .await
        .unwrap();
    let (reject, approve) = (
        run("plan", RunStatus::Rejected),
        run("plan", RunStatus::Succeeded),
    );
    let (x, y) = tokio::join!(a.decide(&reject, 0), b.decide(&approve, 0));
    assert_ne!(x.unwrap(), y.unwrap(), "exactly one decision");

    // Two approvals of one plan from stale reads: each counts, none lost.
    approvals_count_once(&a, &b).await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = remedy::store::SqliteStore::open(dir.path()).unwrap();
    approvals_count_once(&sqlite, &sqlite).await;
    settings_by_prefix(&a, &b).await;
    settings_by_prefix(&sqlite, &sqlite).await;

    // The kill switch pulled on one replica is seen by the other.
    let pause = remedy::killswitch::Pause {
        by: "ops".into(),
        reason: Some("maintenance".into()),
        at: remedy::record::timestamp(chrono::Utc::now()),
    };
    a.set_pause(Some(pause.clone())).await.unwrap();
    assert_eq!(b.pause().await.unwrap(), Some(pause));
    b.set_pause(None).await.unwrap();
    assert_eq!(a.pause().await.unwrap(), None);
}

/// Settings listed by key prefix, written on one replica and read on the
/// other; `_` and `%` in a prefix are no wildcards.
async fn settings_by_prefix(a: &dyn Store, b: &dyn Store) {
    a.put_setting("flapping:fp_1", Some("one")).await.unwrap();
    a.put_setting("flapping:fp_2", Some("two")).await.unwrap();
    a.put_setting("flappingX", Some("no")).await.unwrap();
    let under = b.settings_under("flapping:").await.unwrap();
    assert_eq!(
        under,
        [
            ("flapping:fp_1".to_string(), "one".to_string()),
            ("flapping:fp_2".to_string(), "two".to_string())
        ]
    );
    assert_eq!(b.settings_under("flapping:fp_").await.unwrap().len(), 2);
    assert!(b.settings_under("flapping:fp%").await.unwrap().is_empty());
    for k in ["flapping:fp_1", "flapping:fp_2", "flappingX"] {
        a.put_setting(k, None).await.unwrap();
    }
}

/// Alice and Bob both read a plan with no approval; Alice's is stored
/// first. Bob's write, made from what he read, is refused (it would erase
/// Alice's); read again, it is stored beside hers.
async fn approvals_count_once(a: &dyn Store, b: &dyn Store) {
    let mut plan = run("two-person", RunStatus::PendingApproval);
    plan.approval = Some(remedy::record::Approval::new(
        Vec::new(),
        chrono::Utc::now() + chrono::Duration::hours(1),
        2,
    ));
    a.put_run(&plan).await.unwrap();
    let vote = |rec: &RunRecord, by: &str| {
        let mut r = rec.clone();
        r.approval
            .as_mut()
            .unwrap()
            .approvals
            .push(remedy::record::Vote {
                by: by.into(),
                at: chrono::Utc::now(),
            });
        r
    };
    assert!(a.decide(&vote(&plan, "alice"), 0).await.unwrap());
    assert!(
        !b.decide(&vote(&plan, "bob"), 0).await.unwrap(),
        "a stale read does not overwrite"
    );
    let read = b.get_run("two-person").await.unwrap().unwrap();
    assert_eq!(read.approval.as_ref().unwrap().approvals.len(), 1);
    assert!(b.decide(&vote(&read, "bob"), 1).await.unwrap());
    let both = a.get_run("two-person").await.unwrap().unwrap();
    let by: Vec<&str> = both
        .approval
        .as_ref()
        .unwrap()
        .approvals
        .iter()
        .map(|v| v.by.as_str())
        .collect();
    assert_eq!(by, ["alice", "bob"]);
}

/// Fifty intents from two replicas at once against a budget of 3: three
/// pass, the rest are refused, and what was refused was not recorded.
/// A payload's repeats are looked up in one query: one answer per key, in
/// the keys' order, newest run first, none for an alert or a plugin
/// without runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_of_several_alerts_are_answered_in_the_order_asked() {
    let db = Db::new("alert_runs").await;
    let store = connect(&db, "a").await;
    let alert_run = |id: &str, fingerprint: &str, after_s: i64| {
        let mut r = run(id, RunStatus::Failed);
        r.trigger = Trigger::Alert {
            alert: remedy::record::AlertInfo {
                name: "A".into(),
                firing: true,
                labels: Default::default(),
                annotations: Default::default(),
                starts_at: "2026-11-28T00:00:00Z".into(),
                fingerprint: fingerprint.into(),
            },
        };
        r.started_at += chrono::Duration::seconds(after_s);
        r
    };
    for r in [
        alert_run("fp-1-first", "fp-1", 0),
        alert_run("fp-1-later", "fp-1", 1),
        alert_run("fp-2", "fp-2", 0),
    ] {
        store.put_run(&r).await.unwrap();
    }
    let key = |plugin: &str, fingerprint: &str| remedy::store::AlertKey {
        plugin: plugin.into(),
        fingerprint: fingerprint.into(),
        starts_at: "2026-11-28T00:00:00Z".into(),
    };
    let found = store
        .runs_for_alerts(&[
            key("db", "fp-2"),
            key("db", "fp-1"),
            key("db", "fp-3"),
            key("other", "fp-1"),
        ])
        .await
        .unwrap();
    let ids: Vec<Vec<&str>> = found
        .iter()
        .map(|runs| runs.iter().map(|r| r.id.as_str()).collect())
        .collect();
    assert_eq!(
        ids,
        [
            vec!["fp-2"],
            vec!["fp-1-later", "fp-1-first"],
            vec![],
            vec![]
        ]
    );
    assert!(store.runs_for_alerts(&[]).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_never_overspend_a_budget() {
    let db = Db::new("budget").await;
    let a = Arc::new(connect(&db, "a").await);
    let b = Arc::new(connect(&db, "b").await);
    // Every pooled connection open first, and all intents released at
    // once, so that they really overlap (without the ledger lock this
    // overspends).
    let mut warm = tokio::task::JoinSet::new();
    for s in [&a, &b] {
        for _ in 0..16 {
            let s = s.clone();
            warm.spawn(async move { s.get_run("none").await });
        }
    }
    warm.join_all().await;
    let go = Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = Vec::new();
    for n in 0..50 {
        let store = if n % 2 == 0 { a.clone() } else { b.clone() };
        let go = go.clone();
        tasks.push(tokio::spawn(async move {
            go.wait().await;
            store.intend(terminate(&format!("run{n}"), 3)).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(Refusal::Guardrail(m)) => assert!(m.contains("budget"), "{m}"),
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(ok, 3);
    // What the console shows is what the ledger decided with, from either
    // replica; another kind's budget is untouched.
    let hour = Duration::from_secs(3600);
    assert_eq!(
        a.run_counts("2000-01-01T00").await.unwrap(),
        vec![],
        "no runs yet"
    );
    for s in [&a, &b] {
        assert_eq!(
            s.budget_used("db", ActionKind::DatabaseTerminate, hour)
                .await
                .unwrap(),
            3
        );
        assert_eq!(
            s.budget_used("db", ActionKind::DatabaseCancel, hour)
                .await
                .unwrap(),
            0
        );
    }
}

/// What a replica that stopped left (a running run with an unsettled
/// intent, a queued run, a live run awaiting verification, a flight) is
/// taken over by a survivor once its lease expires, not before: the run
/// and intent read `interrupted` (ledger, record, audit), the queued run
/// and the verification become the survivor's, the flight is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replicas_work_is_taken_over_after_its_lease_and_a_newer_schema_refused() {
    let db = Db::new("takeover").await;
    let b = connect(&db, "survivor").await;
    {
        let a = PgStore::connect(&db.url(), replica("doomed", 600), None)
            .await
            .unwrap();
        a.put_run(&run("in-flight", RunStatus::Running))
            .await
            .unwrap();
        a.intend(terminate("in-flight", 5)).await.unwrap();
        a.put_run(&run("waiting", RunStatus::Queued)).await.unwrap();
        let mut acted = run("acted", RunStatus::Succeeded);
        acted.actions.push(remedy::record::ActionRecord {
            kind: ActionKind::DatabaseTerminate,
            target: "pid:1".into(),
            reason: "leak".into(),
            applied: Applied::Executed,
            error: None,
            at: chrono::Utc::now(),
            incident: None,
            result: None,
        });
        a.put_run(&acted).await.unwrap();
        assert!(a.claim_flight("db", "t", "in-flight").await.unwrap());
        // Dropped without leaving: as if killed.
    }
    // Within the lease nothing is taken.
    let early = b.take_over().await.unwrap();
    assert!(early.replicas.is_empty() && early.queued.is_empty());
    assert!(!b.claim_flight("db", "t", "next").await.unwrap());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let orphans = b.take_over().await.unwrap();
    assert_eq!(orphans.replicas, ["doomed"]);
    assert_eq!(orphans.queued.len(), 1);
    assert_eq!(orphans.queued[0].id, "waiting");
    assert_eq!(orphans.unverified.len(), 1);
    assert_eq!(orphans.unverified[0].id, "acted");
    let rec = b.get_run("in-flight").await.unwrap().unwrap();
    assert_eq!(rec.status, RunStatus::Interrupted);
    assert!(rec.error.as_deref().unwrap().contains("doomed"), "{rec:?}");
    assert_eq!(rec.actions.len(), 1);
    assert_eq!(rec.actions[0].applied, Applied::Interrupted);
    let audit = b
        .list_audit(remedy::store::AuditFilter::default())
        .await
        .unwrap();
    assert!(audit.iter().any(|e| e.event == "action.interrupted"));
    assert!(audit.iter().any(|e| e.event == "replica.lost"));
    assert!(b.claim_flight("db", "t", "next").await.unwrap());
    // Taken once: a second survivor finds nothing left.
    assert!(b.take_over().await.unwrap().replicas.is_empty());
    // The budget still counts the interrupted action: it may have taken effect.
    assert!(matches!(
        b.intend(terminate("next", 1)).await,
        Err(Refusal::Guardrail(_))
    ));
    let alive: Vec<String> = b
        .heartbeat()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(alive, ["survivor"]);

    // A migration this binary does not know: refused, not written over.
    let (c, conn) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.batch_execute(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
         VALUES (999, 'from_the_future', '2027-01-01T00:00:00Z', '0')",
    )
    .await
    .unwrap();
    drop(c);
    let err = PgStore::connect(&db.url(), replica("new", 5_000), None)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("schema"), "{err}");
}

/// Leases, ticks, flights and the kill switch, each arbitrated by the
/// database between two replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_ticks_flights_and_the_kill_switch_are_decided_by_the_database() {
    let db = Db::new("coord").await;
    let a = connect(&db, "a").await;
    let b = connect(&db, "b").await;
    let a_id = a.heartbeat().await.unwrap()[0].id.clone();
    assert_eq!(a.lease("scheduler").await.unwrap(), Some(a_id.clone()));
    assert_eq!(b.lease("scheduler").await.unwrap(), Some(a_id.clone()));
    // Given up, it goes to the next replica that asks.
    a.release_leases().await.unwrap();
    let b_holds = b.lease("scheduler").await.unwrap().unwrap();
    assert_ne!(b_holds, a_id);
    assert_eq!(a.lease("scheduler").await.unwrap(), Some(b_holds));

    assert!(a
        .claim_tick("p", "s", "2026-01-01T00:00:01Z")
        .await
        .unwrap());
    assert!(!b
        .claim_tick("p", "s", "2026-01-01T00:00:01Z")
        .await
        .unwrap());
    assert!(b
        .claim_tick("p", "s", "2026-01-01T00:00:02Z")
        .await
        .unwrap());

    assert!(a.claim_flight("p", "t", "r1").await.unwrap());
    assert!(!b.claim_flight("p", "t", "r2").await.unwrap());
    // The run holding it may claim again (a resumed run).
    assert!(a.claim_flight("p", "t", "r1").await.unwrap());
    a.release_flight("p", "t", "r1").await.unwrap();
    assert!(b.claim_flight("p", "t", "r2").await.unwrap());

    // A pause stored by one replica refuses the other's next live action
    // at once, in the ledger; notifications still go out.
    a.set_pause(Some(remedy::killswitch::Pause {
        by: "ops".into(),
        at: remedy::record::timestamp(chrono::Utc::now()),
        reason: None,
    }))
    .await
    .unwrap();
    match b.intend(terminate("paused", 5)).await {
        Err(Refusal::Guardrail(m)) => assert!(m.contains("kill switch"), "{m}"),
        other => panic!("{other:?}"),
    }
    let mut page = terminate("paused", 5);
    page.kind = ActionKind::NotifySend;
    assert!(b.intend(page).await.is_ok());
    b.set_pause(None).await.unwrap();
    assert!(b.intend(terminate("resumed", 5)).await.is_ok());

    // A clean stop expires the heartbeat at once.
    a.leave().await.unwrap();
    let rows = b.heartbeat().await.unwrap();
    assert_eq!(rows.iter().filter(|r| r.alive).count(), 1);
    assert_eq!(b.take_over().await.unwrap().replicas, ["a"]);
}

/// Runs `work` on a thread of its own marked urgent (as the service's
/// urgent runtime marks its threads), on a runtime of that thread.
fn on_an_urgent_thread<F, Fut>(work: F) -> Fut::Output
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future,
    Fut::Output: Send + 'static,
{
    std::thread::spawn(move || {
        remedy::store::mark_urgent_thread();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work())
    })
    .join()
    .unwrap()
}

/// In a storm, thousands of queued runs wait for the store's connections,
/// first come, first served, and a critical alert's writes waited behind
/// them: on PostgreSQL its run started ~1.1 s after its receipt. Writes
/// made on a thread marked urgent (the service's urgent runtime marks its
/// own) take connections kept for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_writes_do_not_wait_for_a_pool_the_storm_holds() {
    let db = Db::new("urgent").await;
    let store = Arc::new(connect(&db, "a").await);
    // `runs` locked: every run write blocks in the database, holding its
    // connection; twice as many as the pool has wait for one.
    let mut locker = db.client().await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let stuck: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .put_run(&run(&format!("stuck-{i}"), RunStatus::Running))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A write to another table, from an ordinary thread: no connection.
    let plain = tokio::time::timeout(
        Duration::from_millis(500),
        store.claim_flight("p", "plain", "r0"),
    )
    .await;
    assert!(plain.is_err(), "the pool should be held: {plain:?}");
    let urgent = on_an_urgent_thread({
        let store = store.clone();
        move || async move {
            tokio::time::timeout(
                Duration::from_secs(5),
                store.claim_flight("p", "urgent", "r1"),
            )
            .await
        }
    });
    assert!(matches!(urgent, Ok(Ok(true))), "{urgent:?}");
    lock.rollback().await.unwrap();
    for h in stuck {
        h.await.unwrap().unwrap();
    }
}

mod common;

/// `remedy serve` on the PostgreSQL store: a run it makes is in the
/// database, and its API reads it back from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_its_runs_in_postgres() {
    let db = Db::new("serve").await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\ndata_dir = \"{}\"\nstore = \"{}\"\n",
        dir.path().join("data").display(),
        db.url()
    );
    let server = common::start(dir.path(), &config, &[]);
    let (code, rec) = server
        .post(
            "/v1/plugins/db-connection-exhaustion/runs?wait=true",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(code, 200, "{rec}");
    let id = rec["id"].as_str().unwrap().to_string();
    let (c, conn) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = c
        .query_one("SELECT plugin, status FROM runs WHERE id = $1", &[&id])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "db-connection-exhaustion");
    assert_eq!(row.get::<_, String>(1), rec["status"].as_str().unwrap());
    let again = server.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(again["id"], id.as_str());
    // Nothing went to SQLite.
    assert!(!dir.path().join("data/remedy.db").exists());
}

/// Console sessions: one replica's is read by another until either ends
/// it; an expired one is answered by neither and pruned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_session_is_shared_until_it_ends_or_expires() {
    use remedy::store::StoredSession;
    let db = Db::new("sessions_store").await;
    let (a, b) = (connect(&db, "a").await, connect(&db, "b").await);
    let session = |id: &str| StoredSession {
        id_hash: format!("hash-{id}"),
        token: "on-call".into(),
        binding: format!("binding-{id}"),
    };
    a.create_session(&session("1"), Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(b.session("hash-1").await.unwrap(), Some(session("1")));
    assert_eq!(b.session("hash-2").await.unwrap(), None);
    b.end_session("hash-1").await.unwrap();
    assert_eq!(a.session("hash-1").await.unwrap(), None, "ended on both");

    a.create_session(&session("short"), Duration::from_millis(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(b.session("hash-short").await.unwrap(), None, "expired");
    assert_eq!(db.one("SELECT count(*) FROM sessions").await, 1);
    a.prune("2000-01-01T00:00:00Z", "2000-01-01T00:00:00Z")
        .await
        .unwrap();
    assert_eq!(db.one("SELECT count(*) FROM sessions").await, 0, "pruned");
}

/// Counts the transactions that wrote run rows, and refuses a run whose
/// id is `poison`, as a constraint of the database would.
const TRANSACTIONS_SEEN: &str = r#"
CREATE TABLE tx_seen (txid BIGINT PRIMARY KEY);
CREATE FUNCTION tx_seen() RETURNS trigger AS $$
BEGIN
  IF NEW.id = 'poison' THEN RAISE EXCEPTION 'injected: poison refused'; END IF;
  INSERT INTO tx_seen VALUES (txid_current()) ON CONFLICT DO NOTHING;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER tx_seen BEFORE INSERT OR UPDATE ON runs FOR EACH ROW EXECUTE FUNCTION tx_seen();
"#;

/// Group commit: run records written at once share transactions (each
/// still answered only once committed), and a write the database refuses
/// fails alone, not with the writes it was batched with.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_that_arrive_together_share_a_commit_and_a_bad_one_fails_alone() {
    let db = Db::new("group").await;
    let store = Arc::new(connect(&db, "a").await);
    db.client()
        .await
        .batch_execute(TRANSACTIONS_SEEN)
        .await
        .unwrap();
    let write_all = |ids: Vec<String>| {
        let store = store.clone();
        async move {
            let writes = ids.into_iter().map(|id| {
                let store = store.clone();
                tokio::spawn(async move {
                    let r = store.put_run(&run(&id, RunStatus::Succeeded)).await;
                    (id, r)
                })
            });
            futures_util::future::join_all(writes)
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
        }
    };
    let done = write_all((0..300).map(|i| format!("w-{i}")).collect()).await;
    assert!(done.iter().all(|(_, r)| r.is_ok()), "{done:?}");
    assert_eq!(db.one("SELECT count(*) FROM runs").await, 300);
    let transactions = db.one("SELECT count(*) FROM tx_seen").await;
    assert!(
        transactions <= 100,
        "300 writes at once took {transactions} transactions: they are not batched"
    );

    let mut ids: Vec<String> = (0..50).map(|i| format!("v-{i}")).collect();
    ids.insert(25, "poison".into());
    let done = write_all(ids).await;
    for (id, r) in &done {
        match (id.as_str(), r) {
            ("poison", Err(e)) => assert!(e.to_string().contains("poison refused"), "{e}"),
            ("poison", Ok(())) => panic!("the refused write was answered as stored"),
            (_, r) => assert!(r.is_ok(), "{id}: {r:?}"),
        }
    }
    assert_eq!(db.one("SELECT count(*) FROM runs").await, 350);
    assert!(
        store.healthy(),
        "a refused write is not a store that is down"
    );
}

/// A batch of fenced writes lands those the replica owns and refuses,
/// one by one, those another replica owns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_of_fenced_writes_refuses_only_the_runs_this_replica_lost() {
    let db = Db::new("fencedbatch").await;
    let a = Arc::new(connect(&db, "a").await);
    let b = connect(&db, "b").await;
    let scope_a = a.incarnation();
    let scope_b = b.incarnation();
    let queued = |id: &str| run(id, RunStatus::Queued);
    remedy::store::fence::scope(scope_a.clone(), a.put_run(&queued("mine")))
        .await
        .unwrap();
    remedy::store::fence::scope(scope_b, b.put_run(&queued("theirs")))
        .await
        .unwrap();
    let writes = ["mine", "theirs", "mine-2"].map(|id| {
        let (a, scope) = (a.clone(), scope_a.clone());
        tokio::spawn(async move {
            let rec = if id == "mine-2" {
                queued(id)
            } else {
                run(id, RunStatus::Running)
            };
            remedy::store::fence::scope(scope, async move { a.put_run(&rec).await }).await
        })
    });
    let [mine, theirs, mine_2] = futures_util::future::join_all(writes)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    assert!(mine.is_ok() && mine_2.is_ok(), "{mine:?} {mine_2:?}");
    match theirs {
        Err(remedy::store::StoreError::Fenced(why)) => assert!(why.contains("theirs"), "{why}"),
        other => panic!("another replica's run was written: {other:?}"),
    }
    let status = |id: &'static str| {
        let b = &b;
        async move { b.get_run(id).await.unwrap().unwrap().status }
    };
    assert_eq!(status("mine").await, RunStatus::Running);
    assert_eq!(status("theirs").await, RunStatus::Queued);
}

/// The receipt claims its runs' single flights in its own transaction
/// (where no other run holds them), the final record releases them in its
/// own, and a run of the same replica takes over a claim of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_claims_its_runs_flights_and_the_final_record_releases_them() {
    let db = Db::new("foldclaim").await;
    let a = connect(&db, "a").await;
    let b = connect(&db, "b").await;
    let alert = |fp: &str| StoredAlert {
        fingerprint: fp.into(),
        starts_at: "2026-01-01T00:00:00Z".into(),
        status: "firing".into(),
        name: "X".into(),
        received_at: remedy::record::timestamp(chrono::Utc::now()),
        alert: serde_json::json!({"labels": {}}),
    };
    let first = [run("first", RunStatus::Queued)];
    let (new, claimed) = a
        .receive_and_claim(vec![(alert("f1"), &first[..])])
        .await
        .unwrap();
    assert_eq!(new, [true]);
    assert!(claimed.contains("first"), "{claimed:?}");
    assert_eq!(
        db.one("SELECT count(*) FROM flights WHERE run_id = 'first'")
            .await,
        1
    );
    // Another alert for the same target: stored, its run not claimed.
    let second = [run("second", RunStatus::Queued)];
    let (new, claimed) = b
        .receive_and_claim(vec![(alert("f2"), &second[..])])
        .await
        .unwrap();
    assert_eq!(new, [true]);
    assert!(claimed.is_empty(), "{claimed:?}");
    assert!(!b.claim_flight("db", "t", "second").await.unwrap());
    // A repeat claims nothing.
    let again = [run("again", RunStatus::Queued)];
    let (new, claimed) = a
        .receive_and_claim(vec![(alert("f1"), &again[..])])
        .await
        .unwrap();
    assert_eq!((new, claimed.len()), (vec![false], 0));

    // The final record ends the flight in its commit.
    let scope = a.incarnation();
    remedy::store::fence::scope(
        scope,
        a.finish_run(&run("first", RunStatus::Succeeded), true),
    )
    .await
    .unwrap();
    assert_eq!(db.one("SELECT count(*) FROM flights").await, 0);
    assert!(b.claim_flight("db", "t", "second").await.unwrap());

    // A replica's run takes its own replica's row over (the claimer holds
    // the target in memory); another replica's row it does not.
    assert!(a.claim_flight("db", "u", "x1").await.unwrap());
    assert!(a.claim_flight("db", "u", "x2").await.unwrap());
    assert_eq!(
        db.one("SELECT count(*) FROM flights WHERE target = 'u' AND run_id = 'x2'")
            .await,
        1
    );
    assert!(!a.claim_flight("db", "t", "x3").await.unwrap());
}

/// A critical alert's runs write on the two connections kept for urgent
/// work: final records that also end their flights, more of them at once
/// than there are such connections, must not each hold one while waiting
/// for another (the storm benchmark's critical runs hung so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_final_records_that_release_their_flights_do_not_starve_each_other() {
    let db = Db::new("urgentfinal").await;
    let store = Arc::new(connect(&db, "a").await);
    let done = on_an_urgent_thread({
        let store = store.clone();
        move || async move {
            let scope = store.incarnation();
            let finals = (0..6).map(|i| {
                let (store, scope) = (store.clone(), scope.clone());
                async move {
                    let mut rec = run(&format!("crit-{i}"), RunStatus::Queued);
                    rec.target = Some(format!("t-{i}"));
                    let own = rec.target.clone().unwrap();
                    remedy::store::fence::scope(scope.clone(), store.put_run(&rec)).await?;
                    assert!(store.claim_flight("db", &own, &rec.id).await?);
                    rec.status = RunStatus::Succeeded;
                    remedy::store::fence::scope(scope, store.finish_run(&rec, true)).await
                }
            });
            tokio::time::timeout(
                Duration::from_secs(10),
                futures_util::future::join_all(finals),
            )
            .await
        }
    });
    let results = done.expect("urgent final records hung waiting for connections");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(db.one("SELECT count(*) FROM flights").await, 0);
    assert_eq!(
        db.one("SELECT count(*) FROM runs WHERE status = 'succeeded'")
            .await,
        6
    );
}

/// Publishes on `a` until `b` hears it (b's feed announced first, as an
/// open feed does); answers what b heard.
async fn through(
    a: &dyn remedy::store::bus::Bus,
    b: &dyn remedy::store::bus::Bus,
    heard: &mut tokio::sync::broadcast::Receiver<Arc<remedy::store::bus::Remote>>,
    n: u64,
) -> Option<u64> {
    for _ in 0..30 {
        b.watched_here();
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !a.watched_elsewhere() {
            continue;
        }
        a.publish(serde_json::json!({"type": "run.started", "n": n}).to_string());
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_millis(500), heard.recv()).await {
            assert_eq!(r.from, "a");
            return r.event["n"].as_u64();
        }
    }
    None
}

/// The replicas' live events survive their connection being cut (a
/// PgBouncer restart, `pg_terminate_backend`): the bus connects again and
/// events flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_flow_between_replicas_and_again_after_their_connection_is_cut() {
    let db = Db::new("bus").await;
    let a = connect(&db, "a").await;
    let b = connect(&db, "b").await;
    let (bus_a, bus_b) = (a.bus().unwrap(), b.bus().unwrap());
    let mut heard = bus_b.subscribe();
    assert_eq!(
        through(&*bus_a, &*bus_b, &mut heard, 1).await,
        Some(1),
        "b never heard a"
    );
    let cut = db
        .one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND (query LIKE 'LISTEN%' OR query LIKE '%pg_notify%')",
        )
        .await;
    assert!(cut >= 1, "the listening connections were found");
    while heard.try_recv().is_ok() {}
    let mut again = None;
    for n in 2..6 {
        again = through(&*bus_a, &*bus_b, &mut heard, n).await;
        if again.is_some() {
            break;
        }
    }
    assert!(again.is_some(), "no event after the connection was cut");
}
