//! One invocation: instantiate + detect of the bundled
//! db-connection-exhaustion (three in-memory host calls: database.stats,
//! database.long-running, log.log), beside the same detection as a native
//! Rust function (the floor) and a subprocess per call (how StackStorm and
//! Rundeck run actions).
//!
//! `cargo bench -p remedy --bench invocation`

use std::sync::Arc;

/// The allocator the `remedy` binary uses: measure what it runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion};
use remedy::bindings::types as wit;
use remedy::capabilities::database::backend::{DatabaseBackend, Session};
use remedy::capabilities::database::memory::MemoryDatabase;
use remedy::capabilities::Backends;
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

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let db = Arc::new(MemoryDatabase::new(100, sessions()));
    let backends = Arc::new(Backends {
        database: Some(db.clone()),
        ..Backends::none()
    });
    let remedy = rt.block_on(async {
        Remedy::with_backends(Config::default(), Overrides::default(), backends.clone()).unwrap()
    });
    let plugin = rt
        .block_on(remedy.load_named("db-connection-exhaustion"))
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
            .iter(|| async { assert!(native_detect(db.as_ref()).await) })
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
