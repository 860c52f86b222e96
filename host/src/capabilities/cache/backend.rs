//! What `cache` reads and changes: the trait a Redis backend implements.

use async_trait::async_trait;

use crate::backends::{BackendResult, Permit};

// Serde: fixtures (`remedy test`) hold stats as written here.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub keys: u64,
    pub used_memory_bytes: u64,
    pub evicted_keys: u64,
    pub expired_keys: u64,
}

#[async_trait]
pub trait CacheBackend: Send + Sync {
    async fn stats(&self) -> BackendResult<CacheStats>;
    async fn scan(&self, pattern: &str, limit: u32) -> BackendResult<Vec<String>>;
    /// `None`: no such key; `Some(None)`: no expiry.
    async fn ttl(&self, key: &str) -> BackendResult<Option<Option<u64>>>;
    /// `false` when the key was already gone.
    async fn delete(&self, _: &Permit, key: &str) -> BackendResult<bool>;
    /// `false` when the key does not exist.
    async fn expire(&self, _: &Permit, key: &str, ttl_ms: u64) -> BackendResult<bool>;
    /// Deletes every key starting with `prefix`; answers how many.
    async fn flush_prefix(&self, _: &Permit, prefix: &str) -> BackendResult<u64>;
}
