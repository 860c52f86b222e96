//! The engine and linker shared by every plugin.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::state::RunState;
use crate::bindings::Runbook;

/// How often the epoch advances: the granularity of deadlines and of
/// yielding to tokio.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The largest memory an instance may be given (`memory_mb` is capped here).
pub const MAX_MEMORY_BYTES: usize = 512 << 20;

pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<RunState>,
    /// Whether the pooling allocator is in use (else on-demand).
    pub pooling: bool,
}

fn base_config() -> Config {
    let mut cfg = Config::new();
    cfg.wasm_component_model(true);
    cfg.epoch_interruption(true);
    cfg
}

fn pooling_config() -> Config {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(1000)
        .total_core_instances(4000)
        .total_memories(1000)
        .total_tables(1000)
        .total_stacks(1000)
        .max_memory_size(MAX_MEMORY_BYTES)
        // Reset the pages a run dirtied with memset instead of handing them
        // back to the kernel: the next instance in the slot then takes no
        // page faults. With PAGEMAP_SCAN (Linux 6.7+) only dirty pages are
        // touched, so this stays cheap for plugins with large memories.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10)
        .async_stack_keep_resident(128 << 10);
    let mut cfg = base_config();
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    cfg
}

impl Runtime {
    /// Builds the engine (pooling, falling back to on-demand when the
    /// machine refuses the virtual memory), starts the epoch ticker, and
    /// links WASI and the capabilities.
    pub fn new() -> anyhow::Result<Arc<Runtime>> {
        let (engine, pooling) = match Engine::new(&pooling_config()) {
            Ok(e) => (e, true),
            Err(err) => {
                tracing::warn!(error = %err, "pooling allocator unavailable; using on-demand allocation");
                (
                    Engine::new(&base_config())
                        .map_err(|e| anyhow::anyhow!("{e}"))
                        .context("creating the wasm engine")?,
                    false,
                )
            }
        };
        spawn_epoch_ticker(&engine)
            .context("starting the epoch ticker (without it deadlines never fire)")?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow::anyhow!("{e}"))?;
        Runbook::add_to_linker::<RunState, HasSelf<crate::capabilities::HostCtx>>(
            &mut linker,
            |s| &mut s.host,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Arc::new(Runtime {
            engine,
            linker,
            pooling,
        }))
    }
}

/// Advances the engine's epoch every tick until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("remedy-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(|_| ())
}
