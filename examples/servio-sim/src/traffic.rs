//! Simulated production traffic: the counters and histograms a real Servio
//! exposes (HTTP requests by status, latency by dependency, payments,
//! webhook verification failures, cache hits, build info), driven by the
//! faults currently injected.
//!
//! No background task: traffic is integrated over time whenever the state is
//! read or a fault changes, with fractional carry-over, so the counters are
//! exact and deterministic for a given timeline.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Instant;

/// HTTP requests per second.
const HTTP_RATE: f64 = 100.0;
/// Payment attempts per second.
const PAYMENT_RATE: f64 = 10.0;
/// Incoming webhooks per second.
const WEBHOOK_RATE: f64 = 5.0;
/// Cache lookups per second.
const CACHE_RATE: f64 = 200.0;

/// Latency histogram buckets, seconds (Prometheus client defaults).
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Dependencies a request spends time in, with their healthy latency (ms).
pub const DEPENDENCIES: [(&str, f64); 3] = [("db", 8.0), ("external", 25.0), ("cache", 1.0)];

/// Webhook verification failure reasons (the seed's three patterns).
pub const WEBHOOK_REASONS: [&str; 3] =
    ["timestamp_expired", "signature_invalid", "tenant_violation"];

/// What is currently wrong.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Share of HTTP requests answered 5xx, percent.
    pub error_percent: f64,
    /// What those errors answer (500 unless a build says otherwise).
    pub error_status: u16,
    /// Extra latency per dependency, ms.
    pub extra_latency_ms: BTreeMap<String, f64>,
    /// Share of payments failing, percent (all fail while stripe is OPEN).
    pub payment_fail_percent: f64,
    /// Share of webhooks failing verification, percent, per reason.
    pub webhook_fail_percent: BTreeMap<String, f64>,
    /// Share of cache lookups that hit, percent.
    pub cache_hit_percent: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_percent: 0.0,
            error_status: 500,
            extra_latency_ms: BTreeMap::new(),
            payment_fail_percent: 0.0,
            webhook_fail_percent: BTreeMap::new(),
            cache_hit_percent: 95.0,
        }
    }
}

/// A cumulative histogram.
#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64, n: u64) {
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.buckets[i] += n;
            }
        }
        self.count += n;
        self.sum += seconds * n as f64;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {}",
                self.buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// Turns a rate into whole events with the fraction carried over.
#[derive(Debug, Clone, Default)]
struct Carry(f64);

impl Carry {
    fn take(&mut self, amount: f64) -> u64 {
        self.0 += amount;
        // The epsilon absorbs binary rounding (0.37 × 100 ≠ 37.0 exactly).
        let n = (self.0 + 1e-9).floor();
        self.0 -= n;
        n as u64
    }
}

/// Counters since the sim started.
#[derive(Debug, Clone)]
pub struct Traffic {
    pub faults: Faults,
    last: Instant,
    requests: BTreeMap<u16, u64>,
    latency: Histogram,
    dependency: BTreeMap<String, Histogram>,
    payments: BTreeMap<&'static str, u64>,
    webhooks: u64,
    webhook_failures: BTreeMap<String, u64>,
    cache: BTreeMap<&'static str, u64>,
    pub version: String,
    pub deployed_at: f64,
    carry: BTreeMap<&'static str, Carry>,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Traffic {
    pub fn new() -> Traffic {
        Traffic {
            faults: Faults::default(),
            last: Instant::now(),
            requests: BTreeMap::new(),
            latency: Histogram::default(),
            dependency: BTreeMap::new(),
            payments: BTreeMap::new(),
            webhooks: 0,
            webhook_failures: WEBHOOK_REASONS.iter().map(|r| (r.to_string(), 0)).collect(),
            cache: BTreeMap::new(),
            version: "1.0.0".into(),
            // The running build went out yesterday: no deploy "just now".
            deployed_at: unix_now() - 86_400.0,
            carry: BTreeMap::new(),
        }
    }

    fn take(&mut self, stream: &'static str, amount: f64) -> u64 {
        self.carry.entry(stream).or_default().take(amount)
    }

    /// Integrates traffic up to now under the current faults.
    /// `stripe_open`: payments fail fast while the breaker is OPEN.
    pub fn advance(&mut self, stripe_open: bool) {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        if dt <= 0.0 {
            return;
        }
        let f = self.faults.clone();

        let n = self.take("http", dt * HTTP_RATE);
        let errors = self
            .take("http_5xx", n as f64 * f.error_percent / 100.0)
            .min(n);
        let status = if (500..600).contains(&f.error_status) {
            f.error_status
        } else {
            500
        };
        *self.requests.entry(status).or_default() += errors;
        *self.requests.entry(200).or_default() += n - errors;
        let mut total = 0.0;
        for (dep, base) in DEPENDENCIES {
            let ms = base + f.extra_latency_ms.get(dep).copied().unwrap_or(0.0);
            total += ms;
            self.dependency
                .entry(dep.to_string())
                .or_default()
                .observe(ms / 1000.0, n);
        }
        self.latency.observe(total / 1000.0, n);

        let p = self.take("payments", dt * PAYMENT_RATE);
        let fail_pct = if stripe_open {
            100.0
        } else {
            f.payment_fail_percent
        };
        let failed = self
            .take("payments_failed", p as f64 * fail_pct / 100.0)
            .min(p);
        *self.payments.entry("failed").or_default() += failed;
        *self.payments.entry("succeeded").or_default() += p - failed;

        let w = self.take("webhooks", dt * WEBHOOK_RATE);
        self.webhooks += w;
        for reason in WEBHOOK_REASONS {
            let pct = f.webhook_fail_percent.get(reason).copied().unwrap_or(0.0);
            let stream: &'static str = reason;
            let bad = self.take(stream, w as f64 * pct / 100.0).min(w);
            *self.webhook_failures.entry(reason.to_string()).or_default() += bad;
        }

        let c = self.take("cache", dt * CACHE_RATE);
        let hits = self
            .take("cache_hits", c as f64 * f.cache_hit_percent / 100.0)
            .min(c);
        *self.cache.entry("hit").or_default() += hits;
        *self.cache.entry("miss").or_default() += c - hits;
    }

    /// Requests answered so far: (2xx, 5xx).
    pub fn answered(&self) -> (u64, u64) {
        let ok = self.requests.get(&200).copied().unwrap_or(0);
        let bad = self
            .requests
            .iter()
            .filter(|(s, _)| **s >= 500)
            .map(|(_, n)| n)
            .sum();
        (ok, bad)
    }

    /// A new build goes live now.
    pub fn deploy(&mut self, version: &str) {
        self.version = version.to_string();
        self.deployed_at = unix_now();
    }

    /// The Prometheus text exposition of the traffic counters.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP servio_http_requests_total HTTP requests served, by status.\n# TYPE servio_http_requests_total counter\n");
        for (status, n) in &self.requests {
            let _ = writeln!(out, "servio_http_requests_total{{status=\"{status}\"}} {n}");
        }
        out.push_str("# HELP servio_http_request_duration_seconds Request latency.\n# TYPE servio_http_request_duration_seconds histogram\n");
        self.latency
            .render(out, "servio_http_request_duration_seconds", "");
        out.push_str("# HELP servio_dependency_duration_seconds Time a request spends in each dependency.\n# TYPE servio_dependency_duration_seconds histogram\n");
        for (dep, h) in &self.dependency {
            h.render(
                out,
                "servio_dependency_duration_seconds",
                &format!("dependency=\"{dep}\""),
            );
        }
        out.push_str("# HELP servio_payments_total Payment attempts, by outcome.\n# TYPE servio_payments_total counter\n");
        for (outcome, n) in &self.payments {
            let _ = writeln!(out, "servio_payments_total{{outcome=\"{outcome}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP servio_webhooks_received_total Incoming webhooks.\n# TYPE servio_webhooks_received_total counter\nservio_webhooks_received_total {}", self.webhooks);
        out.push_str("# HELP servio_webhook_verification_failures_total Webhooks rejected, by reason.\n# TYPE servio_webhook_verification_failures_total counter\n");
        for (reason, n) in &self.webhook_failures {
            let _ = writeln!(
                out,
                "servio_webhook_verification_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str("# HELP servio_cache_requests_total Cache lookups, by result.\n# TYPE servio_cache_requests_total counter\n");
        for (result, n) in &self.cache {
            let _ = writeln!(
                out,
                "servio_cache_requests_total{{result=\"{result}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP servio_build_info The running build.\n# TYPE servio_build_info gauge\nservio_build_info{{version=\"{}\"}} 1",
            self.version
        );
        let _ = writeln!(
            out,
            "# HELP servio_deploy_timestamp_seconds When the running build went live.\n# TYPE servio_deploy_timestamp_seconds gauge\nservio_deploy_timestamp_seconds {}",
            self.deployed_at
        );
    }
}

impl Default for Traffic {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carry_is_exact_over_time() {
        let mut c = Carry::default();
        let total: u64 = (0..1000).map(|_| c.take(0.37)).sum();
        assert_eq!(total, 370);
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(0.03, 10);
        h.observe(0.7, 1);
        let mut out = String::new();
        h.render(&mut out, "x", "");
        assert!(out.contains("x_bucket{le=\"0.025\"} 0"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.05\"} 10"), "{out}");
        assert!(out.contains("x_bucket{le=\"1\"} 11"), "{out}");
        assert!(out.contains("x_count 11"), "{out}");
    }
}
