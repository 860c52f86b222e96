//! Writing, testing and shipping a runbook as an author outside this
//! repository would: `remedy new` in each language, `remedy test` against
//! fixtures (the bundled runbooks' own included), `remedy run --record`,
//! and signed plugins loaded by a `remedy serve` that requires signatures.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The compiled-code cache of the test that owns `dir`: one per test (the
/// temp dir `dir` is in), and the one its server uses too (`data_dir =
/// ROOT/data`), so a 18 MB Python component is compiled once per test.
fn cache_of(dir: &Path) -> PathBuf {
    let root = dir
        .ancestors()
        .find(|a| {
            a.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp"))
        })
        .unwrap_or(dir);
    root.join("data").join("compiled")
}

fn remedy(dir: &Path, args: &[&str]) -> Output {
    common::remedy_command()
        .args(args)
        .current_dir(dir)
        .env("REMEDY_CACHE_DIR", cache_of(dir))
        .output()
        .expect("run remedy")
}

use common::output_text as text;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn every_bundled_runbook_passes_its_fixtures() {
    let tmp = tempfile::tempdir().unwrap();
    let mut failed = Vec::new();
    let mut cases = 0;
    for b in remedy::bundled::BUNDLED {
        let fixtures = repo().join("plugins").join(b.name).join("fixtures");
        let n = std::fs::read_dir(&fixtures)
            .map(|d| d.count())
            .unwrap_or_else(|e| panic!("{}: {e}", fixtures.display()));
        assert!(
            n >= 2,
            "{}: a healthy case and at least one incident",
            b.name
        );
        cases += n;
        let out = remedy(tmp.path(), &["test", b.name, fixtures.to_str().unwrap()]);
        if !out.status.success() {
            failed.push(text(&out));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert!(cases >= 20, "{cases} cases");
}

/// What a failing case says: the call no answer covered, each expectation
/// that differs, the key and line of a malformed fixture; while cases that
/// go through the real gate (a scope, a missing grant, dry-run) pass.
#[test]
fn verdicts_name_what_differs_and_the_gate_is_real() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let leak = r#"
[answers.database]
stats = { total = 95, active = 20, idle = 5, idle_in_transaction = 70, waiting = 3, max_connections = 100 }
[[answers.database.sessions]]
pid = 4242
application_name = "worker"
state = "idle in transaction"
duration_ms = 120000
"#;
    let cases = [
        (
            "1-unanswered.toml",
            "[answers.database]\nstats = { total = 5, max_connections = 100 }\n".to_string(),
        ),
        (
            "2-wrong.toml",
            "[answers.database]\nmax_connections = 100\nsessions = []\n[expect]\nhealthy = false\nactions = [{ kind = \"database.terminate\", target = \"pid:1\" }]\n".to_string(),
        ),
        (
            "3-malformed.toml",
            "name = \"bad\"\n\n[expect]\nhealthy = \"yes\"\n".to_string(),
        ),
        (
            "4-scope.toml",
            format!("[plugin]\nscope = {{ database_applications = [\"api\"] }}\n{leak}\n[expect]\nhealthy = false\nactions = [{{ kind = \"database.terminate\", target = \"pid:4242\", applied = \"denied\" }}]\nmitigated = false\n"),
        ),
        (
            "5-dry-run.toml",
            format!("dry_run = true\n{leak}\n[expect]\nactions = [{{ kind = \"database.terminate\", target = \"pid:4242\", applied = \"simulated\" }}]\nmitigated = false\n"),
        ),
        (
            "6-ungranted.toml",
            format!("[plugin]\ngrants = [\"log\"]\n{leak}\n[expect]\nstatus = \"denied\"\n"),
        ),
    ];
    for (name, body) in &cases {
        std::fs::write(dir.join(name), body).unwrap();
    }
    let out = remedy(tmp.path(), &["test", "db-connection-exhaustion"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("database.long_running(60000, 50) is not answered by the fixture (add [[answers.database.sessions]])"),
        "{t}"
    );
    assert!(t.contains("healthy: expected false, got true"), "{t}");
    assert!(
        t.contains("action 1: expected database.terminate pid:1 → *, got nothing"),
        "{t}"
    );
    assert!(
        t.contains("3-malformed.toml: expect.healthy: invalid type"),
        "{t}"
    );
    assert!(t.contains("(line 4)"), "{t}");
    for pass in ["4-scope", "5-dry-run", "6-ungranted"] {
        assert!(t.contains(&format!("PASS  {pass}")), "{pass}: {t}");
    }
    assert!(
        t.contains("6 case(s) of db-connection-exhaustion: 3 passed, 3 failed"),
        "{t}"
    );

    // --json carries each verdict and its record.
    let out = remedy(
        tmp.path(),
        &[
            "test",
            "db-connection-exhaustion",
            "fixtures/5-dry-run.toml",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["passed"], true);
    assert_eq!(v[0]["record"]["actions"][0]["applied"], "simulated");
}

/// A real run against PostgreSQL, recorded, replays as a passing case;
/// secrets in the config stay out of the file.
#[tokio::test]
async fn a_recorded_run_replays_and_keeps_no_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let app = format!("rec-{}", std::process::id());
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 user=postgres dbname=test application_name={app}"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client.batch_execute("BEGIN; SELECT 1").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let fixture = tmp.path().join("recorded.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args([
            "run",
            "db-connection-exhaustion",
            "--dry-run",
            "--param",
            "long_query_ms=200",
            "--param",
            "max_terminations=500",
            "--param",
            "api_token=hunter2",
            "--record",
            fixture.to_str().unwrap(),
        ])
        .env("REMEDY_CACHE_DIR", cache_of(tmp.path()))
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let recorded = std::fs::read_to_string(&fixture).unwrap();
    assert!(
        recorded.contains(&app),
        "our session is in the answers:\n{recorded}"
    );
    assert!(!recorded.contains("hunter2"), "{recorded}");
    assert!(recorded.contains("api_token = \"REDACTED"), "{recorded}");
    assert!(!recorded.contains("postgres://"), "{recorded}");
    drop(client);

    // Replayed without any database: the same verdict.
    let out = remedy(
        tmp.path(),
        &[
            "test",
            "db-connection-exhaustion",
            fixture.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}\n{recorded}", text(&out));
    assert!(text(&out).contains("1 passed, 0 failed"), "{}", text(&out));
}

fn have(tool: &str) -> bool {
    // minisign knows only `-v`.
    let flag = if tool == "minisign" {
        "-v"
    } else {
        "--version"
    };
    Command::new(tool)
        .arg(flag)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Where a Rust scaffold builds: `target/wasm-bundled` (host/build.rs's).
fn scaffold_target() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is target/tmp")
        .join("wasm-bundled")
}

/// Builds a scaffold as its README says; the `.wasm` it made.
fn build(lang: &str, name: &str, dir: &Path) -> PathBuf {
    let out = match lang {
        "rust" => Command::new("cargo")
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            // The bundled plugins' target dir: the SDK's dependencies
            // (wit-bindgen and its macros) are compiled there already.
            .env("CARGO_TARGET_DIR", scaffold_target())
            .current_dir(dir)
            .output(),
        "python" => Command::new("componentize-py")
            .args(["-d", "wit", "-w", "runbook", "componentize", "app", "-o"])
            .arg(format!("{name}.wasm"))
            .current_dir(dir)
            .output(),
        _ => Command::new("componentize-js")
            .args([
                "--wit",
                "wit",
                "--world-name",
                "runbook",
                "-d",
                "http",
                "-d",
                "fetch-event",
                "-o",
            ])
            .arg(format!("{name}.wasm"))
            .arg("runbook.js")
            .current_dir(dir)
            .output(),
    }
    .unwrap_or_else(|e| panic!("{lang} build: {e}"));
    assert!(out.status.success(), "{lang} build failed:\n{}", text(&out));
    if lang == "rust" {
        let wasm = scaffold_target()
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let local = dir.join(format!("{name}.wasm"));
        std::fs::copy(&wasm, &local).unwrap();
        local
    } else {
        dir.join(format!("{name}.wasm"))
    }
}

/// `remedy new` → build → `remedy test` passes its generated fixtures.
fn scaffold_passes(lang: &str, uses: &str, root: &Path) -> PathBuf {
    let name = format!("{lang}-runbook");
    let out = remedy(root, &["new", &name, "--lang", lang, "--uses", uses]);
    assert!(out.status.success(), "{}", text(&out));
    let dir = root.join(&name);
    // A scaffold copied to production as-is can't act on every database
    // session: the scope names a placeholder application.
    let settings = std::fs::read_to_string(dir.join("remedy.toml")).unwrap();
    assert!(!settings.contains("[\"*\"]"), "{settings}");
    if uses.contains("database") {
        assert!(
            settings.contains("database_applications = [\"worker\"]"),
            "{settings}"
        );
    }
    // Every interface asked for is imported by the world and granted.
    let world = std::fs::read_to_string(dir.join("wit/world.wit")).unwrap();
    for cap in uses.split(',') {
        assert!(world.contains(&format!("import {cap};")), "{world}");
        assert!(settings.contains(&format!("\"{cap}\"")), "{settings}");
    }
    if uses.contains("logs") {
        assert!(settings.contains("log_sources = [\"app\"]"), "{settings}");
    }
    let wasm = build(lang, &name, &dir);
    let out = remedy(&dir, &["test", "-c", "remedy.toml", wasm.to_str().unwrap()]);
    assert!(out.status.success(), "{lang}: {}", text(&out));
    assert!(text(&out).contains("2 passed, 0 failed"), "{}", text(&out));
    wasm
}

#[test]
fn a_javascript_scaffold_builds_and_passes_its_fixtures() {
    if !have("componentize-js") {
        eprintln!("SKIPPED: componentize-js is not installed (npm install -g @bytecodealliance/componentize-js)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let wasm = scaffold_passes("js", "metrics,database", tmp.path());
    // The world was narrowed: the grant check accepts it with only these.
    let out = remedy(tmp.path(), &["inspect", wasm.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let imports = v["imports"].to_string();
    assert!(
        imports.contains("remedy:plugin/database") && !imports.contains("remedy:plugin/cache"),
        "{imports}"
    );
    assert!(!imports.contains("wasi:http"), "{imports}");
}

fn sign(keys: &Path, file: &Path) {
    let out = Command::new("minisign")
        .args(["-S", "-s"])
        .arg(keys.join("remedy.key"))
        .arg("-m")
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

/// The acceptance path of docs/writing-a-runbook.md: a Python and a Rust
/// runbook created, tested with fixtures, signed, and loaded by a running
/// `remedy serve` that requires signatures — which refuses an unsigned and
/// a tampered file, and keeps the old version when a bad one replaces it.
#[tokio::test]
async fn python_and_rust_runbooks_signed_and_served() {
    assert!(
        have("minisign"),
        "minisign is needed (apt install minisign)"
    );
    if !have("componentize-py") {
        panic!("componentize-py is needed (pip install componentize-py)");
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    // Both builds at once: the Python one waits on CPython, not the CPU.
    let (py, rs) = {
        let r1 = root.clone();
        let py = std::thread::spawn(move || scaffold_passes("python", "database", &r1));
        let rs = scaffold_passes("rust", "metrics,database,logs,deploy", &root);
        (py.join().unwrap(), rs)
    };

    let keys = root.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let out = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(keys.join("remedy.pub"))
        .arg("-s")
        .arg(keys.join("remedy.key"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let public = std::fs::read_to_string(keys.join("remedy.pub")).unwrap();
    let public = public.lines().nth(1).unwrap().trim().to_string();

    let plugins = root.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for wasm in [&py, &rs] {
        let dest = plugins.join(wasm.file_name().unwrap());
        std::fs::copy(wasm, &dest).unwrap();
        sign(&keys, &dest);
    }
    // The same Python bytes, unsigned, under another name; and a
    // signature that belongs to other bytes.
    std::fs::copy(&py, plugins.join("unsigned.wasm")).unwrap();
    std::fs::copy(&rs, plugins.join("tampered.wasm")).unwrap();
    std::fs::copy(
        plugins.join("python-runbook.wasm.minisig"),
        plugins.join("tampered.wasm.minisig"),
    )
    .unwrap();

    let config = format!(
        r#"[server]
data_dir = "{data}"
plugins_dir = "{plugins}"
trusted_keys = ["{public}"]
require_signature = true

[plugins.python-runbook]
grants = ["database", "log"]
memory_mb = 128

[plugins.rust-runbook]
grants = ["metrics", "database", "log"]
"#,
        data = root.join("data").display(),
        plugins = plugins.display(),
    );
    // inspect says who signed it, with the config's keys.
    std::fs::write(root.join("inspect.toml"), &config).unwrap();
    let out = remedy(
        &root,
        &[
            "inspect",
            plugins.join("python-runbook.wasm").to_str().unwrap(),
            "-c",
            "inspect.toml",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["signature"]["state"], "by", "{v}");
    assert_eq!(v["signature"]["key"], public.as_str(), "{v}");
    // Too little memory for the Python image: refused at load, naming the
    // setting that fixes it (describe() itself ran with enough).
    let out = remedy(
        &root,
        &[
            "run",
            py.to_str().unwrap(),
            "--grant",
            "database",
            "--memory-mb",
            "4",
        ],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("MiB of memory to start") && t.contains("set `memory_mb = "),
        "{t}"
    );

    let server = common::start(&root, &config, &[]);
    let rows = common::eventually("both runbooks loaded", 60, || async {
        let rows = server.get("/v1/plugins").await["plugins"].clone();
        let loaded = rows
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "loaded" && r["signed_by"] == public.as_str())
            .count();
        (loaded == 2).then_some(rows)
    })
    .await;
    let row = |source: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["source"].as_str().unwrap_or("").ends_with(source))
            .cloned()
            .unwrap_or_else(|| panic!("{source}: {rows:#}"))
    };
    for (file, name) in [
        ("python-runbook.wasm", "python-runbook"),
        ("rust-runbook.wasm", "rust-runbook"),
    ] {
        assert_eq!(row(file)["name"], name, "{rows:#}");
    }
    let unsigned = row("unsigned.wasm");
    assert_eq!(unsigned["status"], "error");
    assert!(
        unsigned["error"].as_str().unwrap().contains("no signature"),
        "{unsigned}"
    );
    let tampered = row("tampered.wasm");
    assert!(
        tampered["error"]
            .as_str()
            .unwrap()
            .contains("does not verify with any trusted key"),
        "{tampered}"
    );

    // A served runbook runs (dry, no database configured: it says so).
    let (status, started) = server
        .post(
            "/v1/plugins/rust-runbook/runs?wait=true",
            serde_json::json!({}),
        )
        .await;
    assert!(status < 300, "{status} {started}");

    // Replacing a good file with an unsigned one keeps the old version.
    let digest = row("rust-runbook.wasm")["digest"].clone();
    std::fs::remove_file(plugins.join("rust-runbook.wasm.minisig")).unwrap();
    std::fs::copy(&py, plugins.join("rust-runbook.wasm")).unwrap();
    let after = common::eventually("the bad replacement is refused", 30, || async {
        let rows = server.get("/v1/plugins").await["plugins"].clone();
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "rust-runbook" && r["error"].is_string())
            .cloned()
    })
    .await;
    assert_eq!(after["status"], "loaded_with_error", "{after}");
    assert_eq!(after["digest"], digest, "the old version still serves");
    assert!(
        after["error"].as_str().unwrap().contains("signature"),
        "{after}"
    );
}

/// The two builds each toolchain makes by default, refused with the fix:
/// componentize-py against the whole world (seven imports, two granted),
/// componentize-js with `wasi:http` left in.
#[test]
fn toolchain_defaults_are_refused_with_the_fix() {
    if !have("componentize-py") || !have("componentize-js") {
        eprintln!("SKIPPED: componentize-py or componentize-js is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for (lang, name) in [("python", "py-whole"), ("js", "js-http")] {
        let out = remedy(root, &["new", name, "--lang", lang, "--uses", "database"]);
        assert!(out.status.success(), "{}", text(&out));
        // The whole contract, as `remedy wit` exports it without --uses.
        let dir = root.join(name);
        std::fs::remove_dir_all(dir.join("wit")).unwrap();
        let out = remedy(&dir, &["wit", "wit"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let py_dir = root.join("py-whole");
    let py = std::thread::spawn(move || build("python", "py-whole", &py_dir));
    let js_dir = root.join("js-http");
    let out = Command::new("componentize-js")
        .args([
            "--wit",
            "wit",
            "--world-name",
            "runbook",
            "-o",
            "js-http.wasm",
            "runbook.js",
        ])
        .current_dir(&js_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let py = py.join().unwrap();

    let out = remedy(
        &root.join("py-whole"),
        &["test", "-c", "remedy.toml", py.to_str().unwrap()],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("imports every interface of the `runbook` world"),
        "{t}"
    );
    // Every interface it was not granted is named (the list grows with
    // the world).
    assert!(
        t.contains("metrics, breaker, cache, notify, probe") && t.contains("are not granted"),
        "{t}"
    );
    assert!(t.contains("remedy new --uses"), "{t}");

    let out = remedy(&js_dir, &["test", "-c", "remedy.toml", "js-http.wasm"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("imports `wasi:http/"), "{t}");
    assert!(t.contains("-d http -d fetch-event"), "{t}");
}
