//! The seed's high-error-rate runbook end to end, as the README's demo
//! tells it: servio-sim deploys the head of a git repository; a fault
//! commit is pushed and 5xx answers climb (a real Prometheus scrapes them,
//! the access log fills with 502s); the alert arrives; the plan is the
//! revert of that commit; a human approves; the revert is pushed; the
//! error rate falls; verification reads resolved; the report names the
//! revert commit.

use std::path::Path;
use std::time::Duration;

use remedy_e2e::{git, prom};
use serde_json::{json, Value};

mod common;
use common::*;

const ERROR_RATIO: &str = "sum(rate(servio_http_requests_total{status=~\"5..\"}[3s])) / sum(rate(servio_http_requests_total[3s]))";

fn push(work: &Path, settings: &str, subject: &str) -> String {
    std::fs::write(work.join("servio.toml"), settings).unwrap();
    git(work, &["commit", "--quiet", "-am", subject]);
    git(work, &["push", "--quiet", "origin", "main"]);
    git(work, &["rev-parse", "HEAD"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_deploy_is_rolled_back_by_an_approved_plan_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The deployed repository and a developer's clone of it.
    let remote = d.join("servio.git");
    let work = d.join("work");
    git(
        d,
        &[
            "init",
            "--quiet",
            "--bare",
            "-b",
            "main",
            remote.to_str().unwrap(),
        ],
    );
    git(
        d,
        &[
            "clone",
            "--quiet",
            remote.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    git(&work, &["checkout", "--quiet", "-b", "main"]);
    std::fs::write(work.join("servio.toml"), "error_percent = 0\n").unwrap();
    git(&work, &["add", "servio.toml"]);
    git(&work, &["commit", "--quiet", "-m", "servio 2.13"]);
    git(&work, &["push", "--quiet", "origin", "main"]);

    // servio-sim follows the branch and writes its access log.
    let sim = sim().await;
    let log = d.join("logs/app.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    sim.log_to(&log).unwrap();
    let _follow = servio_sim::deployed::follow(
        sim.clone(),
        remote.clone(),
        "main".into(),
        Duration::from_millis(100),
    );
    let prom = prom::start(sim.base_url());
    prom.wait_until(ERROR_RATIO, |v| v == 0.0).await;

    let (sink, _seen) = remedy_e2e::sink::start().await;
    let config = format!(
        r#"
        [server]
        data_dir = "{data}"
        [backends]
        prometheus_url = "{prom}"
        [backends.logs.app]
        path = "{log}"
        [backends.deploy]
        repo = "{remote}"
        [backends.notify.alerts-critical]
        kind = "webhook"
        url = "{sink}/alerts-critical"
        [plugins.high-error-rate]
        mode = "approve"
        verify_after = "8s"
        config = {{ window = "3s" }}
        "#,
        data = d.join("data").display(),
        prom = prom.url,
        log = log.display(),
        remote = remote.display(),
    );
    let server = start(d, &config, &[]);

    // A bad commit goes out: 40% of requests answer 502.
    let fault = push(
        &work,
        "error_percent = 40\nerror_status = 502\n",
        "checkout: payments provider v2",
    );
    eventually("the fault is live", 10, || async {
        (sim.version() == fault[..12]).then_some(())
    })
    .await;
    prom.wait_until(ERROR_RATIO, |v| v > 0.2).await;

    // The alert: the plan is the revert of that commit, nothing pushed yet.
    let labels = json!({"severity": "critical"});
    let (code, r) = server
        .post(
            "/v1/alerts",
            payload(vec![alert(
                "HighErrorRate",
                "firing",
                labels,
                "fp-her",
                "2026-12-07T03:00:00Z",
            )]),
        )
        .await;
    assert_eq!(code, 202, "{r}");
    let id = r["runs"][0]["run_id"].as_str().unwrap().to_string();
    let plan = eventually("the plan waits for a human", 30, || async {
        let rec = server.get(&format!("/v1/runs/{id}")).await;
        (rec["status"] == "pending_approval").then_some(rec)
    })
    .await;
    let target = format!(
        "deploy:servio/main revert {} at {}",
        &fault[..12],
        &fault[..12]
    );
    let planned: Vec<&Value> = plan["approval"]["plan"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert!(
        planned
            .iter()
            .any(|p| p["kind"] == "deploy.rollback" && p["target"] == target.as_str()),
        "{plan}"
    );
    let findings = plan["detection"]["findings"].to_string();
    assert!(
        findings.contains("/api/checkout 502"),
        "the log's top pattern: {findings}"
    );
    assert!(findings.contains(&fault[..12]), "{findings}");
    assert!(
        plan["logs"].to_string().contains("servio.toml +1 -2"),
        "the diff of the plan: {plan}"
    );
    assert_eq!(
        git(&remote, &["rev-parse", "main"]),
        fault,
        "planning pushes nothing"
    );

    // Approved: the revert is pushed, once, naming the run.
    let (code, r) = server
        .post(&format!("/v1/runs/{id}/approve"), json!({}))
        .await;
    assert_eq!(code, 202, "{r}");
    let live = r["live_run"].as_str().unwrap().to_string();
    let rec = server.succeeded(&live, "the approved rollback", 30).await;
    let rollback = actions_on(&rec, &target);
    assert_eq!(rollback.len(), 1, "{rec}");
    assert_eq!(rollback[0]["applied"], "executed", "{rec}");
    let head = git(&remote, &["rev-parse", "main"]);
    assert_ne!(head, fault);
    assert_eq!(
        git(&remote, &["rev-parse", "main~1"]),
        fault,
        "one revert on top of the fault"
    );
    let message = git(&remote, &["log", "-1", "--format=%B", "main"]);
    assert!(
        message.starts_with(&format!(
            "hotfix: rollback {} (remedy run {live})",
            &fault[..12]
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!("This reverts commit {fault}.")),
        "{message}"
    );
    assert!(
        rollback[0]["result"].as_str().unwrap().contains(&head),
        "{rec}"
    );

    // The error rate falls; verification reads it.
    prom.wait_until(ERROR_RATIO, |v| v < 0.05).await;
    let rec = eventually("verification", 40, || async {
        let rec = server.get(&format!("/v1/runs/{live}")).await;
        (!rec["verification"].is_null()).then_some(rec)
    })
    .await;
    assert_eq!(rec["verification"], "resolved", "{rec}");

    // The post-incident report's fixes name the revert.
    let report = server.text(&format!("/v1/runs/{live}/report")).await;
    let fixes = &report[report.find("## 4. Fixes applied").expect("a fixes section")..];
    assert!(
        fixes.contains("`deploy.rollback`") && fixes.contains(&format!("revert {head}")),
        "{report}"
    );

    // Approving the same plan again does nothing: decided once.
    let (code, r) = server
        .post(&format!("/v1/runs/{id}/approve"), json!({}))
        .await;
    assert_eq!(code, 409, "{r}");
    assert_eq!(git(&remote, &["rev-parse", "main"]), head);
}
