//! Runbook 7 of the Servio incident runbook: cache issues.
//!
//! Detect: the application's cache hit rate over `window` (from its metrics;
//! Redis' own counters when no metrics are configured), the tenant-isolation
//! audit of `lib/cache/cache-key-audit.ts` (keys under `key_prefix` that do
//! not start with `tenant:<id>:`), and stampede signs (evictions).
//! Mitigate: delete the non-isolated keys, at most `max_deletions` (they can
//! serve one tenant's data to another: dropping them only costs a refill).
//! With `flush_on_low_hit_rate = true` a low hit rate also flushes everything
//! under `key_prefix` — the seed's stampede recovery — which the host allows
//! only in mode `auto` with `cache_flush = true` in the plugin's scope.
//!
//! Config keys:
//! - `window` ("5m"): PromQL range of the hit rate.
//! - `min_hit_rate` (0.8): below this the cache is not doing its job.
//! - `key_prefix` ("servio:"): the application's key space.
//! - `tenant_segment` ("tenant"): isolated keys are `<key_prefix><tenant_segment>:<id>:…`.
//! - `max_deletions` (100): most keys deleted in one run.
//! - `scan_limit` (10000): most keys audited in one run.
//! - `flush_on_low_hit_rate` (false).
//! - `cache_metric` ("servio_cache_requests_total", with `result` = hit|miss).

use remedy_plugin_sdk::cache;
use remedy_plugin_sdk::*;

struct CacheHealth;

struct Settings {
    window: String,
    min_hit_rate: f64,
    key_prefix: String,
    tenant_segment: String,
    max_deletions: u64,
    scan_limit: u32,
    flush: bool,
    metric: String,
}

impl Settings {
    fn from(ctx: &Context) -> Result<Self, Error> {
        let cfg = ctx.cfg();
        Ok(Self {
            window: query::window(&cfg.string("window", "5m"), "window")?,
            min_hit_rate: cfg.f64("min_hit_rate", 0.8)?,
            key_prefix: cfg.string("key_prefix", "servio:"),
            tenant_segment: cfg.string("tenant_segment", "tenant"),
            max_deletions: cfg.u64("max_deletions", 100)?,
            scan_limit: cfg.u64("scan_limit", 10_000)?.min(10_000) as u32,
            flush: cfg.string("flush_on_low_hit_rate", "false") == "true",
            metric: cfg.string("cache_metric", "servio_cache_requests_total"),
        })
    }

    /// `<prefix>tenant:<non-empty id>:<rest>`.
    fn isolated(&self, key: &str) -> bool {
        let Some(rest) = key
            .strip_prefix(self.key_prefix.as_str())
            .and_then(|r| r.strip_prefix(self.tenant_segment.as_str()))
            .and_then(|r| r.strip_prefix(':'))
        else {
            return false;
        };
        matches!(rest.split_once(':'), Some((id, tail)) if !id.is_empty() && !tail.is_empty())
    }
}

struct Observed {
    hit_rate: Option<f64>,
    source: &'static str,
    evicted: Option<u64>,
    scanned: usize,
    leaky: Vec<String>,
}

fn observe(s: &Settings) -> Result<Observed, Error> {
    let redis = cache::stats().ok();
    let (hit_rate, source) = match query::scalar(&format!(
        "sum(rate({m}{{result=\"hit\"}}[{w}])) / sum(rate({m}[{w}]))",
        m = s.metric,
        w = s.window
    )) {
        Ok(v) => (v, "metrics"),
        Err(e) => {
            // No metrics backend: Redis' server-wide counters since start are
            // coarser, but better than nothing at 3 a.m.
            warn(&format!(
                "hit rate from metrics unavailable ({}); using Redis INFO",
                error_text(&e)
            ));
            let r = redis.as_ref().and_then(|r| {
                let total = r.hits + r.misses;
                (total > 0).then(|| r.hits as f64 / total as f64)
            });
            (r, "redis")
        }
    };
    let keys = cache::scan(&format!("{}*", s.key_prefix), s.scan_limit)?;
    let scanned = keys.len();
    let leaky = keys.into_iter().filter(|k| !s.isolated(k)).collect();
    Ok(Observed {
        hit_rate,
        source,
        evicted: redis.map(|r| r.evicted_keys),
        scanned,
        leaky,
    })
}

impl Guest for CacheHealth {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "cache-health".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Checks the cache hit rate and deletes keys that break tenant isolation"
                .into(),
            alerts: vec!["LowCacheHitRate".into()],
        }
    }

    fn detect(ctx: Context) -> Result<Detection, Error> {
        let s = Settings::from(&ctx)?;
        let o = observe(&s)?;
        let low = o.hit_rate.is_some_and(|r| r < s.min_hit_rate);
        let mut findings = vec![finding(
            if low {
                Severity::Warning
            } else {
                Severity::Info
            },
            format!(
                "cache hit rate {} (minimum {}, from {})",
                o.hit_rate.map(percent).unwrap_or_else(|| "unknown".into()),
                percent(s.min_hit_rate),
                o.source
            ),
            &[
                ("hit_rate", o.hit_rate.map(percent).unwrap_or_default()),
                ("window", s.window.clone()),
                (
                    "evicted_keys",
                    o.evicted.map(|e| e.to_string()).unwrap_or_default(),
                ),
            ],
        )];
        if !o.leaky.is_empty() {
            let sample: Vec<&str> = o.leaky.iter().take(10).map(String::as_str).collect();
            findings.push(finding(
                Severity::Critical,
                format!(
                    "{} of {} keys under `{}` lack tenant isolation",
                    o.leaky.len(),
                    o.scanned,
                    s.key_prefix
                ),
                &[
                    ("keys", o.leaky.len().to_string()),
                    (
                        "expected",
                        format!("{}{}:<id>:…", s.key_prefix, s.tenant_segment),
                    ),
                    ("sample", sample.join(", ")),
                ],
            ));
        }
        Ok(Detection {
            healthy: !low && o.leaky.is_empty(),
            findings,
        })
    }

    fn mitigate(ctx: Context, _detection: Detection) -> Result<Outcome, Error> {
        let s = Settings::from(&ctx)?;
        let o = observe(&s)?;
        let mut actions = Actions::default();
        let mut manual_steps = Vec::new();
        for key in &o.leaky {
            if u64::from(actions.attempted()) >= s.max_deletions {
                break;
            }
            let _ = actions.record(key, cache::delete(key, "key breaks tenant isolation"));
        }
        let left = o.leaky.len().saturating_sub(actions.attempted() as usize);
        if left > 0 {
            manual_steps.push(format!(
                "{left} more non-isolated key(s) left (max_deletions={})",
                s.max_deletions
            ));
        }
        if !o.leaky.is_empty() {
            manual_steps.push("Fix the code that writes keys without a tenant segment (audit with lib/cache/cache-key-audit.ts)".into());
        }
        let low = o.hit_rate.is_some_and(|r| r < s.min_hit_rate);
        let mut flushed = None;
        if low && s.flush {
            match cache::flush(&s.key_prefix, "hit rate below minimum: stampede recovery") {
                Ok(n) => flushed = Some(n),
                Err(e) => manual_steps.push(format!("Flush not done ({}); clear and repopulate the cache by hand if it is corrupted", error_text(&e))),
            }
        }
        if low {
            manual_steps.extend([
                "Check TTLs: too short a TTL keeps the hit rate low".to_string(),
                "Verify cache coalescing works (CacheCoalescer ttlMs 30000, maxConcurrent 10)"
                    .to_string(),
            ]);
        }
        for n in &actions.not_done {
            manual_steps.push(format!("Not deleted: {n}"));
        }
        let n = if ctx.dry_run {
            actions.simulated
        } else {
            actions.executed
        };
        Ok(Outcome {
            summary: format!(
                "{} {n} non-isolated key(s){}; hit rate {}",
                if ctx.dry_run {
                    "would delete"
                } else {
                    "deleted"
                },
                flushed
                    .map(|f| format!(", flushed {f} key(s) under {}", s.key_prefix))
                    .unwrap_or_default(),
                o.hit_rate.map(percent).unwrap_or_else(|| "unknown".into())
            ),
            mitigated: !ctx.dry_run
                && left == 0
                && actions.not_done.is_empty()
                && (!low || flushed.is_some()),
            manual_steps,
        })
    }
}

remedy_plugin_sdk::export!(CacheHealth);
