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
//! Config keys: the fields of `Settings`.

use remedy_plugin_sdk::cache;
use remedy_plugin_sdk::*;

struct CacheHealth;

settings! {
    struct Settings {
        /// PromQL range of the hit rate.
        window: query::Window = "5m",
        /// Below this the cache is not doing its job.
        min_hit_rate: f64 = 0.8,
        /// The application's key space.
        key_prefix: String = "servio:",
        /// Isolated keys are `<key_prefix><tenant_segment>:<id>:…`.
        tenant_segment: String = "tenant",
        /// Most keys deleted in one run.
        max_deletions: u64 = 100,
        /// Most keys audited in one run (the host caps a scan at 10000).
        scan_limit: u64 = 10_000,
        /// Flush everything under `key_prefix` when the hit rate is low.
        flush_on_low_hit_rate: bool = false,
        /// Counter of cache lookups, with `result` = hit|miss.
        cache_metric: String = "servio_cache_requests_total",
    }
}

impl Settings {
    fn scan_limit(&self) -> u32 {
        self.scan_limit.min(10_000) as u32
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
        m = s.cache_metric,
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
    let keys = cache::scan(&format!("{}*", s.key_prefix), s.scan_limit())?;
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
        plugin_info!(
            "Checks the cache hit rate and deletes keys that break tenant isolation",
            ["LowCacheHitRate"]
        )
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
                ("window", s.window.to_string()),
                (
                    "evicted_keys",
                    o.evicted.map(|e| e.to_string()).unwrap_or_default(),
                ),
            ],
        )];
        if !o.leaky.is_empty() {
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
                    ("sample", sample(&o.leaky)),
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
        let mut actions = Actions::limited(s.max_deletions);
        let mut manual_steps = Vec::new();
        for key in &o.leaky {
            actions.try_act(key, || cache::delete(key, "key breaks tenant isolation"));
        }
        let left = actions.left();
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
        if low && s.flush_on_low_hit_rate {
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
        manual_steps.extend(actions.not_done_steps("Not deleted: "));
        let n = actions.done(ctx.dry_run);
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
            mitigated: !ctx.dry_run && left == 0 && (!low || flushed.is_some()),
            manual_steps,
        })
    }
}

remedy_plugin_sdk::export!(CacheHealth);
