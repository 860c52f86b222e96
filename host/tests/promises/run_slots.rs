//! Run slots under a storm: one plugin cannot take them all, critical alerts
//! go first, and a run that waited is listed and stored as it should be.

use super::*;

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
