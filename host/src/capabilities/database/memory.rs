//! In-memory backends behind the same traits as the real ones: for unit
//! tests and the invocation benchmark, never for production.

use std::sync::Mutex;

use async_trait::async_trait;

use super::backend::*;
use crate::backends::{BackendError, BackendResult, Permit};

/// A fixed set of sessions; terminate/cancel remove them.
#[derive(Default)]
pub struct MemoryDatabase {
    pub max_connections: u32,
    pub sessions: Mutex<Vec<Session>>,
}

impl MemoryDatabase {
    pub fn new(max_connections: u32, sessions: Vec<Session>) -> Self {
        Self {
            max_connections,
            sessions: Mutex::new(sessions),
        }
    }

    fn lock(&self) -> BackendResult<std::sync::MutexGuard<'_, Vec<Session>>> {
        self.sessions
            .lock()
            .map_err(|_| BackendError::Failed("memory db poisoned".into()))
    }

    fn remove(&self, pid: i32) -> BackendResult<bool> {
        let mut s = self.lock()?;
        let before = s.len();
        s.retain(|x| x.pid != pid);
        Ok(s.len() != before)
    }
}

#[async_trait]
impl DatabaseBackend for MemoryDatabase {
    async fn stats(&self) -> BackendResult<PoolStats> {
        let s = self.lock()?;
        let count = |st: &str| s.iter().filter(|x| x.state.starts_with(st)).count() as u32;
        Ok(PoolStats {
            total: s.len() as u32,
            active: count("active"),
            idle: s.iter().filter(|x| x.state == "idle").count() as u32,
            idle_in_transaction: count("idle in transaction"),
            waiting: s
                .iter()
                .filter(|x| {
                    x.wait_event
                        .as_deref()
                        .is_some_and(|w| w.starts_with("Lock"))
                })
                .count() as u32,
            max_connections: self.max_connections,
        })
    }

    async fn long_running(&self, min_duration_ms: u64, limit: u32) -> BackendResult<Vec<Session>> {
        let mut v: Vec<Session> = self
            .lock()?
            .iter()
            .filter(|x| x.state == "active" || x.state.starts_with("idle in transaction"))
            .filter(|x| x.duration_ms >= min_duration_ms)
            .cloned()
            .collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.duration_ms));
        v.truncate(limit.min(500) as usize);
        Ok(v)
    }

    async fn session(&self, pid: i32) -> BackendResult<Option<Session>> {
        Ok(self.lock()?.iter().find(|x| x.pid == pid).cloned())
    }

    async fn cancel(&self, _: &Permit, pid: i32, application: &str) -> BackendResult<bool> {
        Ok(self
            .lock()?
            .iter()
            .any(|x| x.pid == pid && x.application_name == application))
    }

    async fn terminate(&self, permit: &Permit, pid: i32, application: &str) -> BackendResult<bool> {
        if !self.cancel(permit, pid, application).await? {
            return Ok(false);
        }
        self.remove(pid)
    }
}
