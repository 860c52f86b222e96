//! Alert-aware acting against a real Alertmanager (Debian's
//! `prometheus-alertmanager`, started per test on a free port): act only
//! while the alert still fires, hold off while a blocking alert fires, and
//! fail closed on blocking checks when Alertmanager cannot be asked.

use remedy_e2e::alertmanager::Alertmanager;
use serde_json::{json, Value};

mod common;
use common::*;

fn labels() -> Value {
    json!({"alertname": "CircuitBreakerOpen", "breaker": "stripe", "severity": "critical"})
}

/// The webhook Alertmanager would send for `labels`, with its fingerprint.
async fn webhook(server: &Server, fingerprint: &str, starts_at: &str) -> String {
    let mut l = labels();
    l.as_object_mut().unwrap().remove("alertname");
    let (code, r) = server
        .post(
            "/v1/alerts",
            payload(vec![alert(
                "CircuitBreakerOpen",
                "firing",
                l,
                fingerprint,
                starts_at,
            )]),
        )
        .await;
    assert_eq!(code, 202, "{r}");
    r["runs"][0]["run_id"].as_str().unwrap().to_string()
}

/// circuit-breaker-open in `mode`, `stripe` stuck open, Alertmanager at `am`.
async fn serve(am: &str, server: &str, plugin: &str) -> StuckBreaker {
    let plugin = format!("cooldown = \"0s\"\nverify_after = \"1h\"\n{plugin}");
    stuck_breaker(server, &plugin, "", &[("REMEDY_ALERTMANAGER_URL", am)]).await
}

fn refusals(rec: &Value) -> Vec<String> {
    actions_on(rec, "breaker:stripe")
        .iter()
        .filter(|a| a["applied"] == "refused")
        .map(|a| a["error"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_resolved_before_acting_is_not_acted_on_and_one_still_firing_is() {
    let am = Alertmanager::start().await;
    let StuckBreaker {
        dir: _dir,
        sim,
        server,
    } = serve(&am.base, "", "mode = \"auto\"").await;

    // Fired and resolved before Remedy got to act: nothing done, and why.
    let fp = am.fire(labels()).await;
    am.resolve(labels()).await;
    let id = webhook(&server, &fp, "2026-12-07T01:00:00Z").await;
    let rec = server.succeeded(&id, "the run", 20).await;
    let why = refusals(&rec);
    assert_eq!(why.len(), 1, "{rec}");
    assert!(why[0].contains("alert resolved before acting"), "{why:?}");
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");

    // Firing: acted on.
    let fp = am.fire(labels()).await;
    let id = webhook(&server, &fp, "2026-12-07T02:00:00Z").await;
    let rec = server.succeeded(&id, "the run", 20).await;
    assert_eq!(
        actions_on(&rec, "breaker:stripe")[0]["applied"],
        "executed",
        "{rec}"
    );
    assert_eq!(sim.breaker_state("stripe").unwrap(), "HALF_OPEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_that_arrives_after_the_alert_resolved_acts_on_nothing() {
    let am = Alertmanager::start().await;
    let StuckBreaker {
        dir: _dir,
        sim,
        server,
    } = serve(&am.base, "", "mode = \"approve\"").await;
    let fp = am.fire(labels()).await;
    let id = webhook(&server, &fp, "2026-12-07T01:00:00Z").await;
    eventually("the plan waits", 20, || async {
        let rec = server.get(&format!("/v1/runs/{id}")).await;
        (rec["status"] == "pending_approval").then_some(())
    })
    .await;
    am.resolve(labels()).await;
    let (code, r) = server
        .post(&format!("/v1/runs/{id}/approve"), json!({}))
        .await;
    assert_eq!(code, 202, "{r}");
    let live = r["live_run"].as_str().unwrap().to_string();
    let rec = server.succeeded(&live, "the live run", 20).await;
    let why = refusals(&rec);
    assert!(
        why.len() == 1 && why[0].contains("alert resolved before acting"),
        "{rec}"
    );
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_window_holds_live_actions_off_until_it_ends() {
    let am = Alertmanager::start().await;
    let StuckBreaker {
        dir: _dir,
        sim,
        server,
    } = serve(
        &am.base,
        "block_while_firing = [\"MaintenanceWindow\"]",
        "mode = \"auto\"",
    )
    .await;
    let window = json!({"alertname": "MaintenanceWindow", "team": "platform"});
    am.fire(window.clone()).await;
    // A manual run: blocking alerts hold every run off, not only alerts'.
    let run = || async {
        let (code, rec) = server
            .post("/v1/plugins/circuit-breaker-open/runs?wait=true", json!({}))
            .await;
        assert_eq!(code, 200, "{rec}");
        rec
    };
    let rec = run().await;
    let why = refusals(&rec);
    assert!(
        why.len() == 1
            && why[0].contains("`MaintenanceWindow` fires")
            && why[0].contains("team=platform"),
        "{rec}"
    );
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");
    // Silenced, it still is a maintenance window.
    am.silence(&window, "alice", "we know").await;
    let rec = run().await;
    assert_eq!(refusals(&rec).len(), 1, "{rec}");

    am.resolve(window).await;
    let rec = run().await;
    assert_eq!(
        actions_on(&rec, "breaker:stripe")[0]["applied"],
        "executed",
        "{rec}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn someone_elses_silence_holds_remedy_off() {
    let am = Alertmanager::start().await;
    let StuckBreaker {
        dir: _dir,
        sim,
        server,
    } = serve(&am.base, "", "mode = \"auto\"").await;
    let fp = am.fire(labels()).await;
    am.silence(&labels(), "alice", "handling it by hand").await;
    let id = webhook(&server, &fp, "2026-12-07T01:00:00Z").await;
    let rec = server.succeeded(&id, "the run", 20).await;
    let why = refusals(&rec);
    assert!(
        why.len() == 1 && why[0].contains("silenced by alice (handling it by hand)"),
        "{rec}"
    );
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_down_fails_blocking_checks_closed_and_still_firing_checks_open() {
    // Nothing listens on port 1.
    let down = "http://127.0.0.1:1";
    let StuckBreaker {
        dir: _dir,
        sim,
        server,
    } = serve(
        down,
        "block_while_firing = [\"MaintenanceWindow\"]",
        "mode = \"auto\"",
    )
    .await;
    let (code, rec) = server
        .post("/v1/plugins/circuit-breaker-open/runs?wait=true", json!({}))
        .await;
    assert_eq!(code, 200, "{rec}");
    let why = refusals(&rec);
    assert!(
        why.len() == 1 && why[0].contains("blocking checks fail closed"),
        "{rec}"
    );
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");
    drop(server);

    // Without blocking alerts, the alert is taken on the webhook's word,
    // and the record says so.
    let StuckBreaker {
        dir: _dir2,
        sim,
        server,
    } = serve(down, "", "mode = \"auto\"").await;
    let id = webhook(&server, "fp-am-down", "2026-12-07T01:00:00Z").await;
    let rec = server.succeeded(&id, "the run", 20).await;
    assert_eq!(
        actions_on(&rec, "breaker:stripe")[0]["applied"],
        "executed",
        "{rec}"
    );
    assert!(
        rec["logs"]
            .to_string()
            .contains("acted on the webhook's word"),
        "{rec}"
    );
    assert_eq!(sim.breaker_state("stripe").unwrap(), "HALF_OPEN");
}

#[test]
fn the_example_alertmanager_config_is_one_alertmanager_accepts() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/alertmanager.yml");
    let out = std::process::Command::new("amtool")
        .args(["check-config", example])
        .output()
        .expect("amtool (Debian's prometheus-alertmanager) is installed");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
