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
    let plugin = format!("cooldown = \"0s\"\n{plugin}");
    stuck_breaker(server, &plugin, "", &[("REMEDY_ALERTMANAGER_URL", am)]).await
}

/// A manual live run, waited for: its record.
async fn manual_run(server: &Server) -> Value {
    let (code, rec) = server
        .post("/v1/plugins/circuit-breaker-open/runs?wait=true", json!({}))
        .await;
    assert_eq!(code, 200, "{rec}");
    rec
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
    let run = || manual_run(&server);
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
    let rec = manual_run(&server).await;
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

/// Remedy's silences in Alertmanager, as it lists them.
async fn remedys_silences(am: &Alertmanager) -> Vec<Value> {
    am.silences()
        .await
        .into_iter()
        .filter(|s| s["createdBy"] == "remedy")
        .collect()
}

fn ends_at(s: &Value) -> chrono::DateTime<chrono::Utc> {
    s["endsAt"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_is_held_while_acting_renewed_and_ended_before_verification_pages() {
    let am = Alertmanager::start().await;
    let StuckBreaker {
        dir: _dir,
        sim,
        server,
    } = serve(
        &am.base,
        "",
        "mode = \"auto\"\nsilence_while_acting = true\nsilence_lease = \"2s\"\nverify_after = \"5s\"",
    )
    .await;
    let fp = am.fire(labels()).await;
    let id = webhook(&server, &fp, "2026-12-07T01:00:00Z").await;
    let rec = server.succeeded(&id, "the run", 20).await;
    assert_eq!(sim.breaker_state("stripe").unwrap(), "HALF_OPEN");
    let silence = rec["silence"]
        .as_str()
        .unwrap_or_else(|| panic!("the record names the silence: {rec}"))
        .to_string();

    // Active, on exactly the alert's labels, saying who and why.
    let mine = remedys_silences(&am).await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    let s = &mine[0];
    assert_eq!(s["id"], silence);
    assert_eq!(s["status"]["state"], "active", "{s}");
    assert!(s["comment"].as_str().unwrap().contains(&id), "{s}");
    let mut matchers: Vec<(String, String)> = s["matchers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(
                (m["isRegex"].clone(), m["isEqual"].clone()),
                (json!(false), json!(true))
            );
            (
                m["name"].as_str().unwrap().into(),
                m["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    matchers.sort();
    let mut want: Vec<(String, String)> = labels()
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().into()))
        .collect();
    want.sort();
    assert_eq!(matchers, want);
    let first_end = ends_at(s);

    // Past its first end it is still active, renewed in place.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let now = remedys_silences(&am).await;
    let s = now
        .iter()
        .find(|s| s["id"] == silence)
        .expect("the same silence");
    assert_eq!(s["status"]["state"], "active", "{s}");
    assert!(ends_at(s) > first_end, "renewed: {s}");

    // Verification ends it (resolved here), and the record says so.
    let rec = eventually("verified", 15, || async {
        let rec = server.get(&format!("/v1/runs/{id}")).await;
        (!rec["verification"].is_null()).then_some(rec)
    })
    .await;
    let s = remedys_silences(&am).await;
    assert!(s.iter().all(|s| s["status"]["state"] == "expired"), "{s:?}");
    assert!(
        rec["logs"]
            .to_string()
            .contains(&format!("silence {silence} ended")),
        "{rec}"
    );
    let (_, report) = server.get_as("", &format!("/v1/runs/{id}/report")).await;
    assert!(report.contains(&silence), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_silence_lapses_within_its_lease() {
    let am = Alertmanager::start().await;
    let StuckBreaker {
        dir: _dir,
        sim: _sim,
        server,
    } = serve(
        &am.base,
        "",
        "mode = \"auto\"\nsilence_while_acting = true\nsilence_lease = \"2s\"\nverify_after = \"1h\"",
    )
    .await;
    let fp = am.fire(labels()).await;
    let id = webhook(&server, &fp, "2026-12-07T01:00:00Z").await;
    server.succeeded(&id, "the run", 20).await;
    assert_eq!(remedys_silences(&am).await[0]["status"]["state"], "active");
    // SIGKILL: nobody renews it any more.
    drop(server);
    let killed = chrono::Utc::now();
    let lapsed = eventually("the silence lapses", 10, || async {
        let s = remedys_silences(&am).await;
        s.iter()
            .all(|s| s["status"]["state"] == "expired")
            .then_some(s)
    })
    .await;
    let end = ends_at(&lapsed[0]);
    assert!(
        end <= killed + chrono::Duration::seconds(2),
        "it ended within the lease of the kill: {end} vs {killed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_takes_the_verification_over_adopts_the_silence_and_ends_it() {
    let am = Alertmanager::start().await;
    let db = Db::new("am_adopt").await;
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    sim.open_breaker("stripe");
    let cluster = PgCluster {
        dir: dir.path(),
        db: &db,
        sim: &sim,
        lease: "3s",
        server: "",
        plugin: "mode = \"auto\"\ncooldown = \"0s\"\nsilence_while_acting = true\n\
                 silence_lease = \"10s\"\nverify_after = \"12s\"",
        tail: "",
    };
    let replica =
        |name: &str| cluster.replica(name, &[("REMEDY_ALERTMANAGER_URL", am.base.as_str())]);
    let a = replica("a");
    let b = replica("b");
    let fp = am.fire(labels()).await;
    let id = webhook(&a, &fp, "2026-12-07T01:00:00Z").await;
    let rec = a.succeeded(&id, "the run", 20).await;
    let silence = rec["silence"].as_str().expect("a silence").to_string();
    // A dies; B takes the verification over, and with it the silence.
    drop(a);
    let adopted = eventually("B adopts the silence", 30, || async {
        let e = b.get("/v1/audit?event=silence.adopted").await["events"].clone();
        e.as_array().and_then(|e| e.first().cloned())
    })
    .await;
    assert_eq!(adopted["detail"]["was"], silence, "{adopted}");
    assert_eq!(
        adopted["detail"]["silence"], silence,
        "renewed in place: {adopted}"
    );
    // Past A's last renewal's end, still held.
    let s = remedys_silences(&am).await;
    assert!(
        s.iter()
            .any(|s| s["id"] == silence && s["status"]["state"] == "active"),
        "{s:?}"
    );
    // B's verification ends it.
    eventually("B verifies and ends the silence", 40, || async {
        let rec = b.get(&format!("/v1/runs/{id}")).await;
        let ended = remedys_silences(&am)
            .await
            .iter()
            .all(|s| s["status"]["state"] == "expired");
        (!rec["verification"].is_null() && ended).then_some(())
    })
    .await;
    let ended = b.get("/v1/audit?event=silence.ended").await["events"].clone();
    assert_eq!(ended[0]["detail"]["silence"], silence, "{ended}");
    assert_eq!(
        remedys_silences(&am).await.len(),
        1,
        "one silence, never a second"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alertmanager_that_never_answers_holds_the_run_off_within_its_deadline() {
    // Accepts connections, never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let StuckBreaker {
        dir: _dir,
        sim,
        server,
    } = serve(
        &hung,
        "block_while_firing = [\"MaintenanceWindow\"]",
        "mode = \"auto\"\nmitigate_timeout_ms = 1500",
    )
    .await;
    let started = std::time::Instant::now();
    let rec = manual_run(&server).await;
    let why = refusals(&rec);
    assert!(
        why.len() == 1 && why[0].contains("did not answer before the run's deadline"),
        "{rec}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");
    // The service still answers.
    assert_eq!(server.get("/healthz").await["status"], "ok");
}
