//! Runbook 8 of the Servio incident runbook: idempotency issues.
//!
//! Idempotency keys follow `idem:tenant:operation:scope`. Detect: keys that
//! never expire (they pile up until Redis evicts something that mattered)
//! and keys that break the format (a payment flow not using the helper, the
//! usual cause of duplicate charges). Mitigate: give keys without expiry the
//! default TTL, at most `max_actions` per run — "clean up expired keys
//! periodically", also as a scheduled job. Malformed keys are never touched:
//! deleting one could let a retried payment charge twice.
//!
//! Config keys: the fields of `Settings`.

use remedy_plugin_sdk::cache;
use remedy_plugin_sdk::*;

struct IdempotencyKeys;

settings! {
    struct Settings {
        /// Where idempotency keys live.
        key_prefix: String = "idem:",
        /// TTL given to keys without one (Stripe keeps idempotency keys for
        /// 24 hours).
        default_ttl_s: u64 = 86_400,
        /// Most TTLs set in one run.
        max_actions: u64 = 100,
        /// Most keys audited in one run (the host caps a scan at 10000).
        scan_limit: u64 = 10_000,
    }
}

impl Settings {
    fn scan_limit(&self) -> u32 {
        self.scan_limit.min(10_000) as u32
    }

    /// `<prefix>tenant:operation:scope`, three non-empty parts.
    fn well_formed(&self, key: &str) -> bool {
        key.strip_prefix(self.key_prefix.as_str())
            .map(|rest| {
                let parts: Vec<&str> = rest.split(':').collect();
                parts.len() == 3 && parts.iter().all(|p| !p.is_empty())
            })
            .unwrap_or(false)
    }
}

struct Observed {
    scanned: usize,
    no_ttl: Vec<String>,
    malformed: Vec<String>,
}

fn observe(s: &Settings) -> Result<Observed, Error> {
    let keys = cache::scan(&format!("{}*", s.key_prefix), s.scan_limit())?;
    let mut no_ttl = Vec::new();
    let mut malformed = Vec::new();
    for key in &keys {
        if !s.well_formed(key) {
            malformed.push(key.clone());
            continue;
        }
        // A key gone between scan and ttl is fine: nothing to do for it.
        if let Ok(None) = cache::ttl(key) {
            no_ttl.push(key.clone());
        }
    }
    Ok(Observed {
        scanned: keys.len(),
        no_ttl,
        malformed,
    })
}

impl Guest for IdempotencyKeys {
    fn describe() -> PluginInfo {
        plugin_info!(
            "Audits idem:tenant:operation:scope keys; gives keys without expiry the default TTL",
            ["HighIdempotencyKeyExpiry"]
        )
    }

    fn detect(ctx: Context) -> Result<Detection, Error> {
        let s = Settings::from(&ctx)?;
        let o = observe(&s)?;
        let mut findings = vec![finding(
            Severity::Info,
            format!(
                "{} idempotency key(s) under `{}` audited",
                o.scanned, s.key_prefix
            ),
            &[
                ("scanned", o.scanned.to_string()),
                ("scan_limit", s.scan_limit().to_string()),
            ],
        )];
        if !o.no_ttl.is_empty() {
            findings.push(finding(
                Severity::Warning,
                format!("{} key(s) never expire", o.no_ttl.len()),
                &[
                    ("keys", o.no_ttl.len().to_string()),
                    ("sample", sample(&o.no_ttl)),
                ],
            ));
        }
        if !o.malformed.is_empty() {
            findings.push(finding(
                Severity::Critical,
                format!(
                    "{} key(s) do not follow {}tenant:operation:scope",
                    o.malformed.len(),
                    s.key_prefix
                ),
                &[
                    ("keys", o.malformed.len().to_string()),
                    ("sample", sample(&o.malformed)),
                ],
            ));
        }
        Ok(Detection {
            healthy: o.no_ttl.is_empty() && o.malformed.is_empty(),
            findings,
        })
    }

    fn mitigate(ctx: Context, _detection: Detection) -> Result<Outcome, Error> {
        let s = Settings::from(&ctx)?;
        let o = observe(&s)?;
        let mut actions = Actions::limited(s.max_actions);
        let ttl_ms = s.default_ttl_s.saturating_mul(1000);
        let reason = format!(
            "idempotency key without expiry; default TTL {} s",
            s.default_ttl_s
        );
        for key in &o.no_ttl {
            actions.try_act(key, || cache::expire(key, ttl_ms, &reason));
        }
        let left = actions.left();
        let mut manual_steps = Vec::new();
        if left > 0 {
            manual_steps.push(format!(
                "{left} more key(s) without expiry (max_actions={}); the next run continues",
                s.max_actions
            ));
        }
        if !o.malformed.is_empty() {
            manual_steps.push(format!(
                "{} malformed key(s) (e.g. {}): find the payment flow that writes them and make it use idem:tenant:operation:scope",
                o.malformed.len(),
                sample(&o.malformed)
            ));
        }
        manual_steps.extend([
            "Verify idempotency is used in every payment flow (getIdempotencyResult)".to_string(),
            "Check reports of duplicate charges against the keys' tenants".to_string(),
        ]);
        manual_steps.extend(actions.not_done_steps("TTL not set: "));
        let n = actions.done(ctx.dry_run);
        Ok(Outcome {
            summary: format!(
                "{} a {} s TTL on {n} key(s); {} malformed key(s) left to humans",
                if ctx.dry_run { "would set" } else { "set" },
                s.default_ttl_s,
                o.malformed.len()
            ),
            mitigated: !ctx.dry_run && left == 0 && o.malformed.is_empty(),
            manual_steps,
        })
    }
}

remedy_plugin_sdk::export!(IdempotencyKeys);
