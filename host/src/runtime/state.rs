//! The data of one `Store`: a WASI context without ambient authority, the
//! memory limiter and the capabilities' host context.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::limits::MemoryLimiter;
use super::logs::guest_output;
use crate::capabilities::HostCtx;
use crate::journal::Stream;

pub struct RunState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: MemoryLimiter,
    pub host: HostCtx,
}

impl RunState {
    pub fn new(host: HostCtx, memory_bytes: usize) -> Self {
        let logs = &host.gate.journal.logs;
        // No args, env or network: std's runtime needs wasi:cli, clocks and
        // random, and that is all a plugin gets — plus, when its config
        // names one, a single directory, read-only. WASI reaches files only
        // through the cap-std handle of that preopen: `..`, absolute paths
        // and symlinks cannot leave it, and nothing can be written.
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(guest_output(logs, Stream::Stdout))
            .stderr(guest_output(logs, Stream::Stderr));
        if let Some(dir) = &host.files {
            if let Err(e) = wasi.preopened_dir(dir, "/data", FsPerms::ReadOnly) {
                logs.host_line(format!(
                    "[remedy] the plugin's files directory cannot be opened ({e}): it sees no /data"
                ));
            }
        }
        let wasi = wasi.build();
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
