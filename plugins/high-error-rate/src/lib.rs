//! Runbook 5 of the Servio incident runbook: high error rate.
//!
//! Detect: the share of 5xx answers over `window` against the seed's 5%;
//! the seed's "identify error patterns" (`tail -1000 app.log | grep " 5xx "`)
//! as counts per route and status from the `logs` interface; and the
//! seed's "check recent deployments" (`git log --oneline -10`) from the
//! `deploy` interface — a commit younger than `deploy_window_minutes` is
//! the suspect. Without a deploy backend, the build-info metric says when
//! the last deploy went out.
//! Mitigate: after a recent deploy, the seed's rollback as one gated
//! action, `deploy.rollback` of the suspect commit: planned for a human to
//! approve (mode `approve`; a rollback never runs unapproved unless the
//! operator set `backends.deploy.auto_rollback`), then verified by the
//! error ratio. The engineering lead (P1) is told either way, with the
//! evidence; with no recent change the message carries the infrastructure
//! readings (open breakers, cache hit rate, database latency).
//!
//! Config keys (defaults from the seed): the fields of `Settings`.

use remedy_plugin_sdk::notify::Priority;
use remedy_plugin_sdk::*;

struct HighErrorRate;

settings! {
    struct Settings {
        /// PromQL range of the error ratio.
        window: query::Window = "5m",
        /// "> 5% of requests returning 5xx".
        max_error_ratio: f64 = 0.05,
        /// A deploy this recent is the suspect.
        deploy_window_minutes: f64 = 30.0,
        /// Counter with a `status` label.
        requests_metric: String = "servio_http_requests_total",
        /// The `[backends.logs.NAME]` source of the application's log.
        log_source: String = "app",
        /// "tail -1000".
        log_lines: u64 = 1000,
        /// A 5xx line, its route and status captured (" 5[0-9][0-9] ").
        error_pattern: String = r" (/\S*) (5\d\d) ",
    }
}

/// A commit of the deployed branch that went out within the window.
struct Suspect {
    id: String,
    short_id: String,
    subject: String,
    author: String,
    age_s: f64,
}

struct Observed {
    error_ratio: Option<f64>,
    /// From `deploy` when it answers, else from the build-info metric.
    suspect: Option<Suspect>,
    /// How the last deploy was read, for the evidence.
    deploy_source: String,
    /// Top error patterns (`route status`, count), or why there are none.
    patterns: Result<Vec<logs::PatternCount>, String>,
}

/// Now, by the wall clock the host gives the plugin.
fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The newest commit in the window that is not a rollback Remedy made.
fn suspect_from_deploy(s: &Settings) -> Result<Option<Suspect>, Error> {
    let commits = deploy::recent(10)?;
    let now = now_s();
    Ok(commits
        .into_iter()
        .filter(|c| !c.subject.starts_with("hotfix: rollback"))
        .map(|c| Suspect {
            age_s: (now - c.time as f64).max(0.0),
            id: c.id,
            short_id: c.short_id,
            subject: c.subject,
            author: c.author,
        })
        .next()
        .filter(|c| c.age_s <= s.deploy_window_minutes * 60.0))
}

/// The last deploy by the build-info metric (no commit to roll back).
fn suspect_from_metrics(s: &Settings) -> Result<Option<Suspect>, Error> {
    let age = query::scalar("time() - max(servio_deploy_timestamp_seconds)")?;
    let version = query::by_label("servio_build_info", "version")?
        .into_iter()
        .next()
        .map(|(v, _)| v);
    Ok(age.filter(|a| *a <= s.deploy_window_minutes * 60.0).map(|a| Suspect {
        id: String::new(),
        short_id: version.clone().unwrap_or_else(|| "the last deploy".into()),
        subject: format!("build {}", version.unwrap_or_default()),
        author: String::new(),
        age_s: a,
    }))
}

fn observe(s: &Settings) -> Result<Observed, Error> {
    let error_ratio = query::scalar(&format!(
        "sum(rate({m}{{status=~\"5..\"}}[{w}])) / sum(rate({m}[{w}]))",
        m = s.requests_metric,
        w = s.window
    ))?;
    let (suspect, deploy_source) = match suspect_from_deploy(s) {
        Ok(found) => (found, "git".to_string()),
        // Not configured or not granted: the metric still says when.
        Err(e) => (suspect_from_metrics(s)?, format!("build info ({})", error_text(&e))),
    };
    let lines = s.log_lines.min(10_000) as u32;
    let patterns = logs::count(&s.log_source, lines, &s.error_pattern, 5).map_err(|e| error_text(&e));
    Ok(Observed {
        error_ratio,
        suspect,
        deploy_source,
        patterns,
    })
}

fn top_errors(o: &Observed) -> String {
    match &o.patterns {
        Ok(p) if p.is_empty() => "none in the log".into(),
        Ok(p) => p
            .iter()
            .map(|c| format!("{} ×{}", c.key, c.count))
            .collect::<Vec<_>>()
            .join(", "),
        Err(e) => format!("logs unavailable ({e})"),
    }
}

fn evidence(o: &Observed, s: &Settings) -> Vec<(&'static str, String)> {
    let mut ev = vec![
        (
            "error_ratio",
            o.error_ratio
                .map(percent)
                .unwrap_or_else(|| "no data".into()),
        ),
        ("max_error_ratio", percent(s.max_error_ratio)),
        ("window", s.window.to_string()),
        ("top_errors", top_errors(o)),
        ("deploys_from", o.deploy_source.clone()),
    ];
    if let Some(c) = &o.suspect {
        ev.push(("suspect", format!("{} {}", c.short_id, c.subject)));
        ev.push(("deployed_minutes_ago", format!("{:.0}", c.age_s / 60.0)));
    }
    ev
}

/// What the plugin's config says about how it was observed; `high` and
/// a suspect together are the rollback case.
fn is_high(o: &Observed, s: &Settings) -> bool {
    o.error_ratio.is_some_and(|r| r > s.max_error_ratio)
}

/// What a human is told, and what they must still do, per case.
struct Message {
    title: String,
    body: String,
    steps: Vec<String>,
}

fn rollback_message(c: &Suspect, o: &Observed, rolled: &Result<deploy::RollbackResult, Error>) -> Message {
    let ratio = o.error_ratio.map(percent).unwrap_or_default();
    let by = if c.author.is_empty() { String::new() } else { format!(" by {}", c.author) };
    let procedure = format!(
        "Roll back {}: git revert {} --no-commit && git commit -m \"hotfix: rollback last deployment\" && git push origin main",
        c.short_id,
        if c.id.is_empty() { "HEAD" } else { &c.id }
    );
    match rolled {
        Ok(r) if r.applied == Applied::Executed => Message {
            title: format!(
                "High error rate after {}: rolled back (revert {})",
                c.short_id,
                r.revert.as_deref().map_or("", |x| &x[..12.min(x.len())])
            ),
            body: format!(
                "{ratio} of requests failed since {} \"{}\"{by} went live; Remedy reverted it. Investigate the change in staging.",
                c.short_id, c.subject
            ),
            steps: vec!["Investigate the failing change in staging".into()],
        },
        Ok(r) => Message {
            title: format!("High error rate after {}: rollback planned", c.short_id),
            body: format!(
                "{ratio} of requests fail since {} \"{}\"{by} went live. The rollback would change {}.",
                c.short_id,
                c.subject,
                r.files
                    .iter()
                    .map(|f| format!("{} (+{} -{})", f.path, f.added, f.removed))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            steps: vec![
                format!("Approve the rollback of {} (or roll back by hand)", c.short_id),
                "Investigate the failing change in staging".into(),
            ],
        },
        Err(e) => Message {
            title: format!("High error rate after {}: roll back", c.short_id),
            body: format!(
                "{ratio} of requests fail since {} \"{}\"{by} went live. Remedy did not roll back ({}). Roll back to the previous version and investigate in staging.",
                c.short_id,
                c.subject,
                error_text(e)
            ),
            steps: vec![procedure, "Investigate the failing change in staging".into()],
        },
    }
}

impl Guest for HighErrorRate {
    fn describe() -> PluginInfo {
        plugin_info!(
            "Ties a 5xx spike to a recent deploy and rolls it back in an approved plan, else reports the infrastructure",
            ["HighErrorRate"]
        )
    }

    fn detect(ctx: Context) -> Result<Detection, Error> {
        let s = Settings::from(&ctx)?;
        let o = observe(&s)?;
        let high = is_high(&o, &s);
        let mut findings = vec![finding(
            if high {
                Severity::Critical
            } else {
                Severity::Info
            },
            format!(
                "{} of requests answered 5xx over {} (threshold {})",
                o.error_ratio
                    .map(percent)
                    .unwrap_or_else(|| "no data on how many".into()),
                s.window,
                percent(s.max_error_ratio)
            ),
            &evidence(&o, &s),
        )];
        if high {
            if let Ok(p) = &o.patterns {
                if let Some(top) = p.first() {
                    findings.push(finding(
                        Severity::Warning,
                        format!("most errors in the log: {} ({} of the last {} lines)", top.key, top.count, s.log_lines),
                        &[("top_errors", top_errors(&o)), ("example", top.example.clone())],
                    ));
                }
            }
        }
        if let (true, Some(c)) = (high, &o.suspect) {
            findings.push(finding(
                Severity::Critical,
                format!(
                    "{} \"{}\" went live {:.0} min ago: the likely cause",
                    c.short_id,
                    c.subject,
                    c.age_s / 60.0
                ),
                &evidence(&o, &s),
            ));
        }
        Ok(Detection {
            healthy: !high,
            findings,
        })
    }

    fn mitigate(ctx: Context, _detection: Detection) -> Result<Outcome, Error> {
        let s = Settings::from(&ctx)?;
        let o = observe(&s)?;
        let mut ev: Vec<(String, String)> = evidence(&o, &s)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let mut actions = Actions::default();
        let mut mitigated = false;
        let (msg, rolled_summary) = match &o.suspect {
            Some(c) if !c.id.is_empty() => {
                let reason = format!(
                    "5xx at {} (threshold {}) since {} \"{}\" went live {:.0} min ago; top errors: {}",
                    o.error_ratio.map(percent).unwrap_or_default(),
                    percent(s.max_error_ratio),
                    c.short_id,
                    c.subject,
                    c.age_s / 60.0,
                    top_errors(&o)
                );
                let rolled = deploy::rollback(&c.id, &reason);
                let applied = rolled.as_ref().map(|r| r.applied).map_err(|e| e.clone());
                actions.record(&format!("rollback of {}", c.short_id), applied);
                let summary = match &rolled {
                    Ok(r) if r.applied == Applied::Executed => {
                        mitigated = true;
                        let rev = r.revert.clone().unwrap_or_default();
                        ev.push(("revert".into(), rev.clone()));
                        format!("rolled back {} with revert {}", c.short_id, &rev[..12.min(rev.len())])
                    }
                    Ok(r) => format!(
                        "rollback of {} simulated ({} file(s))",
                        c.short_id,
                        r.files.len()
                    ),
                    Err(e) => format!("rollback of {} not done ({})", c.short_id, error_text(e)),
                };
                (rollback_message(c, &o, &rolled), summary)
            }
            Some(c) => {
                let e = Error::Unavailable("no deploy backend: the rollback is a human's".into());
                (rollback_message(c, &o, &Err(e)), "rollback left to a human".to_string())
            }
            None => {
                ev.extend(infrastructure());
                (
                    Message {
                        title: "High error rate with no recent deploy".to_string(),
                        body: "No deploy in the window: check the infrastructure (database, cache, queue) and traffic anomalies; see the evidence.".to_string(),
                        steps: vec![
                            format!("Identify the error pattern: tail -1000 /var/log/app.log | grep \" 5[0-9][0-9] \" (top: {})", top_errors(&o)),
                            "Check the infrastructure (database, cache, queue) and traffic anomalies".to_string(),
                        ],
                    },
                    "no recent deploy".to_string(),
                )
            }
        };
        let mut manual_steps = msg.steps;
        let sent = actions.record(
            "escalation P1",
            escalate(Priority::P1, Severity::Critical, msg.title.clone(), msg.body, ev),
        );
        if let Err(e) = &sent {
            manual_steps.insert(
                0,
                format!(
                    "Escalation failed ({}): tell the engineering lead (P1) by hand",
                    error_text(e)
                ),
            );
        }
        manual_steps.push("Verify error rates return below 5%".to_string());
        Ok(Outcome {
            summary: format!(
                "{}; {rolled_summary}; {}",
                msg.title,
                if ctx.dry_run {
                    "escalation simulated"
                } else if sent.is_ok() {
                    "escalated P1"
                } else {
                    "escalation failed"
                }
            ),
            mitigated,
            manual_steps,
        })
    }
}

/// What the infrastructure looks like, for the no-recent-deploy case.
fn infrastructure() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut add = |name: &str, q: &str, fmt: fn(f64) -> String| {
        let v = match query::scalar(q) {
            Ok(Some(v)) => fmt(v),
            Ok(None) => "no data".into(),
            Err(e) => error_text(&e),
        };
        out.push((name.to_string(), v));
    };
    add(
        "open_breakers",
        "count(servio_circuit_breaker_state == 1) or vector(0)",
        |v| format!("{v:.0}"),
    );
    add(
        "cache_hit_rate",
        "sum(rate(servio_cache_requests_total{result=\"hit\"}[5m])) / sum(rate(servio_cache_requests_total[5m]))",
        percent,
    );
    add(
        "db_p95_ms",
        "histogram_quantile(0.95, sum by (le) (rate(servio_dependency_duration_seconds_bucket{dependency=\"db\"}[5m]))) * 1000",
        |v| format!("{v:.0}"),
    );
    out
}

remedy_plugin_sdk::export!(HighErrorRate);
