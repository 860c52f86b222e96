//! `[answers.database]`: pool stats and sessions in a fixture's world
//! (a terminated session is gone), and as a recorder keeps them.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::backend::{DatabaseBackend, PoolStats, Session};
use crate::backends::{BackendResult, Permit};
use crate::capabilities::world::{unconfigured, Recorder, World};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answers {
    /// Pool stats; without them, derived from `sessions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<PoolStats>,
    /// `max_connections` when the stats are derived (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Every session of the server; `long_running` filters them as
    /// PostgreSQL would (active or idle in transaction, longest first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<Vec<Session>>,
}

impl World {
    fn sessions(&self) -> Option<Vec<Session>> {
        self.answers().database.as_ref()?.sessions.clone()
    }

    /// Removes a session if it is there and of `application` (the real
    /// backend re-checks the application in the signalling statement).
    fn signal(&self, pid: i32, application: &str, remove: bool) -> BackendResult<bool> {
        let mut a = self.answers();
        let Some(sessions) = a.database.as_mut().and_then(|d| d.sessions.as_mut()) else {
            drop(a);
            return self.missing(
                format!("database session {pid}"),
                "[[answers.database.sessions]]",
            );
        };
        let found = sessions
            .iter()
            .position(|s| s.pid == pid && s.application_name == application);
        if let (Some(i), true) = (found, remove) {
            sessions.remove(i);
        }
        Ok(found.is_some())
    }
}

#[async_trait]
impl DatabaseBackend for World {
    async fn stats(&self) -> BackendResult<PoolStats> {
        // Counted under the lock: no copy of the sessions per call.
        let stats = match &self.answers().database {
            Some(Answers {
                stats: Some(s),
                sessions: None,
                ..
            }) => Some(s.clone()),
            Some(Answers {
                stats,
                sessions: Some(sessions),
                max_connections,
            }) => Some(
                stats
                    .clone()
                    .unwrap_or_else(|| derived_stats(sessions, *max_connections)),
            ),
            _ => None,
        };
        match stats {
            Some(s) => Ok(s),
            None => self.missing(
                "database.stats()".into(),
                "[answers.database] stats = {…} or sessions",
            ),
        }
    }

    async fn long_running(&self, min_duration_ms: u64, limit: u32) -> BackendResult<Vec<Session>> {
        // Only the sessions that qualify are copied out of the lock.
        let found = self
            .answers()
            .database
            .as_ref()
            .and_then(|d| d.sessions.as_ref())
            .map(|all| {
                all.iter()
                    .filter(|s| s.state == "active" || s.state.starts_with("idle in transaction"))
                    .filter(|s| s.duration_ms >= min_duration_ms)
                    .cloned()
                    .collect::<Vec<Session>>()
            });
        let Some(mut v) = found else {
            return self.missing(
                format!("database.long_running({min_duration_ms}, {limit})"),
                "[[answers.database.sessions]]",
            );
        };
        v.sort_by_key(|s| std::cmp::Reverse(s.duration_ms));
        v.truncate(limit.min(500) as usize);
        Ok(v)
    }

    async fn session(&self, pid: i32) -> BackendResult<Option<Session>> {
        match self.sessions() {
            Some(all) => Ok(all.into_iter().find(|s| s.pid == pid)),
            None => self.missing(
                format!("database session {pid}"),
                "[[answers.database.sessions]]",
            ),
        }
    }

    async fn cancel(&self, _: &Permit, pid: i32, application: &str) -> BackendResult<bool> {
        self.signal(pid, application, false)
    }

    async fn terminate(&self, _: &Permit, pid: i32, application: &str) -> BackendResult<bool> {
        self.signal(pid, application, true)
    }
}

/// Pool stats as PostgreSQL would count `sessions`.
fn derived_stats(sessions: &[Session], max_connections: Option<u32>) -> PoolStats {
    let count = |f: &dyn Fn(&Session) -> bool| sessions.iter().filter(|s| f(s)).count() as u32;
    PoolStats {
        total: sessions.len() as u32,
        active: count(&|s| s.state == "active"),
        idle: count(&|s| s.state == "idle"),
        idle_in_transaction: count(&|s| s.state.starts_with("idle in transaction")),
        waiting: count(&|s| {
            s.wait_event
                .as_deref()
                .is_some_and(|w| w.starts_with("Lock"))
        }),
        max_connections: max_connections.unwrap_or(100),
    }
}

/// Merges `s` into the recorded sessions, by pid.
fn keep_sessions(a: &mut crate::capabilities::Answers, found: &[Session]) {
    let sessions = a
        .database
        .get_or_insert_with(Default::default)
        .sessions
        .get_or_insert_with(Vec::new);
    for s in found {
        if !sessions.iter().any(|x| x.pid == s.pid) {
            sessions.push(s.clone());
        }
    }
}

#[async_trait]
impl DatabaseBackend for Recorder {
    async fn stats(&self) -> BackendResult<PoolStats> {
        let Some(real) = &self.real.database else {
            return unconfigured("database");
        };
        let r = real.stats().await;
        if let Ok(s) = &r {
            self.answers()
                .database
                .get_or_insert_with(Default::default)
                .stats = Some(s.clone());
        }
        r
    }

    async fn long_running(&self, min_duration_ms: u64, limit: u32) -> BackendResult<Vec<Session>> {
        let Some(real) = &self.real.database else {
            return unconfigured("database");
        };
        let r = real.long_running(min_duration_ms, limit).await;
        if let Ok(found) = &r {
            keep_sessions(&mut self.answers(), found);
        }
        r
    }

    async fn session(&self, pid: i32) -> BackendResult<Option<Session>> {
        let Some(real) = &self.real.database else {
            return unconfigured("database");
        };
        let r = real.session(pid).await;
        if let Ok(Some(s)) = &r {
            keep_sessions(&mut self.answers(), std::slice::from_ref(s));
        }
        r
    }

    async fn cancel(&self, permit: &Permit, pid: i32, application: &str) -> BackendResult<bool> {
        match &self.real.database {
            Some(real) => real.cancel(permit, pid, application).await,
            None => unconfigured("database"),
        }
    }

    async fn terminate(&self, permit: &Permit, pid: i32, application: &str) -> BackendResult<bool> {
        match &self.real.database {
            Some(real) => real.terminate(permit, pid, application).await,
            None => unconfigured("database"),
        }
    }
}

impl crate::capabilities::PublicValues for Answers {}
