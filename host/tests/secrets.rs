//! Secrets stay out of what Remedy writes down and shows: a fixture of
//! `remedy run --record`, the params of a run record, `/metrics`.

mod common;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::json;

use common::output_text as text;

/// `remedy` with the test's own compiled-code cache, no database.
fn remedy(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    common::remedy_command()
        .args(args)
        .current_dir(dir)
        .env("REMEDY_CACHE_DIR", dir.join("compiled"))
        .envs(env.iter().copied())
        .output()
        .expect("run remedy")
}

/// One Redis command, inline (the shared Redis of the tests).
fn redis(cmd: &str) -> String {
    let mut s = std::net::TcpStream::connect("127.0.0.1:6379").expect("redis");
    s.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Each secret a recorded run saw, none of which may be in its fixture.
const SECRETS: &[&str] = &[
    "abcdefghijklmnopqrstuvwx",
    "zyxwvutsrqponmlkjihgfedc",
    "0123456789abcdef0123456789abcdef",
    "s3cretpw",
    "abc.def.ghi",
    "hunter2",
    "51HabcDEF0123456789xyz",
    "51HzzzZZZ9876543210abc",
    "PrObEkEy",
];

const PARAMS: &[&str] = &[
    "--param",
    "slack_webhook=https://hooks.slack.com/services/T0AB/B0CD/abcdefghijklmnopqrstuvwx",
    "--param",
    "pagerduty_routing_key=0123456789abcdef0123456789abcdef",
    "--param",
    "dsn=postgres://app:s3cretpw@db.internal:5432/orders",
    "--param",
    "auth_header=Bearer abc.def.ghi",
    "--param",
    "webhook=https://hooks.slack.com/services/T1/B1/zyxwvutsrqponmlkjihgfedc",
    "--param",
    "api_token=hunter2",
];

/// The recorded fixture: not readable by others, no secret in it, a header
/// naming where they were; and it replays to the same verdict.
fn check_recording(
    dir: &Path,
    fixture: &Path,
    plugin: &str,
    config: &[&str],
    header: &[&str],
) -> String {
    let recorded = std::fs::read_to_string(fixture).unwrap();
    for s in SECRETS {
        assert!(!recorded.contains(s), "{s} is in the fixture:\n{recorded}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(fixture).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", fixture.display());
    }
    assert!(
        recorded.starts_with("# Recorded by `remedy run --record`, with "),
        "{recorded}"
    );
    for line in header {
        assert!(
            recorded.contains(&format!("#   {line}\n")),
            "{line} not in the header:\n{recorded}"
        );
    }
    let mut args = vec!["test", plugin, fixture.to_str().unwrap()];
    args.extend_from_slice(config);
    let out = remedy(dir, &args, &[]);
    assert!(out.status.success(), "{}\n{recorded}", text(&out));
    assert!(text(&out).contains("1 passed, 0 failed"), "{}", text(&out));
    recorded
}

/// Redis keys named with a live Stripe key, and secrets in the params: the
/// keys and the actions on them are recorded redacted, each key still its
/// own, and the replay acts on the same (redacted) keys.
#[test]
fn a_recorded_run_keeps_no_secret_of_its_params_or_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = format!("rec{}:", std::process::id());
    let keys = [
        format!("{prefix}acme:charge:sk_live_51HabcDEF0123456789xyz"),
        format!("{prefix}acme:charge:sk_live_51HzzzZZZ9876543210abc"),
    ];
    // One without expiry (acted on), one with: a single action, since a
    // replay scans keys in their order, not in Redis's.
    assert!(redis(&format!("SET {} 1", keys[0])).starts_with("+OK"));
    assert!(redis(&format!("SET {} 1 EX 600", keys[1])).starts_with("+OK"));
    let fixture = tmp.path().join("recorded.toml");
    // Through the redactor's hands: a prefix with no secret in it.
    let key_prefix = format!("key_prefix={prefix}");
    let mut args = vec![
        "run",
        "idempotency-keys",
        "--dry-run",
        "--param",
        &key_prefix,
    ];
    args.extend_from_slice(PARAMS);
    args.extend(["--record", fixture.to_str().unwrap()]);
    let out = remedy(
        tmp.path(),
        &args,
        &[("REMEDY_REDIS_URL", "redis://127.0.0.1:6379")],
    );
    for k in &keys {
        redis(&format!("DEL {k}"));
    }
    assert!(out.status.success(), "{}", text(&out));
    let recorded = check_recording(
        tmp.path(),
        &fixture,
        "idempotency-keys",
        &[],
        &[
            "config.slack_webhook",
            "config.pagerduty_routing_key",
            "config.dsn",
            "config.auth_header",
            "config.webhook",
            "config.api_token",
            "answers.cache.keys[…] (2)",
            "expect.actions[].target",
        ],
    );
    assert!(
        recorded.contains(&format!("key_prefix = \"{prefix}\"")),
        "{recorded}"
    );
    assert!(
        recorded.contains("slack_webhook = \"https://hooks.slack.com/services/REDACTED"),
        "{recorded}"
    );
}

/// A status URL with an API key in its query: the config and the probe's
/// answer keep the same redacted URL, so that the replay finds it.
#[tokio::test]
async fn a_recorded_probe_url_keeps_its_host_and_loses_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = common::sim().await;
    sim.open_breaker("stripe");
    let config = tmp.path().join("remedy.toml");
    std::fs::write(
        &config,
        format!(
            "[backends]\nbreaker_url = \"{base}\"\n\
             [plugins.circuit-breaker-open.scope]\nbreakers = [\"stripe\"]\nprobe = [\"{base}\"]\n",
            base = sim.base_url()
        ),
    )
    .unwrap();
    let fixture = tmp.path().join("recorded.toml");
    let status = format!(
        "status_url.stripe={}/status/stripe/api/v2/status.json?api_key=PrObEkEy",
        sim.base_url().trim_end_matches('/')
    );
    let (dir, cfg, fixture_s) = (
        tmp.path().to_path_buf(),
        config.to_str().unwrap().to_string(),
        fixture.to_str().unwrap().to_string(),
    );
    let out = tokio::task::spawn_blocking(move || {
        remedy(
            &dir,
            &[
                "run",
                "-c",
                &cfg,
                "circuit-breaker-open",
                "--dry-run",
                "--param",
                &status,
                "--record",
                &fixture_s,
            ],
            &[],
        )
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let recorded = check_recording(
        tmp.path(),
        &fixture,
        "circuit-breaker-open",
        // The scope that lets it probe the simulator.
        &["-c", config.to_str().unwrap()],
        &["config.status_url.stripe", "answers.probe[…]"],
    );
    assert!(
        recorded.contains("/status/stripe/api/v2/status.json?api_key=REDACTED"),
        "{recorded}"
    );
}

/// Every bundled fixture, through the recorder's redaction, still passes:
/// the redactor leaves what replays compare (queries, keys, URLs, targets)
/// alone unless it is a secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bundled_fixture_redacted_still_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = remedy::Remedy::new(remedy::Config::default(), Default::default()).unwrap();
    r.set_cache_dir(tmp.path().join("compiled"));
    let mut failed = Vec::new();
    let mut cases = 0;
    for b in remedy::bundled::BUNDLED {
        let plugin = r.load_named(b.name).await.unwrap();
        let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../plugins")
            .join(b.name)
            .join("fixtures");
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            let fx = remedy::fixture::Fixture::load(&f).unwrap();
            let rec = remedy::fixture::writer::redact(&fx).unwrap();
            let back = remedy::fixture::Fixture::parse(&rec.text().unwrap(), &f).unwrap();
            assert_eq!(back.config.len(), fx.config.len(), "{}", f.display());
            let v = remedy::fixture::run_case(&r, &plugin, &rec.fixture, true).await;
            cases += 1;
            if !v.passed() {
                failed.push(format!(
                    "{}: {:?} (redacted {:?})",
                    f.display(),
                    v.failures,
                    rec.redacted
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert!(cases >= 20, "{cases} cases");
}

/// A run's params as the record keeps them (API, console): secret ones
/// redacted by their key or their shape; the plugin got them whole.
#[tokio::test]
async fn a_runs_params_are_stored_and_served_redacted() {
    let tmp = tempfile::tempdir().unwrap();
    let server = common::start(
        tmp.path(),
        &format!(
            "[server]\ndata_dir = \"{}\"\n[backends]\nredis_url = \"redis://127.0.0.1:6379\"\n",
            tmp.path().join("data").display()
        ),
        &[],
    );
    // A prefix shaped like a live key: the plugin names it in its finding.
    let prefix = format!("sk_live_51Hp{}QwErTy9876:", std::process::id());
    let (status, rec) = server
        .post(
            "/v1/plugins/idempotency-keys/runs?wait=true",
            json!({
                "dry_run": true,
                "config": {
                    "key_prefix": prefix,
                    "api_token": "hunter2",
                    "webhook": "https://hooks.slack.com/services/T1/B1/zyxwvutsrqponmlkjihgfedc",
                    "max_actions": 5,
                }
            }),
        )
        .await;
    assert_eq!(status, 200, "{rec}");
    let id = rec["id"].as_str().unwrap().to_string();
    let stored = server.get(&format!("/v1/runs/{id}")).await;
    let listed = server.get("/v1/runs").await;
    for (what, v) in [("answer", &rec), ("stored", &stored)] {
        let params = &v["params"];
        assert_eq!(params["max_actions"], "5", "{what}: {params}");
        assert!(
            params["api_token"]
                .as_str()
                .unwrap()
                .starts_with("REDACTED"),
            "{what}: {params}"
        );
        assert!(
            params["webhook"]
                .as_str()
                .unwrap()
                .starts_with("https://hooks.slack.com/services/REDACTED"),
            "{what}: {params}"
        );
        assert!(
            params["key_prefix"]
                .as_str()
                .unwrap()
                .starts_with("sk_live_REDACTED"),
            "{what}: {params}"
        );
    }
    for v in [&stored["params"], &listed] {
        let s = v.to_string();
        assert!(!s.contains("hunter2") && !s.contains("zyxwvuts"), "{s}");
    }
    // The plugin itself had the real prefix.
    let findings = stored["detection"]["findings"].to_string();
    assert!(findings.contains(&prefix), "{findings}");
}

/// `/metrics` needs no token: it names a plugin that failed to load by
/// its file's name, never by where it lies on the host.
#[tokio::test]
async fn metrics_name_no_file_path() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("ops-private-runbooks");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(plugins.join("broken.wasm"), b"not wasm").unwrap();
    let server = common::start(
        tmp.path(),
        &format!(
            "[server]\ndata_dir = \"{}\"\nplugins_dir = \"{}\"\n",
            tmp.path().join("data").display(),
            plugins.display()
        ),
        &[],
    );
    let metrics = common::eventually("the load failure counted", 10, || async {
        let m = server.text("/metrics").await;
        m.contains("remedy_plugin_load_failures_total{")
            .then_some(m)
    })
    .await;
    assert!(!metrics.contains("ops-private-runbooks"), "{metrics}");
    assert!(
        metrics.contains("remedy_plugin_load_failures_total{plugin=\"file:broken.wasm\"} 1"),
        "{metrics}"
    );
}
