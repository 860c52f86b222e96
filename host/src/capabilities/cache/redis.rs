//! Cache backend: Redis through INFO, DBSIZE, SCAN, PTTL, UNLINK and
//! PEXPIRE. One multiplexed, auto-reconnecting connection, made on first use.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use super::backend::{CacheBackend, CacheStats};
use crate::backends::{BackendError, BackendResult, Permit};

/// Most keys one scan returns.
pub const MAX_SCAN: u32 = 10_000;

pub struct Redis {
    client: redis::Client,
    timeout: Duration,
    /// The shared connection; dropped when a command is not answered, so
    /// the next one connects afresh (a black-holed connection never heals).
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
}

/// Drops the shared connection unless the command it guards completes:
/// a command that timed out, or whose caller gave up (the run's deadline),
/// leaves the connection in doubt.
struct InDoubt<'a> {
    redis: &'a Redis,
    done: bool,
}

impl Drop for InDoubt<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Ok(mut slot) = self.redis.conn.try_lock() {
                *slot = None;
            } else {
                // Held by a connect in progress: that one is fresh anyway.
            }
            tracing::warn!("redis: a command was not answered; reconnecting on the next one");
        }
    }
}

/// Server error codes that say the credentials are wrong or not enough:
/// retrying cannot help, so they are said at once.
const REFUSALS: [&str; 3] = ["WRONGPASS", "NOAUTH", "NOPERM"];

fn is_refusal(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || e.code().is_some_and(|c| REFUSALS.contains(&c))
}

/// The server's own words (`WRONGPASS invalid username-password pair…`).
fn server_words(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        _ => e.to_string(),
    }
}

/// The value of `field` in `INFO` output.
fn info_field(info: &str, field: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

impl Redis {
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            client: redis::Client::open(url)?,
            timeout,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// Where the server is (`host:port`), for messages: never the URL,
    /// which may hold the password.
    fn at(&self) -> String {
        self.client.get_connection_info().addr.to_string()
    }

    fn refused(&self, words: &str) -> BackendError {
        BackendError::Failed(format!(
            "redis at {} refused the credentials: {words}",
            self.at()
        ))
    }

    fn failed(&self, e: redis::RedisError) -> BackendError {
        if is_refusal(&e) {
            return self.refused(&server_words(&e));
        }
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
        {
            BackendError::Unavailable(format!("redis: {e}"))
        } else {
            BackendError::Failed(format!("redis: {e}"))
        }
    }

    /// The shared connection, made if there is none. The connection
    /// manager retries a failed connect until the deadline, which would
    /// turn refused credentials into "no answer": one plain connection
    /// first says a refusal at once.
    async fn connection(&self) -> BackendResult<ConnectionManager> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        if let Err(e) = self.client.get_multiplexed_async_connection().await {
            if is_refusal(&e) {
                return Err(self.refused(&self.why_refused(e).await));
            }
        }
        let c = self
            .client
            .get_connection_manager()
            .await
            .map_err(|e| BackendError::Unavailable(format!("redis: cannot connect: {e}")))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// The client library reports a refused AUTH without the server's
    /// reason; asking again on a connection without credentials gets it
    /// (`WRONGPASS …`, or "called without any password configured").
    async fn why_refused(&self, e: redis::RedisError) -> String {
        let mut info = self.client.get_connection_info().clone();
        let (Some(password), user) = (info.redis.password.take(), info.redis.username.take())
        else {
            return server_words(&e);
        };
        let asked = async {
            let mut conn = redis::Client::open(info)?
                .get_multiplexed_async_connection()
                .await?;
            let mut auth = redis::cmd("AUTH");
            auth.arg(user).arg(password);
            auth.query_async::<()>(&mut conn).await
        };
        match asked.await {
            Err(again) if again.code().is_some() => server_words(&again),
            _ => server_words(&e),
        }
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> BackendResult<T> {
        let mut guard = InDoubt {
            redis: self,
            done: false,
        };
        let work = async {
            let mut conn = self.connection().await?;
            cmd.query_async::<T>(&mut conn)
                .await
                .map_err(|e| self.failed(e))
        };
        let r = tokio::time::timeout(self.timeout, work).await.map_err(|_| {
            BackendError::Unavailable(format!(
                "redis at {}: no answer within {} ms",
                self.at(),
                self.timeout.as_millis()
            ))
        });
        guard.done = r.is_ok();
        r?
    }
}

#[async_trait]
impl CacheBackend for Redis {
    async fn stats(&self) -> BackendResult<CacheStats> {
        let stats: String = self.run(redis::cmd("INFO").arg("stats")).await?;
        let memory: String = self.run(redis::cmd("INFO").arg("memory")).await?;
        let keys: u64 = self.run(&redis::cmd("DBSIZE")).await?;
        Ok(CacheStats {
            hits: info_field(&stats, "keyspace_hits"),
            misses: info_field(&stats, "keyspace_misses"),
            keys,
            used_memory_bytes: info_field(&memory, "used_memory"),
            evicted_keys: info_field(&stats, "evicted_keys"),
            expired_keys: info_field(&stats, "expired_keys"),
        })
    }

    async fn scan(&self, pattern: &str, limit: u32) -> BackendResult<Vec<String>> {
        let limit = limit.min(MAX_SCAN) as usize;
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, keys) = self.scan_page(cursor, pattern).await?;
            out.extend(keys);
            if out.len() >= limit || next == 0 {
                out.truncate(limit);
                return Ok(out);
            }
            cursor = next;
        }
    }

    async fn ttl(&self, key: &str) -> BackendResult<Option<Option<u64>>> {
        let ms: i64 = self.run(redis::cmd("PTTL").arg(key)).await?;
        Ok(match ms {
            -2 => None,
            -1 => Some(None),
            ms => Some(Some(ms.max(0) as u64)),
        })
    }

    async fn delete(&self, _: &Permit, key: &str) -> BackendResult<bool> {
        let n: u64 = self.run(redis::cmd("UNLINK").arg(key)).await?;
        Ok(n == 1)
    }

    async fn expire(&self, _: &Permit, key: &str, ttl_ms: u64) -> BackendResult<bool> {
        let n: u64 = self.run(redis::cmd("PEXPIRE").arg(key).arg(ttl_ms)).await?;
        Ok(n == 1)
    }

    async fn flush_prefix(&self, _: &Permit, prefix: &str) -> BackendResult<u64> {
        // SCAN in pages, UNLINK each page: the server never blocks on one
        // huge command and memory is freed off the main thread.
        let pattern = format!("{}*", glob_escape(prefix));
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys) = self.scan_page(cursor, &pattern).await?;
            if !keys.is_empty() {
                let n: u64 = self.run(redis::cmd("UNLINK").arg(&keys)).await?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

impl Redis {
    /// One page of `SCAN cursor MATCH pattern`: the next cursor (0 at the
    /// end) and the keys of this page.
    async fn scan_page(&self, cursor: u64, pattern: &str) -> BackendResult<(u64, Vec<String>)> {
        self.run(
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(500),
        )
        .await
    }
}

/// `prefix` as a literal inside a Redis glob.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn glob_escape_makes_prefixes_literal() {
        assert_eq!(super::glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(super::glob_escape("tenant:acme:"), "tenant:acme:");
    }

    #[test]
    fn info_fields() {
        let info = "# Stats\r\nkeyspace_hits:42\r\nkeyspace_misses:7\r\nevicted_keys:0\r\n";
        assert_eq!(super::info_field(info, "keyspace_hits"), 42);
        assert_eq!(super::info_field(info, "keyspace_misses"), 7);
        assert_eq!(super::info_field(info, "nope"), 0);
    }
}
