//! The host's own metrics, in Prometheus text exposition format.

use crate::locks::MutexExt;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Upper bounds (seconds) of the run duration histogram.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    /// The `_bucket`, `_sum` and `_count` lines of `name{labels}`.
    fn render(&self, s: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, n) in BUCKETS.iter().zip(self.counts) {
            let _ = writeln!(s, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {n}");
        }
        let _ = writeln!(
            s,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = |l: &str| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{{{l}}}")
            }
        };
        let _ = writeln!(s, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(s, "{name}_count{} {}", braces(labels), self.count);
    }
}

#[derive(Default)]
struct Inner {
    runs: BTreeMap<(String, String), u64>,
    durations: BTreeMap<String, Histogram>,
    actions: BTreeMap<(String, String), u64>,
    skipped_ticks: BTreeMap<(String, String), u64>,
    alerts: BTreeMap<String, u64>,
    load_failures: BTreeMap<String, u64>,
    verifications: BTreeMap<(String, String), u64>,
    flapping: BTreeMap<String, u64>,
    /// Plans proposed by AI agents, by agent and plugin.
    agent_proposals: BTreeMap<(String, String), u64>,
    paused: bool,
    /// Live replicas on the store (1 on the embedded one).
    replicas: u64,
    /// This replica runs the schedules.
    scheduler: bool,
    /// Escalations the host sent to a priority's route, by plugin and
    /// priority.
    escalations: BTreeMap<(String, String), u64>,
    /// Runs waiting for a run slot now.
    waiting: u64,
    /// How long runs that had to wait for a slot waited.
    wait: Histogram,
    /// The store: writable, and records it refused that are kept in memory.
    store_healthy: bool,
    unwritten: u64,
    unwritten_oldest_secs: f64,
    /// The store's commits, the writes they carried, seconds spent.
    store_writes: Option<(u64, u64, f64)>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// See [`Metrics::waiting`].
pub struct Waiting<'a> {
    metrics: &'a Metrics,
    since: std::time::Instant,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let secs = self.since.elapsed().as_secs_f64();
        self.metrics.with(|m| {
            m.waiting = m.waiting.saturating_sub(1);
            m.wait.observe(secs);
        });
    }
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        f(&mut self.inner.locked());
    }

    /// An agent proposed a plan of `plugin` (MCP `propose`).
    pub fn agent_proposed(&self, agent: &str, plugin: &str) {
        self.with(|m| {
            *m.agent_proposals
                .entry((agent.to_string(), plugin.to_string()))
                .or_default() += 1;
        });
    }

    pub fn run_finished(&self, rec: &crate::record::RunRecord) {
        self.with(|m| {
            *m.runs
                .entry((rec.plugin.clone(), rec.status.as_str().to_string()))
                .or_default() += 1;
            if let Some(ms) = rec.duration_ms {
                let secs = ms as f64 / 1000.0;
                m.durations
                    .entry(rec.plugin.clone())
                    .or_default()
                    .observe(secs);
            }
            for a in &rec.actions {
                let applied = crate::record::wire(&a.applied);
                *m.actions
                    .entry((a.kind.as_str().to_string(), applied))
                    .or_default() += 1;
            }
        });
    }

    pub fn tick_skipped(&self, plugin: &str, schedule: &str) {
        self.with(|m| {
            *m.skipped_ticks
                .entry((plugin.to_string(), schedule.to_string()))
                .or_default() += 1
        });
    }

    pub fn alert_received(&self, status: &str) {
        self.with(|m| *m.alerts.entry(status.to_string()).or_default() += 1);
    }

    pub fn verified(&self, plugin: &str, result: &str) {
        self.with(|m| {
            *m.verifications
                .entry((plugin.to_string(), result.to_string()))
                .or_default() += 1
        });
    }

    /// A run was held off because its alert flaps.
    pub fn flapping(&self, plugin: &str) {
        self.with(|m| *m.flapping.entry(plugin.to_string()).or_default() += 1);
    }

    pub fn set_paused(&self, paused: bool) {
        self.with(|m| m.paused = paused);
    }

    /// Live replicas, and whether this one holds the scheduler lease.
    pub fn set_cluster(&self, replicas: u64, scheduler: bool) {
        self.with(|m| {
            m.replicas = replicas;
            m.scheduler = scheduler;
        });
    }

    /// The host escalated a run of `plugin` to `priority`'s route (a failed
    /// verification, a flapping alert, a ladder's `escalate` step).
    pub fn escalated(&self, plugin: &str, priority: &str) {
        self.with(|m| {
            *m.escalations
                .entry((plugin.to_string(), priority.to_string()))
                .or_default() += 1
        });
    }

    /// A run starts waiting for a slot; it is counted out (and its wait
    /// observed) when the guard drops, however the wait ends.
    pub fn waiting(&self) -> Waiting<'_> {
        self.with(|m| m.waiting += 1);
        Waiting {
            metrics: self,
            since: std::time::Instant::now(),
        }
    }

    /// What `/healthz` knows of the store, at scrape time.
    pub fn set_store(&self, healthy: bool, unwritten: Option<(usize, std::time::Duration)>) {
        self.with(|m| {
            m.store_healthy = healthy;
            m.unwritten = unwritten.map_or(0, |(n, _)| n as u64);
            m.unwritten_oldest_secs = unwritten.map_or(0.0, |(_, d)| d.as_secs_f64());
        });
    }

    /// The store's write counters, at scrape time (`None`: it keeps none).
    pub fn set_store_writes(&self, stats: Option<(u64, u64, f64)>) {
        self.with(|m| m.store_writes = stats);
    }

    /// `plugin`: a name, never a path (the exposition needs no token).
    pub fn load_failed(&self, plugin: &str) {
        self.with(|m| *m.load_failures.entry(plugin.to_string()).or_default() += 1);
    }

    pub fn render(&self) -> String {
        let m = self.inner.locked();
        let mut s = String::new();
        let _ = writeln!(s, "# HELP remedy_runs_total Finished runs by plugin and status.\n# TYPE remedy_runs_total counter");
        for ((p, st), n) in &m.runs {
            let _ = writeln!(
                s,
                "remedy_runs_total{{plugin=\"{}\",status=\"{}\"}} {n}",
                esc(p),
                esc(st)
            );
        }
        let _ = writeln!(s, "# HELP remedy_run_duration_seconds Run duration.\n# TYPE remedy_run_duration_seconds histogram");
        for (p, h) in &m.durations {
            h.render(
                &mut s,
                "remedy_run_duration_seconds",
                &format!("plugin=\"{}\"", esc(p)),
            );
        }
        let _ = writeln!(s, "# HELP remedy_actions_total Actions by kind and outcome.\n# TYPE remedy_actions_total counter");
        for ((k, o), n) in &m.actions {
            let _ = writeln!(
                s,
                "remedy_actions_total{{kind=\"{}\",applied=\"{}\"}} {n}",
                esc(k),
                esc(o)
            );
        }
        let _ = writeln!(s, "# HELP remedy_schedule_skipped_ticks_total Ticks skipped because the previous run was still going.\n# TYPE remedy_schedule_skipped_ticks_total counter");
        for ((p, sc), n) in &m.skipped_ticks {
            let _ = writeln!(
                s,
                "remedy_schedule_skipped_ticks_total{{plugin=\"{}\",schedule=\"{}\"}} {n}",
                esc(p),
                esc(sc)
            );
        }
        let _ = writeln!(s, "# HELP remedy_alerts_received_total Alerts received by status.\n# TYPE remedy_alerts_received_total counter");
        for (st, n) in &m.alerts {
            let _ = writeln!(
                s,
                "remedy_alerts_received_total{{status=\"{}\"}} {n}",
                esc(st)
            );
        }
        let _ = writeln!(s, "# HELP remedy_plugin_load_failures_total Plugin loads that failed, by plugin.\n# TYPE remedy_plugin_load_failures_total counter");
        for (p, n) in &m.load_failures {
            let _ = writeln!(
                s,
                "remedy_plugin_load_failures_total{{plugin=\"{}\"}} {n}",
                esc(p)
            );
        }
        let _ = writeln!(s, "# HELP remedy_flapping_holds_total Runs made dry because their alert flaps (flap.max live mitigations within flap.per).\n# TYPE remedy_flapping_holds_total counter");
        for (p, n) in &m.flapping {
            let _ = writeln!(
                s,
                "remedy_flapping_holds_total{{plugin=\"{}\"}} {n}",
                esc(p)
            );
        }
        let _ = writeln!(s, "# HELP remedy_agent_proposals_total Plans proposed by AI agents over MCP, by agent (token name) and plugin.\n# TYPE remedy_agent_proposals_total counter");
        for ((a, p), n) in &m.agent_proposals {
            let _ = writeln!(
                s,
                "remedy_agent_proposals_total{{agent=\"{}\",plugin=\"{}\"}} {n}",
                esc(a),
                esc(p)
            );
        }
        let _ = writeln!(s, "# HELP remedy_verifications_total Verifications after live mitigations, by result.\n# TYPE remedy_verifications_total counter");
        for ((p, r), n) in &m.verifications {
            let _ = writeln!(
                s,
                "remedy_verifications_total{{plugin=\"{}\",result=\"{}\"}} {n}",
                esc(p),
                esc(r)
            );
        }
        let _ = writeln!(
            s,
            "# HELP remedy_paused 1 while the kill switch turns every run into a dry run.\n# TYPE remedy_paused gauge\nremedy_paused {}",
            u8::from(m.paused)
        );
        let _ = writeln!(
            s,
            "# HELP remedy_replicas Replicas whose heartbeat is within their lease, on this replica's store.\n# TYPE remedy_replicas gauge\nremedy_replicas {}",
            m.replicas
        );
        let _ = writeln!(
            s,
            "# HELP remedy_scheduler_leader 1 while this replica holds the scheduler lease and runs the schedules.\n# TYPE remedy_scheduler_leader gauge\nremedy_scheduler_leader {}",
            u8::from(m.scheduler)
        );
        let _ = writeln!(s, "# HELP remedy_escalations_total Escalations the host sent to a priority's route (failed verification, flapping alert, ladder step), by plugin and priority.\n# TYPE remedy_escalations_total counter");
        for ((p, prio), n) in &m.escalations {
            let _ = writeln!(
                s,
                "remedy_escalations_total{{plugin=\"{}\",priority=\"{}\"}} {n}",
                esc(p),
                esc(prio)
            );
        }
        let _ = writeln!(
            s,
            "# HELP remedy_runs_waiting Runs waiting for a run slot (server.max_concurrent_runs, max_runs_per_plugin).\n# TYPE remedy_runs_waiting gauge\nremedy_runs_waiting {}",
            m.waiting
        );
        let _ = writeln!(s, "# HELP remedy_run_wait_seconds How long runs that found no free slot waited for one.\n# TYPE remedy_run_wait_seconds histogram");
        m.wait.render(&mut s, "remedy_run_wait_seconds", "");
        let _ = writeln!(
            s,
            "# HELP remedy_store_healthy 1 while the store accepts this replica's writes.\n# TYPE remedy_store_healthy gauge\nremedy_store_healthy {}",
            u8::from(m.store_healthy)
        );
        let _ = writeln!(
            s,
            "# HELP remedy_store_unwritten_runs Finished runs the store refused, kept in memory until it accepts them.\n# TYPE remedy_store_unwritten_runs gauge\nremedy_store_unwritten_runs {}",
            m.unwritten
        );
        let _ = writeln!(
            s,
            "# HELP remedy_store_unwritten_oldest_seconds How long the oldest unwritten run has waited for the store.\n# TYPE remedy_store_unwritten_oldest_seconds gauge\nremedy_store_unwritten_oldest_seconds {}",
            m.unwritten_oldest_secs
        );
        if let Some((commits, writes, secs)) = m.store_writes {
            let _ = writeln!(
                s,
                "# HELP remedy_store_commits_total Transactions the store committed; one carries every write waiting when it began.\n# TYPE remedy_store_commits_total counter\nremedy_store_commits_total {commits}\n\
                 # HELP remedy_store_writes_total Writes those commits carried (run records, audit events, receipts, claims).\n# TYPE remedy_store_writes_total counter\nremedy_store_writes_total {writes}\n\
                 # HELP remedy_store_commit_seconds_total Time spent writing and committing (rate over the commits' rate: the mean commit).\n# TYPE remedy_store_commit_seconds_total counter\nremedy_store_commit_seconds_total {secs}"
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ActionKind, ActionRecord, Applied, PluginRef, RunRecord, RunStatus};

    fn rec(plugin: &str, status: RunStatus, ms: u64, applied: &[Applied]) -> RunRecord {
        let p = PluginRef {
            name: plugin.into(),
            version: "1".into(),
            digest: "d".into(),
        };
        let mut r = RunRecord::begin(
            "r".into(),
            &p,
            crate::record::Trigger::Manual { by: "t".into() },
            true,
            status,
        );
        r.duration_ms = Some(ms);
        r.actions = applied
            .iter()
            .map(|a| ActionRecord {
                kind: ActionKind::CacheDelete,
                target: "key:k".into(),
                reason: String::new(),
                applied: *a,
                error: None,
                at: chrono::Utc::now(),
                incident: None,
                result: None,
            })
            .collect();
        r
    }

    #[test]
    fn the_exposition_counts_what_happened() {
        let m = Metrics::default();
        m.run_finished(&rec("a", RunStatus::Succeeded, 3, &[Applied::Executed]));
        m.run_finished(&rec(
            "a",
            RunStatus::Succeeded,
            200,
            &[Applied::Simulated, Applied::Simulated],
        ));
        m.run_finished(&rec("we\"ird\nname", RunStatus::Failed, 1, &[]));
        m.tick_skipped("a", "nightly");
        m.alert_received("firing");
        m.alert_received("firing");
        m.verified("a", "resolved");
        m.load_failed("file:bad.wasm");
        m.set_paused(true);
        m.set_cluster(3, true);
        m.escalated("a", "P1");
        drop(m.waiting());
        let still = m.waiting();
        m.set_store(false, Some((2, std::time::Duration::from_millis(1500))));
        let quiet = m.render();
        assert!(
            !quiet.contains("remedy_store_commits_total"),
            "a store that counts nothing exports no counters"
        );
        m.set_store_writes(Some((3, 40, 0.25)));
        let text = m.render();
        drop(still);
        for line in [
            "remedy_runs_total{plugin=\"a\",status=\"succeeded\"} 2",
            "remedy_runs_total{plugin=\"we\\\"ird\\nname\",status=\"failed\"} 1",
            // Buckets are cumulative: 3 ms is under 5 ms, 200 ms is not.
            "remedy_run_duration_seconds_bucket{plugin=\"a\",le=\"0.005\"} 1",
            "remedy_run_duration_seconds_bucket{plugin=\"a\",le=\"0.25\"} 2",
            "remedy_run_duration_seconds_bucket{plugin=\"a\",le=\"+Inf\"} 2",
            "remedy_run_duration_seconds_count{plugin=\"a\"} 2",
            "remedy_actions_total{kind=\"cache.delete\",applied=\"executed\"} 1",
            "remedy_actions_total{kind=\"cache.delete\",applied=\"simulated\"} 2",
            "remedy_schedule_skipped_ticks_total{plugin=\"a\",schedule=\"nightly\"} 1",
            "remedy_alerts_received_total{status=\"firing\"} 2",
            "remedy_verifications_total{plugin=\"a\",result=\"resolved\"} 1",
            "remedy_plugin_load_failures_total{plugin=\"file:bad.wasm\"} 1",
            "remedy_paused 1",
            "remedy_replicas 3",
            "remedy_scheduler_leader 1",
            "remedy_escalations_total{plugin=\"a\",priority=\"P1\"} 1",
            // One run waited (and was counted out), one still waits.
            "remedy_runs_waiting 1",
            "remedy_run_wait_seconds_count 1",
            "remedy_run_wait_seconds_bucket{le=\"+Inf\"} 1",
            "remedy_store_healthy 0",
            "remedy_store_unwritten_runs 2",
            "remedy_store_unwritten_oldest_seconds 1.5",
            "remedy_store_commits_total 3",
            "remedy_store_writes_total 40",
            "remedy_store_commit_seconds_total 0.25",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        // Every sample belongs to a declared family.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let family = l.split(['{', ' ']).next().unwrap();
            let family = family
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(text.contains(&format!("# TYPE {family} ")), "{l}");
        }
    }
}
