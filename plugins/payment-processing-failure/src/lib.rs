//! Runbook 2 of the Servio incident runbook: payment processing failure.
//!
//! Detect: the payment success rate over `window`, the `stripe` breaker and
//! Stripe's status page. Mitigate: breaker OPEN with Stripe operational → the
//! breaker is stuck and goes to HALF_OPEN; Stripe degraded or down → a P0
//! escalation carrying the seed's status-page template, breaker left OPEN;
//! failures with the breaker closed → P1 escalation (rate limits, declines).
//! Always handed over: idempotency check, duplicate charges, monitoring.
//!
//! Config keys (defaults from the seed where it has numbers): the fields
//! of `Settings`, and `status_url`: Stripe's Statuspage document; defaults
//! to what the breaker reports, else status.stripe.com.

use remedy_plugin_sdk::breaker::{self, BreakerStatus, State};
use remedy_plugin_sdk::notify::{self, Priority};
use remedy_plugin_sdk::statuspage::{self, Verdict};
use remedy_plugin_sdk::*;

struct PaymentProcessingFailure;

settings! {
    struct Settings {
        /// PromQL range of the success rate.
        window: query::Window = "5m",
        /// Below this the payment flow is failing.
        min_success_rate: f64 = 0.95,
        /// The payment provider's breaker.
        breaker: String = "stripe",
        /// Counter with an `outcome` label (`succeeded`, `failed`).
        payments_metric: String = "servio_payments_total",
    }
}

/// Everything detect and mitigate both need to know.
struct Observed {
    success_rate: Option<f64>,
    breaker: Option<BreakerStatus>,
    upstream: Upstream,
    status_url: String,
}

#[derive(PartialEq)]
enum Upstream {
    Operational,
    Unhealthy(String),
    Unknown(String),
}

fn observe(ctx: &Context, s: &Settings) -> Result<Observed, Error> {
    // Without metrics the breaker and Stripe's status still tell most of
    // the story: a missing number is evidence, not a reason to stop.
    let success_rate = query::scalar(&format!(
        "sum(rate({m}{{outcome=\"succeeded\"}}[{w}])) / sum(rate({m}[{w}]))",
        m = s.payments_metric,
        w = s.window
    ))
    .unwrap_or_else(|e| {
        warn(&format!(
            "payment success rate unavailable: {}",
            error_text(&e)
        ));
        None
    });
    let breaker = match breaker::get(&s.breaker) {
        Ok(b) => b,
        Err(e) => {
            warn(&format!("breaker {}: {}", s.breaker, error_text(&e)));
            None
        }
    };
    let status_url = ctx
        .cfg()
        .get("status_url")
        .map(String::from)
        .or_else(|| breaker.as_ref().and_then(|b| b.status_url.clone()))
        .unwrap_or_else(|| "https://status.stripe.com/api/v2/status.json".into());
    let upstream = match probe::get(&status_url) {
        Err(e) => Upstream::Unknown(error_text(&e)),
        Ok(r) => match statuspage::verdict(&r) {
            Verdict::Operational => Upstream::Operational,
            Verdict::Unhealthy(_) => {
                Upstream::Unhealthy(r.description.unwrap_or_else(|| "degraded".into()))
            }
            Verdict::Unknown(why) => Upstream::Unknown(why),
        },
    };
    Ok(Observed {
        success_rate,
        breaker,
        upstream,
        status_url,
    })
}

fn breaker_open(st: &Observed) -> bool {
    st.breaker.as_ref().is_some_and(|b| b.state == State::Open)
}

fn failing(st: &Observed, s: &Settings) -> bool {
    st.success_rate.is_some_and(|r| r < s.min_success_rate)
}

fn evidence(st: &Observed, s: &Settings) -> Vec<(String, String)> {
    let upstream = match &st.upstream {
        Upstream::Operational => "operational".to_string(),
        Upstream::Unhealthy(d) => format!("unhealthy: {d}"),
        Upstream::Unknown(d) => format!("unknown: {d}"),
    };
    vec![
        (
            "success_rate".into(),
            st.success_rate
                .map(percent)
                .unwrap_or_else(|| "no data".into()),
        ),
        ("min_success_rate".into(), percent(s.min_success_rate)),
        ("window".into(), s.window.to_string()),
        (
            "breaker".into(),
            st.breaker
                .as_ref()
                .map(|b| format!("{} {} ({} failures)", b.name, b.state, b.failures))
                .unwrap_or_else(|| format!("{} unknown", s.breaker)),
        ),
        ("upstream".into(), upstream),
        ("status_url".into(), st.status_url.clone()),
    ]
}

fn follow_ups() -> Vec<String> {
    vec![
        "Monitor the payment success rate in the dashboard (grafana.servio.run/d/payments)".into(),
        "Verify idempotency keys are working (idem:tenant:operation:scope)".into(),
        "Check for duplicate charge reports from customers".into(),
    ]
}

impl Guest for PaymentProcessingFailure {
    fn describe() -> PluginInfo {
        plugin_info!(
            "Half-opens a stuck Stripe breaker; escalates a Stripe outage with the P0 status-page text",
            ["PaymentProcessingFailure"]
        )
    }

    fn detect(ctx: Context) -> Result<Detection, Error> {
        let s = Settings::from(&ctx)?;
        let st = observe(&ctx, &s)?;
        let ev = evidence(&st, &s);
        let ev: Vec<(&str, String)> = ev.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let mut findings = Vec::new();
        if failing(&st, &s) {
            findings.push(finding(
                Severity::Critical,
                format!(
                    "payment success rate {} below {}",
                    percent(st.success_rate.unwrap_or(0.0)),
                    percent(s.min_success_rate)
                ),
                &ev,
            ));
        }
        if breaker_open(&st) {
            findings.push(finding(
                Severity::Critical,
                format!("breaker {} is OPEN", s.breaker),
                &ev,
            ));
        }
        if let Upstream::Unhealthy(d) = &st.upstream {
            findings.push(finding(
                Severity::Critical,
                format!("Stripe reports: {d}"),
                &ev,
            ));
        }
        let healthy = findings.is_empty();
        if healthy {
            findings.push(finding(Severity::Info, "payments are flowing", &ev));
        }
        Ok(Detection { healthy, findings })
    }

    fn mitigate(ctx: Context, _detection: Detection) -> Result<Outcome, Error> {
        let s = Settings::from(&ctx)?;
        let st = observe(&ctx, &s)?;
        let ev = evidence(&st, &s);
        let mut actions = Actions::default();
        let mut manual_steps = Vec::new();
        let mut summary = Vec::new();

        match (&st.upstream, breaker_open(&st)) {
            (Upstream::Operational, true) => {
                let reason = "Stripe is operational; the breaker looks stuck".to_string();
                let done = actions.record(
                    &s.breaker,
                    breaker::force_state(&s.breaker, State::HalfOpen, &reason),
                );
                if done.is_err() {
                    manual_steps.push(format!(
                        "Reset the breaker by hand: circuitBreakerRegistry.get('{}')?.forceState('HALF_OPEN')",
                        s.breaker
                    ));
                }
                summary.push(format!(
                    "{} {} to HALF_OPEN",
                    if ctx.dry_run { "would move" } else { "moved" },
                    s.breaker
                ));
            }
            (Upstream::Unhealthy(_) | Upstream::Unknown(_), _) => {
                // An outage (or no way to tell): customers need the P0
                // status-page text, humans need paging. The breaker stays.
                let impact = st
                    .success_rate
                    .map(|r| format!("{:.0}", (1.0 - r) * 100.0))
                    .unwrap_or_else(|| "unknown".into());
                let text = notify::render(
                    "status-page-p0",
                    &[
                        ("service".into(), "Payment Processing".into()),
                        ("issue".into(), "payment processing".into()),
                        ("impact_percent".into(), impact),
                        ("status".into(), "Investigating".into()),
                        ("next_update".into(), "15 minutes".into()),
                    ],
                )?;
                let sent = actions.record(
                    "escalation P0",
                    escalate(
                        Priority::P0,
                        Severity::Critical,
                        text.title.clone(),
                        text.body.clone(),
                        ev.clone(),
                    ),
                );
                if sent.is_err() {
                    manual_steps.push("Escalation failed: page the CTO / all hands (P0, respond within 15 min) by hand".into());
                }
                manual_steps.push(format!(
                    "Post the status page update:\n{}\n\n{}",
                    text.title, text.body
                ));
                manual_steps.push("Check the Stripe dashboard for API outages, rate limiting and declined payments".into());
                if breaker_open(&st) {
                    manual_steps.push(format!(
                        "Keep {} OPEN until Stripe recovers, then force HALF_OPEN",
                        s.breaker
                    ));
                }
                summary.push(format!(
                    "Stripe not operational; P0 escalation {}",
                    if ctx.dry_run { "simulated" } else { "sent" }
                ));
            }
            (Upstream::Operational, false) => {
                let sent = actions.record(
                    "escalation P1",
                    escalate(
                        Priority::P1,
                        Severity::Warning,
                        "Payment failures with Stripe operational",
                        "Payments are failing while Stripe reports no outage and the breaker is closed: look for rate limiting or a spike of declines.",
                        ev.clone(),
                    ),
                );
                if sent.is_err() {
                    manual_steps
                        .push("Escalation failed: tell the engineering lead (P1) by hand".into());
                }
                manual_steps.push(
                    "Check the Stripe dashboard for rate limiting and declined payments".into(),
                );
                summary.push("payments failing with Stripe operational; escalated P1".into());
            }
        }
        manual_steps.extend(follow_ups());
        manual_steps.extend(actions.not_done_steps("Not done by Remedy: "));
        Ok(Outcome {
            summary: summary.join("; "),
            mitigated: st.upstream == Upstream::Operational
                && breaker_open(&st)
                && actions.executed > 0
                && actions.not_done.is_empty(),
            manual_steps,
        })
    }
}

remedy_plugin_sdk::export!(PaymentProcessingFailure);
