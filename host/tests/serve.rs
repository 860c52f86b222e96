//! `remedy serve` over a real socket: alerts, single flight, schedules,
//! restart after SIGKILL, hot loading, auth.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use remedy_e2e::pg;
use remedy_e2e::test_plugin;
use serde_json::{json, Value};

mod common;
use common::*;

/// A well-formed run id that no run has.
fn uuid_like() -> String {
    "00000000-0000-4000-8000-000000000000".into()
}

fn hostile_config(dir: &Path, extra: &str) -> String {
    hostile_config_with(dir, "", extra)
}

/// A config serving tests/plugins/hostile; `server` lines go in [server],
/// `extra` lines in [plugins.hostile].
fn hostile_config_with(dir: &Path, server: &str, extra: &str) -> String {
    let wasm = dir.join("hostile.wasm");
    std::fs::copy(test_plugin("hostile"), &wasm).unwrap();
    format!(
        "[server]\ndata_dir = \"{data}\"\n{server}\n[plugins.hostile]\npath = \"{wasm}\"\ntimeout_ms = 10000\n{extra}",
        data = dir.join("data").display(),
        wasm = wasm.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_in_auto_mode_terminates_a_session_once_and_resolved_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = pg::unique("remedy-test-serve");
    let pid = pg::sleeper(&app, Duration::from_millis(400)).await;
    let server = start(
        dir.path(),
        &format!(
            "[server]\ndata_dir = \"{}\"\n[backends]\ndatabase_url = \"{}\"\n[plugins.db-connection-exhaustion]\nmode = \"auto\"\nconfig = {{ long_query_ms = 300 }}\n[plugins.db-connection-exhaustion.scope]\ndatabase_applications = [\"{app}\"]\n",
            dir.path().join("data").display(),
            pg::pg_url()
        ),
        &[],
    );
    let fp = pg::unique("fp");
    let body = payload(vec![alert(
        "DatabaseConnectionExhaustion",
        "firing",
        json!({"service": &app}),
        &fp,
        "2026-11-27T03:10:00Z",
    )]);
    let (code, receipt) = server.post("/v1/alerts", body.clone()).await;
    assert_eq!(code, 202, "{receipt}");
    assert_eq!(receipt["new"], 1);
    let runs = receipt["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{receipt}");
    let rec = server.finished(runs[0]["run_id"].as_str().unwrap()).await;
    assert_eq!(rec["status"], "succeeded", "{rec}");
    assert_eq!(rec["trigger"]["alert"]["fingerprint"], fp.as_str());
    let acted = rec["actions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["target"] == format!("pid:{pid}") && a["applied"] == "executed");
    assert!(acted, "{rec}");
    assert!(
        !pg::alive(pid, true).await,
        "the session must be terminated"
    );
    let listed = server.get("/v1/runs?plugin=db-connection-exhaustion").await;
    assert!(listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["id"] == rec["id"]));

    // The same notification again (a repeat, or the HA peer's copy): nothing.
    let (code, again) = server.post("/v1/alerts", body).await;
    assert_eq!(code, 202);
    assert_eq!(again["duplicates"], 1, "{again}");
    assert!(again["runs"].as_array().unwrap().is_empty(), "{again}");

    // Resolved: recorded, no mitigation.
    let resolved = payload(vec![alert(
        "DatabaseConnectionExhaustion",
        "resolved",
        json!({"service": &app}),
        &fp,
        "2026-11-27T03:10:00Z",
    )]);
    let (code, r) = server.post("/v1/alerts", resolved).await;
    assert_eq!(code, 202);
    assert_eq!(r["resolved"], 1, "{r}");
    assert!(r["runs"].as_array().unwrap().is_empty(), "{r}");
    let alerts = server.get("/v1/alerts").await;
    assert_eq!(
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["fingerprint"] == fp.as_str())
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_targets_start_three_runs_and_a_busy_target_skips() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &hostile_config(
            dir.path(),
            "alerts = [\"SlowThing\"]\nconfig = { behave = \"sleep\", sleep_ms = 1500 }\n",
        ),
        &[],
    );
    let t = "2026-11-27T03:00:00Z";
    let group = payload(vec![
        alert("SlowThing", "firing", json!({"service": "a"}), "fa", t),
        alert("SlowThing", "firing", json!({"service": "b"}), "fb", t),
        alert("SlowThing", "firing", json!({"service": "c"}), "fc", t),
    ]);
    let (code, r) = server.post("/v1/alerts", group).await;
    assert_eq!(code, 202);
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{r}");
    assert!(runs.iter().all(|x| x["status"] == "queued"), "{r}");

    let one = payload(vec![alert(
        "SlowThing",
        "firing",
        json!({"service": "d"}),
        "fd1",
        t,
    )]);
    let two = payload(vec![alert(
        "SlowThing",
        "firing",
        json!({"service": "d"}),
        "fd2",
        "2026-11-27T03:00:05Z",
    )]);
    let (_, r1) = server.post("/v1/alerts", one).await;
    let (_, r2) = server.post("/v1/alerts", two).await;
    assert_eq!(r1["runs"][0]["status"], "queued", "{r1}");
    assert_eq!(r2["runs"][0]["status"], "skipped", "{r2}");
    let skipped = server
        .get(&format!(
            "/v1/runs/{}",
            r2["runs"][0]["run_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(skipped["status"], "skipped");
    assert!(
        skipped["error"]
            .as_str()
            .unwrap()
            .contains("already in flight"),
        "{skipped}"
    );
    for run in runs {
        assert_eq!(
            server.finished(run["run_id"].as_str().unwrap()).await["status"],
            "succeeded"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_schedule_runs_and_never_overlaps_itself() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &hostile_config(dir.path(), "schedules = [{ name = \"tick\", every = \"1s\", params = { behave = \"sleep\", sleep_ms = 1600 } }]\n"),
        &[],
    );
    // Three runs of 1.6 s on a 1 s schedule: ticks in between are skipped.
    eventually("three scheduled runs finished", 30, || async {
        let runs = server.get("/v1/runs?plugin=hostile").await;
        let n = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "succeeded")
            .count();
        (n >= 3).then_some(())
    })
    .await;
    let runs = server.get("/v1/runs?plugin=hostile").await["runs"]
        .as_array()
        .unwrap()
        .clone();
    // The last run too: it finishes, and no run started while it ran.
    let last = runs
        .iter()
        .max_by_key(|r| r["started_at"].as_str().unwrap().to_string())
        .unwrap();
    let last = server.finished(last["id"].as_str().unwrap()).await;
    assert_eq!(last["status"], "succeeded", "{last}");
    let runs = server.get("/v1/runs?plugin=hostile").await["runs"]
        .as_array()
        .unwrap()
        .clone();
    assert!(runs
        .iter()
        .all(|r| r["trigger"]["kind"] == "schedule" && r["trigger"]["schedule"] == "tick"));
    let mut spans: Vec<(String, String)> = runs
        .iter()
        .map(|r| {
            (
                r["started_at"].as_str().unwrap().to_string(),
                r["finished_at"].as_str().unwrap_or("9999").to_string(),
            )
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        let (a, b) = (chrono_ts(&w[0].1), chrono_ts(&w[1].0));
        assert!(a <= b, "schedule overlapped itself: {spans:?}");
    }
    let metrics = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains("remedy_schedule_skipped_ticks_total{plugin=\"hostile\",schedule=\"tick\"}"),
        "{metrics}"
    );
    // Alone on its SQLite store, the one replica runs the schedules, and
    // every run names the tick it served.
    assert!(
        metrics.contains("remedy_replicas 1") && metrics.contains("remedy_scheduler_leader 1"),
        "{metrics}"
    );
    let cluster = server.get("/v1/cluster").await;
    assert_eq!(cluster["store"], "sqlite");
    assert_eq!(cluster["scheduler"], cluster["replica"]);
    assert_eq!(
        cluster["replicas"].as_array().unwrap().len(),
        1,
        "{cluster}"
    );
    // A 1 s interval ticks at one fixed phase of the second (from the
    // schedule's name): every tick has the same fraction.
    let fractions: std::collections::BTreeSet<&str> = runs
        .iter()
        .map(|r| {
            r["trigger"]["tick"]
                .as_str()
                .unwrap()
                .split_once('.')
                .unwrap()
                .1
        })
        .collect();
    assert_eq!(fractions.len(), 1, "{fractions:?}");
}

fn chrono_ts(s: &str) -> String {
    // RFC 3339 in UTC with a fixed precision sorts as text; normalise the
    // fraction so that `…:01Z` and `…:01.5Z` compare right.
    let (main, frac) = s
        .trim_end_matches('Z')
        .split_once('.')
        .unwrap_or((s.trim_end_matches('Z'), "0"));
    format!("{main}.{frac:0<9}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_alerts_and_runs_survive_and_the_inflight_run_reads_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let config = hostile_config(
        dir.path(),
        "alerts = [\"Anything\"]\nconfig = { behave = \"sleep\", sleep_ms = 8000 }\n",
    );
    let mut server = start(dir.path(), &config, &[]);
    let (code, r) = server
        .post("/v1/plugins/hostile/runs", json!({"dry_run": true}))
        .await;
    assert_eq!(code, 202, "{r}");
    let id = r["run_id"].as_str().unwrap().to_string();
    let (code, _) = server
        .post(
            "/v1/alerts",
            payload(vec![alert(
                "Unrouted",
                "firing",
                json!({}),
                "fk",
                "2026-11-27T03:00:00Z",
            )]),
        )
        .await;
    assert_eq!(code, 202);
    assert_eq!(
        server.get(&format!("/v1/runs/{id}")).await["status"],
        "running"
    );

    // The optimised code is cached in the background: once it is, the
    // restart deserializes instead of compiling.
    let compiled = dir.path().join("data/compiled");
    eventually(
        "the bundled plugins and hostile in the compile cache",
        60,
        || async {
            let cached = std::fs::read_dir(&compiled).map_or(0, |d| d.count());
            (cached >= 9).then_some(())
        },
    )
    .await;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    drop(server);

    let server = start(dir.path(), &config, &[]);
    let rec = server.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(rec["status"], "interrupted", "{rec}");
    assert!(
        rec["error"]
            .as_str()
            .unwrap()
            .contains("stopped while this run was in flight"),
        "{rec}"
    );
    let alerts = server.get("/v1/alerts").await;
    assert!(
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["fingerprint"] == "fk"),
        "{alerts}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_load_serves_new_plugins_and_keeps_the_old_one_on_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let plugins: PathBuf = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let server = start(
        dir.path(),
        &format!(
            "[server]\ndata_dir = \"{}\"\nplugins_dir = \"{}\"\n",
            dir.path().join("data").display(),
            plugins.display()
        ),
        &[],
    );
    let target = plugins.join("hostile.wasm");
    std::fs::copy(test_plugin("hostile"), &target).unwrap();
    let loaded = wait_for(&server, |p| {
        p.iter()
            .any(|x| x["name"] == "hostile" && x["status"] == "loaded")
    })
    .await;
    assert!(loaded, "hostile never loaded");
    let (code, rec) = server
        .post("/v1/plugins/hostile/runs?wait=true", json!({}))
        .await;
    assert_eq!(code, 200, "{rec}");
    assert_eq!(rec["status"], "succeeded");

    std::fs::write(&target, b"garbage, not wasm at all").unwrap();
    let flagged = wait_for(&server, |p| {
        p.iter().any(|x| {
            x["name"] == "hostile"
                && x["status"] == "loaded_with_error"
                && x["error"]
                    .as_str()
                    .unwrap_or("")
                    .contains("not a WebAssembly file")
        })
    })
    .await;
    assert!(flagged, "{:#}", server.get("/v1/plugins").await);
    let (code, rec) = server
        .post("/v1/plugins/hostile/runs?wait=true", json!({}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(rec["status"], "succeeded", "the old version keeps serving");
}

/// A plugin the compiled-code cache misses is served at once on quick code;
/// its optimised code is compiled in the background, cached and swapped in,
/// and a restart reads it from the cache without compiling anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_serves_quick_code_until_the_optimised_code_is_cached_and_swapped_in() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = hostile_config(dir.path(), "");
    let log = || std::fs::read_to_string(dir.path().join("remedy.log")).unwrap();
    let count = |what: &str| log().matches(what).count();
    let server = start_logged(dir.path(), &cfg, &[]);
    let plugins = server.get("/v1/plugins").await["plugins"]
        .as_array()
        .unwrap()
        .len();
    assert!(plugins >= 9, "the bundled plugins and hostile");
    assert_eq!(count("compiled on the quick tier"), plugins, "{}", log());
    let (code, rec) = server
        .post("/v1/plugins/hostile/runs?wait=true", json!({}))
        .await;
    assert_eq!((code, &rec["status"]), (200, &json!("succeeded")), "{rec}");
    let compiled = dir.path().join("data").join("compiled");
    let cached = || {
        std::fs::read_dir(&compiled)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
                    .count()
            })
            .unwrap_or(0)
    };
    eventually("every plugin's optimised code in place", 120, || async {
        (count("optimised code in place") == plugins).then_some(())
    })
    .await;
    assert_eq!(cached(), plugins);
    let (code, rec) = server
        .post("/v1/plugins/hostile/runs?wait=true", json!({}))
        .await;
    assert_eq!((code, &rec["status"]), (200, &json!("succeeded")), "{rec}");
    drop(server);

    // A write a killed process left unfinished is cleared at start.
    let unfinished = compiled.join("0123-4567.tmp4000000");
    std::fs::write(&unfinished, b"half a compiled plugin").unwrap();
    let server = start_logged(dir.path(), &cfg, &[]);
    assert!(!unfinished.exists());
    let (code, rec) = server
        .post("/v1/plugins/hostile/runs?wait=true", json!({}))
        .await;
    assert_eq!((code, &rec["status"]), (200, &json!("succeeded")), "{rec}");
    assert_eq!(
        count("compiled on the quick tier"),
        plugins,
        "a warm start compiles nothing: {}",
        log()
    );
    assert_eq!(cached(), plugins);
}

async fn wait_for(server: &Server, ok: impl Fn(&Vec<Value>) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let v = server.get("/v1/plugins").await;
        if ok(v["plugins"].as_array().unwrap()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_limits_and_malformed_bodies_create_no_run() {
    let dir = tempfile::tempdir().unwrap();
    let server_lines = "max_body_bytes = 2048\n\
        tokens = [{ name = \"reader\", env = \"T_READ\", roles = [\"read\"] }, \
                  { name = \"runner\", env = \"T_RUN\", roles = [\"run\", \"alerts\"] }]";
    let config = hostile_config_with(dir.path(), server_lines, "alerts = [\"X\"]\n");
    let server = start(
        dir.path(),
        &config,
        &[
            ("T_READ", "read-secret-0123456789"),
            ("T_RUN", "run-secret-0123456789"),
        ],
    );
    let url = |p: &str| format!("{}{p}", server.base);
    let c = &server.http;

    let r = c
        .post(url("/v1/plugins/hostile/runs"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "unauthorized");

    let r = c
        .post(url("/v1/plugins/hostile/runs"))
        .bearer_auth("read-secret-0123456789")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`run` role"));

    let big = json!({"alerts": [], "padding": "x".repeat(4096)});
    let r = c
        .post(url("/v1/alerts"))
        .bearer_auth("run-secret-0123456789")
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "payload_too_large"
    );

    let r = c
        .post(url("/v1/alerts"))
        .bearer_auth("run-secret-0123456789")
        .body("{\"alerts\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("EOF while parsing"));

    let bad = json!({"alerts": [{"status": "firing", "labels": {"alertname": "X"}}]});
    let r = c
        .post(url("/v1/alerts"))
        .bearer_auth("run-secret-0123456789")
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("startsAt"));

    let r = c
        .post(url("/v1/plugins/hostile/runs"))
        .bearer_auth("run-secret-0123456789")
        .json(&json!({"dry_run": "yes"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("dry_run"));

    let runs: Value = c
        .get(url("/v1/runs"))
        .bearer_auth("read-secret-0123456789")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(runs["runs"].as_array().unwrap().is_empty(), "{runs}");
    assert_eq!(
        c.get(url("/healthz")).send().await.unwrap().status(),
        200,
        "healthz is open"
    );
}

#[test]
fn refuses_a_public_address_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("remedy.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\ndata_dir = \"{}\"\n",
            dir.path().join("d").display()
        ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no tokens configured"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_running_runs_and_remedy_runs_lists_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = hostile_config(
        dir.path(),
        "config = { behave = \"sleep\", sleep_ms = 1200 }\n",
    );
    let mut server = start_logged(dir.path(), &config, &[]);
    let (code, r) = server.post("/v1/plugins/hostile/runs", json!({})).await;
    assert_eq!(code, 202, "{r}");
    let id = r["run_id"].as_str().unwrap().to_string();

    let o = Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args(["runs", "--server", &server.base, "--json"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let listed: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(listed[0]["id"], id.as_str());

    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    let status = server.child.wait().unwrap();
    assert!(status.success(), "graceful exit, got {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "drain took {:?}",
        started.elapsed()
    );
    drop(server);
    // A clean shutdown is not an error: the store's writer ending with it
    // had logged one ("the store's writer thread stopped") on every stop.
    let log = std::fs::read_to_string(dir.path().join("remedy.log")).unwrap();
    assert!(!log.contains("ERROR"), "{log}");

    let server = start(dir.path(), &config, &[]);
    let rec = server.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(
        rec["status"], "succeeded",
        "the run was drained, not interrupted: {rec}"
    );

    // `remedy runs ID` shows that one run in full; an unknown one is an error.
    let show = |id: &str| {
        Command::new(env!("CARGO_BIN_EXE_remedy"))
            .args(["runs", id, "--server", &server.base])
            .output()
            .unwrap()
    };
    let o = show(&id);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        text.starts_with(&format!("run {id} · hostile")) && text.contains("detection: healthy"),
        "{text}"
    );
    let o = show("no-such-run");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a run id"),
        "{o:?}"
    );
    let o = show(&uuid_like());
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("404"), "{o:?}");
}
