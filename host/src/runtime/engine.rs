//! The engine and linker shared by every plugin.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::state::RunState;
use super::tiers::{quick_config, Optimiser, QuickTier};
use crate::bindings::Runbook;

/// How often the epoch advances: the granularity of deadlines and of
/// yielding to tokio.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The largest memory an instance may be given (`memory_mb` at most).
pub const MAX_MEMORY_BYTES: usize = (crate::config::MAX_MEMORY_MB as usize) << 20;

pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<RunState>>,
    /// Whether the pooling allocator is in use (else on-demand).
    pub pooling: bool,
    /// The fast-compiling engine, built the first time a tiered load misses
    /// the cache (see `tiers`).
    quick: OnceLock<Result<QuickTier, String>>,
    pub(crate) optimiser: Optimiser,
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
        Self::build(true)
    }

    /// For a long-lived service that loads plugins tiered (see `tiers`):
    /// its optimised code is compiled on one low-priority thread, so the
    /// main engine does not spread a compile over every core.
    pub fn for_service() -> anyhow::Result<Arc<Runtime>> {
        Self::build(false)
    }

    fn build(parallel_compilation: bool) -> anyhow::Result<Arc<Runtime>> {
        let mut pooled = pooling_config();
        pooled.parallel_compilation(parallel_compilation);
        let (engine, pooling) = match Engine::new(&pooled) {
            Ok(e) => (e, true),
            Err(err) => {
                tracing::warn!(error = %err, "pooling allocator unavailable; using on-demand allocation");
                let mut on_demand = base_config();
                on_demand.parallel_compilation(parallel_compilation);
                (
                    Engine::new(&on_demand)
                        .map_err(|e| anyhow::anyhow!("{e}"))
                        .context("creating the wasm engine")?,
                    false,
                )
            }
        };
        spawn_epoch_ticker(&engine)
            .context("starting the epoch ticker (without it deadlines never fire)")?;
        let linker = Arc::new(linker(&engine)?);
        Ok(Arc::new(Runtime {
            engine,
            linker,
            pooling,
            quick: OnceLock::new(),
            optimiser: Optimiser::default(),
        }))
    }

    /// The quick tier, built once.
    pub(crate) fn quick(&self) -> Result<&QuickTier, String> {
        self.quick
            .get_or_init(|| {
                let engine = Engine::new(&quick_config(base_config()))
                    .map_err(|e| format!("creating the quick-tier engine: {e}"))?;
                spawn_epoch_ticker(&engine)
                    .map_err(|e| format!("starting the quick tier's epoch ticker: {e}"))?;
                let linker = linker(&engine).map_err(|e| format!("{e:#}"))?;
                Ok(QuickTier { engine, linker })
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// WASI and the capabilities, linked for `engine`.
fn linker(engine: &Engine) -> anyhow::Result<Linker<RunState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow::anyhow!("{e}"))?;
    Runbook::add_to_linker::<RunState, HasSelf<crate::capabilities::HostCtx>>(&mut linker, |s| {
        &mut s.host
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(linker)
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
