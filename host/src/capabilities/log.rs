//! `log`: guest lines into the run's capped log and the host's tracing.

use crate::bindings::remedy::plugin::log::{Host, Level};

use super::HostCtx;

/// Longest single line kept; the rest is cut.
const MAX_LINE: usize = 4096;

impl Host for HostCtx {
    async fn log(&mut self, level: Level, mut message: String) {
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let plugin = &self.gate.plugin;
        let tag = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        // Only what the run keeps reaches the host's own log: the run's log
        // cap bounds both, so a plugin cannot flood the host's stderr.
        if !self.gate.journal.logs.line(format!("[{tag}] {message}")) {
            return;
        }
        match level {
            Level::Trace | Level::Debug => tracing::debug!(%plugin, "{message}"),
            Level::Info => tracing::info!(%plugin, "{message}"),
            Level::Warn => tracing::warn!(%plugin, "{message}"),
            Level::Error => tracing::error!(%plugin, "{message}"),
        }
    }
}
