//! Schedules: a cron expression (seconds field optional) or an interval per
//! plugin. A tick never overlaps the previous run of its schedule: it is
//! skipped and counted instead.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{config_value_string, ScheduleConfig};
use crate::record::Trigger;
use crate::service::{Service, Started};

/// When a schedule fires.
#[derive(Debug, Clone)]
pub enum Every {
    Interval(Duration),
    Cron(Box<cron::Schedule>),
}

/// `500ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}`: expected a number and a unit (500ms, 30s, 5m, 1h)"))?;
    let too_long = || format!("`{s}`: too long");
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(too_long)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(too_long)?),
        "d" => Duration::from_secs(n.checked_mul(86_400).ok_or_else(too_long)?),
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m, h, d)")),
    };
    if d < Duration::from_millis(100) {
        return Err(format!("`{s}`: the shortest interval is 100ms"));
    }
    Ok(d)
}

impl Every {
    pub fn parse(sc: &ScheduleConfig) -> Result<Every, String> {
        match (&sc.cron, &sc.every) {
            (Some(_), Some(_)) | (None, None) => Err(format!(
                "schedule `{}`: give exactly one of `cron` and `every`",
                sc.name
            )),
            (None, Some(e)) => Ok(Every::Interval(parse_duration(e)?)),
            (Some(c), None) => {
                // The cron crate wants seconds first; standard 5-field
                // expressions fire at second 0.
                let expr = if c.split_whitespace().count() == 5 {
                    format!("0 {c}")
                } else {
                    c.clone()
                };
                cron::Schedule::from_str(&expr)
                    .map(|s| Every::Cron(Box::new(s)))
                    .map_err(|e| format!("schedule `{}`: cron `{c}`: {e}", sc.name))
            }
        }
    }

    /// Time until the next tick.
    fn next_in(&self) -> Option<Duration> {
        match self {
            Every::Interval(d) => Some(*d),
            Every::Cron(s) => s
                .upcoming(chrono::Utc)
                .next()
                .map(|t| (t - chrono::Utc::now()).to_std().unwrap_or_default()),
        }
    }
}

/// Starts one task per configured schedule; they stop when `stop` turns true.
pub fn spawn_all(service: &Arc<Service>, stop: watch::Receiver<bool>) {
    for (plugin, pc) in &service.remedy.config.plugins {
        for sc in &pc.schedules {
            let every = match Every::parse(sc) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(%plugin, error = %e, "schedule not started");
                    continue;
                }
            };
            let params: BTreeMap<String, String> = sc
                .params
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), config_value_string(v)?)))
                .collect();
            tokio::spawn(run_schedule(
                service.clone(),
                plugin.clone(),
                sc.name.clone(),
                every,
                params,
                stop.clone(),
            ));
        }
    }
}

async fn run_schedule(
    service: Arc<Service>,
    plugin: String,
    name: String,
    every: Every,
    params: BTreeMap<String, String>,
    mut stop: watch::Receiver<bool>,
) {
    let mut previous: Option<tokio::task::JoinHandle<crate::record::RunRecord>> = None;
    let mut next = tokio::time::Instant::now();
    loop {
        let Some(wait) = every.next_in() else { return };
        // Intervals keep their phase (no drift); cron computes each time.
        next = match every {
            Every::Interval(d) => (next + d).max(tokio::time::Instant::now()),
            Every::Cron(_) => tokio::time::Instant::now() + wait,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => return,
        }
        if previous.as_ref().is_some_and(|h| !h.is_finished()) {
            tracing::info!(%plugin, schedule = %name, "tick skipped: the previous run is still going");
            service.metrics.tick_skipped(&plugin, &name);
            continue;
        }
        let Some(p) = service.registry.get(&plugin) else {
            tracing::warn!(%plugin, schedule = %name, "tick skipped: plugin not loaded");
            service.metrics.tick_skipped(&plugin, &name);
            continue;
        };
        let trigger = Trigger::Schedule {
            schedule: name.clone(),
        };
        match service
            .start_run(p, trigger, None, params.clone(), format!("schedule:{name}"))
            .await
        {
            Ok(Started::Running { handle, .. }) => previous = Some(handle),
            Ok(Started::Skipped(_)) => service.metrics.tick_skipped(&plugin, &name),
            Err(e) => {
                tracing::error!(%plugin, schedule = %name, error = %e, "scheduled run not started")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc(cron: Option<&str>, every: Option<&str>) -> ScheduleConfig {
        ScheduleConfig {
            name: "t".into(),
            cron: cron.map(String::from),
            every: every.map(String::from),
            params: Default::default(),
        }
    }

    #[test]
    fn parses_schedules() {
        assert!(
            matches!(Every::parse(&sc(None, Some("1s"))), Ok(Every::Interval(d)) if d == Duration::from_secs(1))
        );
        assert!(matches!(
            Every::parse(&sc(Some("*/5 * * * *"), None)),
            Ok(Every::Cron(_))
        ));
        assert!(matches!(
            Every::parse(&sc(Some("*/10 * * * * *"), None)),
            Ok(Every::Cron(_))
        ));
        assert!(Every::parse(&sc(Some("nope"), None))
            .unwrap_err()
            .contains("cron"));
        assert!(Every::parse(&sc(None, None)).is_err());
        assert!(Every::parse(&sc(Some("* * * * *"), Some("1s"))).is_err());
        assert!(parse_duration("10ms").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
    }
}
