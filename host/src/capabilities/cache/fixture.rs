//! `[answers.cache]`: stats and keys with their TTLs in a fixture's world
//! (a deleted key is gone), and as a recorder keeps them.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::backend::{CacheBackend, CacheStats};
use crate::backends::{BackendResult, Permit};
use crate::capabilities::world::{unconfigured, Recorder, World};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<CacheStats>,
    /// Key → its TTL in ms, as Redis's `PTTL` says it: -1 for no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<BTreeMap<String, i64>>,
}

impl World {
    fn keys(&self) -> Option<BTreeMap<String, i64>> {
        self.answers().cache.as_ref()?.keys.clone()
    }

    fn with_keys<T>(
        &self,
        call: String,
        f: impl FnOnce(&mut BTreeMap<String, i64>) -> T,
    ) -> BackendResult<T> {
        let mut a = self.answers();
        match a.cache.as_mut().and_then(|c| c.keys.as_mut()) {
            Some(keys) => Ok(f(keys)),
            None => {
                drop(a);
                self.missing(call, "[answers.cache] keys = {…}")
            }
        }
    }
}

#[async_trait]
impl CacheBackend for World {
    async fn stats(&self) -> BackendResult<CacheStats> {
        let stats = self.answers().cache.as_ref().and_then(|c| c.stats.clone());
        match stats {
            Some(s) => Ok(s),
            None => self.missing("cache.stats()".into(), "[answers.cache.stats]"),
        }
    }

    async fn scan(&self, pattern: &str, limit: u32) -> BackendResult<Vec<String>> {
        match self.keys() {
            Some(keys) => Ok(keys
                .into_keys()
                .filter(|k| crate::grants::glob_match(pattern, k))
                .take(limit as usize)
                .collect()),
            None => self.missing(
                format!("cache.scan({pattern:?})"),
                "[answers.cache] keys = {…}",
            ),
        }
    }

    async fn ttl(&self, key: &str) -> BackendResult<Option<Option<u64>>> {
        match self.keys() {
            Some(keys) => Ok(keys.get(key).map(|&t| u64::try_from(t).ok())),
            None => self.missing(format!("cache.ttl({key:?})"), "[answers.cache] keys = {…}"),
        }
    }

    async fn delete(&self, _: &Permit, key: &str) -> BackendResult<bool> {
        self.with_keys(format!("cache.delete({key:?})"), |k| {
            k.remove(key).is_some()
        })
    }

    async fn expire(&self, _: &Permit, key: &str, ttl_ms: u64) -> BackendResult<bool> {
        self.with_keys(format!("cache.expire({key:?})"), |k| match k.get_mut(key) {
            Some(t) => {
                *t = i64::try_from(ttl_ms).unwrap_or(i64::MAX);
                true
            }
            None => false,
        })
    }

    async fn flush_prefix(&self, _: &Permit, prefix: &str) -> BackendResult<u64> {
        self.with_keys(format!("cache.flush({prefix:?})"), |k| {
            let before = k.len();
            k.retain(|key, _| !key.starts_with(prefix));
            (before - k.len()) as u64
        })
    }
}

impl Recorder {
    /// Keeps a key with its TTL; a key only seen in a scan is kept as
    /// without expiry until a `ttl` call says otherwise.
    fn keep_key(&self, key: &str, ttl: Option<i64>) {
        let mut a = self.answers();
        let keys = a
            .cache
            .get_or_insert_with(Default::default)
            .keys
            .get_or_insert_with(Default::default);
        match ttl {
            Some(t) => {
                keys.insert(key.to_string(), t);
            }
            None => {
                keys.entry(key.to_string()).or_insert(-1);
            }
        }
    }
}

#[async_trait]
impl CacheBackend for Recorder {
    async fn stats(&self) -> BackendResult<CacheStats> {
        let Some(real) = &self.real.cache else {
            return unconfigured("cache");
        };
        let r = real.stats().await;
        if let Ok(s) = &r {
            self.answers()
                .cache
                .get_or_insert_with(Default::default)
                .stats = Some(s.clone());
        }
        r
    }

    async fn scan(&self, pattern: &str, limit: u32) -> BackendResult<Vec<String>> {
        let Some(real) = &self.real.cache else {
            return unconfigured("cache");
        };
        let r = real.scan(pattern, limit).await;
        if let Ok(keys) = &r {
            keys.iter().for_each(|k| self.keep_key(k, None));
        }
        r
    }

    async fn ttl(&self, key: &str) -> BackendResult<Option<Option<u64>>> {
        let Some(real) = &self.real.cache else {
            return unconfigured("cache");
        };
        let r = real.ttl(key).await;
        if let Ok(Some(t)) = &r {
            let ms = t.map_or(-1, |ms| i64::try_from(ms).unwrap_or(i64::MAX));
            self.keep_key(key, Some(ms));
        }
        r
    }

    async fn delete(&self, permit: &Permit, key: &str) -> BackendResult<bool> {
        match &self.real.cache {
            Some(real) => real.delete(permit, key).await,
            None => unconfigured("cache"),
        }
    }

    async fn expire(&self, permit: &Permit, key: &str, ttl_ms: u64) -> BackendResult<bool> {
        match &self.real.cache {
            Some(real) => real.expire(permit, key, ttl_ms).await,
            None => unconfigured("cache"),
        }
    }

    async fn flush_prefix(&self, permit: &Permit, prefix: &str) -> BackendResult<u64> {
        match &self.real.cache {
            Some(real) => real.flush_prefix(permit, prefix).await,
            None => unconfigured("cache"),
        }
    }
}

impl crate::capabilities::PublicValues for Answers {}
