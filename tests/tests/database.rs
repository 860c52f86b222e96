//! db-connection-exhaustion against the real PostgreSQL.

mod common;

use std::time::Duration;

use common::*;
use remedy::record::Applied;
use remedy::RunStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaking_session_is_simulated_in_dry_run_and_terminated_live_protected_untouched() {
    let app = unique("remedy-test-db");
    let protected = format!("{app}-protected");
    let leak = sleeper(&app, Duration::from_millis(400)).await;
    let guarded = sleeper(&protected, Duration::from_millis(400)).await;

    let remedy = remedy(&format!(
        r#"
        [backends]
        database_url = "{url}"
        [plugins.db-connection-exhaustion]
        config = {{ long_query_ms = 300, protected_applications = "{protected}" }}
        [plugins.db-connection-exhaustion.scope]
        database_applications = ["{app}*"]
        "#,
        url = pg_url()
    ));
    let plugin = remedy
        .load_named("db-connection-exhaustion")
        .await
        .expect("bundled plugin loads");

    let dry = remedy.run(&plugin, manual(true)).await;
    assert_eq!(dry.status, RunStatus::Succeeded, "{dry:#?}");
    let det = dry.detection.as_ref().expect("detection");
    assert!(!det.healthy);
    assert!(det
        .findings
        .iter()
        .any(|f| f.evidence.get("pid") == Some(&leak.to_string())));
    let acts = actions_on(&dry, &format!("pid:{leak}"));
    assert_eq!(acts.len(), 1, "{dry:#?}");
    assert_eq!(acts[0].kind, "database.terminate");
    assert_eq!(acts[0].applied, Applied::Simulated);
    assert!(
        actions_on(&dry, &format!("pid:{guarded}")).is_empty(),
        "protected session touched: {dry:#?}"
    );
    assert!(alive(leak, false).await, "dry-run must not terminate");

    let live = remedy.run(&plugin, manual(false)).await;
    assert_eq!(live.status, RunStatus::Succeeded, "{live:#?}");
    let acts = actions_on(&live, &format!("pid:{leak}"));
    assert_eq!(acts.len(), 1, "{live:#?}");
    assert_eq!(acts[0].applied, Applied::Executed);
    assert!(
        !alive(leak, true).await,
        "live run must terminate the leaking session"
    );
    assert!(
        actions_on(&live, &format!("pid:{guarded}")).is_empty(),
        "protected session touched: {live:#?}"
    );
    assert!(
        alive(guarded, false).await,
        "protected session must survive"
    );
    // Not `mitigated`: sessions of other tests running in parallel may be
    // found and denied (out of scope), which rightly leaves work for a human.
    let outcome = live.outcome.as_ref().expect("mitigate ran");
    assert!(outcome.summary.starts_with("terminated "), "{outcome:#?}");

    terminate(&[leak, guarded]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_outside_scope_is_denied_and_survives() {
    let app = unique("remedy-test-scope");
    let pid = sleeper(&app, Duration::from_millis(300)).await;
    let remedy = remedy(&format!(
        r#"
        [backends]
        database_url = "{url}"
        [plugins.db-connection-exhaustion]
        mode = "auto"
        config = {{ long_query_ms = 200 }}
        [plugins.db-connection-exhaustion.scope]
        database_applications = ["some-other-app"]
        "#,
        url = pg_url()
    ));
    let plugin = remedy.load_named("db-connection-exhaustion").await.unwrap();
    let rec = remedy
        .run(
            &plugin,
            remedy::RunRequest {
                dry_run: None,
                ..manual(false)
            },
        )
        .await;
    assert!(!rec.dry_run, "mode auto runs live");
    let acts = actions_on(&rec, &format!("pid:{pid}"));
    assert_eq!(acts.len(), 1, "{rec:#?}");
    assert_eq!(acts[0].applied, Applied::Denied);
    assert!(
        acts[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("outside the scope"),
        "{rec:#?}"
    );
    assert!(alive(pid, false).await);
    terminate(&[pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfigured_database_answers_unavailable() {
    let remedy = remedy("");
    let plugin = remedy.load_named("db-connection-exhaustion").await.unwrap();
    let rec = remedy.run(&plugin, manual(true)).await;
    assert_eq!(rec.status, RunStatus::Failed);
    let err = rec.error.unwrap();
    assert!(
        err.contains("unavailable") && err.contains("database_url"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutation_during_detect_is_refused_even_live_and_in_scope() {
    let app = unique("remedy-test-detect");
    let pid = sleeper(&app, Duration::from_millis(10)).await;
    let remedy = remedy(&format!(
        r#"
        [backends]
        database_url = "{url}"
        [plugins.ungranted]
        grants = ["database"]
        mode = "auto"
        config = {{ terminate_pid = {pid} }}
        [plugins.ungranted.scope]
        database_applications = ["{app}"]
        "#,
        url = pg_url()
    ));
    let plugin = remedy
        .load_file(&remedy_e2e::test_plugin("ungranted"))
        .await
        .unwrap();
    let rec = remedy
        .run(
            &plugin,
            remedy::RunRequest {
                dry_run: None,
                ..manual(false)
            },
        )
        .await;
    assert_eq!(rec.status, RunStatus::Succeeded, "{rec:#?}");
    let answer = &rec.detection.as_ref().unwrap().findings[0].evidence["answer"];
    assert!(
        answer.starts_with("refused:") && answer.contains("Detect"),
        "{answer}"
    );
    let acts = actions_on(&rec, &format!("pid:{pid}"));
    assert_eq!(acts.len(), 1);
    assert_eq!(acts[0].applied, Applied::Refused);
    assert!(
        alive(pid, false).await,
        "a mutation during detect must never run"
    );
    terminate(&[pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leak_and_room_to_spare_is_healthy_and_takes_no_action() {
    // The shared PostgreSQL always has other tests' sessions: "healthy" here
    // means none has run for an hour and the pool is far from its limit.
    let app = unique("remedy-test-db-healthy");
    let pid = sleeper(&app, Duration::from_millis(100)).await;
    let remedy = remedy(&format!(
        r#"
        [backends]
        database_url = "{url}"
        [plugins.db-connection-exhaustion]
        mode = "auto"
        config = {{ long_query_ms = 3600000, max_usage_ratio = 0.99 }}
        "#,
        url = pg_url()
    ));
    let plugin = remedy.load_named("db-connection-exhaustion").await.unwrap();
    let rec = remedy.run(&plugin, manual(false)).await;
    assert_eq!(rec.status, RunStatus::Succeeded, "{rec:#?}");
    assert!(rec.detection.as_ref().unwrap().healthy, "{rec:#?}");
    assert!(rec.actions.is_empty());
    assert!(rec.outcome.is_none(), "healthy detection must not mitigate");
    assert!(alive(pid, false).await);
    terminate(&[pid]).await;
}

/// The pid the gate checked can belong to another application's session by
/// the time the signal is sent (pids are reused): the backend re-checks the
/// application in the statement that signals, so the other session lives.
/// (Signals need the gate's permit, so the test passes the gate too.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_for_another_application_never_reaches_the_session() {
    use remedy::action::ActionKind;
    use remedy::capabilities::database::backend::DatabaseBackend;
    use remedy::capabilities::database::signal_session;
    use remedy::capabilities::database::SessionTarget;
    use remedy::gate::{Action, Phase, RunGate};
    use remedy::grants::{Capability, Grants, Scope};
    let app = remedy_e2e::pg::unique("remedy-test-pidreuse");
    let pid = remedy_e2e::pg::sleeper(&app, std::time::Duration::from_millis(100)).await;
    let db: std::sync::Arc<dyn DatabaseBackend> = std::sync::Arc::new(
        remedy::capabilities::database::postgres::Postgres::new(
            &remedy_e2e::pg::pg_url(),
            std::time::Duration::from_secs(5),
        )
        .unwrap(),
    );
    let grants = std::sync::Arc::new(Grants {
        capabilities: [Capability::Database].into(),
        scope: Scope {
            database_applications: Some(vec!["*".into()]),
            ..Scope::default()
        },
    });
    let gate = std::sync::Arc::new(RunGate::new("pidreuse", "r", grants, false))
        .call(Phase::Mitigate, None);
    let signal = |kind: ActionKind, application: &str| {
        let application = application.to_string();
        let target = SessionTarget {
            pid,
            application: application.clone(),
        };
        gate.act(
            Action::new(kind, target, "t"),
            Ok(db.clone()),
            move |db, permit| async move {
                signal_session(db.as_ref(), &permit, kind, pid, &application).await
            },
        )
    };
    assert!(signal(ActionKind::DatabaseTerminate, "someone-else")
        .await
        .is_err());
    assert!(signal(ActionKind::DatabaseCancel, "someone-else")
        .await
        .is_err());
    assert!(
        remedy_e2e::pg::alive(pid, false).await,
        "the other application's session lives"
    );
    assert!(signal(ActionKind::DatabaseTerminate, &app).await.is_ok());
    assert!(!remedy_e2e::pg::alive(pid, true).await);
}

/// Query text can carry passwords: by default plugins (and so records,
/// reports and notifications) see it with literals redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_text_is_redacted_unless_configured_otherwise() {
    use remedy::capabilities::database::backend::DatabaseBackend;
    use remedy::capabilities::database::postgres::Postgres;
    use remedy::config::QueryText;
    let app = remedy_e2e::pg::unique("remedy-test-redact");
    let client = remedy_e2e::pg::connect(&app).await;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    tokio::spawn(async move {
        let _ = client
            .simple_query("SELECT 'hunter2-secret' AS password, pg_sleep(20)")
            .await;
    });
    let url = remedy_e2e::pg::pg_url();
    let timeout = Duration::from_secs(5);
    let find = |db: Postgres| async move {
        for _ in 0..100 {
            let s = db.long_running(0, 500).await.unwrap();
            if let Some(s) = s
                .into_iter()
                .find(|s| s.pid == pid && s.query.contains("pg_sleep"))
            {
                return s.query;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("session {pid} never showed up");
    };
    let redacted = find(Postgres::new(&url, timeout).unwrap()).await;
    assert!(!redacted.contains("hunter2"), "{redacted}");
    assert!(
        redacted.contains("SELECT ? AS password, pg_sleep(?)"),
        "{redacted}"
    );
    let full = find(
        Postgres::new(&url, timeout)
            .unwrap()
            .with_query_text(QueryText::Full),
    )
    .await;
    assert!(full.contains("hunter2-secret"), "{full}");
    let off = Postgres::new(&url, timeout)
        .unwrap()
        .with_query_text(QueryText::Off);
    let s = off.session(pid).await.unwrap().unwrap();
    assert_eq!(s.query, "");
    remedy_e2e::pg::terminate(&[pid]).await;
}
