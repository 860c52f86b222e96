//! What survives a crash or a failing backend: the kill switch, acknowledged
//! alerts, verifications that were due, retries of failed first attempts,
//! and changes a hung backend made too late.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_queued_before_the_pause_runs_dry_and_the_pause_survives_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    sim.open_breaker("stripe");
    let cfg = breaker_config(
        dir.path(),
        &sim,
        "max_concurrent_runs = 1",
        "mode = \"auto\"\nverify_after = \"1h\"\ncooldown = \"0s\"",
        &hostile(
            dir.path(),
            "config = { behave = \"sleep\", sleep_ms = 1500 }",
        ),
    );
    let mut server = start(dir.path(), &cfg, &[]);
    // The one run slot is busy; the live run queues behind it.
    let (code, r) = server
        .post("/v1/plugins/hostile/runs", json!({"dry_run": true}))
        .await;
    assert_eq!(code, 202, "{r}");
    let slow = r["run_id"].as_str().unwrap().to_string();
    until(&server, &slow, "running", |r| r["status"] == "running").await;
    let (code, r) = server
        .post("/v1/plugins/circuit-breaker-open/runs", json!({}))
        .await;
    assert_eq!(code, 202, "{r}");
    let queued = r["run_id"].as_str().unwrap().to_string();
    assert_eq!(
        server.get(&format!("/v1/runs/{queued}")).await["status"],
        "queued"
    );
    let (code, p) = server
        .post("/v1/admin/pause", json!({"reason": "bad deploy"}))
        .await;
    assert_eq!(code, 200, "{p}");
    assert_eq!(p["paused"]["reason"], "bad deploy");

    let rec = server.finished(&queued).await;
    assert_eq!(rec["dry_run"], true, "{rec}");
    assert!(
        rec["note"].as_str().unwrap().contains("kill switch")
            && rec["note"].as_str().unwrap().contains("bad deploy"),
        "{rec}"
    );
    assert_eq!(rec["actions"][0]["applied"], "simulated", "{rec}");
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");

    // A crash does not turn automation back on.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    let server = start(dir.path(), &cfg, &[]);
    let state = server.get("/v1/admin/pause").await;
    assert_eq!(state["paused"]["by"], "anonymous", "{state}");
    assert_eq!(state["paused"]["reason"], "bad deploy", "{state}");
    assert!(server.text("/metrics").await.contains("remedy_paused 1"));
    let (_, rec) = server
        .post("/v1/plugins/circuit-breaker-open/runs?wait=true", json!({}))
        .await;
    assert_eq!(rec["dry_run"], true, "{rec}");
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");

    // Resumed is remembered too.
    let (code, _) = server.post("/v1/admin/resume", json!({})).await;
    assert_eq!(code, 200);
    drop(server);
    let server = start(dir.path(), &cfg, &[]);
    assert!(server.get("/v1/admin/pause").await["paused"].is_null());
    assert!(server.text("/metrics").await.contains("remedy_paused 0"));
    let (_, rec) = server
        .post("/v1/plugins/circuit-breaker-open/runs?wait=true", json!({}))
        .await;
    assert_eq!(rec["dry_run"], false, "{rec}");
    assert_eq!(sim.breaker_state("stripe").unwrap(), "HALF_OPEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_acknowledged_while_the_run_slots_are_busy_is_run_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_slot_sleeper(dir.path(), "Slow", 4000);
    let mut server = start(dir.path(), &cfg, &[]);
    let post = |service: &str| {
        payload(vec![alert(
            "Slow",
            "firing",
            json!({"service": service}),
            &format!("fp-{service}"),
            "2026-11-27T03:00:00Z",
        )])
    };
    let (code, a) = server.post("/v1/alerts", post("a")).await;
    assert_eq!(code, 202, "{a}");
    assert_eq!(a["runs"][0]["status"], "queued", "{a}");
    let first = a["runs"][0]["run_id"].as_str().unwrap().to_string();
    until(&server, &first, "running", |r| r["status"] == "running").await;
    // Answered at once although no slot is free: the run is stored, queued.
    let (code, b) = server.post("/v1/alerts", post("b")).await;
    assert_eq!(code, 202, "{b}");
    let second = b["runs"][0]["run_id"].as_str().unwrap().to_string();
    let rec = server.get(&format!("/v1/runs/{second}")).await;
    assert_eq!(rec["status"], "queued", "{rec}");
    assert_eq!(rec["trigger"]["alert"]["fingerprint"], "fp-b");

    server.child.kill().unwrap(); // SIGKILL, before the queued run's turn
    server.child.wait().unwrap();
    drop(server);

    let server = start(dir.path(), &cfg, &[]);
    let rec = server.get(&format!("/v1/runs/{first}")).await;
    assert_eq!(rec["status"], "interrupted", "{rec}");
    let rec = server.finished(&second).await;
    assert_eq!(rec["status"], "succeeded", "resumed and run: {rec}");
    let audit = server.get(&format!("/v1/audit?run={second}")).await;
    assert!(
        audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "run.resumed"),
        "{audit}"
    );
    // The retry Alertmanager sends after a lost answer is a duplicate, and
    // starts nothing while the run it duplicates is fine.
    let (_, again) = server.post("/v1/alerts", post("b")).await;
    assert_eq!(again["duplicates"], 1, "{again}");
    assert_eq!(again["runs"], json!([]), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_of_an_alert_whose_run_failed_retries_with_backoff_then_escalates_once() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, seen) = sink::start().await;
    let cfg = format!(
        "[server]\ndata_dir = \"{data}\"\n[backends.notify.alerts-warning]\nkind = \"webhook\"\nurl = \"{sink}/alerts-warning\"\n{}",
        hostile(
            dir.path(),
            "alerts = [\"Flaky\"]\nconfig = { behave = \"panic\" }\npriority = \"p2\"\nretry_after = \"300ms\""
        ),
        data = dir.path().join("data").display(),
    );
    let server = start(dir.path(), &cfg, &[]);
    let firing = payload(vec![alert(
        "Flaky",
        "firing",
        json!({"service": "api"}),
        "fp-flaky",
        "2026-11-27T03:00:00Z",
    )]);
    let (_, r) = server.post("/v1/alerts", firing.clone()).await;
    let mut ids = vec![r["runs"][0]["run_id"].as_str().unwrap().to_string()];
    assert_eq!(server.finished(&ids[0]).await["status"], "trapped");

    // Within the backoff a repeat (or the HA twin) starts nothing.
    let (_, r) = server.post("/v1/alerts", firing.clone()).await;
    assert_eq!(r["runs"], json!([]), "{r}");

    // Attempts 2..=4 are retries, each after a longer wait. The second
    // comes with the alert twice in one payload: a payload's repeats are
    // decided from one read, and the same alert twice is one repeat, one
    // retry (not a retry and a `skipped` twin).
    let twice = payload(vec![
        firing["alerts"][0].clone(),
        firing["alerts"][0].clone(),
    ]);
    for attempt in 2..=4u32 {
        tokio::time::sleep(Duration::from_millis(300 * 2u64.pow(attempt - 2) + 100)).await;
        let body = if attempt == 2 { &twice } else { &firing };
        let (_, r) = server.post("/v1/alerts", body.clone()).await;
        assert_eq!(
            r["runs"].as_array().unwrap().len(),
            1,
            "attempt {attempt}: {r}"
        );
        assert_eq!(r["runs"][0]["status"], "retried", "attempt {attempt}: {r}");
        let id = r["runs"][0]["run_id"].as_str().unwrap().to_string();
        assert!(!ids.contains(&id), "a new run each time");
        assert_eq!(server.finished(&id).await["status"], "trapped");
        ids.push(id);
    }
    // Then a human hears, once.
    let (_, r) = server.post("/v1/alerts", firing.clone()).await;
    assert_eq!(r["runs"][0]["status"], "escalated", "{r}");
    assert_eq!(r["runs"][0]["run_id"], ids[3].as_str());
    let (_, r) = server.post("/v1/alerts", firing.clone()).await;
    assert_eq!(r["runs"], json!([]), "{r}");
    let sent = sink::on(&seen, "alerts-warning");
    assert_eq!(sent.len(), 1, "{sent:?}");
    let title = sent[0]["title"].as_str().unwrap();
    assert!(title.starts_with("[P2] Remedy gave up: hostile"), "{title}");
    assert!(sent[0]["body"].as_str().unwrap().contains("4 attempt(s)"));
    let rec = server.get(&format!("/v1/runs/{}", ids[3])).await;
    assert!(
        rec["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "notify.escalate" && a["applied"] == "executed"),
        "{rec}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_backend_is_named_and_a_change_answered_too_late_counts_against_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    let cfg = breaker_config(
        dir.path(),
        &sim,
        "",
        "mode = \"auto\"\ntimeout_ms = 1000\nmitigate_timeout_ms = 1000\nverify_after = \"1h\"\ncooldown = \"0s\"\nbudgets = { \"breaker.force-state\" = { max = 1, per = \"1h\" } }",
        "",
    );
    let server = start(dir.path(), &cfg, &[]);
    let path = "/v1/plugins/circuit-breaker-open/runs?wait=true";
    sim.open_breaker("stripe");

    // Reads hang (3 s > the 1 s deadline; the backend's own timeout is 5 s):
    // the plugin hears `unavailable` naming the backend in time, and the run
    // says so instead of a bare `timed_out`.
    sim.set_admin_delay(3000, 0);
    let (_, rec) = server.post(path, json!({})).await;
    assert_ne!(rec["status"], "timed_out", "{rec}");
    assert!(
        rec.to_string()
            .contains("breaker api did not answer before the run's deadline"),
        "{rec}"
    );

    // The change is applied but answered after the deadline: the action is
    // in the record at once as `unknown`, and it counts.
    sim.set_admin_delay(0, 3000);
    let (_, rec) = server.post(path, json!({})).await;
    let unknown = rec["id"].as_str().unwrap().to_string();
    let a = &rec["actions"][0];
    assert_eq!(a["applied"], "unknown", "{rec}");
    assert!(a["error"]
        .as_str()
        .unwrap()
        .contains("whether it took effect is unknown"));
    assert_eq!(
        sim.breaker_state("stripe").unwrap(),
        "HALF_OPEN",
        "it did happen"
    );
    sim.set_admin_delay(0, 0);
    sim.open_breaker("stripe");
    let (_, rec) = server.post(path, json!({})).await;
    let a = &rec["actions"][0];
    assert_eq!(a["applied"], "refused", "{rec}");
    assert!(a["error"].as_str().unwrap().contains("budget"), "{rec}");
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");
    let (_, report) = server
        .get_as("", &format!("/v1/runs/{unknown}/report"))
        .await;
    assert!(
        report.contains("by hand: it was sent and never answered"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_due_when_the_process_died_runs_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    sim.open_breaker("stripe");
    let cfg = breaker_config(
        dir.path(),
        &sim,
        "",
        "mode = \"auto\"\nverify_after = \"1500ms\"\ncooldown = \"0s\"",
        "",
    );
    let mut server = start(dir.path(), &cfg, &[]);
    let (_, rec) = server
        .post("/v1/plugins/circuit-breaker-open/runs?wait=true", json!({}))
        .await;
    assert_eq!(rec["actions"][0]["applied"], "executed", "{rec}");
    let id = rec["id"].as_str().unwrap().to_string();
    server.child.kill().unwrap(); // before verify_after
    server.child.wait().unwrap();
    drop(server);
    let server = start(dir.path(), &cfg, &[]);
    let rec = until(&server, &id, "verified", |r| !r["verification"].is_null()).await;
    assert_eq!(rec["verification"], "resolved", "{rec}");
}
