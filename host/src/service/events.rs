//! The live feed (`GET /v1/events`, the console, `remedy runs --follow`):
//! what happened in this process, as it happens. It is a view, not a
//! record: the store and the audit log stay the truth, and a subscriber
//! that falls behind is told how much it missed rather than slowing runs.

use std::sync::atomic::Ordering;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::record::RunRecord;

/// How many events a slow subscriber may fall behind before it misses some.
pub const BACKLOG: usize = 1024;

/// How many feeds may be open at once: each is a connection held open, and
/// a script that opens them in a loop must not exhaust the process.
pub const MAX_FEEDS: usize = 64;

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
    pub detail: serde_json::Value,
}

/// The feed's sending side, owned by the service.
pub struct Events {
    tx: broadcast::Sender<std::sync::Arc<Event>>,
    /// Numbering and sending are one step, so events arrive in `seq` order.
    seq: std::sync::Mutex<u64>,
    /// Set at shutdown: open feeds end, so they do not hold the drain.
    closed: tokio::sync::watch::Sender<bool>,
    /// Feeds open now (at most [`MAX_FEEDS`]).
    feeds: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// An open feed: its receiver, and its place among the [`MAX_FEEDS`].
pub struct Feed {
    pub rx: broadcast::Receiver<std::sync::Arc<Event>>,
    open: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(BACKLOG).0,
            seq: std::sync::Mutex::new(0),
            closed: tokio::sync::watch::channel(false).0,
            feeds: Default::default(),
        }
    }
}

impl Events {
    /// A feed for an HTTP client, unless [`MAX_FEEDS`] are open.
    pub fn feed(&self) -> Option<Feed> {
        let taken = self
            .feeds
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_FEEDS).then_some(n + 1)
            });
        taken.ok().map(|_| Feed {
            rx: self.tx.subscribe(),
            open: self.feeds.clone(),
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

    /// Publishes an event; `detail` is built only when someone listens.
    pub fn emit(
        &self,
        kind: &'static str,
        run_id: Option<&str>,
        plugin: Option<&str>,
        detail: impl FnOnce() -> serde_json::Value,
    ) {
        if !self.watched() {
            return;
        }
        let mut ev = Event {
            seq: 0,
            kind,
            at: super::now(),
            run_id: run_id.map(String::from),
            plugin: plugin.map(String::from),
            detail: detail(),
        };
        let mut seq = self.seq.lock().unwrap_or_else(|p| p.into_inner());
        *seq += 1;
        ev.seq = *seq;
        // No receiver left since `watched`: nothing to do.
        let _ = self.tx.send(std::sync::Arc::new(ev));
    }

    /// `run.finished`, then one `action` per action it took or simulated,
    /// and `approval.pending` when it ends as a plan.
    pub fn run_finished(&self, rec: &RunRecord) {
        if !self.watched() {
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
        let mut feed = events.feed().expect("a feed");
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
            .map(|_| events.feed().expect("a feed"))
            .collect();
        assert!(events.feed().is_none(), "one feed too many");
        drop(open.into_iter().next());
        assert!(
            events.feed().is_some(),
            "a closed feed's place is free again"
        );
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_told_how_much_it_missed() {
        let events = Events::default();
        let mut feed = events.feed().expect("a feed");
        for _ in 0..BACKLOG + 10 {
            events.emit("action", None, None, || serde_json::Value::Null);
        }
        match feed.rx.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("expected a lag of 10, got {other:?}"),
        }
        assert!(feed.rx.try_recv().is_ok(), "it goes on after the lag");
    }
}
