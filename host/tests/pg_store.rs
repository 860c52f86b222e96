//! The PostgreSQL store against the real server on 127.0.0.1:5432, each
//! test in a database of its own (dropped at the end): what the database
//! itself guarantees when several replicas share it.

use std::sync::Arc;
use std::time::Duration;

use remedy::action::{ActionKind, Budget};
use remedy::guardrails::{Intent, Ledger, Refusal};
use remedy::record::{Applied, PluginRef, RunRecord, RunStatus, Trigger};
use remedy::store::{PgStore, Store, StoredAlert};

/// A fresh database; dropped when the guard goes.
struct Db {
    name: String,
}

impl Db {
    async fn new(tag: &str) -> Db {
        let name = format!(
            "remedy_{tag}_{}_{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        admin(&format!("CREATE DATABASE {name}")).await;
        Db { name }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(admin(&format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
        })
        .join();
    }
}

async fn admin(sql: &str) {
    let (c, conn) = tokio_postgres::connect(
        "host=127.0.0.1 user=postgres dbname=test",
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    c.batch_execute(sql).await.unwrap();
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
    let a = PgStore::connect(&db.url()).await.unwrap();
    let b = PgStore::connect(&db.url()).await.unwrap();
    assert!(a.healthy());

    // A run written by one replica is read by the other.
    a.put_run(&run("r1", RunStatus::Succeeded)).await.unwrap();
    let got = b.get_run("r1").await.unwrap().unwrap();
    assert_eq!(got.status, RunStatus::Succeeded);
    assert_eq!(b.list_runs(Default::default()).await.unwrap().len(), 1);

    // One alert, received by both replicas at once: stored once, its run once.
    let alert = StoredAlert {
        fingerprint: "f1".into(),
        starts_at: "2026-01-01T00:00:00Z".into(),
        status: "firing".into(),
        name: "X".into(),
        received_at: remedy::record::timestamp(chrono::Utc::now()),
        alert: serde_json::json!({"labels": {}}),
    };
    let (x, y) = tokio::join!(
        a.receive(vec![(
            alert.clone(),
            vec![run("from-a", RunStatus::Queued)]
        )]),
        b.receive(vec![(
            alert.clone(),
            vec![run("from-b", RunStatus::Queued)]
        )]),
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(
        [x[0], y[0]].iter().filter(|n| **n).count(),
        1,
        "{x:?} {y:?}"
    );
    assert_eq!(a.list_alerts(10).await.unwrap().len(), 1);
    assert_eq!(a.queued_runs().await.unwrap().len(), 1);

    // A plan decided on both replicas at once: one wins.
    a.put_run(&run("plan", RunStatus::PendingApproval))
        .await
        .unwrap();
    let (reject, approve) = (
        run("plan", RunStatus::Rejected),
        run("plan", RunStatus::Succeeded),
    );
    let (x, y) = tokio::join!(a.decide(&reject), b.decide(&approve));
    assert_ne!(x.unwrap(), y.unwrap(), "exactly one decision");

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

/// Fifty intents from two replicas at once against a budget of 3: three
/// pass, the rest are refused, and what was refused was not recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_never_overspend_a_budget() {
    let db = Db::new("budget").await;
    let a = Arc::new(PgStore::connect(&db.url()).await.unwrap());
    let b = Arc::new(PgStore::connect(&db.url()).await.unwrap());
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
}

/// An intent left by a replica that stopped reads `interrupted` (in the
/// ledger, its run's record and the audit log) once a store opens again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsettled_intent_is_interrupted_and_a_newer_schema_refused() {
    let db = Db::new("restart").await;
    {
        let a = PgStore::connect(&db.url()).await.unwrap();
        a.put_run(&run("in-flight", RunStatus::Running))
            .await
            .unwrap();
        a.intend(terminate("in-flight", 5)).await.unwrap();
    }
    let b = PgStore::connect(&db.url()).await.unwrap();
    let rec = b.get_run("in-flight").await.unwrap().unwrap();
    assert_eq!(rec.status, RunStatus::Interrupted);
    assert_eq!(rec.actions.len(), 1);
    assert_eq!(rec.actions[0].applied, Applied::Interrupted);
    let audit = b
        .list_audit(remedy::store::AuditFilter::default())
        .await
        .unwrap();
    assert!(audit.iter().any(|e| e.event == "action.interrupted"));
    // The budget still counts it: it may have taken effect.
    assert!(matches!(
        b.intend(terminate("next", 1)).await,
        Err(Refusal::Guardrail(_))
    ));

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
    let err = PgStore::connect(&db.url()).await.err().expect("refused");
    assert!(err.to_string().contains("schema"), "{err}");
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
