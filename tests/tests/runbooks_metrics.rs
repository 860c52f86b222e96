//! The metric-driven runbooks (payment-processing-failure, webhook-security,
//! high-error-rate, high-latency) end to end: servio-sim with an injected
//! fault, a real Prometheus scraping it, real PostgreSQL, and a recording
//! sink for the notify channels. Each test walks healthy → incident in
//! dry-run (nothing changes, nothing is sent) → incident live.

mod common;

use common::sink;
use common::world::*;
use common::*;
use remedy::record::Applied;
use remedy::RunStatus;
use servio_sim::Health;

const PAYMENT_SUCCESS: &str = "sum(rate(servio_payments_total{outcome=\"succeeded\"}[3s])) / sum(rate(servio_payments_total[3s]))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_failure_with_stuck_breaker_half_opens_it() {
    let w = world().await;
    let remedy = remedy(&w.config(
        "payment-processing-failure",
        &format!(
            "config = {{ window = \"{WINDOW}\" }}\nscope = {{ probe = [\"{}\"] }}",
            w.sim.base_url()
        ),
    ));
    let plugin = remedy
        .load_named("payment-processing-failure")
        .await
        .unwrap();

    w.prom.wait_until(PAYMENT_SUCCESS, |v| v > 0.99).await;
    assert!(healthy(&remedy.run(&plugin, manual(false)).await));

    // Stripe is fine but the breaker is stuck OPEN: every payment fails fast.
    w.sim.open_breaker("stripe");
    w.prom.wait_until(PAYMENT_SUCCESS, |v| v < 0.5).await;

    let dry = remedy.run(&plugin, manual(true)).await;
    assert!(!healthy(&dry));
    assert_eq!(
        actions_on(&dry, "breaker:stripe")[0].applied,
        Applied::Simulated
    );
    assert_eq!(w.sim.breaker_state("stripe").unwrap(), "OPEN");

    let live = remedy.run(&plugin, manual(false)).await;
    assert_eq!(live.status, RunStatus::Succeeded, "{live:#?}");
    assert_eq!(
        actions_on(&live, "breaker:stripe")[0].applied,
        Applied::Executed
    );
    assert_eq!(w.sim.breaker_state("stripe").unwrap(), "HALF_OPEN");
    let text = outcome_text(&live);
    assert!(live.outcome.as_ref().unwrap().mitigated, "{text}");
    assert!(
        text.contains("idempotency") && text.contains("duplicate charge"),
        "{text}"
    );
    assert_eq!(w.sent(), 0, "a stuck breaker is fixed, not escalated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_failure_during_stripe_outage_escalates_p0_with_status_template() {
    let w = world().await;
    let remedy = remedy(&w.config(
        "payment-processing-failure",
        &format!(
            "config = {{ window = \"{WINDOW}\" }}\nscope = {{ probe = [\"{}\"] }}",
            w.sim.base_url()
        ),
    ));
    let plugin = remedy
        .load_named("payment-processing-failure")
        .await
        .unwrap();
    w.sim.set_health("stripe", Health::Down);
    w.sim.set_payment_failures(40.0);
    w.sim.open_breaker("stripe");
    w.prom.wait_until(PAYMENT_SUCCESS, |v| v == 0.0).await;

    let dry = remedy.run(&plugin, manual(true)).await;
    assert!(!healthy(&dry));
    assert_eq!(w.sent(), 0, "dry-run sends nothing");
    assert!(
        dry.actions.iter().all(|a| a.applied == Applied::Simulated),
        "{dry:#?}"
    );

    let live = remedy.run(&plugin, manual(false)).await;
    assert_eq!(live.status, RunStatus::Succeeded, "{live:#?}");
    assert_eq!(
        w.sim.breaker_state("stripe").unwrap(),
        "OPEN",
        "kept open during an outage"
    );
    assert!(actions_on(&live, "breaker:stripe").is_empty());
    // P0 goes to PagerDuty and #alerts-critical, with the seed's template.
    let page = sink::on(&w.seen, "pagerduty");
    assert_eq!(page.len(), 1, "{:#?}", w.seen.lock().unwrap());
    assert_eq!(
        page[0]["title"],
        "[P0] 🚨 Service Outage - Payment Processing"
    );
    let body = page[0]["body"].as_str().unwrap();
    assert!(body.contains("Impact: ~100% of traffic affected"), "{body}");
    assert!(body.contains("Next Update: 15 minutes"), "{body}");
    assert_eq!(page[0]["evidence"]["priority"], "P0");
    assert_eq!(page[0]["evidence"]["respond-within"], "15 min");
    assert_eq!(page[0]["evidence"]["escalate-to"], "CTO, all hands");
    assert_eq!(sink::on(&w.seen, "alerts-critical").len(), 1);
    let text = outcome_text(&live);
    assert!(!live.outcome.as_ref().unwrap().mitigated);
    assert!(text.contains("Post the status page update"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_forgery_is_classified_and_sent_to_security() {
    let w = world().await;
    let remedy = remedy(&w.config(
        "webhook-security",
        &format!("config = {{ window = \"{WINDOW}\", min_failures = 3 }}"),
    ));
    let plugin = remedy.load_named("webhook-security").await.unwrap();
    let received = "sum(increase(servio_webhooks_received_total[3s]))";
    w.prom.wait_until(received, |v| v > 5.0).await;
    assert!(healthy(&remedy.run(&plugin, manual(false)).await));

    w.sim.set_webhook_failures("signature_invalid", 60.0);
    w.prom
        .wait_until(
            "sum(increase(servio_webhook_verification_failures_total{reason=\"signature_invalid\"}[3s]))",
            |v| v >= 4.0,
        )
        .await;
    let dry = remedy.run(&plugin, manual(true)).await;
    assert!(!healthy(&dry));
    let f = &dry.detection.as_ref().unwrap().findings;
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].evidence["classification"], "forged webhooks");
    assert_eq!(w.sent(), 0, "dry-run sends nothing");

    let live = remedy.run(&plugin, manual(false)).await;
    let msgs = sink::on(&w.seen, "security");
    assert_eq!(msgs.len(), 1, "{live:#?}");
    assert!(msgs[0]["title"]
        .as_str()
        .unwrap()
        .contains("forged webhooks"));
    assert!(msgs[0]["evidence"]["failures.signature_invalid"].is_string());
    let text = outcome_text(&live);
    assert!(text.contains("STRIPE_WEBHOOK_SECRET"), "{text}");
    assert!(text.contains("Block the source IP ranges"), "{text}");
    assert!(
        !live.outcome.as_ref().unwrap().mitigated,
        "humans rotate secrets"
    );
}

const ERROR_RATIO: &str = "sum(rate(servio_http_requests_total{status=~\"5..\"}[3s])) / sum(rate(servio_http_requests_total[3s]))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_spike_after_deploy_escalates_a_rollback_and_without_deploy_reports_infra() {
    let w = world().await;
    let remedy = remedy(&w.config(
        "high-error-rate",
        &format!("config = {{ window = \"{WINDOW}\" }}"),
    ));
    let plugin = remedy.load_named("high-error-rate").await.unwrap();
    w.prom.wait_until(ERROR_RATIO, |v| v == 0.0).await;
    assert!(healthy(&remedy.run(&plugin, manual(false)).await));

    // 4% is under the seed's 5%: still healthy.
    w.sim.set_error_percent(4.0);
    w.prom.wait_until(ERROR_RATIO, |v| v > 0.03).await;
    assert!(healthy(&remedy.run(&plugin, manual(false)).await));

    // No deploy in the window: escalate with the infrastructure.
    w.sim.set_error_percent(30.0);
    w.sim.open_breaker("openai");
    w.prom.wait_until(ERROR_RATIO, |v| v > 0.2).await;
    let dry = remedy.run(&plugin, manual(true)).await;
    assert!(!healthy(&dry));
    assert_eq!(w.sent(), 0, "dry-run sends nothing");
    let live = remedy.run(&plugin, manual(false)).await;
    let msgs = sink::on(&w.seen, "alerts-critical");
    assert_eq!(msgs.len(), 1, "{live:#?}");
    let text = msgs[0].to_string();
    assert!(text.contains("no recent deploy"), "{text}");
    assert!(text.contains("open_breakers"), "{text}");
    assert!(
        sink::on(&w.seen, "pagerduty").is_empty(),
        "P1 does not page"
    );

    // A deploy just went out: the message says roll back, naming it.
    w.sim.deploy("2.0.0");
    w.prom
        .wait_until("time() - max(servio_deploy_timestamp_seconds)", |v| {
            v < 600.0
        })
        .await;
    let live = remedy.run(&plugin, manual(false)).await;
    let detection = live.detection.as_ref().unwrap();
    assert!(
        detection
            .findings
            .iter()
            .any(|f| f.summary.contains("build 2.0.0")),
        "{detection:#?}"
    );
    let msgs = sink::on(&w.seen, "alerts-critical");
    assert_eq!(msgs.len(), 2);
    let text = msgs[1].to_string();
    assert!(
        text.contains("roll back") && text.contains("2.0.0"),
        "{text}"
    );
    assert!(outcome_text(&live).contains("git revert HEAD"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_bound_latency_cancels_runaway_query_live_only() {
    let w = world().await;
    let app = unique("latency");
    let remedy = remedy(&w.config(
        "high-latency",
        &format!(
            "config = {{ window = \"{WINDOW}\", runaway_query_ms = 200, applications = [\"{app}\"] }}\nscope = {{ database_applications = [\"{app}\"] }}"
        ),
    ));
    let plugin = remedy.load_named("high-latency").await.unwrap();
    let p95 = "histogram_quantile(0.95, sum by (le) (rate(servio_http_request_duration_seconds_bucket[3s]))) * 1000";
    w.prom.wait_until(p95, |v| v < 100.0).await;
    let pid = sleeper(&app, std::time::Duration::from_millis(300)).await;
    let rec = remedy.run(&plugin, manual(false)).await;
    assert!(
        healthy(&rec),
        "fast requests: the slow query is not our business"
    );

    w.sim.set_extra_latency("db", 900.0);
    w.prom.wait_until(p95, |v| v > 500.0).await;
    let dry = remedy.run(&plugin, manual(true)).await;
    assert!(!healthy(&dry));
    let target = format!("pid:{pid}");
    assert_eq!(
        actions_on(&dry, &target)[0].applied,
        Applied::Simulated,
        "{dry:#?}"
    );
    assert!(still_running(pid).await, "dry-run must not cancel");

    let live = remedy.run(&plugin, manual(false)).await;
    assert_eq!(
        actions_on(&live, &target)[0].applied,
        Applied::Executed,
        "{live:#?}"
    );
    assert_eq!(actions_on(&live, &target)[0].kind, "database.cancel");
    assert!(live.outcome.as_ref().unwrap().mitigated);
    assert!(outcome_text(&live).contains("db "), "breakdown reported");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while still_running(pid).await {
        assert!(
            std::time::Instant::now() < deadline,
            "query {pid} still running"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // (The test's sleeper closes its connection once its query ends, so
    // the session's survival is not observable here: `database.cancel`
    // above is pg_cancel_backend, tested on its own in database.rs.)
    terminate(&[pid]).await;
}

/// Is `pid` still in its `pg_sleep`?
async fn still_running(pid: i32) -> bool {
    let c = connect("remedy-test-watcher").await;
    c.query_opt(
        "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE '%pg_sleep%'",
        &[&pid],
    )
    .await
    .unwrap()
    .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_latency_reports_the_breakdown_and_cancels_nothing() {
    let w = world().await;
    let app = unique("latency-ext");
    let remedy = remedy(&w.config(
        "high-latency",
        &format!(
            "config = {{ window = \"{WINDOW}\", runaway_query_ms = 200, applications = [\"{app}\"] }}\nscope = {{ database_applications = [\"{app}\"] }}"
        ),
    ));
    let plugin = remedy.load_named("high-latency").await.unwrap();
    let pid = sleeper(&app, std::time::Duration::from_millis(300)).await;
    w.sim.set_extra_latency("external", 1500.0);
    w.prom
        .wait_until(
            "histogram_quantile(0.99, sum by (le) (rate(servio_http_request_duration_seconds_bucket[3s]))) * 1000",
            |v| v > 1000.0,
        )
        .await;
    let live = remedy.run(&plugin, manual(false)).await;
    assert!(!healthy(&live));
    assert!(live.actions.is_empty(), "{live:#?}");
    let text = outcome_text(&live);
    assert!(
        text.contains("slowest: external") && text.contains("status pages"),
        "{text}"
    );
    assert!(still_running(pid).await);
    terminate(&[pid]).await;
}
