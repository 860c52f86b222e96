//! The memory limit of one instance, counted over all its memories and
//! remembering a refused grow so the trap that follows reads
//! `out_of_memory`, not a generic trap.

use wasmtime::ResourceLimiter;

pub struct MemoryLimiter {
    limit: usize,
    used: usize,
    /// The total the guest asked for when it was refused.
    pub refused: Option<usize>,
}

/// Most table elements an instance may have (function tables of real
/// plugins hold a few thousand).
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl MemoryLimiter {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: 0,
            refused: None,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The memory the instance holds now, over all its memories.
    pub fn used(&self) -> usize {
        self.used
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.limit {
            self.refused = Some(total);
            return Ok(false);
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
