//! One invocation: instantiate + detect of the bundled
//! db-connection-exhaustion (three host calls answered by the fixture
//! world `remedy test` uses: database.stats, database.long-running,
//! log.log), beside the same detection as a native
//! Rust function (the floor; `native_detect_record` also builds the
//! detection record and log line the plugin builds) and a subprocess per
//! call (how StackStorm and Rundeck run actions).
//!
//! `cargo bench -p remedy --bench invocation`
//! (`REMEDY_BENCH_WASM=file.wasm` runs another build of the plugin)

use std::sync::Arc;

/// The allocator the `remedy` binary uses: measure what it runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion};
use remedy::bindings::types as wit;
use remedy::capabilities::database::backend::{DatabaseBackend, Session};
use remedy::capabilities::world::World;
use remedy::capabilities::Answers;
use remedy::config::Config;
use remedy::gate::RunGate;
use remedy::journal::Journal;
use remedy::remedy::Overrides;
use remedy::runtime::invoke::CallSetup;
use remedy::{Remedy, RunRequest, Trigger};

fn sessions() -> Vec<Session> {
    (0..20)
        .map(|i| Session {
            pid: 1000 + i,
            application_name: format!("app-{}", i % 3),
            user_name: "app".into(),
            database: "servio".into(),
            state: if i % 2 == 0 {
                "active".into()
            } else {
                "idle".into()
            },
            duration_ms: 5 + i as u64,
            wait_event: None,
            query: "SELECT 1".into(),
        })
        .collect()
}

/// The plugin's detection, natively: the floor any sandbox is measured against.
async fn native_detect(db: &dyn DatabaseBackend) -> bool {
    let stats = db.stats().await.unwrap();
    let long = db.long_running(60_000, 50).await.unwrap();
    let ratio = f64::from(stats.total) / f64::from(stats.max_connections);
    let line = format!("usage {ratio:.3}, {} long-running sessions", long.len());
    std::hint::black_box(line);
    ratio < 0.9 && long.is_empty()
}

/// What the plugin's `detect` does, natively: the same two backend calls,
/// the same finding with its seven pieces of evidence, the same log line
/// into the run's journal. The floor for the sandbox's own cost.
async fn native_detect_record(db: &dyn DatabaseBackend, journal: &Journal) -> wit::Detection {
    let (max_usage_ratio, long_query_ms) = (0.9, 60_000);
    let pool = db.stats().await.unwrap();
    let sessions = db.long_running(long_query_ms, 50).await.unwrap();
    let ratio = f64::from(pool.total) / f64::from(pool.max_connections);
    let at_capacity = ratio >= max_usage_ratio;
    let evidence = [
        ("total", pool.total.to_string()),
        ("active", pool.active.to_string()),
        ("idle", pool.idle.to_string()),
        ("idle_in_transaction", pool.idle_in_transaction.to_string()),
        ("waiting", pool.waiting.to_string()),
        ("max_connections", pool.max_connections.to_string()),
        ("usage_ratio", format!("{ratio:.3}")),
    ];
    let finding = wit::Finding {
        severity: if at_capacity {
            wit::Severity::Critical
        } else {
            wit::Severity::Info
        },
        summary: format!(
            "{} of {} connections in use ({:.0}%, threshold {:.0}%)",
            pool.total,
            pool.max_connections,
            ratio * 100.0,
            max_usage_ratio * 100.0
        ),
        evidence: evidence
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    };
    let protected = ["pg_dump", "pg_basebackup"];
    let leaks = sessions
        .iter()
        .filter(|s| !protected.contains(&s.application_name.as_str()))
        .count();
    journal.logs.line(format!(
        "[info] usage {ratio:.3}, {} long-running sessions, {leaks} unprotected",
        sessions.len()
    ));
    wit::Detection {
        healthy: !at_capacity && leaks == 0,
        findings: vec![finding],
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let world = World::new(Answers {
        database: Some(remedy::capabilities::database::fixture::Answers {
            stats: None,
            max_connections: Some(100),
            sessions: Some(sessions()),
        }),
        ..Answers::default()
    });
    let backends = Arc::new(world.backends());
    // A plugin file, unlike a bundled one, has only the grants its config
    // gives.
    let config = Config::parse(
        "[plugins.db-connection-exhaustion]\ngrants = [\"database\", \"log\"]\n",
        "bench.toml".as_ref(),
    )
    .unwrap();
    let remedy = rt.block_on(async {
        Remedy::with_backends(config, Overrides::default(), backends.clone()).unwrap()
    });
    // Another build of the same plugin, to compare compiler settings:
    // REMEDY_BENCH_WASM=path/to/db_connection_exhaustion.wasm
    let plugin = match std::env::var_os("REMEDY_BENCH_WASM") {
        Some(path) => rt.block_on(remedy.load_file(path.as_ref())),
        None => rt.block_on(remedy.load_named("db-connection-exhaustion")),
    }
    .unwrap();
    let ctx = wit::Context {
        run_id: "bench".into(),
        trigger: wit::Trigger::Manual("bench".into()),
        config: vec![],
        dry_run: true,
    };
    eprintln!("pooling allocator: {}", remedy.runtime.pooling);

    let mut g = c.benchmark_group("invocation");
    g.bench_function("wasm_instantiate_detect", |b| {
        b.to_async(&rt).iter(|| async {
            let run = Arc::new(RunGate {
                limits: plugin.settings.limits.clone(),
                journal: Journal::new(4096),
                ..RunGate::new(
                    "db-connection-exhaustion",
                    "bench",
                    plugin.settings.grants.clone(),
                    true,
                )
            });
            let setup = CallSetup {
                run: &run,
                settings: &plugin.settings,
                backends: &backends,
                escalation: &remedy.escalation,
            };
            let det = remedy
                .runtime
                .detect(&plugin, setup, ctx.clone())
                .await
                .unwrap()
                .unwrap();
            assert!(det.healthy);
        })
    });
    g.bench_function("wasm_full_run_record", |b| {
        b.to_async(&rt).iter(|| async {
            let rec = remedy
                .run(
                    &plugin,
                    RunRequest {
                        trigger: Trigger::Manual { by: "bench".into() },
                        dry_run: Some(true),
                        params: Default::default(),
                        stage: remedy::guardrails::Stage::Normal,
                    },
                )
                .await;
            assert_eq!(rec.status, remedy::RunStatus::Succeeded);
        })
    });
    g.bench_function("native_detect", |b| {
        b.to_async(&rt)
            .iter(|| async { assert!(native_detect(world.as_ref()).await) })
    });
    g.bench_function("native_detect_record", |b| {
        b.to_async(&rt).iter(|| async {
            let journal = Journal::new(4096);
            let det = native_detect_record(world.as_ref(), &journal).await;
            assert!(det.healthy && det.findings[0].evidence.len() == 7);
        })
    });
    g.bench_function("subprocess_per_call", |b| {
        b.iter(|| {
            let st = std::process::Command::new("true").status().unwrap();
            assert!(st.success());
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
