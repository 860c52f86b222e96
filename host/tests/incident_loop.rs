//! The loop closed beside Slack: PagerDuty incidents Remedy opened are
//! acknowledged and resolved, Grafana shows each live action and
//! verification — against local PagerDuty and Grafana APIs that check the
//! documented request shapes and tokens (`remedy_e2e::incident_api`).

use remedy_e2e::incident_api;
use remedy_e2e::slack_api::FakeSlack;
use serde_json::json;

mod common;
use common::*;
#[path = "slack/interact.rs"]
mod interact;
use interact::*;

/// PagerDuty and Grafana beside Slack: an incident Remedy opened is
/// acknowledged when a human approves the next plan for the same alert and
/// resolved when verification reads `resolved`; every live action and
/// verification is annotated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_closes_in_pagerduty_and_grafana() {
    let fake = FakeSlack::start().await;
    let pd = incident_api::pagerduty().await;
    let grafana = incident_api::grafana().await;
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    sim.open_breaker("stripe");
    sim.set_health("stripe", servio_sim::Health::Down);
    let tail = format!(
        r#"{slack}
        [backends.notify.pagerduty]
        kind = "pagerduty"
        url = "{pd}/v2/enqueue"
        routing_key_env = "PD_ROUTING_KEY"
        [backends.notify.dashboards]
        kind = "grafana"
        url = "{grafana}"
        token_env = "GRAFANA_TOKEN"
        dashboard_uid = "servio-overview"
        [escalation.p0]
        channels = ["pagerduty"]
        "#,
        slack = slack_section(&fake, ""),
        pd = pd.base,
        grafana = grafana.base,
    );
    let plugin = "mode = \"approve\"\ncooldown = \"0s\"\nverify_after = \"300ms\"";
    let config = breaker_config(dir.path(), &sim, "", plugin, &tail);
    let mut env = ENV.to_vec();
    env.extend([
        ("PD_ROUTING_KEY", incident_api::ROUTING_KEY),
        ("GRAFANA_TOKEN", incident_api::GRAFANA_TOKEN),
    ]);
    let server = start_logged(dir.path(), &config, &env);
    let fire = |starts_at: &'static str| {
        payload(vec![alert(
            "CircuitBreakerOpen",
            "firing",
            json!({"breaker": "stripe", "severity": "critical"}),
            "fp-pd-loop",
            starts_at,
        )])
    };
    let key = "remedy:circuit-breaker-open:fp-pd-loop";
    let events = |action: &'static str| {
        let pd = pd.clone();
        move || {
            pd.accepted()
                .into_iter()
                .filter(|e| e["event_action"] == action)
                .collect::<Vec<_>>()
        }
    };

    // 1. Stripe is down: the plan is to page. Approved in Slack, the live
    // run pages; the incident's key is kept on the action.
    let (code, r) = server
        .post("/v1/alerts", fire("2026-12-07T00:00:00Z"))
        .await;
    assert_eq!(code, 202, "{r}");
    let first = r["runs"][0]["run_id"].as_str().unwrap().to_string();
    let (_, value) = posted_plan(&fake, &first).await;
    assert_eq!(press(&server, ALICE, "remedy.approve", &value).await.0, 200);
    let live = live_run_of(&server, &first).await;
    let done = server.succeeded(&live, "the paging run", 20).await;
    let paged = actions_on(&done, "channel:pagerduty");
    assert_eq!(paged[0]["applied"], "executed", "{done}");
    assert_eq!(paged[0]["incident"], key, "{done}");
    let triggers = eventually("PagerDuty is triggered", 10, || async {
        Some(events("trigger")()).filter(|t| !t.is_empty())
    })
    .await;
    assert_eq!(triggers[0]["dedup_key"], key);
    assert_eq!(triggers[0]["payload"]["severity"], "critical");
    // Verification: still open (the upstream is down): not resolved.
    eventually("verified not resolved", 10, || async {
        let rec = server.get(&format!("/v1/runs/{live}")).await;
        (rec["verification"] == "not_resolved").then_some(())
    })
    .await;
    assert!(events("resolve")().is_empty(), "nothing resolved yet");

    // 2. Stripe recovered; the alert fires again: the plan is to
    // half-open. The first approval acknowledges the incident.
    sim.set_health("stripe", servio_sim::Health::Healthy);
    let (code, r) = server
        .post("/v1/alerts", fire("2026-12-07T00:10:00Z"))
        .await;
    assert_eq!(code, 202, "{r}");
    let second = r["runs"][0]["run_id"].as_str().unwrap().to_string();
    let (ts, value) = posted_plan(&fake, &second).await;
    assert!(events("acknowledge")().is_empty(), "not before approval");
    assert_eq!(press(&server, ALICE, "remedy.approve", &value).await.0, 200);
    let acks = eventually("PagerDuty is acknowledged", 10, || async {
        Some(events("acknowledge")()).filter(|a| !a.is_empty())
    })
    .await;
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert_eq!(acks[0]["dedup_key"], key);
    let live = live_run_of(&server, &second).await;
    server.succeeded(&live, "the half-opening run", 20).await;
    assert_eq!(sim.breaker_state("stripe").unwrap(), "HALF_OPEN");
    let resolves = eventually("PagerDuty is resolved", 15, || async {
        Some(events("resolve")()).filter(|r| !r.is_empty())
    })
    .await;
    assert_eq!(resolves.len(), 1, "{resolves:?}");
    assert_eq!(resolves[0]["dedup_key"], key);
    assert!(pd.refused().is_empty(), "{:?}", pd.refused());
    // The plan's thread in Slack tells the same end.
    eventually("the thread tells the verification", 10, || async {
        fake.thread(&ts)
            .iter()
            .any(|l| l.contains("Verification") && l.contains("*resolved*"))
            .then_some(())
    })
    .await;

    // Grafana: the half-open and both verifications, on the dashboard.
    let marks = eventually("Grafana is annotated", 10, || async {
        let a = grafana.accepted();
        let resolved = a
            .iter()
            .any(|m| m["tags"].to_string().contains("\"resolved\""));
        resolved.then_some(a)
    })
    .await;
    assert!(grafana.refused().is_empty(), "{:?}", grafana.refused());
    let tagged = |tag: &str| {
        marks
            .iter()
            .filter(|m| m["tags"].as_array().unwrap().iter().any(|t| t == tag))
            .count()
    };
    assert_eq!(tagged("breaker.force-state"), 1, "{marks:?}");
    assert_eq!(tagged("not_resolved"), 1, "{marks:?}");
    assert_eq!(tagged("resolved"), 1, "{marks:?}");
    for m in &marks {
        assert_eq!(m["dashboardUID"], "servio-overview");
        assert!(
            m["tags"].to_string().contains("circuit-breaker-open"),
            "{m}"
        );
    }
    // The acknowledgement is in the audit log, by whom it was sent.
    let acked = audit_of(&server, "action").await;
    assert!(
        acked
            .iter()
            .any(|e| e["detail"]["kind"] == "notify.acknowledge"
                && e["detail"]["applied"] == "executed"),
        "{acked:?}"
    );
    // No secret travelled into the record, the audit log or the log.
    let log = std::fs::read_to_string(dir.path().join("remedy.log")).unwrap();
    let audit = server.get("/v1/audit?limit=1000").await.to_string();
    let records = server.get("/v1/runs?limit=100").await.to_string();
    for secret in [incident_api::ROUTING_KEY, incident_api::GRAFANA_TOKEN] {
        for (what, text) in [("log", &log), ("audit", &audit), ("records", &records)] {
            assert!(!text.contains(secret), "a secret is in the {what}");
        }
    }
}
