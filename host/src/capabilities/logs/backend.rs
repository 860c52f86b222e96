//! Where a plugin's log reads go: named sources, each answering its last
//! lines. Filtering, counting and redaction happen above, in the
//! capability, the same for every backend.

use async_trait::async_trait;

use crate::backends::BackendResult;

/// At most this many lines are read from a source in one call.
pub const MAX_LINES: usize = 10_000;

/// At most this much of a source's files is read in one call.
pub const MAX_BYTES: u64 = 4 * 1024 * 1024;

/// A line longer than this is cut (the rest is rarely what a runbook
/// matches, and a binary blob in a log must not fill a record).
pub const MAX_LINE: usize = 1024;

/// The log sources of one Remedy process.
#[async_trait]
pub trait LogsBackend: Send + Sync {
    /// Is `source` one of the configured sources?
    fn has_source(&self, source: &str) -> bool;

    /// The last `lines` lines of `source` (at most [`MAX_LINES`]), oldest
    /// first, each at most [`MAX_LINE`] bytes.
    async fn tail(&self, source: &str, lines: usize) -> BackendResult<Vec<String>>;
}
