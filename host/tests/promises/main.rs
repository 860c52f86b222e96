//! The safety promises under faults, races and hostile input, one module
//! per subject (one test binary: each is linked once): no secret in any
//! record or log, a kill switch that catches queued runs and survives a
//! restart, one decision per plan, alerts that outlive the request and the
//! process, retries of failed first attempts, and an API a web page cannot
//! drive.

use std::path::Path;
use std::time::{Duration, Instant};

use remedy_e2e::{sink, test_plugin};
use serde_json::{json, Value};

#[path = "../common/mod.rs"]
mod common;
use common::*;

mod approvals;
mod containment;
mod crashes;
mod front_door;
mod run_slots;

/// A `[plugins.hostile]` section serving tests/plugins/hostile.
fn hostile(dir: &Path, extra: &str) -> String {
    let wasm = dir.join("hostile.wasm");
    std::fs::copy(test_plugin("hostile"), &wasm).unwrap();
    format!(
        "[plugins.hostile]\npath = \"{}\"\ntimeout_ms = 10000\n{extra}\n",
        wasm.display()
    )
}

/// A server with its data under `dir`, serving the hostile plugin.
fn with_hostile(dir: &Path, extra: &str) -> String {
    format!(
        "[server]\ndata_dir = \"{}\"\n{}",
        dir.join("data").display(),
        hostile(dir, extra)
    )
}

/// One run slot, and hostile sleeping `ms` for each `alert` it is sent.
fn one_slot_sleeper(dir: &Path, alert: &str, ms: u64) -> String {
    format!(
        "[server]\ndata_dir = \"{}\"\nmax_concurrent_runs = 1\n{}",
        dir.join("data").display(),
        hostile(
            dir,
            &format!("alerts = [\"{alert}\"]\nconfig = {{ behave = \"sleep\", sleep_ms = {ms} }}"),
        )
    )
}

/// Polls until `done` holds for run `id`.
async fn until(server: &Server, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rec = server.get(&format!("/v1/runs/{id}")).await;
        if done(&rec) {
            return rec;
        }
        assert!(Instant::now() < deadline, "never {what}: {rec}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two tokens: one may run and read, one may also approve.
const TOKENS: &str = r#"
tokens = [
  { name = "ops-runner", env = "T_RUN", roles = ["run", "read"] },
  { name = "lead-alice", env = "T_APPROVE", roles = ["approve", "run", "read"] },
]"#;
const ENV: [(&str, &str); 2] = [
    ("T_RUN", "run-token-0123456789"),
    ("T_APPROVE", "approve-token-0123456789"),
];
