//! Runbook 1 of the Servio incident runbook: database connection exhaustion.
//!
//! Detect: pool usage against `max_connections`, and sessions that have been
//! running or idle in a transaction for longer than `long_query_ms` (leaks).
//! Mitigate: terminate the longest leaking sessions, at most
//! `max_terminations`, never one of `protected_applications`. At capacity with
//! no leak, automation stops and the seed's manual steps are handed over.
//!
//! Config keys (defaults from the seed): the fields of `Settings`.

use remedy_plugin_sdk::database::{self, Session};
use remedy_plugin_sdk::*;

struct DbConnectionExhaustion;

settings! {
    struct Settings {
        /// Usage at or above this fraction is critical.
        max_usage_ratio: f64 = 0.9,
        /// A session longer than this is a leak suspect.
        long_query_ms: u64 = 60_000,
        /// Most sessions terminated in one run.
        max_terminations: u64 = 5,
        /// `application_name`s never terminated (comma-separated).
        protected_applications: Vec<String> = &["pg_dump", "pg_basebackup"],
    }
}

impl Settings {
    fn is_protected(&self, s: &Session) -> bool {
        self.protected_applications
            .iter()
            .any(|p| p == &s.application_name)
    }
}

fn session_evidence(s: &Session) -> Vec<(&'static str, String)> {
    vec![
        ("pid", s.pid.to_string()),
        ("application_name", s.application_name.clone()),
        ("user", s.user_name.clone()),
        ("database", s.database.clone()),
        ("state", s.state.clone()),
        ("duration_ms", s.duration_ms.to_string()),
        ("wait_event", s.wait_event.clone().unwrap_or_default()),
        ("query", s.query.clone()),
    ]
}

impl Guest for DbConnectionExhaustion {
    fn describe() -> PluginInfo {
        plugin_info!(
            "Finds leaking or runaway PostgreSQL sessions and terminates them within budget",
            ["DatabaseConnectionExhaustion"]
        )
    }

    fn detect(ctx: Context) -> Result<Detection, Error> {
        let s = Settings::from(&ctx)?;
        let pool = database::stats()?;
        let sessions = database::long_running(s.long_query_ms, 50)?;
        let ratio = if pool.max_connections == 0 {
            0.0
        } else {
            f64::from(pool.total) / f64::from(pool.max_connections)
        };
        let at_capacity = ratio >= s.max_usage_ratio;
        let mut findings = vec![finding(
            if at_capacity {
                Severity::Critical
            } else {
                Severity::Info
            },
            format!(
                "{} of {} connections in use ({:.0}%, threshold {:.0}%)",
                pool.total,
                pool.max_connections,
                ratio * 100.0,
                s.max_usage_ratio * 100.0
            ),
            &[
                ("total", pool.total.to_string()),
                ("active", pool.active.to_string()),
                ("idle", pool.idle.to_string()),
                ("idle_in_transaction", pool.idle_in_transaction.to_string()),
                ("waiting", pool.waiting.to_string()),
                ("max_connections", pool.max_connections.to_string()),
                ("usage_ratio", format!("{ratio:.3}")),
            ],
        )];
        for sess in &sessions {
            let protected = s.is_protected(sess);
            findings.push(finding(
                if protected {
                    Severity::Info
                } else {
                    Severity::Warning
                },
                format!(
                    "session {} ({}) {} for {} ms{}",
                    sess.pid,
                    if sess.application_name.is_empty() {
                        "no application_name"
                    } else {
                        &sess.application_name
                    },
                    sess.state,
                    sess.duration_ms,
                    if protected { " [protected]" } else { "" }
                ),
                &session_evidence(sess),
            ));
        }
        let leaks = sessions.iter().filter(|x| !s.is_protected(x)).count();
        info(&format!(
            "usage {ratio:.3}, {} long-running sessions, {leaks} unprotected",
            sessions.len()
        ));
        Ok(Detection {
            healthy: !at_capacity && leaks == 0,
            findings,
        })
    }

    fn mitigate(ctx: Context, _detection: Detection) -> Result<Outcome, Error> {
        let s = Settings::from(&ctx)?;
        // Re-read: the detection may be seconds old and sessions come and go.
        let sessions = database::long_running(s.long_query_ms, 500)?;
        let mut actions = Actions::limited(s.max_terminations);
        let mut skipped_protected = 0;
        for sess in &sessions {
            if s.is_protected(sess) {
                skipped_protected += 1;
                continue;
            }
            let reason = format!(
                "{} for {} ms exceeds long_query_ms={} (application {:?})",
                sess.state, sess.duration_ms, s.long_query_ms, sess.application_name
            );
            let target = format!("pid:{}", sess.pid);
            if actions
                .try_act(&target, || database::terminate(sess.pid, &reason))
                .is_none()
            {
                // What follows, protected or not, counts as left below.
                break;
            }
        }
        let leaks = sessions.len() - skipped_protected;
        let left = leaks.saturating_sub(actions.attempted() as usize);
        let mut manual_steps = Vec::new();
        if leaks == 0 {
            manual_steps.extend([
                "No leaking session found: the database is at capacity. Deploy the connection pooling layer (lib/db/connection-pool.ts) if not yet in place".to_string(),
                "Scale the database plan or add read replicas".to_string(),
            ]);
        } else {
            manual_steps.push("Find the code path that leaks connections (see the application names in the findings) and fix it".to_string());
        }
        if left > 0 {
            manual_steps.push(format!(
                "{left} more long-running session(s) were left alone (max_terminations={}); review them with pg_stat_activity",
                s.max_terminations
            ));
        }
        manual_steps.extend(actions.not_done_steps("Not terminated, handle by hand: "));
        manual_steps.push(
            "Monitor connection recovery in Grafana and verify error rates return to normal"
                .to_string(),
        );
        manual_steps.push("Document the root cause".to_string());

        let summary = if ctx.dry_run {
            format!("dry-run: would terminate {} session(s); {skipped_protected} protected session(s) skipped", actions.simulated)
        } else {
            format!(
                "terminated {} session(s); {skipped_protected} protected session(s) skipped",
                actions.executed
            )
        };
        Ok(Outcome {
            summary,
            mitigated: actions.executed > 0 && left == 0 && actions.not_done.is_empty(),
            manual_steps,
        })
    }
}

remedy_plugin_sdk::export!(DbConnectionExhaustion);
