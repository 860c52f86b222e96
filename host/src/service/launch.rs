//! Starting runs: single flight per (plugin, target), the concurrency bound,
//! and queued runs that outlive the request that asked for them.
//!
//! A run is first *claimed* (single flight), then stored — `running` when a
//! run slot is free at once, else `queued` — before the caller is answered,
//! and only then spawned. Whether it acts live is decided when it actually
//! starts, so a run queued before the kill switch was pulled runs dry. A
//! `queued` record found at start-up (the process stopped before its turn)
//! is resumed, never forgotten (`resume.rs`).

use crate::locks::MutexExt;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::Utc;
use tracing::Instrument as _;

use super::lanes::{rank, LanePermit, Lanes};
use super::Service;
use crate::config::Mode;
use crate::guardrails::{Plan, Stage};
use crate::record::{Applied, RunRecord, RunStatus, Trigger};
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
    rec.mode = mode;
    // The record is read by every read token: its params lose their
    // secrets; the plugin gets `l.params`, whole.
    rec.params = crate::redact::params(&l.params);
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
    /// The run's id, held in `Service::held` until the guard goes.
    run_id: String,
    /// The run id whose flight row the shared store holds.
    shared: Option<String>,
}

impl FlightGuard {
    /// Releases the shared claim now (rather than from `drop`), so the next
    /// run for the target, on any replica, finds it free. Retried; a flight
    /// still not released is released by the reconciler at a heartbeat
    /// once this run is no longer held (the id is forgotten only once the
    /// `DELETE` went through).
    async fn release_shared(&mut self) {
        let Some(id) = self.shared.clone() else {
            return;
        };
        let store = self.service.store.clone();
        let (plugin, target) = self.key.clone();
        let released = Box::pin(super::heal::retried("flight release", &id, || {
            store.release_flight(&plugin, &target, &id)
        }))
        .await;
        match released {
            Ok(()) => self.shared = None,
            Err(e) => {
                tracing::warn!(run_id = %id, error = %e, "flight not released; the reconciler releases it at a heartbeat");
                // Not again from `drop`: the reconciler owns it now.
                self.shared = None;
            }
        }
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if let Some(id) = self.shared.take() {
            let (store, (plugin, target)) = (self.service.store.clone(), self.key.clone());
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                // If this fails too, the reconciler releases it.
                rt.spawn(async move {
                    let _ = store.release_flight(&plugin, &target, &id).await;
                });
            }
        }
        self.service.inflight.locked().remove(&self.key);
        self.service.held.locked().remove(&self.run_id);
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
    /// The incarnation it was claimed by: every write of the run is fenced
    /// by it (see `store::fence`).
    owner: Option<Arc<str>>,
}

impl Claimed {
    pub(super) fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    pub(super) fn launch(&self) -> &Launch {
        &self.launch
    }

    /// The run holds its single flight in the shared store already (its
    /// receipt claimed it): released with its final record.
    pub(crate) fn holds_shared_flight(&mut self) {
        self.guard.shared = Some(self.rec.id.clone());
    }
}

/// Why a claimed run does not start.
pub(crate) enum NotClaimed {
    /// Another replica's run holds the target: the record says so.
    Lost(RunRecord),
    /// The store did not answer, even after retries: nothing is written.
    Store(StoreError),
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
    owner: Option<Arc<str>>,
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
        let owner = self.store.incarnation();
        crate::store::fence::scope(owner, self.launch_fenced(plugin, l)).await
    }

    async fn launch_fenced(
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
        match self.claim_shared(&mut claimed).await {
            Ok(()) => {}
            Err(NotClaimed::Lost(not_started)) => {
                self.store.put_run(&not_started).await?;
                self.finished(&not_started);
                return Ok(Started::Skipped(Box::new(not_started)));
            }
            // Nothing was stored: the caller is told, and nothing fails
            // that never ran.
            Err(NotClaimed::Store(e)) => return Err(e),
        }
        let id = claimed.rec.id.clone();
        let handle = match self.try_slot(claimed.plugin.name()) {
            // A slot is free: straight to `running`, one write fewer.
            Some(permit) => {
                let history = Box::pin(self.alert_history(&claimed)).await;
                let start = self.decide_start(&claimed, history);
                if !(claimed.launch.waited && start.dry) {
                    let running = self.running_record(&claimed, &start);
                    super::heal::retried("`running` record", &id, || self.store.put_run(&running))
                        .await?;
                }
                self.spawn_run(claimed, Some((permit, start)))
            }
            None => {
                super::heal::retried("`queued` record", &id, || self.store.put_run(&claimed.rec))
                    .await?;
                self.spawn_run(claimed, None)
            }
        };
        Ok(Started::Running { id, handle })
    }

    fn plugin_lanes(&self, plugin: &str) -> Arc<Lanes> {
        self.plugin_permits
            .locked()
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
        let _waiting = self.metrics.waiting();
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
        let fresh = self.inflight.locked().insert(key.clone());
        if !fresh {
            let why = format!(
                "a run of {} for target `{}` is already in flight",
                key.0, key.1
            );
            return Err(not_started(rec, RunStatus::Skipped, why));
        }
        self.running.fetch_add(1, Ordering::SeqCst);
        self.held.locked().insert(rec.id.clone());
        Ok(Claimed {
            guard: FlightGuard {
                service: self.clone(),
                key,
                run_id: rec.id.clone(),
                shared: None,
            },
            plugin,
            launch: l,
            owner: self.store.incarnation(),
            rec,
        })
    }

    /// On a shared store, the claim of (plugin, target) across replicas,
    /// retried while the store blips; `Lost` is the `skipped` record (not
    /// yet stored) when a run of another replica holds the target.
    pub(crate) async fn claim_shared(&self, c: &mut Claimed) -> Result<(), NotClaimed> {
        if !self.store.shared() || c.guard.shared.is_some() || c.guard.key.1.starts_with(OWN_TARGET)
        {
            return Ok(());
        }
        let (plugin, target) = c.guard.key.clone();
        let id = c.rec.id.clone();
        let claim = super::heal::retried("single-flight claim", &id, || {
            self.store.claim_flight(&plugin, &target, &id)
        });
        match claim.await {
            Ok(true) => {
                c.guard.shared = Some(id);
                Ok(())
            }
            Ok(false) => {
                let why = format!(
                    "a run of {plugin} for target `{target}` is already in flight on another replica"
                );
                Err(NotClaimed::Lost(not_started(
                    c.rec.clone(),
                    RunStatus::Skipped,
                    why,
                )))
            }
            Err(e) => Err(NotClaimed::Store(e)),
        }
    }

    /// Mode, kill switch and stage as they are now.
    fn decide_start(&self, c: &Claimed, history: super::flapping::History) -> Start {
        let l = &c.launch;
        let mode = l.mode.or(history.mode).unwrap_or(c.plugin.settings.mode);
        let planning = mode == Mode::Approve && l.approved.is_none();
        let mut dry = mode != Mode::Auto && l.approved.is_none();
        let mut note = None;
        if let Some(p) = self.paused() {
            if !dry {
                dry = true;
                note = Some(format!("{}: this run was forced to dry-run", p.describe()));
            }
        }
        if let Some(why) = history.hold.filter(|_| !dry) {
            dry = true;
            note = Some(why);
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
            rec.mode = if start.dry { Mode::DryRun } else { Mode::Auto };
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
        let owner = c.owner.clone();
        let mut c = Box::new(c);
        let run = async move {
            // Boxed: its retries' state would weigh on every queued task.
            match Box::pin(service.claim_shared(&mut c)).await {
                Ok(()) => {}
                Err(NotClaimed::Lost(not_started)) => {
                    return Box::pin(service.not_started(not_started)).await;
                }
                Err(NotClaimed::Store(e)) => {
                    // Its `queued` record stays; the reconciler resumes it
                    // once the store answers (a blip fails nothing).
                    tracing::warn!(run_id = %c.rec.id, error = %e, "single flight could not be checked in the store; the run stays queued and is resumed at a heartbeat");
                    return dropped(c.rec.clone(), format!("left queued: {e}"));
                }
            }
            let slot = match slot {
                Some((permit, start)) => Slotted::Started(permit, start),
                None => Slotted::Waited(service.slot(&c).await),
            };
            Box::pin(service.run_claimed(*c, slot)).await
        };
        crate::store::fence::scope(owner, run).instrument(span)
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
        match Box::pin(self.clone().run_in_slot(c, slot)).await {
            Ok(ran) => Box::pin(self.store_ran(ran)).await,
            Err(rec) => rec,
        }
    }

    /// The plugin's run, in its slot; the slot is handed on when it ends.
    /// `Err`: the run did not start (fenced out, or its start could not be
    /// stored: then its `queued` record stays for the reconciler), with the
    /// record it ends with in memory, not stored.
    async fn run_in_slot(self: Arc<Self>, c: Claimed, slot: Slotted) -> Result<Ran, RunRecord> {
        let service = self;
        let (permit, start, running_later) = match slot {
            Slotted::Started(permit, start) => (permit, start, None),
            Slotted::Waited(permit) => {
                let history = Box::pin(service.alert_history(&c)).await;
                let start = service.decide_start(&c, history);
                let running = service.running_record(&c, &start);
                if start.dry {
                    // Stored only if the run is still going after a while.
                    (permit, start, Some(running))
                } else {
                    // A run that may act starts only once it is stored
                    // `running`, a conditional write: `queued` → `running`
                    // while this incarnation still owns it. A run that
                    // could not be marked never acts, so a restart cannot
                    // resume one that did (it stays `queued` until then).
                    let stored = super::heal::retried("`running` record", &running.id, || {
                        service.store.put_run(&running)
                    });
                    if let Err(e) = stored.await {
                        return Err(service.not_run(running, e));
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
            owner,
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
        Ok(Ran {
            rec,
            guard,
            plugin,
            owner,
        })
    }

    /// A claimed run that does not start because its start was not
    /// stored: fenced out (it belongs to another replica now), or the
    /// store did not answer (it stays `queued`; the reconciler, or a
    /// survivor, resumes it).
    fn not_run(&self, running: RunRecord, e: StoreError) -> RunRecord {
        match &e {
            StoreError::Fenced(why) => {
                tracing::error!(run_id = %running.id, plugin = %running.plugin, %why, "fenced out: run dropped without acting")
            }
            _ => {
                tracing::warn!(run_id = %running.id, error = %e, "`running` not stored: the run did not start and stays queued")
            }
        }
        dropped(running, e.to_string())
    }

    /// A finished run's record, its actions' audit, and the end of its
    /// single flight once the record is stored.
    async fn store_ran(self: Arc<Self>, ran: Ran) -> RunRecord {
        let service = self;
        let Ran {
            rec,
            mut guard,
            plugin,
            owner,
        } = ran;
        // Boxed: what waits for the store holds the record, not retries.
        // The shared single flight ends in the record's own commit.
        let release = guard.shared.as_deref() == Some(rec.id.as_str())
            && rec.target.as_deref() == Some(guard.key.1.as_str())
            && rec.plugin == guard.key.0;
        let stored = Box::pin(super::heal::retried("run record", &rec.id, || {
            service.store.finish_run(&rec, release)
        }))
        .await;
        match stored {
            Ok(()) if release => guard.shared = None,
            Ok(()) => guard.release_shared().await,
            Err(StoreError::Fenced(why)) => {
                // Another replica owns the run now: nothing of it is
                // written or followed up here.
                tracing::error!(run_id = %rec.id, plugin = %rec.plugin, %why, "fenced out: run record dropped");
                return rec;
            }
            // Kept with its claim (the target stays this run's) and
            // stored by the reconciler; the rest goes on.
            Err(_) => service.keep_unwritten(rec.clone(), owner, guard),
        }
        // Boxed: a storm holds thousands of these futures (see the size tests).
        Box::pin(service.audit_actions(&rec, &rec.actions)).await;
        service.finished(&rec);
        if !rec.dry_run && rec.actions.iter().any(|a| a.applied == Applied::Executed) {
            service.clone().verify_later(plugin.clone(), rec.clone());
            service
                .clone()
                .mark_live_actions(plugin.clone(), rec.clone());
        } else if rec.silence.is_some() {
            // Nothing to verify: the silence has served its purpose.
            Box::pin(service.end_silence(&rec)).await;
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
}

/// How long a dry run that waited for its slot runs before its `running`
/// record is stored (see [`Service::run_marked_if_long`]).
const RUNNING_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// The in-memory end of a run that was not started here (nothing stored).
fn dropped(mut rec: RunRecord, why: String) -> RunRecord {
    rec.status = RunStatus::Interrupted;
    rec.error = Some(format!("not run on this replica: {why}"));
    rec
}

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
