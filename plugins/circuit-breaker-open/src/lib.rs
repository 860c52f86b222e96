//! Runbook 4 of the Servio incident runbook: a circuit breaker is open.
//!
//! Detect: list the application's breakers; for each OPEN one, probe its
//! upstream's Statuspage document. Mitigate: an OPEN breaker whose upstream is
//! operational is probably stuck and is forced to HALF_OPEN; one whose
//! upstream is degraded, down or unknown stays OPEN, the P0 route of the
//! escalation policy is notified, and a human gets the seed's steps (status
//! page, fallback, monitoring).
//!
//! Config keys:
//! - `breakers` (all): comma-separated breaker names to look at. An alert
//!   with a `breaker` label narrows the run to that breaker.
//! - `status_url.<breaker>`: the upstream's status URL; defaults to the URL the
//!   application reports, else the public status page of stripe, supabase
//!   and openai.

use remedy_plugin_sdk::breaker::{self, BreakerStatus, State};
use remedy_plugin_sdk::notify::Priority;
use remedy_plugin_sdk::statuspage::{self, Verdict};
use remedy_plugin_sdk::*;

struct CircuitBreakerOpen;

/// What the probe said about an upstream.
enum Upstream {
    Healthy(String),
    Unhealthy(String),
    Unknown(String),
}

fn default_status_url(name: &str) -> Option<&'static str> {
    match name {
        "stripe" => Some("https://status.stripe.com/api/v2/status.json"),
        "supabase" => Some("https://status.supabase.com/api/v2/status.json"),
        "openai" => Some("https://status.openai.com/api/v2/status.json"),
        _ => None,
    }
}

fn status_url(ctx: &Context, b: &BreakerStatus) -> Option<String> {
    ctx.cfg()
        .get(&format!("status_url.{}", b.name))
        .map(String::from)
        .or_else(|| b.status_url.clone())
        .or_else(|| default_status_url(&b.name).map(String::from))
}

fn check_upstream(ctx: &Context, b: &BreakerStatus) -> (Upstream, Option<String>) {
    let Some(url) = status_url(ctx, b) else {
        return (Upstream::Unknown("no status URL known".into()), None);
    };
    let verdict = match probe::get(&url) {
        Err(e) => Upstream::Unknown(format!("probe failed: {}", error_text(&e))),
        Ok(r) => match statuspage::verdict(&r) {
            Verdict::Operational => {
                Upstream::Healthy(r.description.unwrap_or_else(|| "operational".into()))
            }
            Verdict::Unhealthy(i) => {
                Upstream::Unhealthy(format!("{} ({i})", r.description.unwrap_or_default()))
            }
            Verdict::Unknown(why) => Upstream::Unknown(why),
        },
    };
    (verdict, Some(url))
}

fn open_breakers(ctx: &Context) -> Result<Vec<BreakerStatus>, Error> {
    let only = ctx.cfg().list("breakers", &[]);
    let from_alert = ctx.alert_label("breaker").map(String::from);
    Ok(breaker::list()?
        .into_iter()
        .filter(|b| b.state == State::Open)
        .filter(|b| only.is_empty() || only.contains(&b.name))
        .filter(|b| from_alert.as_ref().is_none_or(|n| n == &b.name))
        .collect())
}

impl Guest for CircuitBreakerOpen {
    fn describe() -> PluginInfo {
        plugin_info!(
            "Half-opens stuck circuit breakers whose upstream is healthy; escalates the rest",
            ["CircuitBreakerOpen"]
        )
    }

    fn detect(ctx: Context) -> Result<Detection, Error> {
        let open = open_breakers(&ctx)?;
        let mut findings = Vec::new();
        for b in &open {
            let (upstream, url) = check_upstream(&ctx, b);
            let (verdict, detail) = match &upstream {
                Upstream::Healthy(d) => ("healthy", d),
                Upstream::Unhealthy(d) => ("unhealthy", d),
                Upstream::Unknown(d) => ("unknown", d),
            };
            findings.push(finding(
                Severity::Critical,
                format!("breaker {} is OPEN; upstream {verdict} ({detail})", b.name),
                &[
                    ("breaker", b.name.clone()),
                    ("state", "open".into()),
                    ("failures", b.failures.to_string()),
                    ("opened_at", b.opened_at.clone().unwrap_or_default()),
                    ("status_url", url.unwrap_or_default()),
                    ("upstream", verdict.into()),
                    ("upstream_detail", detail.clone()),
                ],
            ));
        }
        Ok(Detection {
            healthy: open.is_empty(),
            findings,
        })
    }

    fn mitigate(ctx: Context, _detection: Detection) -> Result<Outcome, Error> {
        let mut actions = Actions::default();
        let mut kept_open = Vec::new();
        let mut manual_steps = Vec::new();
        for b in open_breakers(&ctx)? {
            match check_upstream(&ctx, &b).0 {
                Upstream::Healthy(_) => {
                    let reason =
                        format!("upstream of {} is operational; breaker looks stuck", b.name);
                    if actions
                        .record(
                            &b.name,
                            breaker::force_state(&b.name, State::HalfOpen, &reason),
                        )
                        .is_err()
                    {
                        manual_steps.push(format!(
                            "Upstream of {0} is healthy but Remedy may not reset it: run circuitBreakerRegistry.get('{0}')?.forceState('HALF_OPEN') by hand",
                            b.name
                        ));
                    }
                }
                Upstream::Unhealthy(why) | Upstream::Unknown(why) => {
                    kept_open.push(b.name.clone());
                    manual_steps.push(format!("{} stays OPEN: upstream {why}", b.name));
                }
            }
        }
        if !kept_open.is_empty() {
            // Not in `actions`: those count breakers.
            let escalated = escalate(
                Priority::P0,
                Severity::Critical,
                format!(
                    "Upstream down, breaker(s) kept OPEN: {}",
                    kept_open.join(", ")
                ),
                manual_steps.join("\n"),
                vec![("breakers".into(), kept_open.join(","))],
            );
            if let Err(e) = escalated {
                manual_steps.push(format!(
                    "Escalation failed ({}): page the P0 route by hand",
                    error_text(&e)
                ));
            }
            manual_steps.extend([
                format!("Document the outage of {} on the status page", kept_open.join(", ")),
                "Enable fallback behaviour where implemented".to_string(),
                "Monitor the upstream for recovery; reset the breaker to HALF_OPEN once it is healthy".to_string(),
            ]);
        }
        let verb = if ctx.dry_run {
            "would half-open"
        } else {
            "half-opened"
        };
        let n = actions.done(ctx.dry_run);
        Ok(Outcome {
            summary: format!("{verb} {n} breaker(s); {} kept open", kept_open.len()),
            mitigated: actions.executed > 0 && kept_open.is_empty() && actions.not_done.is_empty(),
            manual_steps,
        })
    }
}

remedy_plugin_sdk::export!(CircuitBreakerOpen);
