//! Runbook 5 of the Servio incident runbook: high error rate.
//!
//! Detect: the share of 5xx answers over `window` against the seed's 5%, and
//! whether a deploy went out within `deploy_window_minutes` (build info).
//! Mitigate: a rollback is a human's call, so Remedy escalates (P1) with the
//! evidence: after a recent deploy the message says "roll back" and carries
//! the seed's rollback procedure; with no recent change it reports the
//! infrastructure (open breakers, cache hit rate, database latency).
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
    }
}

struct Observed {
    error_ratio: Option<f64>,
    deploy_age_s: Option<f64>,
    version: Option<String>,
}

impl Observed {
    fn recent_deploy(&self, s: &Settings) -> bool {
        self.deploy_age_s
            .is_some_and(|a| a <= s.deploy_window_minutes * 60.0)
    }
}

fn observe(s: &Settings) -> Result<Observed, Error> {
    let error_ratio = query::scalar(&format!(
        "sum(rate({m}{{status=~\"5..\"}}[{w}])) / sum(rate({m}[{w}]))",
        m = s.requests_metric,
        w = s.window
    ))?;
    let deploy_age_s = query::scalar("time() - max(servio_deploy_timestamp_seconds)")?;
    let version = query::by_label("servio_build_info", "version")?
        .into_iter()
        .next()
        .map(|(v, _)| v);
    Ok(Observed {
        error_ratio,
        deploy_age_s,
        version,
    })
}

fn evidence(o: &Observed, s: &Settings) -> Vec<(&'static str, String)> {
    vec![
        (
            "error_ratio",
            o.error_ratio
                .map(percent)
                .unwrap_or_else(|| "no data".into()),
        ),
        ("max_error_ratio", percent(s.max_error_ratio)),
        ("window", s.window.to_string()),
        (
            "version",
            o.version.clone().unwrap_or_else(|| "unknown".into()),
        ),
        (
            "deployed_minutes_ago",
            o.deploy_age_s
                .map(|a| format!("{:.0}", a / 60.0))
                .unwrap_or_else(|| "unknown".into()),
        ),
    ]
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

impl Guest for HighErrorRate {
    fn describe() -> PluginInfo {
        plugin_info!(
            "Ties a 5xx spike to a recent deploy and escalates a rollback, else reports the infrastructure",
            ["HighErrorRate"]
        )
    }

    fn detect(ctx: Context) -> Result<Detection, Error> {
        let s = Settings::from(&ctx)?;
        let o = observe(&s)?;
        let high = o.error_ratio.is_some_and(|r| r > s.max_error_ratio);
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
        if high && o.recent_deploy(&s) {
            findings.push(finding(
                Severity::Critical,
                format!(
                    "build {} went live {:.0} minutes ago: the likely cause",
                    o.version.clone().unwrap_or_default(),
                    o.deploy_age_s.unwrap_or(0.0) / 60.0
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
        let recent = o.recent_deploy(&s);
        let version = o
            .version
            .clone()
            .unwrap_or_else(|| "the last deploy".into());
        let (title, body, mut manual_steps) = if recent {
            (
                format!("High error rate after deploy of {version}: roll back"),
                format!(
                    "{} of requests fail since {version} went live. Roll back to the previous version and investigate in staging.",
                    o.error_ratio.map(percent).unwrap_or_default()
                ),
                vec![
                    format!("Roll back {version}: git revert HEAD --no-commit && git commit -m \"hotfix: rollback last deployment\" && git push origin main"),
                    "Investigate the failing change in staging".to_string(),
                ],
            )
        } else {
            ev.extend(infrastructure());
            (
                "High error rate with no recent deploy".to_string(),
                "No deploy in the window: check the infrastructure (database, cache, queue) and traffic anomalies; see the evidence.".to_string(),
                vec![
                    "Identify the error pattern: tail -1000 /var/log/app.log | grep \" 5[0-9][0-9] \"".to_string(),
                    "Check the infrastructure (database, cache, queue) and traffic anomalies".to_string(),
                ],
            )
        };
        let mut actions = Actions::default();
        let sent = actions.record(
            "escalation P1",
            escalate(Priority::P1, Severity::Critical, title.clone(), body, ev),
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
                "{title}; {}",
                if ctx.dry_run {
                    "escalation simulated"
                } else if sent.is_ok() {
                    "escalated P1"
                } else {
                    "escalation failed"
                }
            ),
            mitigated: false,
            manual_steps,
        })
    }
}

remedy_plugin_sdk::export!(HighErrorRate);
