//! The ledger (budgets, cooldowns, write-ahead intents) against both real
//! stores, SQLite and PostgreSQL (a database of its own), without a server:
//! the rules are the same whichever keeps them.

use std::time::Duration;

use remedy::action::{ActionKind, Budget};
use remedy::guardrails::{Intent, Ledger, Refusal};
use remedy::record::Applied;
use remedy::store::{PgStore, Replica, SqliteStore, Store};

mod common;

/// A fresh store, and what keeps it alive (its directory or database).
struct Fresh {
    kind: &'static str,
    store: Box<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    _db: Option<common::Db>,
}

/// One fresh store of each kind.
async fn fresh_stores() -> Vec<Fresh> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path()).unwrap();
    let db = common::Db::new("ledger").await;
    let me = Replica::new("ledger-test".into(), Duration::from_secs(5));
    let pg = PgStore::connect(&db.url(), me, None).await.unwrap();
    vec![
        Fresh {
            kind: "sqlite",
            store: Box::new(sqlite),
            _dir: Some(dir),
            _db: None,
        },
        Fresh {
            kind: "postgres",
            store: Box::new(pg),
            _dir: None,
            _db: Some(db),
        },
    ]
}

fn terminate(run: &str, pid: i32, app: &str) -> Intent {
    Intent {
        run_id: run.into(),
        plugin: "db".into(),
        kind: ActionKind::DatabaseTerminate,
        target: format!("pid:{pid}"),
        reason: "test".into(),
        at: chrono::Utc::now(),
        budget: Budget {
            max: 100,
            per: Duration::from_secs(3600),
        },
        cooldown: Some(Duration::from_secs(3600)),
        cooldown_key: format!("application:{app}"),
    }
}

/// Cooldowns were kept per `pid:N`, new for every session, so they never
/// fired (issue 9): they are kept per application, and a run's own earlier
/// actions do not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooldown_holds_per_application_across_runs_not_within_one() {
    for Fresh { kind, store, .. } in fresh_stores().await {
        cooldown_per_application(kind, &*store).await;
    }
}

async fn cooldown_per_application(kind: &str, store: &dyn Store) {
    let id = store
        .intend(terminate("run-a", 1, "billing"))
        .await
        .unwrap();
    store.settle(id, Applied::Executed, None).await;
    // The same run ends a second leaking session of the same application.
    let id = store
        .intend(terminate("run-a", 2, "billing"))
        .await
        .unwrap();
    store.settle(id, Applied::Executed, None).await;
    // Another run, a new pid of the same application: cooling down.
    match store.intend(terminate("run-b", 3, "billing")).await {
        Err(Refusal::Guardrail(m)) => {
            assert!(
                m.contains("cooldown") && m.contains("application:billing"),
                "{kind}: {m}"
            )
        }
        other => panic!("{kind}: no cooldown: {other:?}"),
    }
    // Another application is not affected.
    store.intend(terminate("run-b", 4, "search")).await.unwrap();
}

/// A change sent and never answered counts against the budget, as one that
/// ran does (issue 9, item 10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_interrupted_outcomes_spend_the_budget() {
    for (spent, unspent) in fresh_stores().await.into_iter().zip(fresh_stores().await) {
        outcomes_spend_the_budget(spent.kind, &*spent.store, &*unspent.store).await;
    }
}

async fn outcomes_spend_the_budget(kind: &str, store: &dyn Store, fresh: &dyn Store) {
    let one = |run: &str, pid| {
        let mut i = terminate(run, pid, &format!("app-{pid}"));
        i.budget.max = 2;
        i
    };
    let id = store.intend(one("r1", 1)).await.unwrap();
    store
        .settle(id, Applied::Unknown, Some("timed out".into()))
        .await;
    let id = store.intend(one("r2", 2)).await.unwrap();
    store
        .settle(id, Applied::Interrupted, Some("deadline".into()))
        .await;
    match store.intend(one("r3", 3)).await {
        Err(Refusal::Guardrail(m)) => assert!(m.contains("budget"), "{kind}: {m}"),
        other => panic!("{kind}: the budget let a third through: {other:?}"),
    }
    // A failure that certainly did nothing does not count.
    let store = fresh;
    let id = store.intend(one("r1", 1)).await.unwrap();
    store
        .settle(id, Applied::Failed, Some("refused".into()))
        .await;
    let id = store.intend(one("r2", 2)).await.unwrap();
    store
        .settle(id, Applied::Failed, Some("refused".into()))
        .await;
    store.intend(one("r3", 3)).await.unwrap();
}

/// Notifications have no cooldown (telling a human twice is no harm) but
/// do spend their budget; every other kind cools down. The exemption comes
/// from `ActionKind`, in Rust and in the ledger's SQL alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_skip_the_cooldown_and_other_kinds_do_not() {
    for Fresh { store, .. } in fresh_stores().await {
        cooldown_exemptions(&*store).await;
    }
}

async fn cooldown_exemptions(store: &dyn Store) {
    let limits = remedy::guardrails::Limits::default();
    for kind in ActionKind::ALL {
        let intent = |run: &str| Intent {
            run_id: run.into(),
            plugin: "p".into(),
            kind,
            target: "t".into(),
            reason: "test".into(),
            at: chrono::Utc::now(),
            budget: Budget {
                max: 2,
                per: Duration::from_secs(3600),
            },
            // As the gate asks it: the kind decides whether a cooldown applies.
            cooldown: limits.cooldown_for(kind),
            cooldown_key: format!("same-target-{}", kind.as_str()),
        };
        let id = store.intend(intent("run-a")).await.unwrap();
        store.settle(id, Applied::Executed, None).await;
        let second = store.intend(intent("run-b")).await;
        if kind.is_notification() {
            let id = second.unwrap_or_else(|e| panic!("{kind}: {e:?}"));
            store.settle(id, Applied::Executed, None).await;
            match store.intend(intent("run-c")).await {
                Err(Refusal::Guardrail(m)) => assert!(m.contains("budget"), "{kind}: {m}"),
                other => panic!("{kind}: the budget let a third through: {other:?}"),
            }
        } else {
            match second {
                Err(Refusal::Guardrail(m)) => assert!(m.contains("cooldown"), "{kind}: {m}"),
                other => panic!("{kind}: no cooldown: {other:?}"),
            }
        }
    }
}

/// An intent a stopped process never settled reads `interrupted` when the
/// store is opened again: in the ledger (it spends the budget) and in the
/// run's record. (On PostgreSQL a survivor does it when the lease ends:
/// `pg_store`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsettled_intent_is_interrupted_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        let mut one = terminate("run-x", 7, "billing");
        one.budget.max = 1;
        store.intend(one).await.unwrap();
        // No settle: the process "stops" here.
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    let mut again = terminate("run-y", 8, "other-app");
    again.budget.max = 1;
    match store.intend(again).await {
        Err(Refusal::Guardrail(m)) => assert!(m.contains("budget"), "{m}"),
        other => panic!("an interrupted action must spend the budget: {other:?}"),
    }
    let audit = store
        .list_audit(remedy::store::AuditFilter::default())
        .await
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.event == "action.interrupted" && e.run_id.as_deref() == Some("run-x")),
        "{audit:?}"
    );
}
