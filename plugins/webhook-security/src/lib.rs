//! Runbook 3 of the Servio incident runbook: webhook security alert.
//!
//! Detect: webhook verification failures over `window`, by reason, and the
//! seed's classification of each: expired timestamps → replay attack,
//! invalid signatures → forged webhooks, tenant violations → cross-tenant
//! access attempt. Mitigate: nothing here is safe to automate (rotating a
//! secret or blocking ranges needs a human), so the security channel gets the
//! classification with the evidence and the outcome lists the seed's steps.
//!
//! Config keys: the fields of `Settings`.

use remedy_plugin_sdk::notify::{self, Message};
use remedy_plugin_sdk::*;

struct WebhookSecurity;

settings! {
    struct Settings {
        /// PromQL range.
        window: query::Window = "5m",
        /// Failures of one reason in the window that count as an attack
        /// pattern (fewer are clock skew and noise).
        min_failures: f64 = 10.0,
        /// The notify channel for the classification.
        channel: String = "security",
        /// Counter with a `reason` label.
        failures_metric: String = "servio_webhook_verification_failures_total",
        /// Counter of webhooks received.
        received_metric: String = "servio_webhooks_received_total",
    }
}

/// The seed's classification of one failure reason.
struct Pattern {
    reason: String,
    count: f64,
    class: &'static str,
    steps: &'static [&'static str],
}

const ROTATE: &[&str] = &[
    "Rotate the Stripe webhook secret: Stripe Dashboard → Developers → Webhooks",
    "Delete and recreate the webhook endpoint",
    "Update STRIPE_WEBHOOK_SECRET in the environment",
    "Deploy immediately",
];

fn classify(reason: &str) -> (&'static str, &'static [&'static str]) {
    match reason {
        "timestamp_expired" => (
            "possible replay attack",
            &["Implement stricter timestamp validation (shorten the tolerance window)"],
        ),
        "signature_invalid" => ("forged webhooks", ROTATE),
        "tenant_violation" => (
            "cross-tenant access attempt",
            &["Identify the tenant and the source of the requests in the webhook logs (grep webhook_security)"],
        ),
        _ => ("unclassified verification failures", &["Read the webhook logs (grep webhook_security)"]),
    }
}

fn patterns(s: &Settings) -> Result<(Vec<Pattern>, Option<f64>), Error> {
    let rows = query::by_label(
        &format!(
            "sum by (reason) (increase({}[{}]))",
            s.failures_metric, s.window
        ),
        "reason",
    )?;
    let received = query::scalar(&format!(
        "sum(increase({}[{}]))",
        s.received_metric, s.window
    ))?;
    let mut out: Vec<Pattern> = rows
        .into_iter()
        .filter(|(_, n)| *n >= s.min_failures)
        .map(|(reason, count)| {
            let (class, steps) = classify(&reason);
            Pattern {
                reason,
                count,
                class,
                steps,
            }
        })
        .collect();
    out.sort_by(|a, b| b.count.total_cmp(&a.count));
    Ok((out, received))
}

fn evidence(p: &Pattern, received: Option<f64>, s: &Settings) -> Vec<(&'static str, String)> {
    vec![
        ("reason", p.reason.clone()),
        ("classification", p.class.into()),
        ("failures", format!("{:.0}", p.count)),
        (
            "received",
            received
                .map(|r| format!("{r:.0}"))
                .unwrap_or_else(|| "no data".into()),
        ),
        ("window", s.window.to_string()),
    ]
}

impl Guest for WebhookSecurity {
    fn describe() -> PluginInfo {
        plugin_info!(
            "Classifies webhook verification failures (replay, forgery, tenant violation) and alerts security",
            ["WebhookVerificationFailure", "WebhookReplayAttack"]
        )
    }

    fn detect(ctx: Context) -> Result<Detection, Error> {
        let s = Settings::from(&ctx)?;
        let (found, received) = patterns(&s)?;
        let findings = found
            .iter()
            .map(|p| {
                finding(
                    Severity::Critical,
                    format!(
                        "{:.0} webhooks failed with {} in {}: {}",
                        p.count, p.reason, s.window, p.class
                    ),
                    &evidence(p, received, &s),
                )
            })
            .collect::<Vec<_>>();
        Ok(Detection {
            healthy: findings.is_empty(),
            findings,
        })
    }

    fn mitigate(ctx: Context, _detection: Detection) -> Result<Outcome, Error> {
        let s = Settings::from(&ctx)?;
        let (found, received) = patterns(&s)?;
        if found.is_empty() {
            return Ok(Outcome {
                summary: "no attack pattern any more".into(),
                mitigated: false,
                manual_steps: vec![
                    "Read the webhook logs (grep webhook_security) to confirm".into()
                ],
            });
        }
        let classes: Vec<&str> = found.iter().map(|p| p.class).collect();
        let mut body = String::from("Webhook verification failures, by pattern:\n");
        let mut evidence_all = Vec::new();
        for p in &found {
            body.push_str(&format!(
                "• {}: {:.0} × {} in {}\n",
                p.class, p.count, p.reason, s.window
            ));
            evidence_all.push((format!("failures.{}", p.reason), format!("{:.0}", p.count)));
            evidence_all.push((format!("classification.{}", p.reason), p.class.to_string()));
        }
        evidence_all.push((
            "received".into(),
            received.map(|r| format!("{r:.0}")).unwrap_or_default(),
        ));
        let mut actions = Actions::default();
        let sent = actions.record(
            &s.channel,
            notify::send(&Message {
                channel: s.channel.clone(),
                severity: Severity::Critical,
                title: format!("Webhook security: {}", classes.join(", ")),
                body,
                evidence: evidence_all,
            }),
        );
        let mut manual_steps = Vec::new();
        if let Err(e) = &sent {
            manual_steps.push(format!(
                "Tell the security team by hand ({})",
                error_text(e)
            ));
        }
        for p in &found {
            manual_steps.extend(p.steps.iter().map(|s| s.to_string()));
        }
        manual_steps.push("Block the source IP ranges if the attack continues".into());
        Ok(Outcome {
            summary: format!(
                "{} attack pattern(s): {}; security channel {}",
                found.len(),
                classes.join(", "),
                match sent {
                    Ok(Applied::Executed) => "notified",
                    Ok(Applied::Simulated) => "would be notified",
                    Err(_) => "NOT notified",
                }
            ),
            mitigated: false,
            manual_steps,
        })
    }
}

remedy_plugin_sdk::export!(WebhookSecurity);
