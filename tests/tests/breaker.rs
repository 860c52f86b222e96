//! circuit-breaker-open against servio-sim over real HTTP.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::sink;
use common::*;
use remedy::record::Applied;
use remedy::RunStatus;
use servio_sim::Health;

fn config(sim: &servio_sim::Sim, extra: &str) -> String {
    format!(
        r#"
        [backends]
        breaker_url = "{base}"
        [plugins.circuit-breaker-open.scope]
        breakers = ["stripe", "supabase"]
        probe = ["{base}"]
        [plugins.circuit-breaker-open]
        {extra}
        "#,
        base = sim.base_url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_upstream_half_opens_live_only_down_stays_open_out_of_scope_denied() {
    let sim = servio_sim().await;
    sim.open_breaker("stripe"); // upstream healthy: stuck breaker
    sim.open_breaker("supabase");
    sim.set_health("supabase", Health::Down);
    sim.open_breaker("openai"); // healthy but outside the scope

    let remedy = remedy(&config(&sim, ""));
    let plugin = remedy.load_named("circuit-breaker-open").await.unwrap();

    let dry = remedy.run(&plugin, manual(true)).await;
    assert_eq!(dry.status, RunStatus::Succeeded, "{dry:#?}");
    assert_eq!(dry.detection.as_ref().unwrap().findings.len(), 3);
    let stripe = actions_on(&dry, "breaker:stripe");
    assert_eq!(stripe.len(), 1);
    assert_eq!(stripe[0].kind, "breaker.force-state");
    assert_eq!(stripe[0].applied, Applied::Simulated);
    assert_eq!(
        sim.breaker_state("stripe").unwrap(),
        "OPEN",
        "dry-run must not change a breaker"
    );

    let live = remedy.run(&plugin, manual(false)).await;
    assert_eq!(live.status, RunStatus::Succeeded, "{live:#?}");
    assert_eq!(
        actions_on(&live, "breaker:stripe")[0].applied,
        Applied::Executed
    );
    assert_eq!(sim.breaker_state("stripe").unwrap(), "HALF_OPEN");

    // Upstream down: no action, stays open, a human gets the steps.
    assert!(
        actions_on(&live, "breaker:supabase").is_empty(),
        "{live:#?}"
    );
    assert_eq!(sim.breaker_state("supabase").unwrap(), "OPEN");
    let outcome = live.outcome.as_ref().unwrap();
    assert!(
        outcome
            .manual_steps
            .iter()
            .any(|s| s.contains("supabase stays OPEN")),
        "{outcome:#?}"
    );
    assert!(
        outcome
            .manual_steps
            .iter()
            .any(|s| s.contains("status page")),
        "{outcome:#?}"
    );

    // Out of scope: denied, recorded, untouched.
    let openai = actions_on(&live, "breaker:openai");
    assert_eq!(openai.len(), 1, "{live:#?}");
    assert_eq!(openai[0].applied, Applied::Denied);
    assert_eq!(sim.breaker_state("openai").unwrap(), "OPEN");
    assert!(!outcome.mitigated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_outside_allow_list_is_denied_before_connecting() {
    let sim = servio_sim().await;
    sim.open_breaker("stripe");

    // A listener that counts connections: the probe must never reach it.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_addr = trap.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((_sock, _)) = trap.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });

    let extra =
        format!(r#"config = {{ "status_url.stripe" = "http://{trap_addr}/api/v2/status.json" }}"#);
    let remedy = remedy(&config(&sim, &extra));
    let plugin = remedy.load_named("circuit-breaker-open").await.unwrap();
    let rec = remedy.run(&plugin, manual(false)).await;

    assert_eq!(rec.status, RunStatus::Succeeded, "{rec:#?}");
    let f = &rec.detection.as_ref().unwrap().findings[0];
    assert_eq!(f.evidence["upstream"], "unknown");
    assert!(f.evidence["upstream_detail"].contains("denied"), "{f:#?}");
    assert!(
        rec.logs
            .iter()
            .any(|l| l.contains("denied") && l.contains(&trap_addr.to_string())),
        "{:#?}",
        rec.logs
    );
    assert!(
        actions_on(&rec, "breaker:stripe").is_empty(),
        "unknown upstream health must not reset"
    );
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the probe connected to a denied host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_closed_is_healthy_and_takes_no_action() {
    let sim = servio_sim().await;
    let remedy = remedy(&config(&sim, ""));
    let plugin = remedy.load_named("circuit-breaker-open").await.unwrap();
    let rec = remedy.run(&plugin, manual(false)).await;
    assert_eq!(rec.status, RunStatus::Succeeded);
    assert!(rec.detection.unwrap().healthy);
    assert!(rec.actions.is_empty());
    assert!(rec.outcome.is_none(), "healthy detection must not mitigate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_upstream_pages_the_p0_route_live_and_sends_nothing_in_dry_run() {
    let sim = servio_sim().await;
    sim.open_breaker("supabase");
    sim.set_health("supabase", Health::Down);
    let (sink, seen) = sink::start().await;
    let cfg = format!(
        r#"
        [backends.notify.pagerduty]
        kind = "webhook"
        url = "{sink}/pagerduty"
        {}
        "#,
        config(&sim, "")
    );
    let remedy = remedy(&cfg);
    let plugin = remedy.load_named("circuit-breaker-open").await.unwrap();

    let dry = remedy.run(&plugin, manual(true)).await;
    assert_eq!(
        actions_on(&dry, "channel:pagerduty")
            .first()
            .map(|a| a.applied)
            .unwrap_or_else(|| panic!("{dry:#?}")),
        Applied::Simulated
    );
    assert!(seen.lock().unwrap().is_empty(), "dry-run sends nothing");

    let live = remedy.run(&plugin, manual(false)).await;
    assert_eq!(
        actions_on(&live, "channel:pagerduty")[0].applied,
        Applied::Executed
    );
    let pages = sink::on(&seen, "pagerduty");
    assert_eq!(pages.len(), 1);
    assert!(pages[0]["title"]
        .as_str()
        .unwrap()
        .starts_with("[P0] Upstream down"));
    assert_eq!(pages[0]["evidence"]["breakers"], "supabase");
    assert_eq!(sim.breaker_state("supabase").unwrap(), "OPEN");
    // #alerts-critical is on the P0 route but not configured: noted, not fatal.
    assert!(
        live.logs
            .iter()
            .any(|l| l.contains("skips channel `alerts-critical`")),
        "{:#?}",
        live.logs
    );
}
