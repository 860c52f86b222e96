//! One servio-sim, a real Prometheus scraping it and a recording sink for
//! the notify channels: the world the runbook tests inject faults into.

use remedy::{RunRecord, RunStatus};
use servio_sim::Sim;

use super::prom::{self, Prom};
use super::sink::{self, Seen};
use super::{pg_url, servio_sim};

/// A short window so a fault shows within seconds (250 ms scrapes).
pub const WINDOW: &str = "3s";

/// The Redis the tests share: every test uses its own key prefix.
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";

pub struct World {
    pub sim: Sim,
    pub prom: Prom,
    pub sink: String,
    pub seen: Seen,
}

pub async fn world() -> World {
    let sim = servio_sim().await;
    let prom = prom::start(sim.base_url());
    let (sink, seen) = sink::start().await;
    World {
        sim,
        prom,
        sink,
        seen,
    }
}

impl World {
    /// Backends, the seed's channel names on the sink, and `plugin`'s section.
    pub fn config(&self, plugin: &str, section: &str) -> String {
        format!(
            r#"
            [backends]
            prometheus_url = "{prom}"
            breaker_url = "{sim}"
            database_url = "{pg}"
            redis_url = "{redis}"
            [backends.notify.pagerduty]
            kind = "webhook"
            url = "{sink}/pagerduty"
            [backends.notify.alerts-critical]
            kind = "slack"
            url = "{sink}/alerts-critical"
            [backends.notify.security]
            kind = "webhook"
            url = "{sink}/security"
            [plugins.{plugin}]
            {section}
            "#,
            prom = self.prom.url,
            sim = self.sim.base_url(),
            pg = pg_url(),
            redis = REDIS_URL,
            sink = self.sink,
        )
    }

    pub fn sent(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

pub fn outcome_text(rec: &RunRecord) -> String {
    let o = rec.outcome.as_ref().expect("an outcome");
    format!("{}\n{}", o.summary, o.manual_steps.join("\n"))
}

pub fn healthy(rec: &RunRecord) -> bool {
    assert_eq!(rec.status, RunStatus::Succeeded, "{rec:#?}");
    let healthy = rec.detection.as_ref().unwrap().healthy;
    if healthy {
        assert!(rec.actions.is_empty(), "{rec:#?}");
        assert!(rec.outcome.is_none(), "healthy must not mitigate");
    }
    healthy
}
