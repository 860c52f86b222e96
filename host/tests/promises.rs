//! The safety promises under faults, races and hostile input (issue 9): no
//! secret in any record or log, a kill switch that catches queued runs and
//! survives a restart, one decision per plan, alerts that outlive the
//! request and the process, retries of failed first attempts, and an API a
//! web page cannot drive.

use std::path::Path;
use std::time::{Duration, Instant};

use remedy_e2e::{sink, test_plugin};
use serde_json::{json, Value};

mod common;
use common::*;

/// A `[plugins.hostile]` section serving tests/plugins/hostile.
fn hostile(dir: &Path, extra: &str) -> String {
    let wasm = dir.join("hostile.wasm");
    std::fs::copy(test_plugin("hostile"), &wasm).unwrap();
    format!(
        "[plugins.hostile]\npath = \"{}\"\ntimeout_ms = 10000\n{extra}\n",
        wasm.display()
    )
}

/// A server with its data under `dir`, serving the hostile plugin.
fn with_hostile(dir: &Path, extra: &str) -> String {
    format!(
        "[server]\ndata_dir = \"{}\"\n{}",
        dir.join("data").display(),
        hostile(dir, extra)
    )
}

/// One run slot, and hostile sleeping `ms` for each `alert` it is sent.
fn one_slot_sleeper(dir: &Path, alert: &str, ms: u64) -> String {
    format!(
        "[server]\ndata_dir = \"{}\"\nmax_concurrent_runs = 1\n{}",
        dir.join("data").display(),
        hostile(
            dir,
            &format!("alerts = [\"{alert}\"]\nconfig = {{ behave = \"sleep\", sleep_ms = {ms} }}"),
        )
    )
}

/// Polls until `done` holds for run `id`.
async fn until(server: &Server, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rec = server.get(&format!("/v1/runs/{id}")).await;
        if done(&rec) {
            return rec;
        }
        assert!(Instant::now() < deadline, "never {what}: {rec}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_webhook_url_appears_in_no_record_report_api_answer_log_or_store_file() {
    const SECRET: &str = "T0SECRET/B0SECRET/xoxbSECRET42";
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    // Both routes the run reaches (the plugin's own P0 escalation and the
    // host's P2 one after verification) lead to an unreachable Slack
    // webhook whose path is the secret.
    let channels = "
        [backends.notify.alerts-warning]
        kind = \"slack\"
        url_env = \"T_SLACK_URL\"
        [backends.notify.alerts-critical]
        kind = \"slack\"
        url_env = \"T_SLACK_URL\"
    ";
    let cfg = breaker_config(
        dir.path(),
        &sim,
        "",
        "mode = \"auto\"\nverify_after = \"300ms\"\npriority = \"p2\"\ncooldown = \"0s\"",
        channels,
    );
    let url = format!("http://127.0.0.1:1/services/{SECRET}");
    let server = start_logged(dir.path(), &cfg, &[("T_SLACK_URL", &url)]);
    sim.open_breaker("stripe");
    sim.open_breaker("supabase");
    sim.set_health("supabase", servio_sim::Health::Down);
    let (code, rec) = server
        .post("/v1/plugins/circuit-breaker-open/runs?wait=true", json!({}))
        .await;
    assert_eq!(code, 200, "{rec}");
    let id = rec["id"].as_str().unwrap().to_string();
    let rec = until(&server, &id, "verified", |r| !r["verification"].is_null()).await;
    // The failures are there, and name the channel and where it is.
    let failed: Vec<&Value> = rec["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["applied"] == "failed")
        .collect();
    assert!(!failed.is_empty(), "{rec}");
    for a in &failed {
        let e = a["error"].as_str().unwrap();
        assert!(
            e.contains("notify alerts-") && e.contains("127.0.0.1:1"),
            "{e}"
        );
    }
    let mut seen = vec![
        ("run", server.text(&format!("/v1/runs/{id}")).await),
        ("runs", server.text("/v1/runs").await),
        ("audit", server.text("/v1/audit").await),
        (
            "report",
            server.text(&format!("/v1/runs/{id}/report")).await,
        ),
    ];
    drop(server);
    seen.push((
        "log",
        std::fs::read_to_string(dir.path().join("remedy.log")).unwrap(),
    ));
    assert!(seen[4].1.contains("action"), "the log has the actions");
    for f in std::fs::read_dir(dir.path().join("data")).unwrap() {
        let path = f.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            seen.push(("store", String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    for (what, body) in &seen {
        assert!(
            !body.contains("SECRET"),
            "the secret is in the {what}: {}",
            &body[body.find("SECRET").unwrap().saturating_sub(200)..]
                .chars()
                .take(400)
                .collect::<String>()
        );
    }
}

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
async fn concurrent_approvals_and_rejections_decide_a_plan_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    let cfg = breaker_config(
        dir.path(),
        &sim,
        "",
        "mode = \"approve\"\nverify_after = \"1h\"\ncooldown = \"0s\"",
        "",
    );
    let server = start(dir.path(), &cfg, &[]);
    for round in 0..3 {
        sim.open_breaker("stripe");
        let (_, plan) = server
            .post("/v1/plugins/circuit-breaker-open/runs?wait=true", json!({}))
            .await;
        assert_eq!(plan["status"], "pending_approval", "{plan}");
        let id = plan["id"].as_str().unwrap().to_string();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..16 {
            let (http, url) = (
                server.http.clone(),
                format!(
                    "{}/v1/runs/{id}/{}",
                    server.base,
                    if i % 2 == 0 { "approve" } else { "reject" }
                ),
            );
            tasks.spawn(async move {
                let r = http.post(url).json(&json!({})).send().await.unwrap();
                let code = r.status().as_u16();
                (i % 2 == 0, code, r.json::<Value>().await.unwrap())
            });
        }
        let mut won = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let (approve, code, body) = done.unwrap();
            match code {
                200 | 202 => won.push((approve, body)),
                409 => assert_eq!(body["error"]["code"], "not_pending", "{body}"),
                _ => panic!("round {round}: unexpected {code}: {body}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: {won:?}");
        let (approved, body) = &won[0];
        let rec = server.get(&format!("/v1/runs/{id}")).await;
        let decision = if *approved { "approved" } else { "rejected" };
        assert_eq!(rec["approval"]["decision"], decision, "{rec} vs {body}");
        let audit = server.get(&format!("/v1/audit?run={id}")).await;
        let decisions: Vec<&Value> = audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"].as_str().unwrap().starts_with("approval."))
            .collect();
        assert_eq!(decisions.len(), 1, "{audit}");
        let runs = server.get("/v1/runs?limit=1000").await;
        let live: Vec<&Value> = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["approval_of"] == id.as_str())
            .collect();
        assert_eq!(live.len(), usize::from(*approved), "{runs}");
        if *approved {
            let live = server.finished(live[0]["id"].as_str().unwrap()).await;
            assert_eq!(live["actions"][0]["applied"], "executed", "{live}");
            assert_eq!(sim.breaker_state("stripe").unwrap(), "HALF_OPEN");
        } else {
            assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");
        }
    }
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

const TOKENS: &str = r#"
tokens = [
  { name = "ops-runner", env = "T_RUN", roles = ["run", "read"] },
  { name = "lead-alice", env = "T_APPROVE", roles = ["approve", "run", "read"] },
]"#;
const ENV: [(&str, &str); 2] = [
    ("T_RUN", "run-token-0123456789"),
    ("T_APPROVE", "approve-token-0123456789"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_role_can_make_a_run_safer_never_less_safe() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    sim.open_breaker("stripe");
    let cfg = breaker_config(
        dir.path(),
        &sim,
        TOKENS,
        "mode = \"approve\"\nverify_after = \"1h\"",
        "",
    );
    let server = start(dir.path(), &cfg, &ENV);
    let path = "/v1/plugins/circuit-breaker-open/runs?wait=true";
    for body in [
        json!({"dry_run": false}),
        json!({"mode": "auto"}),
        json!({"config": {"protected_breakers": ""}}),
        json!({"dry_run": true, "config": {"protected_breakers": ""}}),
        json!({"config": {"max_changes": 50}}),
    ] {
        let (code, r) = server
            .post_as("run-token-0123456789", path, body.clone())
            .await;
        assert_eq!(code, 403, "{body}: {r}");
        assert_eq!(r["error"]["code"], "forbidden", "{r}");
    }
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");
    // Safer is fine, with per-run config.
    let (code, r) = server
        .post_as(
            "run-token-0123456789",
            path,
            json!({"dry_run": true, "config": {"max_changes": 50}}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["params"]["max_changes"], "50");
    // An approver may run it live; protected lists stay the config file's.
    let (code, r) = server
        .post_as("approve-token-0123456789", path, json!({"mode": "auto"}))
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(sim.breaker_state("stripe").unwrap(), "HALF_OPEN");
    let (code, _) = server
        .post_as(
            "approve-token-0123456789",
            path,
            json!({"config": {"protected_breakers": ""}}),
        )
        .await;
    assert_eq!(code, 403);
}

/// Issue 28: `mode=approve` on a plugin configured `dry-run` made a plan
/// that an approval then ran live; approve is less safe than dry-run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_role_cannot_turn_a_dry_run_plugin_into_a_plan_that_acts() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    sim.open_breaker("stripe");
    let cfg = breaker_config(dir.path(), &sim, TOKENS, "mode = \"dry-run\"", "");
    let server = start(dir.path(), &cfg, &ENV);
    let path = "/v1/plugins/circuit-breaker-open/runs?wait=true";
    let (code, r) = server
        .post_as("run-token-0123456789", path, json!({"mode": "approve"}))
        .await;
    assert_eq!(code, 403, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mode `approve`"),
        "{r}"
    );
    let (code, r) = server
        .post_as("run-token-0123456789", path, json!({"mode": "dry-run"}))
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_foreign_hosts_and_origins_are_refused_and_every_error_is_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &format!(
            "[server]\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
        &[],
    );
    let url = |p: &str| format!("{}{p}", server.base);
    let port = server.base.rsplit(':').next().unwrap().to_string();
    // DNS rebinding: the page's own name, resolved to 127.0.0.1.
    let r = server
        .http
        .get(url("/v1/runs"))
        .header("host", format!("evil.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden_host", "{body}");
    // Cross-site: a page elsewhere posting to the loopback API.
    for path in ["/v1/admin/resume", "/v1/alerts", "/v1/plugins/hostile/runs"] {
        let r = server
            .http
            .post(url(path))
            .header("origin", "https://evil.example")
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden_origin", "{body}");
    }
    for host in ["localhost", "127.0.0.1", "[::1]"] {
        let r = server
            .http
            .get(url("/v1/admin/pause"))
            .header("host", format!("{host}:{port}"))
            .header("origin", format!("http://{host}:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
    // Error shapes: a bad query string and a wrong method.
    let r = server
        .http
        .get(url("/v1/runs?limit=lots"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("limit"));
    let r = server.http.delete(url("/v1/runs")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
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
async fn a_plugin_cannot_make_its_record_or_the_hosts_log_large() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = with_hostile(dir.path(), "memory_mb = 512");
    let server = start_logged(dir.path(), &cfg, &[]);
    let path = "/v1/plugins/hostile/runs?wait=true";
    // ~60 MB of findings and evidence, 20 MB of manual steps.
    let r = server
        .http
        .post(format!("{}{path}", server.base))
        .json(&json!({"config": {"behave": "findings"}}))
        .send()
        .await
        .unwrap();
    let body = r.bytes().await.unwrap();
    assert!(body.len() < 1_500_000, "record of {} bytes", body.len());
    let rec: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(rec["status"], "succeeded", "{}", rec["error"]);
    assert_eq!(rec["detection"]["findings"].as_array().unwrap().len(), 100);
    assert_eq!(rec["outcome"]["manual_steps"].as_array().unwrap().len(), 50);
    let logs = rec["logs"].to_string();
    assert!(
        logs.contains("500 findings returned; the first 100 kept"),
        "{logs}"
    );
    assert!(logs.contains("10000 manual steps returned"), "{logs}");
    assert!(logs.contains("evidence cut"), "{logs}");

    // 5 MB through `log`, stdout and stderr each: the host's own log gets
    // no more than the run keeps.
    let before = std::fs::metadata(dir.path().join("remedy.log"))
        .unwrap()
        .len();
    let (code, rec) = server
        .post(path, json!({"config": {"behave": "flood"}}))
        .await;
    assert_eq!(code, 200, "{rec}");
    drop(server);
    let grown = std::fs::metadata(dir.path().join("remedy.log"))
        .unwrap()
        .len()
        - before;
    assert!(grown < 256 * 1024, "the host log grew by {grown} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_cannot_take_over_a_bundled_name_or_another_sections_grants() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    // The bundled circuit-breaker-open's own bytes, dropped in plugins_dir
    // (its section grants what it imports, so only the name clash stops it).
    let bundled = remedy::bundled::find("circuit-breaker-open").unwrap();
    std::fs::write(plugins.join("evil.wasm"), bundled.wasm).unwrap();
    let wasm = dir.path().join("hostile.wasm");
    std::fs::copy(test_plugin("hostile"), &wasm).unwrap();
    // A symlink out of plugins_dir is not followed.
    #[cfg(unix)]
    std::os::unix::fs::symlink(&wasm, plugins.join("outside.wasm")).unwrap();
    let cfg = format!(
        "[server]\ndata_dir = \"{}\"\nplugins_dir = \"{}\"\n[plugins.mine]\npath = \"{}\"\ngrants = [\"breaker\"]\n[plugins.circuit-breaker-open]\ngrants = [\"breaker\", \"probe\", \"notify\", \"log\"]\n",
        dir.path().join("data").display(),
        plugins.display(),
        wasm.display()
    );
    let server = start(dir.path(), &cfg, &[]);
    let views = server.get("/v1/plugins").await;
    let entry = |name: &str| {
        views["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {views}"))
    };
    let cbo = entry("circuit-breaker-open");
    assert_eq!(cbo["source"], "bundled", "{cbo}");
    assert_eq!(cbo["status"], "loaded", "{cbo}");
    let evil = entry("file:evil.wasm");
    assert_eq!(evil["status"], "error", "{evil}");
    let e = evil["error"].as_str().unwrap();
    assert!(e.contains("evil.wasm") && e.contains("bundled"), "{e}");
    let mine = entry("mine");
    assert_eq!(mine["status"], "error", "{mine}");
    assert!(
        mine["error"]
            .as_str()
            .unwrap()
            .contains("reports the name `hostile`"),
        "{mine}"
    );
    #[cfg(unix)]
    {
        let outside = entry("file:outside.wasm");
        assert_eq!(outside["status"], "error", "{outside}");
        assert!(
            outside["error"]
                .as_str()
                .unwrap()
                .contains("a path led outside of the filesystem"),
            "{outside}"
        );
    }
    // Removing the file takes nothing bundled with it.
    std::fs::remove_file(plugins.join("evil.wasm")).unwrap();
    let views = eventually("the removed file's entry is gone", 10, || async {
        let v = server.get("/v1/plugins").await;
        let gone = !v["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "file:evil.wasm");
        gone.then_some(v)
    })
    .await;
    assert!(
        views["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "circuit-breaker-open" && p["status"] == "loaded"),
        "{views}"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_and_cache_are_private_and_a_cache_entry_others_could_write_is_not_run() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = format!("[server]\ndata_dir = \"{}\"\n", data.display());
    let server = start(dir.path(), &cfg, &[]);
    // The optimised code is written in the background (runtime::tiers).
    let plugins = server.get("/v1/plugins").await["plugins"]
        .as_array()
        .unwrap()
        .len();
    let cached = || {
        std::fs::read_dir(data.join("compiled")).map_or(0, |d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            })
            .count()
        })
    };
    eventually("the optimised code cached", 120, || async {
        (cached() >= plugins).then_some(())
    })
    .await;
    drop(server);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("remedy.db")), 0o600);
    assert_eq!(mode(&data.join("compiled")), 0o700);
    let entries: Vec<_> = std::fs::read_dir(data.join("compiled"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!entries.is_empty());
    for e in &entries {
        assert_eq!(mode(e), 0o600, "{}", e.display());
    }
    // Someone else could have written this one: it is recompiled, not run.
    std::fs::set_permissions(&entries[0], std::fs::Permissions::from_mode(0o666)).unwrap();
    let server = start_logged(dir.path(), &cfg, &[]);
    let views = server.get("/v1/plugins").await;
    assert!(
        views["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["status"] == "loaded"),
        "{views}"
    );
    drop(server);
    let log = std::fs::read_to_string(dir.path().join("remedy.log")).unwrap();
    assert!(
        log.contains("ignoring a compiled-code cache entry others could have written"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_runs_only_the_code_that_made_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    sim.open_breaker("stripe");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let bytes = std::fs::read(test_plugin("planner")).unwrap();
    std::fs::write(plugins.join("planner.wasm"), &bytes).unwrap();
    let cfg = format!(
        "[server]\ndata_dir = \"{}\"\nplugins_dir = \"{}\"\n[backends]\nbreaker_url = \"{}\"\n[plugins.planner]\nmode = \"approve\"\ngrants = [\"breaker\"]\nverify_after = \"1h\"\n[plugins.planner.scope]\nbreakers = [\"stripe\"]\n",
        dir.path().join("data").display(),
        plugins.display(),
        sim.base_url()
    );
    let server = start(dir.path(), &cfg, &[]);
    let (_, plan) = server
        .post("/v1/plugins/planner/runs?wait=true", json!({}))
        .await;
    assert_eq!(plan["status"], "pending_approval", "{plan}");
    let id = plan["id"].as_str().unwrap();
    // Replaced in place: same name, same kinds and targets, other bytes (a
    // custom section appended keeps it a valid component).
    let mut other = bytes.clone();
    other.extend_from_slice(&[0, 6, 5, b'x', b'-', b'n', b'e', b'w']);
    std::fs::write(plugins.join("planner.wasm"), &other).unwrap();
    let (code, r) = server.post("/v1/plugins/reload", json!({})).await;
    assert_eq!(code, 200, "{r}");
    let now = server.get("/v1/plugins").await;
    let digest = now["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "planner")
        .unwrap()["digest"]
        .clone();
    assert_ne!(digest, plan["plugin_digest"], "the new bytes serve");
    let (code, r) = server
        .post(&format!("/v1/runs/{id}/approve"), json!({}))
        .await;
    assert_eq!(code, 409, "{r}");
    assert_eq!(r["error"]["code"], "plugin_changed", "{r}");
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");
    assert_eq!(
        server.get(&format!("/v1/runs/{id}")).await["status"],
        "pending_approval",
        "still up to a human (to reject, or let expire)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_an_unknown_caller_is_refused_before_its_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[server]\ndata_dir = \"{}\"\n{TOKENS}\n",
        dir.path().join("data").display()
    );
    let server = start(dir.path(), &cfg, &ENV);
    // Headers promising a 900 KB body that never comes: answered at once.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    sock.write_all(
        format!("POST /v1/alerts HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 900000\r\n\r\n{{").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
        .await
        .expect("answered without the body")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(head.contains("unauthorized"), "{head}");
    // Open endpoints stay open; a known token gets through.
    assert_eq!(server.text("/healthz").await, r#"{"status":"ok"}"#);
    let (code, _) = server.get_as("run-token-0123456789", "/v1/runs").await;
    assert_eq!(code, 200);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_dropped_and_do_not_hold_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[server]\ndata_dir = \"{}\"\nread_timeout_ms = 500\ndrain_timeout_ms = 1000\n",
        dir.path().join("data").display()
    );
    let mut server = start(dir.path(), &cfg, &[]);
    let addr = server.base.trim_start_matches("http://").to_string();
    // Headers that never end: the connection is closed.
    let mut headers = tokio::net::TcpStream::connect(&addr).await.unwrap();
    headers
        .write_all(b"POST /v1/alerts HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), headers.read(&mut buf))
        .await
        .expect("closed by the server")
        .unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || head.starts_with("HTTP/1.1 408"), "{head}");
    // A body that never ends: 408.
    let mut body = tokio::net::TcpStream::connect(&addr).await.unwrap();
    body.write_all(
        format!("POST /v1/alerts HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"alerts\"").as_bytes(),
    )
    .await
    .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), body.read(&mut buf))
        .await
        .expect("answered")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(head.contains("request_timeout"), "{head}");
    // Shutdown is not held by a client that stalls.
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled.write_all(b"GET /v1/ru").await.unwrap();
    let pid = server.child.id().to_string();
    let started = Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_reads_its_one_directory_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("ok.txt"), "runbook data").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "outside").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), files.join("link")).unwrap();
    let with = with_hostile(dir.path(), &format!("files = \"{}\"", files.display()));
    let server = start(dir.path(), &with, &[]);
    let (_, rec) = server
        .post(
            "/v1/plugins/hostile/runs?wait=true",
            json!({"config": {"behave": "files"}}),
        )
        .await;
    let ev = &rec["detection"]["findings"][0]["evidence"];
    assert_eq!(ev["read"], "ok:\"runbook data\"", "{rec}");
    for escape in ["dotdot", "absolute", "symlink"] {
        let a = ev[escape].as_str().unwrap();
        assert!(
            a.starts_with("err:") && !a.contains("outside"),
            "{escape}: {a}"
        );
    }
    for write in ["write", "append", "mkdir", "remove"] {
        assert!(
            ev[write].as_str().unwrap().starts_with("err:"),
            "{write}: {ev}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(files.join("ok.txt")).unwrap(),
        "runbook data"
    );
    assert!(!files.join("new.txt").exists() && !files.join("sub").exists());
    drop(server);

    // Without `files`, there is no /data at all.
    let without = format!(
        "[server]\ndata_dir = \"{}\"\n{}",
        dir.path().join("data2").display(),
        hostile(dir.path(), "")
    );
    let server = start(dir.path(), &without, &[]);
    let (_, rec) = server
        .post(
            "/v1/plugins/hostile/runs?wait=true",
            json!({"config": {"behave": "files"}}),
        )
        .await;
    let read = rec["detection"]["findings"][0]["evidence"]["read"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(read.starts_with("err:"), "{read}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route_that_answers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[server]\ndata_dir = \"{}\"\n",
        dir.path().join("data").display()
    );
    let server = start(dir.path(), &cfg, &[]);
    let doc = server.get("/v1/openapi.json").await;
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 15, "{paths:?}");
    let id = "00000000-0000-4000-8000-000000000000";
    for (path, ops) in paths {
        let concrete = path
            .replace("{id}", id)
            .replace("{name}", "circuit-breaker-open");
        for method in ops.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = server
                .http
                .request(m, format!("{}{concrete}", server.base))
                .header("content-type", "application/json")
                .body(if path.ends_with("alerts") {
                    r#"{"alerts":[]}"#
                } else {
                    "{}"
                })
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            // The live feed never ends: its headers are the answer.
            let body = if r.headers()["content-type"] == "text/event-stream" {
                String::new()
            } else {
                r.text().await.unwrap()
            };
            assert!(
                code != 405 && !body.contains("no such endpoint"),
                "{method} {path} is documented but not served: {code} {body}"
            );
            // Schemas referenced by the operation exist.
            for reference in ops[method].to_string().split("\"$ref\":\"").skip(1) {
                let name = reference.split('"').next().unwrap();
                let name = name.trim_start_matches("#/components/schemas/");
                assert!(
                    doc["components"]["schemas"][name].is_object(),
                    "{name} is referenced but not defined"
                );
            }
        }
    }
    for schema in [
        "RunRecord",
        "Receipt",
        "Webhook",
        "EntryView",
        "AuditEvent",
        "Pause",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escapes_and_markdown_from_a_plugin_reach_neither_the_terminal_nor_the_review() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = with_hostile(dir.path(), "");
    let server = start(dir.path(), &cfg, &[]);
    let (_, rec) = server
        .post(
            "/v1/plugins/hostile/runs?wait=true",
            json!({"config": {"behave": "inject"}}),
        )
        .await;
    let id = rec["id"].as_str().unwrap().to_string();
    assert!(rec["detection"]["findings"][0]["summary"]
        .as_str()
        .unwrap()
        .contains('\u{1b}'));
    let (_, report) = server.get_as("", &format!("/v1/runs/{id}/report")).await;
    // The plugin's text is there, but on its line: no heading of its own.
    assert_eq!(
        report.matches("\n## 4. Fixes applied").count(),
        1,
        "{report}"
    );
    assert!(
        !report.contains('\u{1b}') && !report.contains("<script>"),
        "{report}"
    );
    assert!(!report.contains("[click](http"), "{report}");
    assert!(report.contains("\\[click\\]"), "{report}");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args(["runs", &id, "--server", &server.base])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
    assert!(
        text.contains("Fixes applied"),
        "the text is still shown: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_old_history_but_never_a_plan_waiting_for_a_human() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    sim.open_breaker("stripe");
    let cfg = breaker_config(
        dir.path(),
        &sim,
        "retention = \"1s\"",
        "mode = \"approve\"\nverify_after = \"1h\"\napproval_ttl = \"1h\"",
        "",
    );
    let mut server = start(dir.path(), &cfg, &[]);
    let path = "/v1/plugins/circuit-breaker-open/runs?wait=true";
    let (_, plan) = server.post(path, json!({})).await;
    assert_eq!(plan["status"], "pending_approval", "{plan}");
    let (_, old) = server.post(path, json!({"dry_run": true})).await;
    assert_eq!(old["status"], "succeeded", "{old}");
    let (code, _) = server
        .post(
            "/v1/alerts",
            payload(vec![alert(
                "Old",
                "firing",
                json!({}),
                "fp-old",
                "2026-11-28T01:00:00Z",
            )]),
        )
        .await;
    assert_eq!(code, 202);
    // The alert (routed nowhere) and the dry run age past the retention
    // (1s), by the clock the store stamps them with.
    let stored_by = chrono::Utc::now();
    eventually("the history is older than the retention", 5, || async {
        (chrono::Utc::now() > stored_by + chrono::Duration::milliseconds(1100)).then_some(())
    })
    .await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    let server = start(dir.path(), &cfg, &[]); // swept at start, in the background
    let url = format!("{}/v1/runs/{}", server.base, old["id"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.http.get(&url).send().await.unwrap().status() != 404 {
        assert!(Instant::now() < deadline, "the old run was never swept");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kept = server
        .get(&format!("/v1/runs/{}", plan["id"].as_str().unwrap()))
        .await;
    assert_eq!(kept["status"], "pending_approval", "{kept}");
    assert_eq!(server.get("/v1/alerts").await["alerts"], json!([]));
    let audit = server
        .get(&format!("/v1/audit?run={}", old["id"].as_str().unwrap()))
        .await;
    assert_eq!(audit["events"], json!([]), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_on_one_plugin_leaves_run_slots_for_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    let cfg = breaker_config(
        dir.path(),
        &sim,
        "max_concurrent_runs = 3\nmax_runs_per_plugin = 1",
        "",
        &hostile(
            dir.path(),
            "config = { behave = \"sleep\", sleep_ms = 3000 }",
        ),
    );
    let server = start(dir.path(), &cfg, &[]);
    let mut slow = Vec::new();
    for _ in 0..3 {
        let (code, r) = server
            .post("/v1/plugins/hostile/runs", json!({"dry_run": true}))
            .await;
        assert_eq!(code, 202, "{r}");
        slow.push(r["run_id"].as_str().unwrap().to_string());
    }
    // Two of the service's three slots are free, but hostile may hold one.
    let (_, rec) = server
        .post("/v1/plugins/circuit-breaker-open/runs?wait=true", json!({}))
        .await;
    assert_eq!(rec["status"], "succeeded", "{rec}");
    let states: Vec<Value> = statuses_of(&server, &slow).await;
    assert_eq!(
        states.iter().filter(|s| *s == "running").count(),
        1,
        "{states:?}"
    );
    assert_eq!(
        states.iter().filter(|s| *s == "queued").count(),
        2,
        "{states:?}"
    );
}

/// One run slot, a storm of warnings queued for it, then a critical alert:
/// the critical run takes the next slot, ahead of every warning that was
/// waiting before it arrived (issue 13, priority lanes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_alert_in_a_storm_takes_the_next_slot_before_the_queued_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_slot_sleeper(dir.path(), "Storm", 200);
    let server = start(dir.path(), &cfg, &[]);
    let storm = |from: usize, n: usize, severity: &str| {
        payload(
            (from..from + n)
                .map(|i| {
                    alert(
                        "Storm",
                        "firing",
                        json!({"instance": format!("host-{i}"), "severity": severity}),
                        &format!("storm-{i}"),
                        "2026-11-27T03:10:00Z",
                    )
                })
                .collect(),
        )
    };
    let (code, warnings) = server.post("/v1/alerts", storm(0, 8, "warning")).await;
    assert_eq!(code, 202, "{warnings}");
    let (code, critical) = server.post("/v1/alerts", storm(100, 1, "critical")).await;
    assert_eq!(code, 202, "{critical}");
    let critical = server
        .finished(critical["runs"][0]["run_id"].as_str().unwrap())
        .await;
    let mut started_after = 0;
    for r in warnings["runs"].as_array().unwrap() {
        let rec = until(&server, r["run_id"].as_str().unwrap(), "finished", |r| {
            r["status"] == "succeeded"
        })
        .await;
        if rec["started_at"].as_str() > critical["started_at"].as_str() {
            started_after += 1;
        }
    }
    // At most the warning holding the slot (and one that got it while the
    // critical alert's post was on its way) went first.
    assert!(
        started_after >= 6,
        "{started_after} of 8 warnings started after the critical run"
    );
}

/// A dry run that waited for its slot stores its `running` record only
/// once it has run for a while (quick ones are written `queued`, then
/// finished: `service::launch::tests::a_quick_dry_run_that_waited_for_its_slot_writes_no_running_record`);
/// a long one is listed `running` while it runs, not `queued`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_dry_run_that_waited_for_its_slot_is_listed_running() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_slot_sleeper(dir.path(), "Slow", 1500);
    let server = start(dir.path(), &cfg, &[]);
    let alerts = (0..2)
        .map(|i| {
            alert(
                "Slow",
                "firing",
                json!({"instance": format!("host-{i}")}),
                &format!("slow-{i}"),
                "2026-11-27T03:10:00Z",
            )
        })
        .collect();
    let (code, posted) = server.post("/v1/alerts", payload(alerts)).await;
    assert_eq!(code, 202, "{posted}");
    let second = posted["runs"][1]["run_id"].as_str().unwrap().to_string();
    let running = until(&server, &second, "listed running", |r| {
        r["status"] == "running"
    })
    .await;
    assert_eq!(running["dry_run"], true, "{running}");
    let listed = server.get("/v1/runs?status=running").await;
    assert!(
        listed["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == second.as_str()),
        "{listed}"
    );
    let done = until(&server, &second, "finished", |r| r["status"] == "succeeded").await;
    assert_eq!(done["dry_run"], true, "{done}");
}

async fn statuses_of(server: &Server, ids: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for id in ids {
        out.push(server.get(&format!("/v1/runs/{id}")).await["status"].clone());
    }
    out
}

/// A caller waiting for a dry run gets the finished record, stored once at
/// the end (one write instead of two); a run that may act is still stored
/// `running` before it starts, waited for or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waited_dry_run_is_stored_once_finished_and_a_live_one_is_stored_running_first() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = with_hostile(
        dir.path(),
        "config = { behave = \"sleep\", sleep_ms = 1500 }",
    );
    let server = std::sync::Arc::new(start(dir.path(), &cfg, &[]));
    for (dry, listed_while_running) in [(true, 0), (false, 1)] {
        let s = server.clone();
        let run = tokio::spawn(async move {
            s.post(
                "/v1/plugins/hostile/runs?wait=true",
                json!({ "dry_run": dry }),
            )
            .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        let running = server.get("/v1/runs?status=running").await;
        assert_eq!(
            running["runs"].as_array().unwrap().len(),
            listed_while_running,
            "dry_run {dry}: {running}"
        );
        let (code, rec) = run.await.unwrap();
        assert_eq!(code, 200, "{rec}");
        assert_eq!(rec["status"], "succeeded", "{rec}");
        assert_eq!(rec["dry_run"], dry, "{rec}");
        let stored = server
            .get(&format!("/v1/runs/{}", rec["id"].as_str().unwrap()))
            .await;
        assert_eq!(stored["status"], "succeeded", "{stored}");
    }
}
