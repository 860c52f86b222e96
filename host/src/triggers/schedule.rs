//! Schedules: a cron expression (seconds field optional) or an interval per
//! plugin (ticking at a fixed phase of the Unix epoch, spread by name). A
//! tick never overlaps the previous run of its schedule: it is skipped and
//! counted instead. With several replicas, the one holding the scheduler
//! lease runs them, each tick once.

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
    let mut last = chrono::Utc::now();
    let phase = every.phase(&format!("{plugin}/{name}"));
    loop {
        // Never the same tick twice, never a burst of missed ones.
        let Some(tick) = every.next_tick(last.max(chrono::Utc::now()), phase) else {
            return;
        };
        last = tick;
        let wait = (tick - chrono::Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        // On a shared store one replica, the holder of the scheduler
        // lease, runs the schedules; and each tick is claimed in the store,
        // so a holder that lost its lease without noticing yet (stalled,
        // cut off) cannot run a tick its successor ran.
        if !service.cluster.schedules() {
            continue;
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
        let tick = crate::record::timestamp(tick);
        match service.store.claim_tick(&plugin, &name, &tick).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(%plugin, schedule = %name, %tick, "tick already run by another replica");
                continue;
            }
            Err(e) => {
                tracing::warn!(%plugin, schedule = %name, %tick, error = %e, "tick skipped: it could not be claimed");
                service.metrics.tick_skipped(&plugin, &name);
                continue;
            }
        }
        let trigger = Trigger::Schedule {
            schedule: name.clone(),
            tick: Some(tick),
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
