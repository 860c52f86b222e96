//! This replica among the others on a shared store: its heartbeat, the
//! scheduler lease, the kill switch as another replica left it, and the
//! work of replicas that died. On the embedded store the service is the
//! only replica and holds the scheduler.

use crate::locks::MutexExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::Service;
use crate::store::{Orphans, Replica, ReplicaRow};

/// How often a replica renews its heartbeat and the scheduler lease,
/// re-reads the kill switch and looks for replicas that died: the kill
/// switch reaches every replica within this long.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// The lease that decides which replica runs the schedules.
const SCHEDULER: &str = "scheduler";

pub struct Cluster {
    pub me: Replica,
    started_at: String,
    /// A store other replicas may share (PostgreSQL).
    shared: bool,
    view: Mutex<View>,
    scheduler: AtomicBool,
    /// Shutting down: the scheduler lease is given up, not renewed.
    draining: AtomicBool,
}

#[derive(Default)]
struct View {
    replicas: Vec<ReplicaRow>,
    scheduler: Option<String>,
}

/// `GET /v1/cluster`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ClusterView {
    /// `sqlite` (one replica) or `postgres`.
    pub store: &'static str,
    /// This replica's id.
    pub replica: String,
    pub name: String,
    pub lease_ms: u64,
    /// The id of the replica running the schedules.
    pub scheduler: Option<String>,
    pub replicas: Vec<ReplicaRow>,
}

impl Cluster {
    pub fn new(me: Replica, shared: bool) -> Cluster {
        Cluster {
            me,
            started_at: crate::service::now(),
            shared,
            view: Mutex::default(),
            // Alone on its store, a replica is the scheduler.
            scheduler: AtomicBool::new(!shared),
            draining: AtomicBool::new(false),
        }
    }

    /// Whether this replica runs the schedules now.
    pub fn schedules(&self) -> bool {
        self.scheduler.load(Ordering::SeqCst)
    }

    pub fn view(&self) -> ClusterView {
        let v = self.view.locked();
        let lease_ms = self.me.lease.as_millis() as u64;
        let (replicas, scheduler) = if self.shared {
            (v.replicas.clone(), v.scheduler.clone())
        } else {
            let me = ReplicaRow {
                id: self.me.id.clone(),
                name: self.me.name.clone(),
                version: env!("CARGO_PKG_VERSION").into(),
                started_at: self.started_at.clone(),
                heartbeat_at: crate::service::now(),
                lease_ms,
                alive: true,
            };
            (vec![me], Some(self.me.id.clone()))
        };
        ClusterView {
            store: if self.shared { "postgres" } else { "sqlite" },
            replica: self.me.id.clone(),
            name: self.me.name.clone(),
            lease_ms,
            scheduler,
            replicas,
        }
    }
}

impl Service {
    /// One heartbeat: renew this replica and the scheduler lease, take the
    /// kill switch as stored, and take over replicas whose lease expired.
    /// A failure keeps the previous view, except that a replica that cannot
    /// renew the scheduler lease stops scheduling (another will take it).
    pub async fn beat(self: &Arc<Self>) {
        if !self.cluster.shared {
            return;
        }
        // The kill switch first: it is what must reach every replica soonest.
        self.sync_pause().await;
        // Take-over before the heartbeat, so the replica list read next no
        // longer shows the replicas taken over.
        match self.store.take_over().await {
            Ok(orphans) => self.adopt(orphans).await,
            Err(e) => tracing::warn!(error = %e, "looking for stopped replicas failed"),
        }
        match self.store.heartbeat().await {
            Ok(rows) => {
                self.cluster.view.locked().replicas = rows;
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat not stored"),
        }
        let holder = if self.cluster.draining.load(Ordering::SeqCst) {
            None
        } else {
            match self.store.lease(SCHEDULER).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler lease not renewed: not scheduling");
                    None
                }
            }
        };
        let me = self.store.incarnation();
        let mine = holder.is_some() && holder.as_deref() == me.as_deref();
        if self.cluster.scheduler.swap(mine, Ordering::SeqCst) != mine {
            tracing::info!(replica = %self.cluster.me.name, scheduler = mine, "scheduler lease changed");
        }
        self.cluster.view.locked().scheduler = holder;
        let alive = {
            let v = self.cluster.view.locked();
            v.replicas.iter().filter(|r| r.alive).count() as u64
        };
        self.metrics.set_cluster(alive, mine);
    }

    /// At shutdown: stop scheduling and give the lease up, so another
    /// replica takes the schedules at its next heartbeat.
    pub async fn stop_scheduling(&self) {
        self.cluster.draining.store(true, Ordering::SeqCst);
        if self.cluster.scheduler.swap(false, Ordering::SeqCst) && self.cluster.shared {
            if let Err(e) = self.store.release_leases().await {
                tracing::warn!(error = %e, "scheduler lease not released; it expires");
            }
        }
    }

    /// Takes the kill switch as the store has it (another replica may have
    /// pulled or released it), unless it changed here meanwhile.
    async fn sync_pause(&self) {
        let before = self.kill.get();
        match self.store.pause().await {
            Ok(stored) if stored != before => {
                if self.kill.replace_if(&before, stored.clone()) {
                    self.pause_changed(&stored, Some("another replica"));
                    match &stored {
                        Some(p) => tracing::warn!("{} (on another replica)", p.describe()),
                        None => tracing::warn!("kill switch released on another replica"),
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "kill switch not read from the store"),
        }
    }

    /// Resumes the queued runs and schedules the verifications that stopped
    /// replicas (or this process's previous life) left.
    pub(crate) async fn adopt(self: &Arc<Self>, orphans: Orphans) {
        for name in &orphans.replicas {
            tracing::warn!(replica = %name, "took over the work of a stopped replica");
        }
        self.resume_queued(orphans.queued).await;
        self.resume_verifications(orphans.unverified);
    }
}
