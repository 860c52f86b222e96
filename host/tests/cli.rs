//! The `remedy` binary: exit statuses, `inspect`, `run` on files and names.

use std::process::{Command, Output};

use remedy_e2e::test_plugin;

mod common;

fn remedy(args: &[&str]) -> Output {
    // No backend leaks in from the environment.
    common::remedy_command()
        .args(args)
        .output()
        .expect("run remedy")
}

use common::output_text as text;

#[test]
fn inspect_rejects_non_components_and_other_worlds() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"definitely not wasm").unwrap();
    let o = remedy(&["inspect", garbage.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not a WebAssembly file"), "{}", text(&o));

    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let o = remedy(&["inspect", core.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("core WebAssembly module, not a component"),
        "{}",
        text(&o)
    );

    let other = test_plugin("other-world");
    let o = remedy(&["inspect", other.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("not a `remedy:plugin/runbook` component"),
        "{}",
        text(&o)
    );
    // Its exports have the runbook's names: it is their types that are
    // refused, once at load, since no instance checks them again.
    assert!(
        text(&o).contains("type-checking export func `describe`"),
        "{}",
        text(&o)
    );
}

#[test]
fn inspect_describes_a_good_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("db.wasm");
    std::fs::write(
        &file,
        remedy::bundled::find("db-connection-exhaustion")
            .unwrap()
            .wasm,
    )
    .unwrap();
    let o = remedy(&["inspect", file.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["info"]["name"], "db-connection-exhaustion");
    assert_eq!(v["info"]["alerts"][0], "DatabaseConnectionExhaustion");
    assert!(v["digest"].as_str().unwrap().starts_with("sha256:"));
    let imports: Vec<&str> = v["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    assert!(
        imports
            .iter()
            .any(|i| i.starts_with("remedy:plugin/database")),
        "{imports:?}"
    );
    assert!(
        !imports
            .iter()
            .any(|i| i.starts_with("remedy:plugin/breaker")),
        "{imports:?}"
    );
}

#[test]
fn run_exit_statuses() {
    // A good file plugin: 0, and --json prints the run record.
    let hostile = test_plugin("hostile");
    let o = remedy(&[
        "run",
        hostile.to_str().unwrap(),
        "--param",
        "behave=ok",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rec: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rec["status"], "succeeded");
    assert_eq!(rec["dry_run"], true, "dry-run is the default");
    assert_eq!(rec["trigger"]["kind"], "manual");

    // A run that does not succeed: 1.
    let o = remedy(&[
        "run",
        hostile.to_str().unwrap(),
        "--param",
        "behave=loop",
        "--timeout-ms",
        "200",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("timed_out"), "{}", text(&o));

    // A bundled plugin by name with no config: its backend is unconfigured.
    let o = remedy(&["run", "db-connection-exhaustion"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("REMEDY_DATABASE_URL"), "{}", text(&o));

    // A config file that leaves the backend unset: still unconfigured,
    // and the error names both the file's key and the variable.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("remedy.toml");
    std::fs::write(
        &cfg,
        "[plugins.db-connection-exhaustion]\nmode = \"dry-run\"\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let o = remedy(&["run", "db-connection-exhaustion", "-c", cfg]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("backends.database_url") && text(&o).contains("REMEDY_DATABASE_URL"),
        "{}",
        text(&o)
    );

    // Usage and config errors: 2.
    assert_eq!(remedy(&["run", "no-such-plugin"]).status.code(), Some(2));
    assert_eq!(remedy(&["run"]).status.code(), Some(2));
    let o = remedy(&["run", test_plugin("ungranted").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("remedy:plugin/database"), "{}", text(&o));
    let o = remedy(&[
        "run",
        test_plugin("ungranted").to_str().unwrap(),
        "--grant",
        "database",
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "granted, it loads and fails on the unconfigured backend: {}",
        text(&o)
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("remedy.toml");
    std::fs::write(&cfg, "[plugins.db-connection-exhaustion]\nmemroy_mb = 8\n").unwrap();
    let o = remedy(&[
        "run",
        "db-connection-exhaustion",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("memroy_mb") && text(&o).contains("remedy.toml"),
        "{}",
        text(&o)
    );
}

#[test]
fn run_with_an_alert_payload_carries_the_alert() {
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("alert.json");
    std::fs::write(
        &payload,
        r#"{"version":"4","status":"firing","receiver":"remedy","groupKey":"{}:{}","alerts":[
            {"status":"firing","labels":{"alertname":"Other"},"annotations":{},"startsAt":"2026-01-01T00:00:00Z","fingerprint":"aaa"},
            {"status":"firing","labels":{"alertname":"DatabaseConnectionExhaustion","service":"api"},"annotations":{"summary":"pool full"},"startsAt":"2026-01-01T00:00:00Z","fingerprint":"bbb","extraField":1}
        ]}"#,
    )
    .unwrap();
    let o = remedy(&[
        "run",
        "db-connection-exhaustion",
        "--alert",
        payload.to_str().unwrap(),
        "--json",
    ]);
    let rec: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)));
    assert_eq!(rec["trigger"]["kind"], "alert");
    assert_eq!(
        rec["trigger"]["alert"]["name"],
        "DatabaseConnectionExhaustion"
    );
    assert_eq!(rec["trigger"]["alert"]["fingerprint"], "bbb");
    assert_eq!(rec["trigger"]["alert"]["labels"]["service"], "api");

    std::fs::write(&payload, r#"{"alerts": 3}"#).unwrap();
    let o = remedy(&[
        "run",
        "db-connection-exhaustion",
        "--alert",
        payload.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    // Validated as the receiver validates a POST, naming the field.
    assert!(
        text(&o).contains("`alerts`") && text(&o).contains("sequence"),
        "{}",
        text(&o)
    );
}

#[test]
fn plugins_lists_the_bundled_runbooks() {
    let o = remedy(&["plugins", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"db-connection-exhaustion") && names.contains(&"circuit-breaker-open"),
        "{names:?}"
    );
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["status"] == "loaded" && p["mode"] == "dry-run"));
}

#[test]
fn plugins_reports_a_bad_plugin_and_lists_the_others() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let cfg = dir.path().join("remedy.toml");
    std::fs::write(&cfg, "[plugins.broken]\npath = \"broken.wasm\"\n").unwrap();
    let o = remedy(&["plugins", "--config", cfg.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v.as_array().unwrap();
    let broken = rows.iter().find(|p| p["name"] == "broken").unwrap();
    assert_eq!(broken["status"], "error");
    assert!(
        broken["error"]
            .as_str()
            .unwrap()
            .contains("core WebAssembly module"),
        "{broken}"
    );
    assert!(rows.iter().filter(|p| p["status"] == "loaded").count() >= 2);
}

#[test]
fn a_sha256_pin_refuses_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("remedy.toml");
    let wrong = "0".repeat(64);
    std::fs::write(
        &cfg,
        format!("[plugins.db-connection-exhaustion]\nsha256 = \"{wrong}\"\n"),
    )
    .unwrap();
    let o = remedy(&["plugins", "--config", cfg.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let db = v
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "db-connection-exhaustion")
        .unwrap();
    assert_eq!(db["status"], "error");
    assert!(
        db["error"]
            .as_str()
            .unwrap()
            .contains("does not match the sha256"),
        "{db}"
    );

    // The right pin loads.
    let right = remedy::runtime::plugin::digest(
        remedy::bundled::find("db-connection-exhaustion")
            .unwrap()
            .wasm,
    );
    std::fs::write(
        &cfg,
        format!("[plugins.db-connection-exhaustion]\nsha256 = \"{right}\"\n"),
    )
    .unwrap();
    let o = remedy(&["plugins", "--config", cfg.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// `remedy approve 'x/../../admin/resume?'` once sent `POST
/// /v1/admin/resume` (issue 9, item 15): ids are checked before any
/// request is made.
#[test]
fn run_ids_that_are_not_uuids_send_no_request() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    for verb in ["approve", "reject", "report", "runs"] {
        for id in ["x/../../admin/resume?", "../admin/pause", "1234"] {
            let o = remedy(&[verb, id, "--server", &server]);
            assert_eq!(o.status.code(), Some(2), "{verb} {id}: {}", text(&o));
            assert!(text(&o).contains("is not a run id"), "{}", text(&o));
        }
    }
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a request reached the server"
    );
}

/// The environment fills in backends a config file leaves unset (as the
/// scaffold's README and the "not configured" error say), and never
/// overrides one the file sets.
#[test]
fn the_environment_fills_backends_the_config_file_leaves_unset() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("remedy.toml");
    std::fs::write(
        &cfg,
        "[plugins.db-connection-exhaustion]\nmode = \"dry-run\"\n",
    )
    .unwrap();
    let run = |cfg: &std::path::Path, url: &str| {
        Command::new(env!("CARGO_BIN_EXE_remedy"))
            .args(["run", "db-connection-exhaustion", "--json", "-c"])
            .arg(cfg)
            .env_remove("DATABASE_URL")
            .env("REMEDY_DATABASE_URL", url)
            .output()
            .unwrap()
    };
    let o = run(&cfg, "postgres://postgres@127.0.0.1:5432/test");
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(!t.contains("no database backend configured"), "{t}");
    // The file's own value wins over the environment: a malformed or
    // unreachable variable is not even looked at.
    std::fs::write(
        &cfg,
        "[backends]\ndatabase_url = \"postgres://postgres@127.0.0.1:5432/test\"\n[plugins.db-connection-exhaustion]\nmode = \"dry-run\"\n",
    )
    .unwrap();
    let o = run(&cfg, "not a url");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Unset in the file and malformed in the environment: the error names
    // the variable.
    std::fs::write(&cfg, "").unwrap();
    let o = run(&cfg, "not a url");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("REMEDY_DATABASE_URL"), "{}", text(&o));
}
