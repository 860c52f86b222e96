//! What a plugin, a payload or another user cannot reach: secrets in
//! records, oversized records and logs, bundled names and other sections'
//! grants, private store and cache files, the plugin's one directory,
//! terminal escapes, and history kept only as long as configured.

use super::*;

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
