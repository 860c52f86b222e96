//! Flapping: an alert that keeps coming back after Remedy fixed it. After
//! `flap.max` live mitigations of one alert within `flap.per`, its runs
//! are dry runs that say why, a human is told once, and `clear-flap`
//! lets Remedy act again.

use remedy_e2e::sink;
use serde_json::json;

mod common;
use common::*;

/// circuit-breaker-open in `auto` with `extra` plugin lines, escalating
/// (P1) to a recording sink's `alerts-critical`.
async fn serve(extra: &str) -> (StuckBreaker, sink::Seen) {
    let (sink, seen) = sink::start().await;
    let tail = format!(
        "[backends.notify.alerts-critical]\nkind = \"webhook\"\nurl = \"{sink}/alerts-critical\"\n"
    );
    let plugin = format!(
        "mode = \"auto\"\ncooldown = \"0s\"\nverify_after = \"1h\"\npriority = \"p1\"\n{extra}"
    );
    (stuck_breaker("", &plugin, &tail, &[]).await, seen)
}

/// `stripe` stuck open again, and occurrence `n` of alert `fp` posted:
/// its run once it ended (or waits for an approval).
async fn fire(b: &StuckBreaker, fp: &str, n: u32) -> serde_json::Value {
    b.sim.open_breaker("stripe");
    let (code, r) = b
        .server
        .post(
            "/v1/alerts",
            payload(vec![alert(
                "CircuitBreakerOpen",
                "firing",
                json!({"breaker": "stripe"}),
                fp,
                &format!("2026-12-07T0{n}:00:00Z"),
            )]),
        )
        .await;
    assert_eq!(code, 202, "{r}");
    let id = r["runs"][0]["run_id"].as_str().unwrap().to_string();
    eventually("the run ends", 20, || async {
        let rec = b.server.get(&format!("/v1/runs/{id}")).await;
        (rec["status"] == "succeeded" || rec["status"] == "pending_approval").then_some(rec)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_mitigated_three_times_in_an_hour_is_not_mitigated_a_fourth_until_cleared() {
    let (b, seen) = serve("flap = { max = 3, per = \"1h\" }").await;
    let (sim, server) = (&b.sim, &b.server);
    let fire = |n| fire(&b, "fp-flapping", n);
    for n in 1..=3 {
        let rec = fire(n).await;
        assert_eq!(rec["dry_run"], false, "{rec}");
        assert_eq!(
            actions_on(&rec, "breaker:stripe")[0]["applied"],
            "executed",
            "{rec}"
        );
    }
    // The fourth: a dry run that says why; the breaker is left alone.
    let rec = fire(4).await;
    assert_eq!(rec["dry_run"], true, "{rec}");
    assert!(rec["note"].as_str().unwrap().contains("flapping"), "{rec}");
    assert!(
        rec["note"].as_str().unwrap().contains("3 times in 1h"),
        "{rec}"
    );
    assert_eq!(
        actions_on(&rec, "breaker:stripe")[0]["applied"],
        "simulated"
    );
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");
    // A fifth: still held, and the human was told once.
    let rec = fire(5).await;
    assert_eq!(rec["dry_run"], true, "{rec}");
    let told = sink::on(&seen, "alerts-critical");
    let flapping: Vec<_> = told
        .iter()
        .filter(|m| m["title"].as_str().unwrap_or("").contains("Flapping"))
        .collect();
    assert_eq!(flapping.len(), 1, "{told:?}");
    let audit = server.get("/v1/audit?event=alert.flapping").await;
    assert_eq!(audit["events"].as_array().unwrap().len(), 1, "{audit}");
    assert!(server
        .text("/metrics")
        .await
        .contains("remedy_flapping_holds_total{plugin=\"circuit-breaker-open\"} 2"));

    // Listed as flapping, with the plugin holding off and until when.
    let flapping = |alerts: serde_json::Value| {
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["fingerprint"] == "fp-flapping" && !a["flapping"].is_null())
            .map(|a| a["flapping"].clone())
            .collect::<Vec<_>>()
    };
    let listed = flapping(server.get("/v1/alerts").await);
    assert!(!listed.is_empty(), "not listed as flapping");
    assert_eq!(listed[0]["plugin"], "circuit-breaker-open");
    assert_eq!(listed[0]["mitigations"], 3);
    assert!(listed[0]["until"].is_string(), "{listed:?}");
    // And on the console's overview.
    let page = server.text("/").await;
    assert!(
        page.contains("class=\"badge st-failed flapping\""),
        "{page}"
    );
    assert!(page.contains("remedy alerts clear-flap fp-flapping"));
    assert!(
        page.contains("/console/alerts/fp-flapping/clear-flap"),
        "the button"
    );

    // Cleared from the console's button: Remedy acts again, and the
    // listing says so.
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries a CSRF token")
        .to_string();
    let r = server
        .http
        .post(format!(
            "{}/console/alerts/fp-flapping/clear-flap",
            server.base
        ))
        .header("origin", server.base.clone())
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    // The form answers 303 to the overview, which the client follows.
    assert!(r.status().is_success(), "{}", r.status());
    assert!(flapping(server.get("/v1/alerts").await).is_empty());
    // And from the command line (the API), as a script would.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args([
            "alerts",
            "clear-flap",
            "fp-flapping",
            "--server",
            &server.base,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("acts on fp-flapping again"));
    let rec = fire(6).await;
    assert_eq!(rec["dry_run"], false, "{rec}");
    assert_eq!(
        actions_on(&rec, "breaker:stripe")[0]["applied"],
        "executed",
        "{rec}"
    );
    let cleared = server.get("/v1/audit?event=alert.flap_cleared").await;
    assert_eq!(cleared["events"].as_array().unwrap().len(), 2, "{cleared}");
    assert_eq!(cleared["events"][0]["detail"]["fingerprint"], "fp-flapping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ladder_acts_then_asks_then_only_escalates() {
    let (b, seen) = serve("ladder = [\"auto\", \"approve\", \"escalate\"]").await;
    let sim = &b.sim;
    let fire = |n| fire(&b, "fp-ladder", n);
    // First: as configured, live.
    let rec = fire(1).await;
    assert_eq!(
        actions_on(&rec, "breaker:stripe")[0]["applied"],
        "executed",
        "{rec}"
    );
    // Second: a plan waits for a human.
    let rec = fire(2).await;
    assert_eq!(rec["status"], "pending_approval", "{rec}");
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");
    // Third: only escalated.
    let rec = fire(3).await;
    assert_eq!(rec["status"], "succeeded", "{rec}");
    assert_eq!(rec["dry_run"], true, "{rec}");
    assert!(
        rec["note"].as_str().unwrap().contains("occurrence 3"),
        "{rec}"
    );
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");
    let told = sink::on(&seen, "alerts-critical");
    assert!(
        told.iter().any(|m| m["title"]
            .as_str()
            .unwrap_or("")
            .contains("Repeating alert")),
        "{told:?}"
    );
}
