//! servio-sim as a service deployed from a git repository: the running
//! build is the head of a branch, and what that build does wrong is in the
//! `servio.toml` it carries — a fault commit sets `error_percent` (and
//! `error_status`), and reverting it takes the errors away. Meanwhile the
//! sim writes an access log, one line per sampled request, so that a
//! runbook can find the failing route the way the seed does
//! (`tail -1000 app.log | grep " 5[0-9][0-9] "`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::Sim;

/// The build a branch's head describes.
#[derive(Debug, Clone, PartialEq)]
pub struct Build {
    pub head: String,
    pub error_percent: f64,
    pub error_status: u16,
}

/// The head of `branch` in the repository at `repo` (bare or not) and
/// its `servio.toml`; `None` when the branch cannot be read.
pub fn read(repo: &Path, branch: &str) -> Option<Build> {
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let head = git(&[
        "rev-parse",
        "--verify",
        "--quiet",
        &format!("refs/heads/{branch}"),
    ])?;
    let head = head.trim().to_string();
    let settings = git(&["show", &format!("{head}:servio.toml")]).unwrap_or_default();
    let value = |key: &str| {
        settings.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
    };
    Some(Build {
        head,
        error_percent: value("error_percent")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        error_status: value("error_status")
            .and_then(|v| v.parse().ok())
            .unwrap_or(500),
    })
}

/// Where the sim writes its access log, and the route its errors are on.
pub struct AccessLog {
    file: std::fs::File,
    pub path: PathBuf,
    last: (u64, u64),
}

impl AccessLog {
    pub fn open(path: &Path) -> std::io::Result<AccessLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(AccessLog {
            file,
            path: path.to_path_buf(),
            last: (0, 0),
        })
    }

    /// Lines for the requests answered since the last call (`answered`:
    /// 2xx and 5xx so far), at most a few per call of each kind.
    pub fn write(&mut self, answered: (u64, u64), error_status: u16) {
        let ok = answered.0.saturating_sub(self.last.0).min(5);
        let bad = answered.1.saturating_sub(self.last.1).min(20);
        self.last = answered;
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut out = String::new();
        for i in 0..ok {
            let route = ["/api/orders", "/api/cart", "/health"][i as usize % 3];
            out.push_str(&format!("{ts} GET {route} 200 {}ms\n", 12 + i));
        }
        for i in 0..bad {
            out.push_str(&format!(
                "{ts} POST /api/checkout {error_status} {}ms upstream=payments-v2\n",
                30 + i
            ));
        }
        let _ = self.file.write_all(out.as_bytes());
    }
}

/// Follows `branch` of `repo`: every `every`, a new head goes live (a
/// deploy) with the faults its `servio.toml` sets, and traffic since the
/// last tick goes to the access log.
pub fn follow(
    sim: Sim,
    repo: PathBuf,
    branch: String,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut live: Option<String> = None;
        loop {
            let (r, b) = (repo.clone(), branch.clone());
            let build = tokio::task::spawn_blocking(move || read(&r, &b))
                .await
                .ok()
                .flatten();
            if let Some(build) = build {
                if live.as_deref() != Some(build.head.as_str()) {
                    tracing::info!(head = %build.head, error_percent = build.error_percent, "servio-sim: deployed");
                    sim.go_live(&build);
                    live = Some(build.head);
                }
            }
            sim.tick();
            tokio::time::sleep(every).await;
        }
    })
}
