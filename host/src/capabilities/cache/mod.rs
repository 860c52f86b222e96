//! `cache`: stats, scans and TTLs (read); delete, expire and flush (through
//! the gate, scoped by key prefix).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::action::ActionKind;
use crate::backends::BackendError;
use crate::bindings::remedy::plugin::cache::{CacheStats, Host};
use crate::bindings::types::{Applied, Error};
use crate::config::BackendsConfig;
use crate::gate::{outside, Action, ActionTarget};
use crate::grants::{Capability, Scope};

use super::{HostCtx, Wiring};

pub mod backend;
pub mod fixture;
pub mod redis;

use backend::CacheBackend;

/// The backend `[backends]` configures (`redis_url`), if any.
pub fn from_config(
    cfg: &BackendsConfig,
    timeout: Duration,
) -> anyhow::Result<Option<Arc<dyn CacheBackend>>> {
    Ok(match &cfg.redis_url {
        Some(u) => Some(Arc::new(redis::Redis::new(u.as_str(), timeout)?)),
        None => None,
    })
}

/// Is `key` under one of the granted prefixes? Plain prefixes, not globs:
/// `tenant:acme:` must not match `tenant:acmex:` the way a glob without
/// its colon would.
fn granted_prefix(scope: &Scope, key: &str) -> bool {
    scope
        .cache_prefixes
        .iter()
        .flatten()
        .any(|p| key.starts_with(p.as_str()))
}

/// One cache key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyTarget(pub String);

impl ActionTarget for KeyTarget {
    fn label(&self) -> String {
        format!("key:{}", self.0)
    }

    fn describe(&self) -> String {
        format!("cache key `{}`", self.0)
    }

    fn check_scope(&self, scope: &Scope, plugin: &str) -> Result<(), String> {
        match granted_prefix(scope, &self.0) {
            true => Ok(()),
            false => Err(outside(self, plugin)),
        }
    }
}

/// Every key under a prefix (a flush): inside a granted prefix, and only
/// with `cache_flush = true` in the scope (never a bundled default).
#[derive(Debug, Clone, PartialEq)]
pub struct PrefixTarget(pub String);

impl ActionTarget for PrefixTarget {
    fn label(&self) -> String {
        format!("prefix:{}", self.0)
    }

    fn describe(&self) -> String {
        format!("cache prefix `{}`", self.0)
    }

    fn check_scope(&self, scope: &Scope, plugin: &str) -> Result<(), String> {
        if !granted_prefix(scope, &self.0) {
            return Err(outside(self, plugin));
        }
        if scope.cache_flush != Some(true) {
            return Err(format!(
                "flushing `{}*` needs `cache_flush = true` in the scope of {plugin}",
                self.0
            ));
        }
        Ok(())
    }
}

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
        let action = Action::new(ActionKind::CacheDelete, KeyTarget(key.clone()), reason);
        self.gate
            .act(action, self.cache(), |cache, permit| async move {
                // A key already gone is the state the plugin wanted.
                cache.delete(&permit, &key).await.map(|_| ())
            })
            .await
    }

    async fn expire(&mut self, key: String, ttl_ms: u64, reason: String) -> Result<Applied, Error> {
        let action = Action::new(ActionKind::CacheExpire, KeyTarget(key.clone()), reason);
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
        let action = Action::new(ActionKind::CacheFlush, PrefixTarget(prefix.clone()), reason);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(flush: Option<bool>) -> Scope {
        Scope {
            cache_prefixes: Some(vec!["tenant:acme:".into()]),
            cache_flush: flush,
            ..Scope::default()
        }
    }

    #[test]
    fn keys_and_prefixes_are_scoped_by_plain_prefix_and_flush_needs_its_grant() {
        let key = |k: &str| KeyTarget(k.into()).check_scope(&scope(None), "p");
        assert!(key("tenant:acme:1").is_ok());
        assert!(key("tenant:acmex:1")
            .unwrap_err()
            .contains("outside the scope"));
        let flush = |p: &str, f| PrefixTarget(p.into()).check_scope(&scope(f), "p");
        assert!(flush("tenant:acme:", None)
            .unwrap_err()
            .contains("cache_flush = true"));
        assert!(flush("tenant:acme:", Some(false)).is_err());
        assert!(flush("tenant:acme:", Some(true)).is_ok());
        assert!(flush("tenant:", Some(true))
            .unwrap_err()
            .contains("outside the scope"));
    }
}
