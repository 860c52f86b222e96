//! The ledger (budgets, cooldowns, write-ahead intents) against the real
//! SQLite store, without a server.

use std::time::Duration;

use remedy::guardrails::{Budget, Intent, Ledger, Refusal};
use remedy::record::Applied;
use remedy::store::SqliteStore;

fn terminate(run: &str, pid: i32, app: &str) -> Intent {
    Intent {
        run_id: run.into(),
        plugin: "db".into(),
        kind: "database.terminate".into(),
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
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
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
                "{m}"
            )
        }
        other => panic!("no cooldown: {other:?}"),
    }
    // Another application is not affected.
    store.intend(terminate("run-b", 4, "search")).await.unwrap();
}

/// A change sent and never answered counts against the budget, as one that
/// ran does (issue 9, item 10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_interrupted_outcomes_spend_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
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
        Err(Refusal::Guardrail(m)) => assert!(m.contains("budget"), "{m}"),
        other => panic!("the budget let a third through: {other:?}"),
    }
    // A failure that certainly did nothing does not count.
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
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
