//! What the replicas sharing a store tell each other as it happens: the
//! live feed's events (runs, actions, approvals), so that `/v1/events`
//! and the console on any replica show the whole cluster's.
//!
//! A view, like the feed it serves: an event is never stored through it
//! and may be dropped (a full queue, a broken connection); the store and
//! the audit log stay the truth. A replica publishes only while some other
//! replica's feed is watched, so a cluster nobody watches pays nothing.

use std::sync::Arc;

use tokio::sync::broadcast;

/// Largest event (JSON) the bus carries; a larger one is sent shortened
/// by its publisher (PostgreSQL's NOTIFY takes 8,000 bytes at most).
pub const MAX_EVENT: usize = 6_000;

/// How long a peer's word that its feed is watched holds.
pub const WATCH_TTL: std::time::Duration = std::time::Duration::from_secs(6);

/// How often a replica whose feed is watched says so again.
pub const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

pub trait Bus: Send + Sync {
    /// Sends one event (JSON, at most [`MAX_EVENT`] bytes) to the other
    /// replicas, in the order published; never waits.
    fn publish(&self, event: String);
    /// The other replicas' events as they arrive, each with the name of
    /// the replica it came from.
    fn subscribe(&self) -> broadcast::Receiver<Arc<Remote>>;
    /// Tells the other replicas that a feed here is watched (for
    /// [`WATCH_TTL`]).
    fn watched_here(&self);
    /// Whether a feed of another replica is watched now.
    fn watched_elsewhere(&self) -> bool;
}

/// An event of another replica.
#[derive(Debug)]
pub struct Remote {
    /// The replica's name.
    pub from: String,
    /// The event as published.
    pub event: serde_json::Value,
}
