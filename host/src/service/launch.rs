//! Starting runs: single flight per (plugin, target), the concurrency bound,
//! and queued runs that outlive the request that asked for them.
//!
//! A run is first *claimed* (single flight), then stored — `running` when a
//! run slot is free at once, else `queued` — before the caller is answered,
//! and only then spawned. Whether it acts live is decided when it actually
//! starts, so a run queued before the kill switch was pulled runs dry. A
//! `queued` record found at start-up (the process stopped before its turn)
//! is resumed, never forgotten.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::Utc;
use tracing::Instrument as _;

use super::lanes::{rank, LanePermit, Lanes};
use super::Service;
use crate::config::Mode;
use crate::guardrails::{Plan, Stage};
use crate::record::{Applied, Approval, PlannedAction, RunRecord, RunStatus, Trigger};
use crate::remedy::RunRequest;
use crate::runtime::Plugin;
use crate::store::StoreError;

/// What starting a run came to.
pub enum Started {
    /// Stored (`running` or `queued`) and spawned; the handle yields the
    /// final (stored) record.
    Running {
        id: String,
        handle: tokio::task::JoinHandle<RunRecord>,
    },
    /// Another run of the plugin for the same target is in flight.
    Skipped(Box<RunRecord>),
}

/// How a run is to be started.
pub struct Launch {
    /// The run's id when the caller already named it (an approval records
    /// its live run before launching it; a resumed run keeps its own).
    pub id: Option<String>,
    pub trigger: Trigger,
    /// `None`: the plugin's mode.
    pub mode: Option<Mode>,
    pub params: BTreeMap<String, String>,
    /// Single-flight key with the plugin name.
    pub target: String,
    /// Carrying out this approved plan (run id, plan).
    pub approved: Option<(String, Arc<Plan>)>,
    /// The caller waits for the finished record. A dry run that starts at
    /// once is then stored once, finished, instead of `running` first: it
    /// acts on nothing, so a crash mid-run loses nothing but its own
    /// record, and the caller, whose request fails, knows.
    pub waited: bool,
}

/// The target of a run that targets nothing but itself (a manual run):
/// no other run can hold it, so single flight needs no shared claim.
const OWN_TARGET: &str = "manual:";

/// The `queued` record of a run about to be claimed: a fresh id unless the
/// launch names one.
pub(crate) fn queued_record(plugin: &Plugin, l: &Launch) -> RunRecord {
    let id = l.id.clone().unwrap_or_else(crate::record::new_run_id);
    let mode = l.mode.unwrap_or(plugin.settings.mode);
    let dry = mode != Mode::Auto && l.approved.is_none();
    let mut rec = RunRecord::begin(
        id,
        &plugin.plugin_ref(),
        l.trigger.clone(),
        dry,
        RunStatus::Queued,
    );
    rec.mode = mode.as_str().into();
    rec.params = l.params.clone();
    rec.target = Some(l.target.clone());
    rec.approval_of = l.approved.as_ref().map(|(of, _)| of.clone());
    rec
}

/// A fresh target of a run's own.
pub fn own_target() -> String {
    format!("{OWN_TARGET}{}", uuid::Uuid::new_v4())
}

/// Removes the (plugin, target) pair from the in-flight set, and from the
/// shared store's flights when it was claimed there, however the run ends
/// (or if it never starts).
pub(crate) struct FlightGuard {
    service: Arc<Service>,
    key: (String, String),
    /// The run id whose flight row the shared store holds.
    shared: Option<String>,
}

impl FlightGuard {
    /// Releases the shared claim now (rather than from `drop`), so the next
    /// run for the target, on any replica, finds it free.
    async fn release_shared(&mut self) {
        if let Some(id) = self.shared.take() {
            if let Err(e) = self
                .service
                .store
                .release_flight(&self.key.0, &self.key.1, &id)
                .await
            {
                tracing::warn!(run_id = %id, error = %e, "flight not released; it is when this replica's lease ends");
            }
        }
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if let Some(id) = self.shared.take() {
            let (store, (plugin, target)) = (self.service.store.clone(), self.key.clone());
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = store.release_flight(&plugin, &target, &id).await;
                });
            }
        }
        self.service
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        if self.service.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.service.idle.notify_waiters();
        }
    }
}

/// A run that holds its single-flight claim and has a `queued` record,
/// not yet stored or spawned.
pub(crate) struct Claimed {
    guard: FlightGuard,
    plugin: Arc<Plugin>,
    launch: Launch,
    /// Its record as stored while it waits (`queued`).
    pub rec: RunRecord,
}

/// How a run got its slot: given with its start decided (a run that
/// starts at once), or waited for in its task.
enum Slotted {
    Started(Slot, Start),
    Waited(Slot),
}

/// A run that has ended, before its record is stored.
struct Ran {
    rec: RunRecord,
    guard: FlightGuard,
    plugin: Arc<Plugin>,
}

/// A run slot: one of its plugin's, then one of the service's. Waiting
/// happens on the plugin's first, so a plugin with a storm of runs queues
/// behind itself without holding the slots other plugins need; at both,
/// the most urgent run waiting gets the next slot (see `lanes`).
pub(crate) struct Slot {
    _plugin: LanePermit,
    _global: LanePermit,
}

/// How a run starts once it has a slot: decided then, not when queued.
pub(crate) struct Start {
    dry: bool,
    note: Option<String>,
    planning: bool,
    stage: Stage,
}

impl Service {
    /// Starts a run of `plugin` for `target` unless one is in flight: the
    /// record is stored (`running`, `queued` or `skipped`) before this
    /// returns.
    pub async fn start_run(
        self: &Arc<Self>,
        plugin: Arc<Plugin>,
        trigger: Trigger,
        mode: Option<Mode>,
        params: BTreeMap<String, String>,
        target: String,
    ) -> Result<Started, StoreError> {
        self.launch(
            plugin,
            Launch {
                id: None,
                trigger,
                mode,
                params,
                target,
                approved: None,
                waited: false,
            },
        )
        .await
    }

    /// The one way a run starts in the service: single flight, concurrency
    /// bound, then `Remedy::run_with_id`; afterwards the plan (approve
    /// mode) or the verification (live mitigation).
    pub async fn launch(
        self: &Arc<Self>,
        plugin: Arc<Plugin>,
        l: Launch,
    ) -> Result<Started, StoreError> {
        let mut claimed = match self.claim(plugin, l) {
            Ok(c) => c,
            Err(skipped) => {
                self.store.put_run(&skipped).await?;
                self.finished(&skipped);
                return Ok(Started::Skipped(Box::new(skipped)));
            }
        };
        if let Err(not_started) = self.claim_shared(&mut claimed).await {
            self.store.put_run(&not_started).await?;
            self.finished(&not_started);
            return Ok(Started::Skipped(Box::new(not_started)));
        }
        let id = claimed.rec.id.clone();
        let handle = match self.try_slot(claimed.plugin.name()) {
            // A slot is free: straight to `running`, one write fewer.
            Some(permit) => {
                let start = self.decide_start(&claimed);
                if !(claimed.launch.waited && start.dry) {
                    let running = self.running_record(&claimed, &start);
                    self.store.put_run(&running).await?;
                }
                self.spawn_run(claimed, Some((permit, start)))
            }
            None => {
                self.store.put_run(&claimed.rec).await?;
                self.spawn_run(claimed, None)
            }
        };
        Ok(Started::Running { id, handle })
    }

    fn plugin_lanes(&self, plugin: &str) -> Arc<Lanes> {
        self.plugin_permits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(plugin.to_string())
            .or_insert_with(|| Lanes::new(self.per_plugin))
            .clone()
    }

    fn try_slot(&self, plugin: &str) -> Option<Slot> {
        let own = self.plugin_lanes(plugin).try_acquire()?;
        let global = self.permits.try_acquire()?;
        Some(Slot {
            _plugin: own,
            _global: global,
        })
    }

    /// Waits for a slot, most urgent run first.
    async fn slot(&self, c: &Claimed) -> Slot {
        let rank = rank(&c.launch.trigger, c.plugin.settings.priority);
        let own = self.plugin_lanes(c.plugin.name()).acquire(rank).await;
        let global = self.permits.acquire(rank).await;
        Slot {
            _plugin: own,
            _global: global,
        }
    }

    /// Takes the single-flight claim of the run and builds its `queued`
    /// record; `Err` is the `skipped` record when a run of the plugin for
    /// the same target is in flight.
    #[allow(clippy::result_large_err)] // built once per run, moved once
    pub(crate) fn claim(
        self: &Arc<Self>,
        plugin: Arc<Plugin>,
        l: Launch,
    ) -> Result<Claimed, RunRecord> {
        let rec = queued_record(&plugin, &l);
        self.claim_queued(plugin, l, rec)
    }

    /// [`Service::claim`] of a run whose `queued` record is already made
    /// (and stored: an alert's, with the alert).
    #[allow(clippy::result_large_err)] // built once per run, moved once
    pub(crate) fn claim_queued(
        self: &Arc<Self>,
        plugin: Arc<Plugin>,
        l: Launch,
        rec: RunRecord,
    ) -> Result<Claimed, RunRecord> {
        let key = (plugin.name().to_string(), l.target.clone());
        let fresh = self
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        if !fresh {
            let why = format!(
                "a run of {} for target `{}` is already in flight",
                key.0, key.1
            );
            return Err(not_started(rec, RunStatus::Skipped, why));
        }
        self.running.fetch_add(1, Ordering::SeqCst);
        Ok(Claimed {
            guard: FlightGuard {
                service: self.clone(),
                key,
                shared: None,
            },
            plugin,
            launch: l,
            rec,
        })
    }

    /// On a shared store, the claim of (plugin, target) across replicas;
    /// `Err` is the record of a run that does not start (`skipped` when a
    /// run of another replica holds the target, `failed` when the store
    /// could not say), not yet stored.
    #[allow(clippy::result_large_err)] // built once per run, moved once
    pub(crate) async fn claim_shared(&self, c: &mut Claimed) -> Result<(), RunRecord> {
        if !self.store.shared() || c.guard.shared.is_some() || c.guard.key.1.starts_with(OWN_TARGET)
        {
            return Ok(());
        }
        let (plugin, target) = c.guard.key.clone();
        match self.store.claim_flight(&plugin, &target, &c.rec.id).await {
            Ok(true) => {
                c.guard.shared = Some(c.rec.id.clone());
                Ok(())
            }
            Ok(false) => {
                let why = format!(
                    "a run of {plugin} for target `{target}` is already in flight on another replica"
                );
                Err(not_started(c.rec.clone(), RunStatus::Skipped, why))
            }
            Err(e) => {
                let why =
                    format!("not started: single flight could not be checked in the store: {e}");
                Err(not_started(c.rec.clone(), RunStatus::Failed, why))
            }
        }
    }

    /// Mode, kill switch and stage as they are now.
    fn decide_start(&self, c: &Claimed) -> Start {
        let l = &c.launch;
        let mode = l.mode.unwrap_or(c.plugin.settings.mode);
        let planning = mode == Mode::Approve && l.approved.is_none();
        let mut dry = mode != Mode::Auto && l.approved.is_none();
        let mut note = None;
        if let Some(p) = self.paused() {
            if !dry {
                dry = true;
                note = Some(format!("{}: this run was forced to dry-run", p.describe()));
            }
        }
        let stage = match (&l.approved, planning) {
            (Some((_, plan)), _) => Stage::Approved(plan.clone()),
            (None, true) => Stage::Plan,
            (None, false) => Stage::Normal,
        };
        Start {
            dry,
            note,
            planning,
            stage,
        }
    }

    fn running_record(&self, c: &Claimed, start: &Start) -> RunRecord {
        let mut rec = c.rec.clone();
        rec.status = RunStatus::Running;
        rec.dry_run = start.dry;
        rec.started_at = Utc::now();
        rec.note = start.note.clone();
        if !start.planning {
            rec.mode = if start.dry { "dry-run" } else { "auto" }.into();
        }
        rec
    }

    /// Runs a claimed run in its own task: waits for a run slot unless it
    /// has one, then runs, stores the result, audits its actions and
    /// schedules verification. Nothing here depends on the request that
    /// asked for the run.
    pub(crate) fn spawn_run(
        self: &Arc<Self>,
        c: Claimed,
        slot: Option<(Slot, Start)>,
    ) -> tokio::task::JoinHandle<RunRecord> {
        let urgent = c.launch.trigger.urgent();
        let alert = matches!(c.launch.trigger, Trigger::Alert { .. });
        let run = self.run_task(c, slot);
        if urgent {
            self.urgent.spawn(run)
        } else if alert {
            self.alert_runs.spawn(run)
        } else {
            tokio::spawn(run)
        }
    }

    /// The task [`Service::spawn_run`] spawns. A storm queues thousands of
    /// them, each holding its future from the spawn until a slot frees, so
    /// what follows the slot (the plugin's run, instantiation and calls,
    /// and the records: kilobytes of state) is boxed when it starts
    /// instead of being part of every queued task.
    pub(crate) fn run_task(
        self: &Arc<Self>,
        c: Claimed,
        slot: Option<(Slot, Start)>,
    ) -> impl std::future::Future<Output = RunRecord> + Send + 'static {
        let service = self.clone();
        // The run's life in the service (queue, run, record), a child in
        // the trace of what started it (an alert's receipt) without
        // holding that span open until the run ends.
        let span = crate::telemetry::detached_child(tracing::info_span!(
            parent: None,
            "service.run",
            run_id = %c.rec.id,
            plugin = %c.rec.plugin,
        ));
        // Boxed, the claim is one pointer in the task: held by value, the
        // claim, the shared claim's future and the slot's each kept a copy.
        let mut c = Box::new(c);
        async move {
            if let Err(not_started) = service.claim_shared(&mut c).await {
                return Box::pin(service.not_started(not_started)).await;
            }
            let slot = match slot {
                Some((permit, start)) => Slotted::Started(permit, start),
                None => Slotted::Waited(service.slot(&c).await),
            };
            Box::pin(service.run_claimed(*c, slot)).await
        }
        .instrument(span)
    }

    /// Stores the record of a run that lost its shared claim.
    async fn not_started(&self, rec: RunRecord) -> RunRecord {
        if let Err(e) = self.store.put_run(&rec).await {
            tracing::error!(run_id = %rec.id, error = %e, "run record not stored");
        }
        self.finished(&rec);
        rec
    }

    /// A claimed run from its slot on: the plugin's run, its record, its
    /// actions' audit. Boxed by [`Service::run_task`], so that none of
    /// this weighs on a run still waiting for its slot.
    ///
    /// In two boxes, one after the other. The plugin's run is kilobytes of
    /// state, and a finished run waits for its record's commit after its
    /// slot has gone to the next: in a storm thousands wait so, and each
    /// held the whole run's state (a storm's profile put 18 % of the alert
    /// runs' samples in copying that state into its box and faulting in
    /// fresh pages for it). What waits for the store now holds the record
    /// and the claim only (`tests::a_run_waiting_for_its_record_holds_no_run_state`);
    /// a storm's peak RSS went from 197–227 to 120–139 MiB.
    async fn run_claimed(self: Arc<Self>, c: Claimed, slot: Slotted) -> RunRecord {
        let ran = Box::pin(self.clone().run_in_slot(c, slot)).await;
        Box::pin(self.store_ran(ran)).await
    }

    /// The plugin's run, in its slot; the slot is handed on when it ends.
    async fn run_in_slot(self: Arc<Self>, c: Claimed, slot: Slotted) -> Ran {
        let service = self;
        let (permit, start, running_later) = match slot {
            Slotted::Started(permit, start) => (permit, start, None),
            Slotted::Waited(permit) => {
                let start = service.decide_start(&c);
                let running = service.running_record(&c, &start);
                if start.dry {
                    // Stored only if the run is still going after a while.
                    (permit, start, Some(running))
                } else {
                    // A run that may act is stored `running` before it
                    // starts. It goes on without: its live actions need the
                    // ledger, which refuses them while the store is down.
                    if let Err(e) = service.store.put_run(&running).await {
                        tracing::error!(run_id = %running.id, error = %e, "`running` not stored");
                    }
                    (permit, start, None)
                }
            }
        };
        let Claimed {
            guard,
            plugin,
            launch: l,
            rec: queued,
        } = c;
        service.events.emit(
            "run.started",
            Some(&queued.id),
            Some(&queued.plugin),
            || {
                serde_json::json!({
                    "dry_run": start.dry,
                    "trigger": l.trigger,
                    "note": start.note,
                })
            },
        );
        let req = RunRequest {
            trigger: l.trigger,
            dry_run: Some(start.dry),
            params: l.params,
            stage: start.stage,
        };
        let run = service.remedy.run_with_id(&plugin, req, queued.id.clone());
        let mut rec = match running_later {
            Some(running) => service.run_marked_if_long(run, running).await,
            None => run.await,
        };
        // The slot bounds running plugins, not record writes: the next
        // run (the most urgent waiting) starts while this one's record
        // waits its turn at the store. Single flight holds until the
        // record is stored (`guard`).
        drop(permit);
        rec.note = start.note;
        rec.approval_of = queued.approval_of;
        rec.params = queued.params;
        rec.target = queued.target;
        if start.planning {
            service.plan_for_approval(&plugin, &mut rec);
        }
        if let Some(n) = &rec.note {
            rec.logs.push(format!("[remedy] {n}"));
        }
        Ran { rec, guard, plugin }
    }

    /// A finished run's record, its actions' audit, and the end of its
    /// single flight once the record is stored.
    async fn store_ran(self: Arc<Self>, ran: Ran) -> RunRecord {
        let service = self;
        let Ran {
            rec,
            mut guard,
            plugin,
        } = ran;
        if let Err(e) = service.store.put_run(&rec).await {
            tracing::error!(run_id = %rec.id, error = %e, "run record not stored");
        }
        guard.release_shared().await;
        for a in &rec.actions {
            service
                .audit(
                    Some(&rec.id),
                    Some(&rec.plugin),
                    "action",
                    serde_json::to_value(a).unwrap_or_default(),
                )
                .await;
        }
        service.finished(&rec);
        if !rec.dry_run && rec.actions.iter().any(|a| a.applied == Applied::Executed) {
            service.clone().verify_later(plugin.clone(), rec.clone());
        }
        rec
    }

    /// A dry run that waited for its slot: its `running` record is stored
    /// only if the run is still going after [`RUNNING_AFTER`]. It acts on
    /// nothing (every action, notifications included, is simulated at the
    /// gate), so nothing needs that record durable before it starts: after
    /// a crash its `queued` record resumes it, and a detection run twice is
    /// harmless. A storm's thousands of quick runs are then written twice
    /// (`queued`, finished) instead of three times, which the drain, bound
    /// by the two cores the runs share with the store's one writer, needs;
    /// a long one is still listed `running` while it runs.
    async fn run_marked_if_long(
        &self,
        run: impl std::future::Future<Output = RunRecord>,
        running: RunRecord,
    ) -> RunRecord {
        let mut run = std::pin::pin!(run);
        tokio::select! {
            biased;
            rec = &mut run => return rec,
            () = tokio::time::sleep(RUNNING_AFTER) => {}
        }
        // Committed before the finished record is written, so it cannot
        // overwrite it.
        let (stored, rec) = tokio::join!(self.store.put_run(&running), run);
        if let Err(e) = stored {
            tracing::error!(run_id = %running.id, error = %e, "`running` not stored");
        }
        rec
    }

    /// Turns a finished planning run into a plan waiting for approval (or
    /// leaves it finished when mitigation wanted nothing).
    fn plan_for_approval(&self, plugin: &Plugin, rec: &mut RunRecord) {
        rec.mode = Mode::Approve.as_str().into();
        let plan: Vec<PlannedAction> = rec
            .actions
            .iter()
            .filter(|a| a.applied == Applied::Simulated)
            .map(|a| PlannedAction {
                kind: a.kind,
                target: a.target.clone(),
            })
            .collect();
        if rec.status != RunStatus::Succeeded || plan.is_empty() {
            return;
        }
        let expires_at = chrono::Duration::from_std(plugin.settings.limits.approval_ttl)
            .ok()
            .and_then(|ttl| Utc::now().checked_add_signed(ttl))
            .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC);
        rec.status = RunStatus::PendingApproval;
        rec.approval = Some(Approval {
            plan,
            expires_at,
            decision: None,
            decided_by: None,
            decided_at: None,
            live_run: None,
        });
    }

    /// Starts the runs a previous process stored as `queued` and never got
    /// to: each resumes under its own id, or is marked `interrupted` when it
    /// cannot (its plugin is gone, its plan is missing).
    pub(crate) async fn resume_queued(self: &Arc<Self>, queued: Vec<RunRecord>) {
        for rec in queued {
            match self.resumable(&rec).await {
                Ok((plugin, l)) => match self.claim(plugin, l) {
                    Ok(c) => {
                        tracing::info!(run_id = %rec.id, plugin = %rec.plugin, "queued run resumed");
                        self.audit(
                            Some(&rec.id),
                            Some(&rec.plugin),
                            "run.resumed",
                            serde_json::json!({"queued_at": rec.started_at}),
                        )
                        .await;
                        // Detached: the run stores its own result.
                        drop(self.spawn_run(c, None));
                    }
                    Err(skipped) => {
                        if let Err(e) = self.store.put_run(&skipped).await {
                            tracing::error!(run_id = %rec.id, error = %e, "skipped not stored");
                        }
                        self.finished(&skipped);
                    }
                },
                Err(why) => {
                    let mut rec = rec;
                    rec.status = RunStatus::Interrupted;
                    rec.error = Some(format!(
                        "queued when the previous Remedy process stopped, and not resumed: {why}"
                    ));
                    rec.finished_at = Some(Utc::now());
                    tracing::warn!(run_id = %rec.id, plugin = %rec.plugin, %why, "queued run not resumed");
                    if let Err(e) = self.store.put_run(&rec).await {
                        tracing::error!(run_id = %rec.id, error = %e, "interrupted not stored");
                    }
                    self.finished(&rec);
                }
            }
        }
    }

    async fn resumable(&self, rec: &RunRecord) -> Result<(Arc<Plugin>, Launch), String> {
        let plugin = self
            .registry
            .get(&rec.plugin)
            .ok_or_else(|| format!("plugin `{}` is not loaded", rec.plugin))?;
        let approved = match &rec.approval_of {
            None => None,
            Some(of) => {
                let plan = self
                    .store
                    .get_run(of)
                    .await
                    .map_err(|e| e.to_string())?
                    .and_then(|p| p.approval)
                    .ok_or_else(|| format!("the approved plan {of} is missing"))?;
                Some((of.clone(), Arc::new(plan.plan.into_iter().collect())))
            }
        };
        let l = Launch {
            id: Some(rec.id.clone()),
            trigger: rec.trigger.clone(),
            mode: Mode::parse(&rec.mode),
            params: rec.params.clone(),
            target: rec
                .target
                .clone()
                .unwrap_or_else(|| format!("run:{}", rec.id)),
            approved,
            waited: false,
        };
        Ok((plugin, l))
    }
}

/// How long a dry run that waited for its slot runs before its `running`
/// record is stored (see [`Service::run_marked_if_long`]).
const RUNNING_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// A run that does not start: finished at once with `status` and why.
fn not_started(mut rec: RunRecord, status: RunStatus, why: String) -> RunRecord {
    rec.status = status;
    rec.error = Some(why);
    rec.finished_at = Some(rec.started_at);
    rec.duration_ms = Some(0);
    rec
}

#[cfg(test)]
mod tests;
