//! What replicas sharing one store agree on through it: who is alive (a
//! heartbeat per replica), who holds a lease (the scheduler), which run of
//! a (plugin, target) is in flight, which schedule tick was run, and who
//! takes over the work of a replica that died.
//!
//! The embedded SQLite store serves one process, so its answers are the
//! trivial ones (see the defaults of [`super::Store`]).

use std::time::Duration;

use serde::Serialize;

use crate::record::RunRecord;

/// This replica, as it registers itself in a shared store.
#[derive(Debug, Clone)]
pub struct Replica {
    /// New for every process start, so a restart is a new replica and its
    /// previous incarnation is taken over like any other that died.
    pub id: String,
    /// What operators call it (`server.replica`, else host name and port).
    pub name: String,
    /// How long its heartbeat may be silent before survivors take over.
    pub lease: Duration,
}

impl Replica {
    pub fn new(name: String, lease: Duration) -> Replica {
        Replica {
            id: uuid::Uuid::new_v4().to_string(),
            name,
            lease,
        }
    }
}

/// A replica as the store last saw it (`GET /v1/cluster`).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ReplicaRow {
    pub id: String,
    pub name: String,
    pub version: String,
    pub started_at: String,
    pub heartbeat_at: String,
    pub lease_ms: u64,
    /// Its heartbeat is younger than its lease.
    pub alive: bool,
}

/// Work that stopped replicas left behind, now this replica's. Their
/// `running` runs and unsettled intents are already marked `interrupted`.
#[derive(Debug, Default)]
pub struct Orphans {
    /// Runs they stored `queued` and never started: to be resumed here.
    pub queued: Vec<RunRecord>,
    /// Live runs that acted and whose verification they owned.
    pub unverified: Vec<RunRecord>,
    /// The replicas taken over (names).
    pub replicas: Vec<String>,
}
