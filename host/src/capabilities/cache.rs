//! `cache`: stats, scans and TTLs (read); delete and expire (through the
//! gate, scoped by key prefix).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::backends::{BackendError, CacheBackend};
use crate::bindings::remedy::plugin::cache::{CacheStats, Host};
use crate::bindings::types::{Applied, Error};
use crate::config::Capability;
use crate::gate::{Action, Target};

use super::HostCtx;

impl HostCtx {
    fn cache(&self) -> Result<Arc<dyn CacheBackend>, Error> {
        self.backend(
            Capability::Cache,
            &self.backends.cache,
            "redis_url",
            "REMEDY_REDIS_URL",
        )
    }
}

impl Host for HostCtx {
    async fn stats(&mut self) -> Result<CacheStats, Error> {
        let s = self.read("redis", self.cache()?.stats()).await?;
        Ok(CacheStats {
            hits: s.hits,
            misses: s.misses,
            keys: s.keys,
            used_memory_bytes: s.used_memory_bytes,
            evicted_keys: s.evicted_keys,
            expired_keys: s.expired_keys,
        })
    }

    async fn scan(&mut self, pattern: String, limit: u32) -> Result<Vec<String>, Error> {
        self.read("redis", self.cache()?.scan(&pattern, limit))
            .await
    }

    async fn ttl(&mut self, key: String) -> Result<Option<u64>, Error> {
        self.read("redis", self.cache()?.ttl(&key))
            .await?
            .ok_or_else(|| Error::Invalid(format!("no key `{key}`")))
    }

    async fn delete(&mut self, key: String, reason: String) -> Result<Applied, Error> {
        let cache = self.cache()?;
        let action = Action {
            kind: "cache.delete",
            capability: Capability::Cache,
            target: Target::CacheKey(key.clone()),
            reason,
        };
        self.gate
            .act(action, || async move {
                // A key already gone is the state the plugin wanted.
                cache.delete(&key).await.map(|_| ())
            })
            .await
    }

    async fn expire(&mut self, key: String, ttl_ms: u64, reason: String) -> Result<Applied, Error> {
        let cache = self.cache()?;
        let action = Action {
            kind: "cache.expire",
            capability: Capability::Cache,
            target: Target::CacheKey(key.clone()),
            reason,
        };
        self.gate
            .act(action, || async move {
                match cache.expire(&key, ttl_ms).await? {
                    true => Ok(()),
                    false => Err(BackendError::Invalid(format!("no key `{key}`"))),
                }
            })
            .await
    }

    async fn flush(&mut self, prefix: String, reason: String) -> Result<u64, Error> {
        let cache = self.cache()?;
        if prefix.is_empty() {
            return Err(Error::Invalid(
                "flush needs a non-empty prefix: Remedy never flushes a whole database".into(),
            ));
        }
        let action = Action {
            kind: "cache.flush",
            capability: Capability::Cache,
            target: Target::CachePrefix(prefix.clone()),
            reason,
        };
        let deleted = Arc::new(AtomicU64::new(0));
        let count = deleted.clone();
        self.gate
            .act(action, || async move {
                let n = cache.flush_prefix(&prefix).await?;
                count.store(n, Ordering::Relaxed);
                Ok(())
            })
            .await?;
        Ok(deleted.load(Ordering::Relaxed))
    }
}
