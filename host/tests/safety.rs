//! Safe automation in `remedy serve` (issue 5): budgets across concurrent
//! alerts and a restart, the write-ahead audit across a crash, approvals,
//! the kill switch, verification with escalation, the post-incident report.

use std::path::Path;
use std::time::{Duration, Instant};

use remedy_e2e::{pg, sink};
use serde_json::{json, Value};

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_of_three_terminations_holds_across_concurrent_alerts_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = pg::unique("remedy-test-budget");
    let mut pids = Vec::new();
    for _ in 0..8 {
        pids.push(pg::sleeper(&app, Duration::from_millis(300)).await);
    }
    let config = format!(
        r#"
        [server]
        data_dir = "{data}"
        [backends]
        database_url = "{db}"
        [plugins.db-connection-exhaustion]
        mode = "auto"
        config = {{ long_query_ms = 200, max_terminations = 10, protected_applications = "" }}
        budgets = {{ "database.terminate" = {{ max = 3, per = "1h" }} }}
        verify_after = "1h"
        [plugins.db-connection-exhaustion.scope]
        database_applications = ["{app}"]
        "#,
        data = dir.path().join("data").display(),
        db = pg::pg_url(),
    );
    let alerts = |from: usize| {
        payload(
            (from..from + 50)
                .map(|i| {
                    alert(
                        "DatabaseConnectionExhaustion",
                        "firing",
                        json!({"instance": format!("db-{}", i % 5)}),
                        &format!("{app}-{i}"),
                        "2026-11-27T03:10:00Z",
                    )
                })
                .collect(),
        )
    };
    let gone = |pids: Vec<i32>| async move {
        let mut n = 0;
        for pid in pids {
            if !pg::alive(pid, false).await {
                n += 1;
            }
        }
        n
    };

    let server = start(dir.path(), &config, &[]);
    let (a, b) = tokio::join!(
        server.post("/v1/alerts", alerts(0)),
        server.post("/v1/alerts", alerts(50))
    );
    let mut runs: Vec<String> = Vec::new();
    for (code, r) in [a, b] {
        assert_eq!(code, 202, "{r}");
        runs.extend(
            r["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["run_id"].as_str().unwrap().to_string()),
        );
    }
    let mut refused = 0;
    for id in &runs {
        let rec = server.finished(id).await;
        refused += rec["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| {
                a["applied"] == "refused" && a["error"].as_str().unwrap().contains("budget")
            })
            .count();
    }
    assert!(refused > 0, "later runs meet the budget");
    // Every run has finished: what PostgreSQL shows once the terminated
    // sessions are gone is all there will be.
    eventually("three sessions gone", 10, || async {
        (gone(pids.clone()).await >= 3).then_some(())
    })
    .await;
    assert_eq!(gone(pids.clone()).await, 3, "exactly three terminations");
    let metrics = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("kind=\"database.terminate\",applied=\"refused\""),
        "{metrics}"
    );
    drop(server);

    // A new process remembers what the budget has spent.
    let server = start(dir.path(), &config, &[]);
    let (code, r) = server.post("/v1/alerts", alerts(100)).await;
    assert_eq!(code, 202, "{r}");
    for x in r["runs"].as_array().unwrap() {
        let rec = server.finished(x["run_id"].as_str().unwrap()).await;
        // Nothing more is terminated: the records say so at once, and the
        // sessions a fourth termination would end are still there.
        assert!(
            rec["actions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["applied"] != "executed"),
            "{rec}"
        );
    }
    assert_eq!(gone(pids.clone()).await, 3, "still three after a restart");
    pg::terminate(&pids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_intent_and_action_leaves_an_interrupted_action() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    sim.open_breaker("stripe");
    let config = breaker_config(dir.path(), &sim, "", "mode = \"auto\"", "");
    let mut server = start(
        dir.path(),
        &config,
        &[("REMEDY_FAULT_ABORT_AFTER_INTENT", "1")],
    );
    let (code, r) = server
        .post("/v1/plugins/circuit-breaker-open/runs", json!({}))
        .await;
    assert_eq!(code, 202, "{r}");
    let id = r["run_id"].as_str().unwrap().to_string();
    server.exited("the fault did not fire").await;
    assert_eq!(
        sim.breaker_state("stripe").unwrap(),
        "OPEN",
        "never executed"
    );
    drop(server);

    let server = start(dir.path(), &config, &[]);
    let rec = server.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(rec["status"], "interrupted", "{rec}");
    let a = actions_on(&rec, "breaker:stripe");
    assert_eq!(a.len(), 1, "{rec}");
    assert_eq!(a[0]["applied"], "interrupted");
    assert!(a[0]["error"].as_str().unwrap().contains("unknown"));
    let audit = server.get(&format!("/v1/audit?run={id}")).await;
    assert!(
        audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "action.interrupted"),
        "{audit}"
    );
    let (_, report) = server.get_as("", &format!("/v1/runs/{id}/report")).await;
    assert!(report.contains("was interrupted"), "{report}");
}

const TOKENS: &str = r#"
tokens = [
  { name = "ops-runner", env = "T_RUN", roles = ["run", "read"] },
  { name = "lead-alice", env = "T_APPROVE", roles = ["approve", "read"] },
  { name = "root", env = "T_ADMIN", roles = ["admin"] },
]"#;
const ENV: [(&str, &str); 3] = [
    ("T_RUN", "run-token-0123456789"),
    ("T_APPROVE", "approve-token-0123456789"),
    ("T_ADMIN", "admin-token-0123456789"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_plan_runs_only_its_actions_reject_runs_nothing_wrong_role_is_403() {
    let StuckBreaker {
        dir: _dir,
        sim,
        mut server,
    } = stuck_breaker(
        TOKENS,
        "mode = \"approve\"\nverify_after = \"1h\"",
        "",
        &ENV,
    )
    .await;
    server.token = Some("run-token-0123456789".into());

    let (code, plan) = server
        .post("/v1/plugins/circuit-breaker-open/runs?wait=true", json!({}))
        .await;
    assert_eq!(code, 200, "{plan}");
    assert_eq!(plan["status"], "pending_approval", "{plan}");
    assert_eq!(plan["mode"], "approve");
    assert_eq!(
        plan["approval"]["plan"],
        json!([{"kind": "breaker.force-state", "target": "breaker:stripe"}])
    );
    assert_eq!(
        sim.breaker_state("stripe").unwrap(),
        "OPEN",
        "planning acts on nothing"
    );
    let id = plan["id"].as_str().unwrap().to_string();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args(["runs", &id, "--server", &server.base])
        .env("REMEDY_TOKEN", "run-token-0123456789")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("breaker.force-state breaker:stripe")
            && text.contains(&format!("waiting: remedy approve {id}")),
        "{text}"
    );

    // Detect will now also find supabase: not in the plan.
    sim.open_breaker("supabase");
    let (code, _) = server
        .post(&format!("/v1/runs/{id}/approve"), json!({}))
        .await;
    assert_eq!(code, 403, "the run role cannot approve");
    let (code, r) = server
        .post_as(
            "approve-token-0123456789",
            &format!("/v1/runs/{id}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(code, 202, "{r}");
    assert_eq!(r["run"]["approval"]["decided_by"], "lead-alice");
    let live = server.finished(r["live_run"].as_str().unwrap()).await;
    assert_eq!(live["approval_of"], id.as_str());
    assert_eq!(
        actions_on(&live, "breaker:stripe")[0]["applied"],
        "executed",
        "{live}"
    );
    let extra = actions_on(&live, "breaker:supabase");
    assert_eq!(extra[0]["applied"], "refused", "{live}");
    assert!(extra[0]["error"]
        .as_str()
        .unwrap()
        .contains("approved plan"));
    assert_eq!(sim.breaker_state("stripe").unwrap(), "HALF_OPEN");
    assert_eq!(sim.breaker_state("supabase").unwrap(), "OPEN");
    // Decided once.
    let (code, _) = server
        .post_as(
            "approve-token-0123456789",
            &format!("/v1/runs/{id}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(code, 409);

    // A rejected plan runs nothing.
    let (_, plan) = server
        .post("/v1/plugins/circuit-breaker-open/runs?wait=true", json!({}))
        .await;
    assert_eq!(plan["status"], "pending_approval", "{plan}");
    let id2 = plan["id"].as_str().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args(["reject", id2, "--server", &server.base])
        .env("REMEDY_TOKEN", "approve-token-0123456789")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("rejected by lead-alice"));
    let rec = server.get(&format!("/v1/runs/{id2}")).await;
    assert_eq!(rec["status"], "rejected");
    assert!(rec["approval"]["live_run"].is_null());
    assert_eq!(sim.breaker_state("supabase").unwrap(), "OPEN");

    // The report of the approved plan tells the whole story in order.
    let (code, report) = server
        .get_as("run-token-0123456789", &format!("/v1/runs/{id}/report"))
        .await;
    assert_eq!(code, 200, "{report}");
    let at = |needle: &str| {
        report
            .find(needle)
            .unwrap_or_else(|| panic!("no `{needle}` in\n{report}"))
    };
    assert!(at("## 1. Timeline") < at(&format!("Run `{id}`")));
    assert!(at(&format!("Run `{id}`")) < at("Plan approved by lead-alice"));
    assert!(
        at("Plan approved by lead-alice")
            < at("Action `breaker.force-state` on `breaker:stripe`: **executed**")
    );
    assert!(at("**refused**") > at("## 1. Timeline"));
    assert!(at("## 4. Fixes applied") < at("- `breaker.force-state` on `breaker:stripe`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_plan_runs_nothing() {
    let StuckBreaker {
        dir: _dir,
        sim,
        server,
    } = stuck_breaker("", "mode = \"approve\"\napproval_ttl = \"200ms\"", "", &[]).await;
    let (_, plan) = server
        .post("/v1/plugins/circuit-breaker-open/runs?wait=true", json!({}))
        .await;
    assert_eq!(plan["status"], "pending_approval", "{plan}");
    let id = plan["id"].as_str().unwrap();
    // Wait until the plan's own expiry has passed (by its clock).
    let expires =
        chrono::DateTime::parse_from_rfc3339(plan["approval"]["expires_at"].as_str().unwrap())
            .unwrap();
    eventually("the plan's expiry passes", 5, || async {
        (chrono::Utc::now() > expires + chrono::Duration::milliseconds(10)).then_some(())
    })
    .await;
    let (code, r) = server
        .post(&format!("/v1/runs/{id}/approve"), json!({}))
        .await;
    assert_eq!(code, 410, "{r}");
    assert_eq!(r["error"]["code"], "plan_expired");
    assert_eq!(
        server.get(&format!("/v1/runs/{id}")).await["status"],
        "expired"
    );
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");

    // Untouched, a plan past its time still leaves `pending_approval`.
    let (_, plan) = server
        .post("/v1/plugins/circuit-breaker-open/runs?wait=true", json!({}))
        .await;
    let id = plan["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let rec = server.get(&format!("/v1/runs/{id}")).await;
        if rec["status"] == "expired" {
            assert_eq!(rec["approval"]["decided_by"], "remedy");
            break;
        }
        assert!(Instant::now() < deadline, "never swept: {rec}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_switch_turns_auto_runs_dry_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    sim.open_breaker("stripe");
    let config = breaker_config(
        dir.path(),
        &sim,
        TOKENS,
        "mode = \"auto\"\nverify_after = \"1h\"",
        "",
    );
    let mut server = start(dir.path(), &config, &ENV);
    server.token = Some("run-token-0123456789".into());
    let (code, _) = server.post("/v1/admin/pause", json!({})).await;
    assert_eq!(code, 403, "pausing needs admin");
    let (code, r) = server
        .post_as("admin-token-0123456789", "/v1/admin/pause", json!({}))
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["paused"]["by"], "root");

    let (_, rec) = server
        .post("/v1/plugins/circuit-breaker-open/runs?wait=true", json!({}))
        .await;
    assert_eq!(rec["dry_run"], true, "{rec}");
    assert!(
        rec["note"].as_str().unwrap().contains("kill switch"),
        "{rec}"
    );
    assert_eq!(
        actions_on(&rec, "breaker:stripe")[0]["applied"],
        "simulated"
    );
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");

    server
        .post_as("admin-token-0123456789", "/v1/admin/resume", json!({}))
        .await;
    let (_, rec) = server
        .post("/v1/plugins/circuit-breaker-open/runs?wait=true", json!({}))
        .await;
    assert_eq!(rec["dry_run"], false, "{rec}");
    assert_eq!(sim.breaker_state("stripe").unwrap(), "HALF_OPEN");
}

/// `circuit-breaker-open` live, verifying after 300 ms, escalating on the
/// P2 route (`alerts-warning`, the sink's channel of that name).
fn verifying_config(dir: &Path, sim: &servio_sim::Sim, sink: &str) -> String {
    format!(
        "{}\n[backends.notify.alerts-warning]\nkind = \"webhook\"\nurl = \"{sink}/alerts-warning\"\n",
        breaker_config(
            dir,
            sim,
            "",
            "mode = \"auto\"\nverify_after = \"300ms\"\npriority = \"p2\"\ncooldown = \"0s\"", ""
        )
    )
}

/// Polls run `id` until verification has decided.
async fn verified(server: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rec = server.get(&format!("/v1/runs/{id}")).await;
        if !rec["verification"].is_null() {
            return rec;
        }
        assert!(Instant::now() < deadline, "never verified: {rec}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_records_resolved_or_escalates_not_resolved_to_the_priority_route() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    let (sink, seen) = sink::start().await;
    let config = verifying_config(dir.path(), &sim, &sink);
    let server = start(dir.path(), &config, &[]);

    // Stripe stuck, upstream fine: half-opening fixes it.
    sim.open_breaker("stripe");
    let (_, rec) = server
        .post("/v1/plugins/circuit-breaker-open/runs?wait=true", json!({}))
        .await;
    let rec = verified(&server, rec["id"].as_str().unwrap()).await;
    assert_eq!(rec["verification"], "resolved", "{rec}");
    assert!(seen.lock().unwrap().is_empty());

    // Stripe fixed, but supabase is down and stays open: not resolved, and
    // the P2 route (the plugin's priority) hears about it.
    sim.open_breaker("stripe");
    sim.open_breaker("supabase");
    sim.set_health("supabase", servio_sim::Health::Down);
    let (_, rec) = server
        .post("/v1/plugins/circuit-breaker-open/runs?wait=true", json!({}))
        .await;
    let id = rec["id"].as_str().unwrap().to_string();
    let rec = verified(&server, &id).await;
    assert_eq!(rec["verification"], "not_resolved", "{rec}");
    let sent: Vec<Value> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(n, _)| n == "alerts-warning")
        .map(|(_, b)| b.clone())
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0]["title"]
        .as_str()
        .unwrap()
        .starts_with("[P2] Not resolved after mitigation"));
    assert!(sent[0]["body"].as_str().unwrap().contains("supabase"));
    assert_eq!(
        actions_on(&rec, "channel:alerts-warning")[0]["applied"],
        "executed"
    );

    let o = std::process::Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args(["report", &id, "--server", &server.base])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let started = report.find("started (auto)").expect("run started");
    let action = report.find("**executed**").expect("action");
    let verification = report
        .find("Verification: **not_resolved**")
        .expect("verification");
    assert!(started < action && action < verification, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_of_a_mitigated_alert_escalates_instead_of_mitigating_again() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    let (sink, seen) = sink::start().await;
    let config = verifying_config(dir.path(), &sim, &sink);
    let server = start(dir.path(), &config, &[]);
    let firing = payload(vec![alert(
        "CircuitBreakerOpen",
        "firing",
        json!({"breaker": "stripe"}),
        "fp-repeat",
        "2026-11-27T03:10:00Z",
    )]);
    sim.open_breaker("stripe");
    let (_, r) = server.post("/v1/alerts", firing.clone()).await;
    let id = r["runs"][0]["run_id"].as_str().unwrap().to_string();
    let rec = server.finished(&id).await;
    assert_eq!(actions_on(&rec, "breaker:stripe")[0]["applied"], "executed");

    // The breaker opens again and Alertmanager repeats the same alert.
    tokio::time::sleep(Duration::from_millis(100)).await;
    sim.open_breaker("stripe");
    verified(&server, &id).await;
    let (_, r) = server.post("/v1/alerts", firing).await;
    assert_eq!(r["duplicates"], 1, "{r}");
    assert_eq!(r["runs"][0]["status"], "escalated", "{r}");
    assert_eq!(r["runs"][0]["run_id"], id.as_str());
    assert_eq!(
        sim.breaker_state("stripe").unwrap(),
        "OPEN",
        "not mitigated again"
    );
    let titles: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| b["title"].as_str().unwrap().to_string())
        .collect();
    assert!(
        titles
            .iter()
            .any(|t| t.starts_with("[P2] Still firing after mitigation")),
        "{titles:?}"
    );
}

/// One rule of an alert's urgency: no `priority` label but
/// `severity=critical` is P0 — for the queue, Slack and, here, the route
/// verification escalates to when the mitigation did not resolve it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_alert_not_resolved_escalates_on_the_p0_route() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    let (sink, seen) = sink::start().await;
    let config = format!(
        "{}\n[backends.notify.alerts-critical]\nkind = \"webhook\"\nurl = \"{sink}/alerts-critical\"\n",
        verifying_config(dir.path(), &sim, &sink)
    );
    let server = start(dir.path(), &config, &[]);
    sim.open_breaker("stripe");
    sim.open_breaker("supabase");
    sim.set_health("supabase", servio_sim::Health::Down);
    let (_, r) = server
        .post(
            "/v1/alerts",
            payload(vec![alert(
                "CircuitBreakerOpen",
                "firing",
                json!({"severity": "critical"}),
                "fp-critical",
                "2026-12-07T03:10:00Z",
            )]),
        )
        .await;
    let id = r["runs"][0]["run_id"].as_str().unwrap().to_string();
    let rec = verified(&server, &id).await;
    assert_eq!(rec["verification"], "not_resolved", "{rec}");
    let titles: Vec<(String, String)> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(n, b)| {
            (
                n.clone(),
                b["title"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        titles
            .iter()
            .any(|(n, t)| n == "alerts-critical"
                && t.starts_with("[P0] Not resolved after mitigation")),
        "{titles:?}"
    );
    assert!(
        !titles.iter().any(|(n, _)| n == "alerts-warning"),
        "not the plugin's P2: {titles:?}"
    );
}
