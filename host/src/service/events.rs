//! The live feed (`GET /v1/events`, the console, `remedy runs --follow`):
//! what happened in this process — and, on a shared store, in every
//! replica (`store::bus`) — as it happens. It is a view, not a record: the
//! store and the audit log stay the truth, and a subscriber that falls
//! behind is told how much it missed rather than slowing runs.

use crate::locks::MutexExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::record::RunRecord;
use crate::store::bus::{Bus, Remote, MAX_EVENT, WATCH_EVERY};

/// How many events a slow subscriber may fall behind before it misses some.
pub const BACKLOG: usize = 1024;

/// How many feeds may be open at once: each is a connection held open, and
/// a script that opens them in a loop must not exhaust the process.
pub const MAX_FEEDS: usize = 64;

/// How many of those one caller (a token, or a peer address on an API
/// without tokens) may hold: one script cannot take the feeds of the rest.
pub const MAX_FEEDS_PER_CALLER: usize = MAX_FEEDS / 4;

/// How often an idle feed sends a comment: a client gone without closing
/// its connection is noticed when the writes stop being acknowledged
/// (see `triggers::http::dead_peers`), and its place is freed.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Why no feed was opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{MAX_FEEDS} event feeds are open already; close one (or poll /v1/runs)")]
    Full,
    #[error("{caller} has {MAX_FEEDS_PER_CALLER} event feeds open already, the most one caller may hold (of {MAX_FEEDS} in all); close one (or poll /v1/runs)")]
    CallerFull { caller: String },
}

/// One thing that happened.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Event {
    /// Increases by one per event in this process (the SSE `id`).
    pub seq: u64,
    /// `run.started`, `run.finished`, `action`, `approval.pending`,
    /// `approval.decided`, `alert.received` or `pause.changed`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// The replica it happened on (on a store several replicas share).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    pub detail: serde_json::Value,
}

/// The kinds of event there are, as [`Event::kind`] names them.
const KINDS: [&str; 7] = [
    "run.started",
    "run.finished",
    "action",
    "approval.pending",
    "approval.decided",
    "alert.received",
    "pause.changed",
];

/// The feed's sending side, owned by the service.
pub struct Events {
    tx: broadcast::Sender<Arc<Event>>,
    /// Numbering and sending are one step, so events arrive in `seq` order.
    seq: Arc<Mutex<u64>>,
    /// The other replicas, on a shared store; with this replica's name.
    bus: Option<(Arc<dyn Bus>, String)>,
    /// Set at shutdown: open feeds end, so they do not hold the drain.
    closed: tokio::sync::watch::Sender<bool>,
    /// Feeds open now, in all and per caller.
    feeds: Arc<Mutex<Open>>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_caller: HashMap<String, usize>,
}

/// An open feed: its receiver, and its place among the [`MAX_FEEDS`] and
/// its caller's [`MAX_FEEDS_PER_CALLER`].
pub struct Feed {
    pub rx: broadcast::Receiver<Arc<Event>>,
    open: Arc<Mutex<Open>>,
    caller: String,
}

impl Drop for Feed {
    fn drop(&mut self) {
        let mut open = self.open.locked();
        open.total -= 1;
        if let Some(n) = open.by_caller.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                open.by_caller.remove(&self.caller);
            }
        }
    }
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(BACKLOG).0,
            seq: Arc::default(),
            bus: None,
            closed: tokio::sync::watch::channel(false).0,
            feeds: Default::default(),
        }
    }
}

impl Events {
    /// The feed of replica `me` on a store shared through `bus`: it shows
    /// the other replicas' events too, and publishes its own while a feed
    /// elsewhere is watched.
    pub fn shared(bus: Arc<dyn Bus>, me: String) -> Events {
        let events = Events {
            bus: Some((bus.clone(), me)),
            ..Events::default()
        };
        tokio::spawn(relay(
            bus.subscribe(),
            events.tx.clone(),
            events.seq.clone(),
        ));
        tokio::spawn(announce(Arc::downgrade(&bus), events.tx.clone()));
        events
    }

    /// A feed for `caller` (how the caller is told apart: a token's name,
    /// a peer address), unless [`MAX_FEEDS`] are open or the caller holds
    /// [`MAX_FEEDS_PER_CALLER`].
    pub fn feed(&self, caller: &str) -> Result<Feed, Refused> {
        let mut open = self.feeds.locked();
        if open.by_caller.get(caller).copied().unwrap_or(0) >= MAX_FEEDS_PER_CALLER {
            return Err(Refused::CallerFull {
                caller: caller.to_string(),
            });
        }
        if open.total >= MAX_FEEDS {
            return Err(Refused::Full);
        }
        open.total += 1;
        *open.by_caller.entry(caller.to_string()).or_insert(0) += 1;
        if let Some((bus, _)) = &self.bus {
            bus.watched_here();
        }
        Ok(Feed {
            rx: self.tx.subscribe(),
            open: self.feeds.clone(),
            caller: caller.to_string(),
        })
    }

    /// Ends every open feed (the service is stopping).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Completes once the feed is closed.
    pub fn closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closed.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    /// Whether anyone listens: the hot path builds no event for nobody.
    pub fn watched(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Whether a feed of another replica sharing the store is watched.
    fn watched_elsewhere(&self) -> bool {
        self.bus
            .as_ref()
            .is_some_and(|(bus, _)| bus.watched_elsewhere())
    }

    /// Publishes an event; `detail` is built only when someone listens.
    pub fn emit(
        &self,
        kind: &'static str,
        run_id: Option<&str>,
        plugin: Option<&str>,
        detail: impl FnOnce() -> serde_json::Value,
    ) {
        let here = self.watched();
        let elsewhere = self.bus.as_ref().filter(|(bus, _)| bus.watched_elsewhere());
        if !here && elsewhere.is_none() {
            return;
        }
        let ev = Event {
            seq: 0,
            kind,
            at: super::now(),
            run_id: run_id.map(String::from),
            plugin: plugin.map(String::from),
            replica: self.bus.as_ref().map(|(_, me)| me.clone()),
            detail: detail(),
        };
        if let Some((bus, _)) = elsewhere {
            bus.publish(for_bus(&ev));
        }
        if here {
            send(&self.tx, &self.seq, ev);
        }
    }

    /// `run.finished`, then one `action` per action it took or simulated,
    /// and `approval.pending` when it ends as a plan.
    pub fn run_finished(&self, rec: &RunRecord) {
        if !self.watched() && !self.watched_elsewhere() {
            return;
        }
        self.emit("run.finished", Some(&rec.id), Some(&rec.plugin), || {
            serde_json::json!({
                "status": rec.status.as_str(),
                "dry_run": rec.dry_run,
                "mode": rec.mode,
                "duration_ms": rec.duration_ms,
                "error": rec.error,
                "findings": rec.detection.as_ref().map_or(0, |d| d.findings.len()),
                "actions": rec.actions.len(),
            })
        });
        for a in &rec.actions {
            self.emit("action", Some(&rec.id), Some(&rec.plugin), || {
                serde_json::to_value(a).unwrap_or_default()
            });
        }
        if let Some(a) = rec
            .approval
            .as_ref()
            .filter(|_| rec.status == crate::record::RunStatus::PendingApproval)
        {
            self.emit(
                "approval.pending",
                Some(&rec.id),
                Some(&rec.plugin),
                || serde_json::json!({"plan": a.plan, "expires_at": a.expires_at}),
            );
        }
    }
}

/// Numbers `ev` and sends it to this process's feeds.
fn send(tx: &broadcast::Sender<Arc<Event>>, seq: &Mutex<u64>, mut ev: Event) {
    let mut seq = seq.locked();
    *seq += 1;
    ev.seq = *seq;
    // No receiver left: nothing to do.
    let _ = tx.send(Arc::new(ev));
}

/// `ev` as the bus carries it: shortened when its detail is too large
/// (a plan with many steps), which the event then says.
fn for_bus(ev: &Event) -> String {
    let json = serde_json::to_string(ev).unwrap_or_default();
    if json.len() <= MAX_EVENT {
        return json;
    }
    let short = Event {
        detail: serde_json::json!({
            "truncated": true,
            "why": "too large to share between replicas: read the run (GET /v1/runs/{id}) for all of it",
        }),
        ..ev.clone()
    };
    serde_json::to_string(&short).unwrap_or_default()
}

/// An event of another replica, as this process's feeds get it.
fn remote(r: &Remote) -> Option<Event> {
    let field = |k: &str| r.event.get(k).and_then(|v| v.as_str()).map(String::from);
    let kind = field("type")?;
    Some(Event {
        seq: 0,
        kind: KINDS.iter().find(|k| **k == kind)?,
        at: field("at")?,
        run_id: field("run_id"),
        plugin: field("plugin"),
        replica: Some(r.from.clone()),
        detail: r.event.get("detail").cloned().unwrap_or_default(),
    })
}

/// Hands the other replicas' events to this process's feeds, in the order
/// they arrive (each replica's in the order it emitted them).
async fn relay(
    mut rx: broadcast::Receiver<Arc<Remote>>,
    tx: broadcast::Sender<Arc<Event>>,
    seq: Arc<Mutex<u64>>,
) {
    loop {
        match rx.recv().await {
            Ok(r) => {
                if tx.receiver_count() > 0 {
                    if let Some(ev) = remote(&r) {
                        send(&tx, &seq, ev);
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "the live feed fell behind the other replicas' events"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// While a feed here is open, tells the other replicas so, before what
/// they were told runs out.
async fn announce(bus: std::sync::Weak<dyn Bus>, tx: broadcast::Sender<Arc<Event>>) {
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let Some(bus) = bus.upgrade() else { return };
        if tx.receiver_count() > 0 {
            bus.watched_here();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_built_without_a_subscriber_and_a_subscriber_sees_events_in_order() {
        let events = Events::default();
        let mut built = false;
        events.emit("pause.changed", None, None, || {
            built = true;
            serde_json::Value::Null
        });
        assert!(!built, "no subscriber: the detail must not be built");
        let mut feed = events.feed("t").expect("a feed");
        events.emit(
            "pause.changed",
            None,
            None,
            || serde_json::json!({"paused": true}),
        );
        events.emit("alert.received", None, None, || serde_json::json!({"n": 1}));
        let a = feed.rx.try_recv().expect("first event");
        let b = feed.rx.try_recv().expect("second event");
        assert_eq!((a.kind, b.kind), ("pause.changed", "alert.received"));
        assert_eq!(b.seq, a.seq + 1);
        assert_eq!(a.detail["paused"], true);
    }

    #[test]
    fn at_most_max_feeds_are_open_and_a_closed_one_frees_its_place() {
        let events = Events::default();
        let open: Vec<Feed> = (0..MAX_FEEDS)
            .map(|i| {
                let caller = format!("caller-{}", i / MAX_FEEDS_PER_CALLER);
                events.feed(&caller).expect("a feed")
            })
            .collect();
        assert_eq!(
            events.feed("someone-else").err(),
            Some(Refused::Full),
            "one feed too many"
        );
        drop(open.into_iter().next());
        assert!(
            events.feed("someone-else").is_ok(),
            "a closed feed's place is free again"
        );
    }

    #[test]
    fn one_caller_holds_at_most_its_share_and_the_others_still_get_feeds() {
        let events = Events::default();
        let mine: Vec<Feed> = (0..MAX_FEEDS_PER_CALLER)
            .map(|_| events.feed("token `watcher`").expect("a feed"))
            .collect();
        let refused = events
            .feed("token `watcher`")
            .err()
            .expect("over the share");
        assert_eq!(
            refused,
            Refused::CallerFull {
                caller: "token `watcher`".into()
            }
        );
        assert!(
            refused
                .to_string()
                .contains(&format!("{MAX_FEEDS_PER_CALLER} event feeds open already")),
            "{refused}"
        );
        assert!(events.feed("token `root`").is_ok(), "another caller");
        drop(mine);
        assert!(events.feed("token `watcher`").is_ok(), "places come back");
        const { assert!(MAX_FEEDS_PER_CALLER >= 1 && MAX_FEEDS_PER_CALLER < MAX_FEEDS) };
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_told_how_much_it_missed() {
        let events = Events::default();
        let mut feed = events.feed("t").expect("a feed");
        for _ in 0..BACKLOG + 10 {
            events.emit("action", None, None, || serde_json::Value::Null);
        }
        match feed.rx.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("expected a lag of 10, got {other:?}"),
        }
        assert!(feed.rx.try_recv().is_ok(), "it goes on after the lag");
    }

    #[test]
    fn an_event_too_large_for_the_bus_is_shortened_and_says_so() {
        let ev = |detail| Event {
            seq: 7,
            kind: "approval.pending",
            at: "2026-12-07T00:00:00Z".into(),
            run_id: Some("r1".into()),
            plugin: Some("p".into()),
            replica: Some("a".into()),
            detail,
        };
        let small = for_bus(&ev(serde_json::json!({"plan": "restart"})));
        assert!(small.contains("restart"), "{small}");
        let big = for_bus(&ev(serde_json::json!({"plan": "x".repeat(3 * MAX_EVENT)})));
        assert!(big.len() <= MAX_EVENT, "{}", big.len());
        let back: serde_json::Value = serde_json::from_str(&big).unwrap();
        assert_eq!(back["detail"]["truncated"], true);
        assert_eq!(back["run_id"], "r1", "what it was about is kept");
    }

    #[test]
    fn another_replica_s_event_keeps_its_kind_and_names_its_replica_and_unknown_kinds_are_dropped()
    {
        let remote_of = |event| Remote {
            from: "b".into(),
            event,
        };
        let ev = remote(&remote_of(serde_json::json!({
            "seq": 3, "type": "run.finished", "at": "2026-12-07T00:00:00Z",
            "run_id": "r9", "plugin": "p", "replica": "b", "detail": {"status": "succeeded"}
        })))
        .expect("a known kind");
        assert_eq!(
            (ev.kind, ev.replica.as_deref()),
            ("run.finished", Some("b"))
        );
        assert_eq!(ev.detail["status"], "succeeded");
        assert!(remote(&remote_of(
            serde_json::json!({"type": "made.up", "at": "x"})
        ))
        .is_none());
        assert!(remote(&remote_of(serde_json::json!({"at": "x"}))).is_none());
    }
}
