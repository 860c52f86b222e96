//! `database`: pool stats and long-running sessions (read); cancel and
//! terminate (through the gate, scoped by the session's application name).

use std::sync::Arc;
use std::time::Duration;

use crate::action::ActionKind;
use crate::backends::{BackendError, Permit};
use crate::bindings::remedy::plugin::database::{Host, PoolStats, Session};
use crate::bindings::types::{Applied, Error};
use crate::config::BackendsConfig;
use crate::gate::{glob_scope, Action, ActionTarget};
use crate::grants::{Capability, Scope};

use super::{HostCtx, Wiring};

pub mod backend;
pub mod fixture;
pub mod postgres;

use backend::{DatabaseBackend, Session as BackendSession};

/// The backend `[backends]` configures (`database_url`, `database_ca`,
/// `query_text`), if any.
pub fn from_config(
    cfg: &BackendsConfig,
    timeout: Duration,
) -> anyhow::Result<Option<Arc<dyn DatabaseBackend>>> {
    let Some(u) = &cfg.database_url else {
        return Ok(None);
    };
    let mut pg = postgres::Postgres::new(u.as_str(), timeout)?
        .with_query_text(cfg.query_text.unwrap_or_default());
    if let Some(ca) = &cfg.database_ca {
        pg = pg.with_certs(&ca.certs)?;
    }
    Ok(Some(Arc::new(pg)))
}

/// A client session, scoped by the application that owns it (empty when
/// the session could not be found).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionTarget {
    pub pid: i32,
    pub application: String,
}

impl ActionTarget for SessionTarget {
    fn label(&self) -> String {
        format!("pid:{}", self.pid)
    }

    fn describe(&self) -> String {
        format!("session {} of application `{}`", self.pid, self.application)
    }

    fn check_scope(&self, scope: &Scope, plugin: &str) -> Result<(), String> {
        glob_scope(
            self,
            &scope.database_applications,
            &self.application,
            plugin,
        )
    }

    /// The application: pids are new every time.
    fn cooldown_key(&self) -> String {
        format!("application:{}", self.application)
    }
}

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

const DATABASE: Wiring = Wiring {
    cap: Capability::Database,
    name: "postgres",
    key: "database_url",
    env: "REMEDY_DATABASE_URL",
};

impl HostCtx {
    /// Both signals: look the session up (its application decides the
    /// scope), pass the gate, then signal it.
    async fn signal(
        &mut self,
        kind: ActionKind,
        pid: i32,
        reason: String,
    ) -> Result<Applied, Error> {
        let mut action = Action::new(
            kind,
            SessionTarget {
                pid,
                application: String::new(),
            },
            reason,
        );
        let found = match self.backend(&DATABASE, &self.backends.database) {
            Ok(db) => self
                .read(&DATABASE, "session", &format!("pid:{pid}"), db.session(pid))
                .await
                .and_then(|s| {
                    s.ok_or_else(|| Error::Invalid(format!("no client session with pid {pid}")))
                }),
            Err(e) => Err(e),
        };
        let application = match found {
            Ok(s) => s.application_name,
            Err(e) => return Err(self.gate.refuse(&action, e)),
        };
        action.target = Arc::new(SessionTarget {
            pid,
            application: application.clone(),
        });
        let db = self.configured(&DATABASE, &self.backends.database);
        self.gate
            .act(action, db, |db, permit| async move {
                signal_session(db.as_ref(), &permit, kind, pid, &application).await
            })
            .await
    }
}

/// Cancels or terminates (by `kind`) session `pid`, if it still belongs to
/// `application`: a session gone, or a pid reused by another application,
/// is a failure and nothing is signalled.
pub async fn signal_session(
    db: &dyn DatabaseBackend,
    permit: &Permit,
    kind: ActionKind,
    pid: i32,
    application: &str,
) -> Result<(), BackendError> {
    let done = match kind {
        ActionKind::DatabaseCancel => db.cancel(permit, pid, application).await?,
        _ => db.terminate(permit, pid, application).await?,
    };
    if done {
        Ok(())
    } else {
        Err(BackendError::Failed(format!(
            "session {pid} of `{application}` was gone (or its pid reused) before it could be signalled"
        )))
    }
}

impl Host for HostCtx {
    async fn stats(&mut self) -> Result<PoolStats, Error> {
        let db = self.backend(&DATABASE, &self.backends.database)?;
        let s = self.read(&DATABASE, "stats", "", db.stats()).await?;
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
        let db = self.backend(&DATABASE, &self.backends.database)?;
        let rows = self
            .read(
                &DATABASE,
                "long-running",
                "",
                db.long_running(min_duration_ms, limit),
            )
            .await?;
        Ok(rows.into_iter().map(session).collect())
    }

    async fn cancel(&mut self, pid: i32, reason: String) -> Result<Applied, Error> {
        self.signal(ActionKind::DatabaseCancel, pid, reason).await
    }

    async fn terminate(&mut self, pid: i32, reason: String) -> Result<Applied, Error> {
        self.signal(ActionKind::DatabaseTerminate, pid, reason)
            .await
    }
}
