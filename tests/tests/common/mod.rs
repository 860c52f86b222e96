//! Helpers shared by the end-to-end tests: real PostgreSQL sessions, a
//! servio-sim on a free port, Remedy built from a config string.

#![allow(dead_code)]

use std::path::Path;

pub use remedy_e2e::prom;
pub mod sink;
pub mod world;

use remedy::config::Config;
use remedy::remedy::Overrides;
use remedy::{Remedy, RunRecord, RunRequest, Trigger};
#[allow(unused_imports)]
pub use remedy_e2e::pg::*;

pub fn remedy(toml: &str) -> Remedy {
    let cfg = Config::parse(toml, Path::new("test.toml")).expect("test config parses");
    Remedy::new(cfg, Overrides::default()).expect("remedy starts")
}

pub fn manual(dry_run: bool) -> RunRequest {
    RunRequest {
        trigger: Trigger::Manual { by: "test".into() },
        dry_run: Some(dry_run),
        params: Default::default(),
        stage: remedy::guardrails::Stage::Normal,
    }
}

/// Actions of `record` on `target`.
pub fn actions_on<'a>(
    record: &'a RunRecord,
    target: &str,
) -> Vec<&'a remedy::record::ActionRecord> {
    record
        .actions
        .iter()
        .filter(|a| a.target == target)
        .collect()
}

/// A servio-sim on a free loopback port.
pub async fn servio_sim() -> servio_sim::Sim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    servio_sim::spawn(listener).expect("servio-sim")
}
