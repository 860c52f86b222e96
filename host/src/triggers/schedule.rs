//! Schedules: a cron expression (seconds field optional) or an interval per
//! plugin. A tick never overlaps the previous run of its schedule: it is
//! skipped and counted instead.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::record::Trigger;
use crate::service::{Service, Started};
use crate::units::Every;

/// Starts one task per configured schedule (as resolved in each plugin's
/// settings, whether or not the plugin loaded: a tick finds out); they stop
/// when `stop` turns true.
pub fn spawn_all(service: &Arc<Service>, stop: watch::Receiver<bool>) {
    for name in service.remedy.config.plugins.keys() {
        let settings = service.remedy.settings(name);
        for sc in settings.schedules.iter() {
            tokio::spawn(run_schedule(
                service.clone(),
                name.clone(),
                sc.name.clone(),
                sc.every.clone(),
                sc.params.clone(),
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
