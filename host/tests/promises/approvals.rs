//! One decision per plan, and plans that run only what was approved: races
//! between approvers, the code that made the plan, and what the `run` role
//! may ask for.

use super::*;

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
