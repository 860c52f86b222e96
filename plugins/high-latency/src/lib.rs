//! Runbook 6 of the Servio incident runbook: high latency (p95/p99).
//!
//! Detect: p95 and p99 of request latency over `window` from the histogram,
//! the breakdown by dependency (database, external APIs, cache), and runaway
//! queries in PostgreSQL. Mitigate: when the database dominates and queries
//! have run longer than `runaway_query_ms`, cancel them (the query, not the
//! session), at most `max_cancellations`, never of `protected_applications`.
//! Otherwise the breakdown goes to a human with the seed's common causes.
//!
//! Config keys: the fields of `Settings`.

use remedy_plugin_sdk::database::{self, Session};
use remedy_plugin_sdk::*;

struct HighLatency;

settings! {
    struct Settings {
        /// PromQL range.
        window: query::Window = "5m",
        /// The alert line of p95.
        p95_threshold_ms: f64 = 500.0,
        /// The alert line of p99.
        p99_threshold_ms: f64 = 1000.0,
        /// An active query older than this is runaway.
        runaway_query_ms: u64 = 30_000,
        /// Most queries cancelled in one run.
        max_cancellations: u64 = 3,
        /// `application_name`s whose queries are never cancelled.
        protected_applications: Vec<String> = &["pg_dump", "pg_basebackup"],
        /// Only queries of these `application_name`s are considered at all
        /// (empty: all).
        applications: Vec<String> = &[],
        /// Histogram of request latency.
        latency_metric: String = "servio_http_request_duration_seconds",
        /// Histogram of dependency latency, with a `dependency` label.
        dependency_metric: String = "servio_dependency_duration_seconds",
    }
}

struct Observed {
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// p95 per dependency, slowest first.
    breakdown: Vec<(String, f64)>,
}

impl Observed {
    fn slow(&self, s: &Settings) -> bool {
        self.p95_ms.is_some_and(|v| v > s.p95_threshold_ms)
            || self.p99_ms.is_some_and(|v| v > s.p99_threshold_ms)
    }

    fn dominant(&self) -> Option<&str> {
        self.breakdown.first().map(|(d, _)| d.as_str())
    }
}

fn observe(s: &Settings) -> Result<Observed, Error> {
    let q = |quantile: f64| {
        query::scalar(&format!(
            "histogram_quantile({quantile}, sum by (le) (rate({}_bucket[{}]))) * 1000",
            s.latency_metric, s.window
        ))
    };
    let p95_ms = q(0.95)?;
    let p99_ms = q(0.99)?;
    let mut breakdown = query::by_label(
        &format!(
            "histogram_quantile(0.95, sum by (le, dependency) (rate({}_bucket[{}]))) * 1000",
            s.dependency_metric, s.window
        ),
        "dependency",
    )?;
    breakdown.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(Observed {
        p95_ms,
        p99_ms,
        breakdown,
    })
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0} ms"))
        .unwrap_or_else(|| "no data".into())
}

fn runaway(s: &Settings) -> Result<Vec<Session>, Error> {
    Ok(database::long_running(s.runaway_query_ms, 100)?
        .into_iter()
        .filter(|x| x.state == "active")
        .filter(|x| {
            !s.protected_applications
                .iter()
                .any(|p| p == &x.application_name)
        })
        .filter(|x| s.applications.is_empty() || s.applications.contains(&x.application_name))
        .collect())
}

impl Guest for HighLatency {
    fn describe() -> PluginInfo {
        plugin_info!(
            "Breaks p95/p99 latency down by dependency; cancels runaway queries when the database is the cause",
            ["HighLatencyP95", "HighLatencyP99"]
        )
    }

    fn detect(ctx: Context) -> Result<Detection, Error> {
        let s = Settings::from(&ctx)?;
        let o = observe(&s)?;
        let slow = o.slow(&s);
        let mut ev = vec![
            ("p95", ms(o.p95_ms)),
            ("p99", ms(o.p99_ms)),
            ("p95_threshold", format!("{:.0} ms", s.p95_threshold_ms)),
            ("p99_threshold", format!("{:.0} ms", s.p99_threshold_ms)),
            ("window", s.window.to_string()),
        ];
        let names: Vec<String> = o
            .breakdown
            .iter()
            .map(|(d, _)| format!("p95.{d}"))
            .collect();
        for ((_, v), n) in o.breakdown.iter().zip(&names) {
            ev.push((n.as_str(), format!("{v:.0} ms")));
        }
        let mut findings = vec![finding(
            if slow {
                Severity::Critical
            } else {
                Severity::Info
            },
            format!(
                "p95 {} / p99 {}{}",
                ms(o.p95_ms),
                ms(o.p99_ms),
                o.dominant()
                    .map(|d| format!("; slowest dependency: {d}"))
                    .unwrap_or_default()
            ),
            &ev,
        )];
        if slow {
            let queries = runaway(&s).unwrap_or_else(|e| {
                warn(&format!("cannot list queries: {}", error_text(&e)));
                Vec::new()
            });
            for q in &queries {
                findings.push(finding(
                    Severity::Warning,
                    format!(
                        "query of pid {} ({}) running for {} ms",
                        q.pid, q.application_name, q.duration_ms
                    ),
                    &[
                        ("pid", q.pid.to_string()),
                        ("application_name", q.application_name.clone()),
                        ("duration_ms", q.duration_ms.to_string()),
                        ("query", q.query.clone()),
                    ],
                ));
            }
        }
        Ok(Detection {
            healthy: !slow,
            findings,
        })
    }

    fn mitigate(ctx: Context, _detection: Detection) -> Result<Outcome, Error> {
        let s = Settings::from(&ctx)?;
        let o = observe(&s)?;
        let mut actions = Actions::limited(s.max_cancellations);
        let mut manual_steps = Vec::new();
        let db_bound = o.dominant() == Some("db");
        let queries = if db_bound { runaway(&s)? } else { Vec::new() };
        for q in &queries {
            let reason = format!(
                "query running {} ms > runaway_query_ms={} while latency is high",
                q.duration_ms, s.runaway_query_ms
            );
            actions.try_act(&format!("pid:{}", q.pid), || {
                database::cancel(q.pid, &reason)
            });
        }
        if !actions.past_limit.is_empty() {
            manual_steps.push(format!(
                "{} more runaway query(ies) left (max_cancellations={})",
                actions.left(),
                s.max_cancellations
            ));
        }
        let breakdown = o
            .breakdown
            .iter()
            .map(|(d, v)| format!("{d} {v:.0} ms"))
            .collect::<Vec<_>>()
            .join(", ");
        if db_bound {
            manual_steps
                .push("Look for a missing index on the slow queries (EXPLAIN ANALYZE)".into());
        }
        match o.dominant() {
            Some("cache") => manual_steps.push("Cache is the slowest part: check the LowCacheHitRate alert and that cache coalescing works".into()),
            Some("external") => manual_steps.push("External APIs are the slowest part: check the upstreams' status pages and breakers".into()),
            _ => {}
        }
        manual_steps.push(format!("Latency breakdown (p95): {breakdown}"));
        manual_steps.extend(actions.not_done_steps("Not cancelled, handle by hand: "));
        let n = actions.done(ctx.dry_run);
        Ok(Outcome {
            summary: format!(
                "p95 {} / p99 {}; slowest: {}; {} {n} runaway query(ies)",
                ms(o.p95_ms),
                ms(o.p99_ms),
                o.dominant().unwrap_or("unknown"),
                if ctx.dry_run {
                    "would cancel"
                } else {
                    "cancelled"
                }
            ),
            mitigated: actions.executed > 0 && actions.not_done.is_empty(),
            manual_steps,
        })
    }
}

remedy_plugin_sdk::export!(HighLatency);
