//! {{name}}: a Remedy runbook.
//!
//! Build: `cargo build --release --target wasm32-wasip2`
//! Test:  `remedy test target/wasm32-wasip2/release/{{crate}}.wasm`
//!
//! Config keys (set under `[plugins.{{name}}]` in remedy.toml, or per
//! fixture under `[config]`):
{{#metrics}}//! - `error_ratio_query`: PromQL giving the ratio to watch.
//! - `max_error_ratio` (0.05): at or above it, the system is unhealthy.
{{/metrics}}{{#database}}//! - `max_usage_ratio` (0.9): connection use at or above it is critical.
//! - `long_query_ms` (60000): a session busy longer than this is a leak suspect.
//! - `max_terminations` (5): most sessions terminated in one run.
{{/database}}
use remedy_plugin_sdk::*;

{{#metrics}}const ERROR_RATIO: &str = "sum(rate(http_requests_total{status=~\"5..\"}[5m])) / sum(rate(http_requests_total[5m]))";

{{/metrics}}struct Runbook;

impl Guest for Runbook {
    fn describe() -> PluginInfo {
        // Name and version come from Cargo.toml.
        plugin_info!(
            "TODO: say in one sentence what this runbook detects and does",
            ["{{alert}}"]
        )
    }

    fn detect(ctx: Context) -> Result<Detection, Error> {
        let cfg = ctx.cfg();
        let mut findings = Vec::new();
        let mut healthy = true;
{{#metrics}}
        let max = cfg.f64("max_error_ratio", 0.05)?;
        let query = cfg.string("error_ratio_query", ERROR_RATIO);
        let ratio = query::scalar(&query)?.unwrap_or(0.0);
        let bad = ratio >= max;
        healthy &= !bad;
        findings.push(finding(
            if bad { Severity::Critical } else { Severity::Info },
            format!("error ratio {} (threshold {})", percent(ratio), percent(max)),
            &[("ratio", format!("{ratio:.4}"))],
        ));
{{/metrics}}{{#database}}
        let max_usage = cfg.f64("max_usage_ratio", 0.9)?;
        let pool = database::stats()?;
        let usage = f64::from(pool.total) / f64::from(pool.max_connections.max(1));
        let full = usage >= max_usage;
        healthy &= !full;
        findings.push(finding(
            if full { Severity::Critical } else { Severity::Info },
            format!("{} of {} connections in use", pool.total, pool.max_connections),
            &[("usage", percent(usage))],
        ));
        for s in database::long_running(cfg.u64("long_query_ms", 60_000)?, 50)? {
            healthy = false;
            findings.push(finding(
                Severity::Warning,
                format!("session {} ({}) {} for {} ms", s.pid, s.application_name, s.state, s.duration_ms),
                &[("pid", s.pid.to_string())],
            ));
        }
{{/database}}
        info(&format!("{} finding(s), healthy: {healthy}", findings.len()));
        Ok(Detection { healthy, findings })
    }

    fn mitigate(ctx: Context, _detection: Detection) -> Result<Outcome, Error> {
{{^database}}        let actions = Actions::default();
{{/database}}{{#database}}        let cfg = ctx.cfg();
        // At most `max_terminations`; the rest are handed over below.
        let mut actions = Actions::limited(cfg.u64("max_terminations", 5)?);
        for s in database::long_running(cfg.u64("long_query_ms", 60_000)?, 50)? {
            let reason = format!("{} for {} ms", s.state, s.duration_ms);
            actions.try_act(&format!("pid:{}", s.pid), || database::terminate(s.pid, &reason));
        }
{{/database}}        let mut manual_steps = vec!["TODO: what a human must still do".to_string()];
        manual_steps.extend(actions.not_done_steps("Not done, do by hand: "));
        if !actions.past_limit.is_empty() {
            manual_steps.push(format!("Left alone (limit reached): {}", sample(&actions.past_limit)));
        }
        let verb = if ctx.dry_run { "would take" } else { "took" };
        Ok(Outcome {
            summary: format!("{verb} {} action(s)", actions.attempted()),
            mitigated: actions.executed > 0 && actions.left() == 0,
            manual_steps,
        })
    }
}

remedy_plugin_sdk::export!(Runbook);
