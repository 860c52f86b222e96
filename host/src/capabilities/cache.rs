//! `cache`: stats, scans and TTLs (read); delete, expire and flush (through
//! the gate, scoped by key prefix).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::action::ActionKind;
use crate::backends::{BackendError, CacheBackend};
use crate::bindings::remedy::plugin::cache::{CacheStats, Host};
use crate::bindings::types::{Applied, Error};
use crate::gate::{Action, Target};
use crate::grants::Capability;

use super::{HostCtx, Wiring};

const CACHE: Wiring = Wiring {
    cap: Capability::Cache,
    name: "redis",
    key: "redis_url",
    env: "REMEDY_REDIS_URL",
};

impl HostCtx {
    fn cache(&self) -> Result<Arc<dyn CacheBackend>, Error> {
        self.configured(&CACHE, &self.backends.cache)
    }
}

impl Host for HostCtx {
    async fn stats(&mut self) -> Result<CacheStats, Error> {
        let cache = self.backend(&CACHE, &self.backends.cache)?;
        let s = self.read(&CACHE, "stats", "", cache.stats()).await?;
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
        let cache = self.backend(&CACHE, &self.backends.cache)?;
        self.read(&CACHE, "scan", &pattern, cache.scan(&pattern, limit))
            .await
    }

    async fn ttl(&mut self, key: String) -> Result<Option<u64>, Error> {
        let cache = self.backend(&CACHE, &self.backends.cache)?;
        self.read(&CACHE, "ttl", &key, cache.ttl(&key))
            .await?
            .ok_or_else(|| Error::Invalid(format!("no key `{key}`")))
    }

    async fn delete(&mut self, key: String, reason: String) -> Result<Applied, Error> {
        let action = Action::new(
            ActionKind::CacheDelete,
            Target::CacheKey(key.clone()),
            reason,
        );
        self.gate
            .act(action, self.cache(), |cache, permit| async move {
                // A key already gone is the state the plugin wanted.
                cache.delete(&permit, &key).await.map(|_| ())
            })
            .await
    }

    async fn expire(&mut self, key: String, ttl_ms: u64, reason: String) -> Result<Applied, Error> {
        let action = Action::new(
            ActionKind::CacheExpire,
            Target::CacheKey(key.clone()),
            reason,
        );
        self.gate
            .act(action, self.cache(), |cache, permit| async move {
                match cache.expire(&permit, &key, ttl_ms).await? {
                    true => Ok(()),
                    false => Err(BackendError::Invalid(format!("no key `{key}`"))),
                }
            })
            .await
    }

    /// Answers the keys deleted: 0 when the action was simulated (only
    /// while planning an approval; a plain dry run refuses a flush).
    async fn flush(&mut self, prefix: String, reason: String) -> Result<u64, Error> {
        let action = Action::new(
            ActionKind::CacheFlush,
            Target::CachePrefix(prefix.clone()),
            reason,
        );
        if prefix.is_empty() {
            return Err(self.gate.refuse(
                &action,
                Error::Invalid(
                    "flush needs a non-empty prefix: Remedy never flushes a whole database".into(),
                ),
            ));
        }
        let deleted = Arc::new(AtomicU64::new(0));
        let count = deleted.clone();
        self.gate
            .act(action, self.cache(), |cache, permit| async move {
                let n = cache.flush_prefix(&permit, &prefix).await?;
                count.store(n, Ordering::Relaxed);
                Ok(())
            })
            .await?;
        Ok(deleted.load(Ordering::Relaxed))
    }
}
