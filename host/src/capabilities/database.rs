//! `database`: pool stats and long-running sessions (read); cancel and
//! terminate (through the gate, scoped by the session's application name).

use std::sync::Arc;

use crate::backends::{DatabaseBackend, Session as BackendSession};
use crate::bindings::remedy::plugin::database::{Host, PoolStats, Session};
use crate::bindings::types::{Applied, Error};
use crate::config::Capability;
use crate::gate::{Action, Target};

use super::HostCtx;

fn session(s: BackendSession) -> Session {
    Session {
        pid: s.pid,
        application_name: s.application_name,
        user_name: s.user_name,
        database: s.database,
        state: s.state,
        duration_ms: s.duration_ms,
        wait_event: s.wait_event,
        query: s.query,
    }
}

impl HostCtx {
    fn database(&self) -> Result<Arc<dyn DatabaseBackend>, Error> {
        self.backend(
            Capability::Database,
            &self.backends.database,
            "database_url",
            "REMEDY_DATABASE_URL",
        )
    }

    /// Both signals: look the session up (its application decides the
    /// scope), pass the gate, then signal it.
    async fn signal(
        &mut self,
        kind: &'static str,
        pid: i32,
        reason: String,
    ) -> Result<Applied, Error> {
        let db = self.database()?;
        let target = self
            .read("postgres", db.session(pid))
            .await?
            .ok_or_else(|| Error::Invalid(format!("no client session with pid {pid}")))?;
        let application = target.application_name;
        let action = Action {
            kind,
            capability: Capability::Database,
            target: Target::DatabaseSession {
                pid,
                application: application.clone(),
            },
            reason,
        };
        self.gate
            .act(action, || async move {
                let done = if kind == "database.cancel" {
                    db.cancel(pid, &application).await?
                } else {
                    db.terminate(pid, &application).await?
                };
                if done {
                    Ok(())
                } else {
                    Err(crate::backends::BackendError::Failed(format!(
                        "session {pid} of `{application}` was gone (or its pid reused) before it could be signalled"
                    )))
                }
            })
            .await
    }
}

impl Host for HostCtx {
    async fn stats(&mut self) -> Result<PoolStats, Error> {
        let s = self.read("postgres", self.database()?.stats()).await?;
        Ok(PoolStats {
            total: s.total,
            active: s.active,
            idle: s.idle,
            idle_in_transaction: s.idle_in_transaction,
            waiting: s.waiting,
            max_connections: s.max_connections,
        })
    }

    async fn long_running(
        &mut self,
        min_duration_ms: u64,
        limit: u32,
    ) -> Result<Vec<Session>, Error> {
        let rows = self
            .read(
                "postgres",
                self.database()?.long_running(min_duration_ms, limit),
            )
            .await?;
        Ok(rows.into_iter().map(session).collect())
    }

    async fn cancel(&mut self, pid: i32, reason: String) -> Result<Applied, Error> {
        self.signal("database.cancel", pid, reason).await
    }

    async fn terminate(&mut self, pid: i32, reason: String) -> Result<Applied, Error> {
        self.signal("database.terminate", pid, reason).await
    }
}
