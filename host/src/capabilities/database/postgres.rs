//! Database backend: PostgreSQL through `pg_stat_activity`,
//! `pg_cancel_backend` and `pg_terminate_backend`.
//!
//! One connection (tokio-postgres pipelines concurrent queries on it), made
//! on first use and remade when it drops. Its `application_name` is `remedy`
//! and it excludes itself (`pg_backend_pid()`) from every listing and action.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio_postgres::{Client, Row};

use super::backend::{DatabaseBackend, PoolStats, Session};
use crate::backends::pg_tls::tls_config;
use crate::backends::{BackendError, BackendResult, Permit};
use crate::config::QueryText;

pub struct Postgres {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    timeout: Duration,
    client: Mutex<Option<Arc<Client>>>,
    query_text: QueryText,
}

/// Longest redacted query text kept.
const REDACTED_CHARS: usize = 256;

/// `q` with every string literal (`'…'`, `E'…'`, `$tag$…$tag$`) and every
/// number replaced by `?`: the shape of the query stays, the values —
/// passwords, emails, ids — go. Cut to [`REDACTED_CHARS`].
pub fn redact_query(q: &str) -> String {
    let mut out = String::with_capacity(q.len().min(REDACTED_CHARS + 8));
    let mut chars = q.char_indices().peekable();
    let mut prev_word = false;
    while let Some((i, c)) = chars.next() {
        if out.chars().count() >= REDACTED_CHARS {
            out.push('…');
            return out;
        }
        match c {
            '\'' => {
                // To the closing quote; `''` is an escaped quote inside.
                loop {
                    match chars.next() {
                        None => break,
                        Some((_, '\'')) if chars.peek().map(|p| p.1) == Some('\'') => {
                            chars.next();
                        }
                        Some((_, '\'')) => break,
                        Some(_) => {}
                    }
                }
                out.push('?');
                prev_word = false;
            }
            '$' if !prev_word => {
                // `$tag$ … $tag$` (or `$n` parameters, kept as they are).
                let rest = &q[i + 1..];
                match rest.find('$') {
                    Some(end)
                        if rest[..end]
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_')
                            && !rest[..end]
                                .chars()
                                .next()
                                .is_some_and(|c| c.is_ascii_digit()) =>
                    {
                        let tag = format!("${}$", &rest[..end]);
                        let body_start = i + 1 + end + 1;
                        let close = q[body_start..]
                            .find(&tag)
                            .map(|p| body_start + p + tag.len());
                        let stop = close.unwrap_or(q.len());
                        while chars.peek().is_some_and(|(j, _)| *j < stop) {
                            chars.next();
                        }
                        out.push('?');
                        prev_word = false;
                    }
                    _ => {
                        // `$1`: a parameter's number is no secret.
                        out.push(c);
                        prev_word = true;
                    }
                }
            }
            c if c.is_ascii_digit() && !prev_word => {
                while chars
                    .peek()
                    .is_some_and(|(_, d)| d.is_ascii_digit() || *d == '.')
                {
                    chars.next();
                }
                out.push('?');
                prev_word = false;
            }
            c => {
                out.push(c);
                prev_word = c.is_alphanumeric() || c == '_';
            }
        }
    }
    out
}

const SESSION_COLUMNS: &str = "pid, coalesce(application_name, ''), coalesce(usename::text, ''), \
    coalesce(datname::text, ''), coalesce(state, ''), \
    greatest(0, (extract(epoch from (now() - CASE WHEN state = 'active' THEN query_start ELSE xact_start END)) * 1000))::int8, \
    CASE WHEN wait_event_type IS NULL THEN NULL ELSE wait_event_type || ':' || coalesce(wait_event, '') END, \
    left(coalesce(query, ''), 1024)";

/// Client sessions other than Remedy's own.
const OTHERS: &str = "backend_type = 'client backend' AND pid <> pg_backend_pid()";

fn session(row: &Row) -> Session {
    Session {
        pid: row.get(0),
        application_name: row.get(1),
        user_name: row.get(2),
        database: row.get(3),
        state: row.get(4),
        duration_ms: row.get::<_, i64>(5).max(0) as u64,
        wait_event: row.get(6),
        query: row.get(7),
    }
}

fn failed(e: tokio_postgres::Error) -> BackendError {
    if e.is_closed() {
        BackendError::Unavailable(format!("postgres: {e}"))
    } else {
        BackendError::Failed(format!(
            "postgres: {}",
            e.as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string())
        ))
    }
}

impl Postgres {
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let mut config: tokio_postgres::Config = url.parse()?;
        if config.get_application_name().is_none() {
            config.application_name("remedy");
        }
        config.connect_timeout(timeout);
        Ok(Self {
            config,
            tls: tokio_postgres_rustls::MakeRustlsConnect::new(
                tls_config(None).map_err(anyhow::Error::msg)?,
            ),
            timeout,
            client: Mutex::new(None),
            query_text: QueryText::default(),
        })
    }

    /// Trusts the CA(s) in this PEM file instead of the public web roots.
    pub fn with_ca(self, ca: &std::path::Path) -> anyhow::Result<Self> {
        let ca = crate::config::CaFile::read(ca).map_err(anyhow::Error::msg)?;
        self.with_certs(&ca.certs)
    }

    /// Trusts these CA certificates instead of the public web roots.
    pub fn with_certs(
        mut self,
        certs: &[rustls::pki_types::CertificateDer<'static>],
    ) -> anyhow::Result<Self> {
        self.tls = tokio_postgres_rustls::MakeRustlsConnect::new(
            tls_config(Some(certs)).map_err(anyhow::Error::msg)?,
        );
        Ok(self)
    }

    /// What of a session's query text plugins see (default: redacted).
    pub fn with_query_text(mut self, q: QueryText) -> Self {
        self.query_text = q;
        self
    }

    fn shown(&self, mut s: Session) -> Session {
        s.query = match self.query_text {
            QueryText::Full => s.query,
            QueryText::Redacted => redact_query(&s.query),
            QueryText::Off => String::new(),
        };
        s
    }

    async fn client(&self) -> BackendResult<Arc<Client>> {
        if let Some(c) = self.client.lock().map_err(|_| poisoned())?.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let (client, conn) = self.config.connect(self.tls.clone()).await.map_err(|e| {
            // The cause (e.g. the TLS certificate refused) is in the
            // error's sources, not its own text.
            let mut msg = format!("postgres: cannot connect: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            BackendError::Unavailable(msg)
        })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!(error = %e, "postgres connection ended");
            }
        });
        let client = Arc::new(client);
        *self.client.lock().map_err(|_| poisoned())? = Some(client.clone());
        Ok(client)
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> BackendResult<Vec<Row>> {
        let client = self.client().await?;
        // A query not answered (timed out, or its caller gave up at the
        // run's deadline) leaves the connection in doubt: drop it, so the
        // next query connects afresh instead of queueing behind a dead one.
        struct InDoubt<'a>(&'a Postgres, bool);
        impl Drop for InDoubt<'_> {
            fn drop(&mut self) {
                if !self.1 {
                    if let Ok(mut slot) = self.0.client.lock() {
                        *slot = None;
                    }
                    tracing::warn!(
                        "postgres: a query was not answered; reconnecting on the next one"
                    );
                }
            }
        }
        let mut guard = InDoubt(self, false);
        let r = match tokio::time::timeout(self.timeout, client.query(sql, params)).await {
            Ok(r) => r.map_err(failed),
            // Sent, unanswered: a signal may have been delivered.
            Err(_) => Err(BackendError::Unknown(format!(
                "postgres: no answer within {} ms",
                self.timeout.as_millis()
            ))),
        };
        guard.1 = !matches!(r, Err(BackendError::Unknown(_)));
        r
    }

    async fn signal(&self, function: &str, pid: i32, application: &str) -> BackendResult<bool> {
        // Re-checked in SQL, in the statement that signals: a pid that
        // stopped being a client session, or was reused by another
        // application's session since the gate checked the scope, is never
        // signalled.
        let sql = format!(
            "SELECT {function}(pid) FROM pg_stat_activity WHERE pid = $1 \
             AND coalesce(application_name, '') = $2 AND {OTHERS}"
        );
        let rows = self.query(&sql, &[&pid, &application]).await?;
        Ok(rows.first().map(|r| r.get::<_, bool>(0)).unwrap_or(false))
    }
}

fn poisoned() -> BackendError {
    BackendError::Failed("postgres: connection slot poisoned".into())
}

#[async_trait]
impl DatabaseBackend for Postgres {
    async fn stats(&self) -> BackendResult<PoolStats> {
        let rows = self
            .query(
                "SELECT count(*), \
                 count(*) FILTER (WHERE state = 'active'), \
                 count(*) FILTER (WHERE state = 'idle'), \
                 count(*) FILTER (WHERE state LIKE 'idle in transaction%'), \
                 count(*) FILTER (WHERE wait_event_type = 'Lock'), \
                 current_setting('max_connections')::int8 \
                 FROM pg_stat_activity WHERE backend_type = 'client backend'",
                &[],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| BackendError::Failed("postgres: no stats row".into()))?;
        let n = |i: usize| row.get::<_, i64>(i).clamp(0, u32::MAX as i64) as u32;
        Ok(PoolStats {
            total: n(0),
            active: n(1),
            idle: n(2),
            idle_in_transaction: n(3),
            waiting: n(4),
            max_connections: n(5),
        })
    }

    async fn long_running(&self, min_duration_ms: u64, limit: u32) -> BackendResult<Vec<Session>> {
        let sql = format!(
            "SELECT * FROM (SELECT {SESSION_COLUMNS} FROM pg_stat_activity \
             WHERE {OTHERS} AND (state = 'active' OR state LIKE 'idle in transaction%')) s(pid, app, usr, db, state, duration_ms, wait, query) \
             WHERE duration_ms >= $1 ORDER BY duration_ms DESC, pid LIMIT $2"
        );
        let min = i64::try_from(min_duration_ms).unwrap_or(i64::MAX);
        let limit = i64::from(limit.min(500));
        Ok(self
            .query(&sql, &[&min, &limit])
            .await?
            .iter()
            .map(|r| self.shown(session(r)))
            .collect())
    }

    async fn session(&self, pid: i32) -> BackendResult<Option<Session>> {
        let sql =
            format!("SELECT {SESSION_COLUMNS} FROM pg_stat_activity WHERE pid = $1 AND {OTHERS}");
        Ok(self
            .query(&sql, &[&pid])
            .await?
            .first()
            .map(|r| self.shown(session(r))))
    }

    async fn cancel(&self, _: &Permit, pid: i32, application: &str) -> BackendResult<bool> {
        self.signal("pg_cancel_backend", pid, application).await
    }

    async fn terminate(&self, _: &Permit, pid: i32, application: &str) -> BackendResult<bool> {
        self.signal("pg_terminate_backend", pid, application).await
    }
}

#[cfg(test)]
mod tests {
    use super::redact_query;

    #[test]
    fn literals_and_numbers_go_the_shape_stays() {
        let cases = [
            (
                "ALTER USER app PASSWORD 'hunter2'",
                "ALTER USER app PASSWORD ?",
            ),
            (
                "SELECT * FROM users WHERE email = 'a@b.c' AND id = 42 AND t1.x > 3.5",
                "SELECT * FROM users WHERE email = ? AND id = ? AND t1.x > ?",
            ),
            ("SELECT 'it''s secret', $1, col2", "SELECT ?, $1, col2"),
            ("DO $body$ secret $body$; SELECT $$x$$", "DO ?; SELECT ?"),
            ("SELECT E'\\x41'", "SELECT E?"),
            ("SELECT 'unterminated secret", "SELECT ?"),
        ];
        for (q, want) in cases {
            assert_eq!(redact_query(q), want, "{q}");
        }
        let long = format!("SELECT {}", "a, ".repeat(500));
        assert!(redact_query(&long).chars().count() <= 257);
    }
}
