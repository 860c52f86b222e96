//! What operators install beside the binary holds: the systemd unit in
//! `examples/systemd/` verifies and is hardened, and the Prometheus rules
//! and Grafana dashboard in `examples/monitoring/` pass promtool's own tests
//! and name only metrics a running Remedy exports.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// The unit with `ExecStart` pointing at this build (systemd checks that
/// the binary exists).
fn unit_for_this_build(dir: &Path) -> PathBuf {
    let unit = std::fs::read_to_string(examples().join("systemd/remedy.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/remedy serve"));
    let unit = unit.replace("/usr/local/bin/remedy", env!("CARGO_BIN_EXE_remedy"));
    let path = dir.join("remedy.service");
    std::fs::write(&path, unit).unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_this_build(dir.path());
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

/// `systemd-analyze security` rates a unit's exposure from 0 (locked down)
/// to 10; the unit must stay at "OK" (under 2.0).
#[test]
fn the_systemd_unit_is_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_this_build(dir.path());
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20"])
        .arg(&unit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let overall = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("no overall exposure level");
    assert!(
        out.status.success(),
        "the unit's exposure is above 2.0: {overall}\n{stdout}"
    );
}

#[test]
fn the_alerting_rules_pass_promtool_check_and_its_unit_tests() {
    let dir = examples().join("monitoring");
    for args in [
        &["check", "rules", "remedy-rules.yml"][..],
        &["test", "rules", "remedy-rules.test.yml"][..],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool (Debian's prometheus package)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `remedy_…` names in `text`, as exported (a histogram's `_bucket`,
/// `_sum` and `_count` are its own name).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("remedy_") {
        let before = rest[..i].chars().next_back();
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        // `remedy:runs:rate5m` (a recording rule) and words like
        // `max_runs_per_plugin` are not metric names.
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        out.insert(base.to_string());
    }
    out
}

#[tokio::test]
async fn the_rules_and_dashboard_name_only_metrics_remedy_exports() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(
        dir.path(),
        &format!("[server]\ndata_dir = {:?}\n", dir.path().join("data")),
        &[],
    );
    let exposition = server.text("/metrics").await;
    let exported: BTreeSet<String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect();
    assert!(exported.contains("remedy_store_healthy"), "{exposition}");
    let mut unknown = Vec::new();
    for file in [
        "monitoring/remedy-rules.yml",
        "monitoring/remedy-rules.test.yml",
        "monitoring/grafana-dashboard.json",
    ] {
        let text = std::fs::read_to_string(examples().join(file)).unwrap();
        for name in metric_names(&text) {
            if !exported.contains(&name) {
                unknown.push(format!("{file}: {name}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics Remedy does not export (renamed or never added?): {unknown:?}"
    );
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(examples().join("monitoring/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let ids: Vec<u64> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "panel ids repeat: {ids:?}");
    // Every alert the rules define has a test case in the unit tests.
    let rules = std::fs::read_to_string(examples().join("monitoring/remedy-rules.yml")).unwrap();
    let tests =
        std::fs::read_to_string(examples().join("monitoring/remedy-rules.test.yml")).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "alert {alert} has no case in remedy-rules.test.yml"
        );
    }
}

#[test]
fn the_name_scan_sees_metrics_and_skips_rules_and_keys() {
    let names = metric_names(
        "rate(remedy_runs_total[5m]) remedy:runs:rate5m max_remedy_x \
         remedy_run_wait_seconds_bucket{le=\"1\"}",
    );
    assert_eq!(
        names,
        ["remedy_run_wait_seconds", "remedy_runs_total"]
            .map(String::from)
            .into()
    );
}

fn remedy(args: &[&str]) -> std::process::Output {
    common::remedy_command().args(args).output().unwrap()
}

/// `remedy backup` copies the SQLite store while the server writes it, and
/// the copy, put in place of a store, serves every run it holds.
#[tokio::test]
async fn a_backup_taken_while_serving_restores_into_a_working_server() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let config = format!("[server]\ndata_dir = {:?}\n", live.join("data"));
    let server = common::start(&live, &config, &[]);
    let cfg = live.join("remedy.toml");
    let out = dir.path().join("backup.db");
    // Runs keep arriving during the backup.
    let writing = {
        let (base, http) = (server.base.clone(), server.http.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..200 {
                let r: serde_json::Value = http
                    .post(format!("{base}/v1/plugins/circuit-breaker-open/runs"))
                    .json(&serde_json::json!({"dry_run": true}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                ids.push(
                    r["run_id"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{r}"))
                        .to_string(),
                );
            }
            ids
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let backed = tokio::task::spawn_blocking({
        let (cfg, out) = (cfg.clone(), out.clone());
        move || {
            remedy(&[
                "backup",
                "--config",
                cfg.to_str().unwrap(),
                out.to_str().unwrap(),
            ])
        }
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&backed.stdout).to_string();
    assert!(
        backed.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&backed.stderr)
    );
    let ids = writing.await.unwrap();
    let runs: u64 = said
        .strip_prefix("backed up ")
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {said:?}"));
    assert!(runs > 0, "{said}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the backup holds records: owner-only");
    }
    // A second backup never overwrites a file.
    let again = remedy(&[
        "backup",
        "--config",
        cfg.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("backup.db"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    drop(server);

    // Restore: the copy as the store of a new data directory.
    let restored = dir.path().join("restored");
    std::fs::create_dir_all(restored.join("data")).unwrap();
    std::fs::copy(&out, restored.join("data/remedy.db")).unwrap();
    let server = common::start(
        &restored,
        &format!("[server]\ndata_dir = {:?}\n", restored.join("data")),
        &[],
    );
    let listed = server.get("/v1/runs?limit=1000").await;
    let listed = listed["runs"].as_array().unwrap();
    assert_eq!(
        listed.len() as u64,
        runs,
        "the restored store serves every run it holds"
    );
    // The snapshot is a prefix of what was written: the runs it has are
    // the first ones posted.
    let first = &ids[0];
    let found = server.get(&format!("/v1/runs/{first}")).await;
    assert_eq!(found["id"], first.as_str(), "{found}");
}

#[test]
fn a_backup_of_a_postgresql_store_points_to_pg_dump() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("remedy.toml");
    std::fs::write(
        &cfg,
        "[server]\nstore = \"postgres://postgres@127.0.0.1:5432/test\"\n",
    )
    .unwrap();
    let out = remedy(&[
        "backup",
        "--config",
        cfg.to_str().unwrap(),
        dir.path().join("b.db").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pg_dump"), "{err}");
    assert!(!dir.path().join("b.db").exists());
}
