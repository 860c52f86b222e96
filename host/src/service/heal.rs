//! Writes that heal: a run's start, final record and flight release are
//! idempotent, so a transient store error (a dropped connection, a
//! failover, a pooler restart) is retried with bounded backoff instead of
//! freezing a target or failing a run that never ran. What still cannot be
//! written is kept in memory, with the run's single-flight claim, and the
//! reconciler (each heartbeat) stores it once the store answers; it also
//! releases flights of runs that ended and resumes `queued` runs this
//! replica owns but no longer holds. `/healthz` fails while a record has
//! waited past two leases ([`Service::unwritten_bound`]), so an orchestrator can restart a
//! replica whose store never comes back.

use crate::locks::MutexExt;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::launch::FlightGuard;
use super::Service;
use crate::record::{RunRecord, RunStatus};
use crate::store::{fence, StoreError};

/// Waits between attempts: about 3 s in all, well inside a lease, enough
/// for a pooler to reconnect or a connection to be replaced.
const BACKOFF: [Duration; 5] = [
    Duration::from_millis(50),
    Duration::from_millis(150),
    Duration::from_millis(350),
    Duration::from_millis(750),
    Duration::from_millis(1500),
];

/// A queued run the reconciler finds unheld is resumed only once its
/// record is this old: a receipt claims its runs right after its commit.
const RESUME_AFTER: Duration = Duration::from_secs(5);

/// Tries `write` until it succeeds, is fenced, or the backoff runs out.
pub(crate) async fn retried<T, F, Fut>(
    what: &str,
    run_id: &str,
    mut write: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut waits = BACKOFF.iter();
    loop {
        match write().await {
            Ok(v) => return Ok(v),
            Err(e) if e.transient() => match waits.next() {
                Some(wait) => {
                    tracing::warn!(run_id, error = %e, "{what} failed; trying again in {wait:?}");
                    tokio::time::sleep(*wait).await;
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
}

/// A finished run whose record the store has not taken yet.
pub(crate) struct Unwritten {
    rec: RunRecord,
    owner: Option<Arc<str>>,
    /// Held until the record is stored: the target stays this run's.
    _guard: FlightGuard,
    since: Instant,
}

impl Service {
    /// Keeps a finished run's record (and its claim) for the reconciler.
    pub(crate) fn keep_unwritten(
        &self,
        rec: RunRecord,
        owner: Option<Arc<str>>,
        guard: FlightGuard,
    ) {
        tracing::error!(run_id = %rec.id, "run record not stored; kept, and stored again at each heartbeat until the store takes it");
        self.unwritten.locked().insert(
            rec.id.clone(),
            Unwritten {
                rec,
                owner,
                _guard: guard,
                since: Instant::now(),
            },
        );
    }

    /// How long a finished run's record may stay unwritten before
    /// `/healthz` says so: two leases (a survivor would have taken a dead
    /// replica's work over by then).
    pub fn unwritten_bound(&self) -> Duration {
        self.cluster.me.lease * 2
    }

    /// How many records are unwritten, and how long the oldest has waited.
    pub fn unwritten_for(&self) -> Option<(usize, Duration)> {
        let u = self.unwritten.locked();
        let oldest = u.values().map(|w| w.since.elapsed()).max()?;
        Some((u.len(), oldest))
    }

    /// Whether this replica holds run `id` in memory (claimed, not ended).
    pub(crate) fn holds(&self, id: &str) -> bool {
        self.held.locked().contains(id)
    }

    /// One pass of the reconciler (each heartbeat): store what is still
    /// unwritten, release flights of runs that ended, resume queued runs
    /// this incarnation owns and nobody here holds.
    pub async fn reconcile(self: &Arc<Self>) {
        self.store_unwritten().await;
        self.release_ended_flights().await;
        self.resume_unheld().await;
    }

    async fn store_unwritten(&self) {
        let pending: Vec<(String, RunRecord, Option<Arc<str>>)> = self
            .unwritten
            .locked()
            .iter()
            .map(|(id, w)| (id.clone(), w.rec.clone(), w.owner.clone()))
            .collect();
        for (id, rec, owner) in pending {
            let done = match fence::scope(owner, self.store.put_run(&rec)).await {
                Ok(()) => {
                    tracing::info!(run_id = %id, "run record stored on a later attempt");
                    true
                }
                Err(StoreError::Fenced(why)) => {
                    tracing::error!(run_id = %id, %why, "fenced out: run record dropped");
                    true
                }
                Err(_) => false,
            };
            if done {
                let taken = self.unwritten.locked().remove(&id);
                // Its guard ends the single flight (and releases the row).
                drop(taken);
            }
        }
    }

    async fn release_ended_flights(&self) {
        let Ok(flights) = self.store.own_flights().await else {
            return;
        };
        for (plugin, target, run_id) in flights {
            if self.holds(&run_id) {
                continue;
            }
            match self.store.release_flight(&plugin, &target, &run_id).await {
                Ok(()) => {
                    tracing::info!(%run_id, %plugin, %target, "released the flight of a run that ended")
                }
                Err(e) => tracing::warn!(%run_id, error = %e, "flight still not released"),
            }
        }
    }

    async fn resume_unheld(self: &Arc<Self>) {
        let Ok(ids) = self.store.own_queued().await else {
            return;
        };
        let mut resume = Vec::new();
        for id in ids {
            if self.holds(&id) {
                continue;
            }
            let Ok(Some(rec)) = self.store.get_run(&id).await else {
                continue;
            };
            let age = (chrono::Utc::now() - rec.started_at)
                .to_std()
                .unwrap_or_default();
            if rec.status == RunStatus::Queued && age >= RESUME_AFTER && !self.holds(&id) {
                resume.push(rec);
            }
        }
        if !resume.is_empty() {
            tracing::warn!(
                runs = resume.len(),
                "resuming queued runs this replica owns but no longer held"
            );
            self.resume_queued(resume).await;
        }
    }
}

/// Unwritten records by run id.
pub(crate) type UnwrittenRuns = HashMap<String, Unwritten>;
