//! The data of one `Store`: a WASI context without ambient authority, the
//! memory limiter and the capabilities' host context.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::limits::MemoryLimiter;
use crate::capabilities::HostCtx;

pub struct RunState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: MemoryLimiter,
    pub host: HostCtx,
}

impl RunState {
    pub fn new(host: HostCtx, memory_bytes: usize) -> Self {
        let logs = &host.gate.journal.logs;
        // No args, env, preopened directories or network: std's runtime
        // needs wasi:cli, clocks and random, and that is all a plugin gets.
        let wasi = WasiCtxBuilder::new()
            .stdout(logs.stdout())
            .stderr(logs.stderr())
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_bytes),
            host,
        }
    }
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
