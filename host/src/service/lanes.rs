//! Run slots handed out by urgency. In an alert storm thousands of runs wait
//! for a slot; a critical alert must not wait behind them. When a slot
//! frees, the waiting run of the most urgent lane gets it (first come,
//! first served within a lane).

use crate::locks::MutexExt;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::escalation::Priority;
use crate::record::Trigger;

/// How urgent a run is: lower runs first. The alert's own urgency
/// (`severity=critical`, `priority=P0`…`P3`) ranks before the plugin's
/// configured `priority`; runs not started by an alert rank by the plugin's.
pub type Rank = (u8, u8);

pub fn rank(trigger: &Trigger, plugin_priority: Priority) -> Rank {
    let of = |p: Priority| p as u8;
    let alert = trigger.alert_priority().map_or(of(Priority::P3) + 1, of);
    (alert, of(plugin_priority))
}

/// A counting semaphore whose waiters are served by [`Rank`].
pub struct Lanes {
    inner: Mutex<Inner>,
}

struct Inner {
    free: usize,
    /// (rank, arrival) of each waiter, most urgent and oldest first.
    waiting: BinaryHeap<Reverse<(Rank, u64)>>,
    senders: std::collections::HashMap<u64, oneshot::Sender<LanePermit>>,
    arrivals: u64,
}

/// A slot; given back (to the most urgent waiter) when dropped.
pub struct LanePermit {
    lanes: Arc<Lanes>,
}

impl Drop for LanePermit {
    fn drop(&mut self) {
        self.lanes.clone().release();
    }
}

impl Lanes {
    pub fn new(slots: usize) -> Arc<Lanes> {
        Arc::new(Lanes {
            inner: Mutex::new(Inner {
                free: slots,
                waiting: BinaryHeap::new(),
                senders: Default::default(),
                arrivals: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.locked()
    }

    /// A slot now, if one is free and nobody waits for one.
    pub fn try_acquire(self: &Arc<Self>) -> Option<LanePermit> {
        let mut i = self.lock();
        if i.free > 0 && i.waiting.is_empty() {
            i.free -= 1;
            return Some(LanePermit {
                lanes: self.clone(),
            });
        }
        None
    }

    /// Waits for a slot in lane `rank`.
    pub async fn acquire(self: &Arc<Self>, rank: Rank) -> LanePermit {
        let rx = {
            let mut i = self.lock();
            if i.free > 0 && i.waiting.is_empty() {
                i.free -= 1;
                return LanePermit {
                    lanes: self.clone(),
                };
            }
            i.arrivals += 1;
            let seq = i.arrivals;
            let (tx, rx) = oneshot::channel();
            i.waiting.push(Reverse((rank, seq)));
            i.senders.insert(seq, tx);
            rx
        };
        // The sender lives in `senders` until a slot is handed over, and
        // `self` keeps the lanes alive: the channel cannot close unanswered.
        rx.await
            .unwrap_or_else(|_| unreachable!("a waiting slot's sender is kept until answered"))
    }

    /// A slot came back: to the most urgent waiter still waiting, else free.
    /// The hand-over happens outside the lock, since a waiter that gave up
    /// returns the slot (dropping it calls this again).
    fn release(self: Arc<Self>) {
        let next = {
            let mut i = self.lock();
            loop {
                match i.waiting.pop() {
                    Some(Reverse((_, seq))) => match i.senders.remove(&seq) {
                        Some(tx) if !tx.is_closed() => break Some(tx),
                        _ => continue,
                    },
                    None => {
                        i.free += 1;
                        break None;
                    }
                }
            }
        };
        if let Some(tx) = next {
            // A waiter that gave up after the check drops the permit it is
            // sent, which brings the slot back here.
            let _ = tx.send(LanePermit { lanes: self });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_most_urgent_waiter_then_the_oldest() {
        let lanes = Lanes::new(1);
        let held = lanes.try_acquire().expect("one slot");
        assert!(lanes.try_acquire().is_none());
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, rank) in [
            ("warning-1", (5, 2)),
            ("warning-2", (5, 2)),
            ("critical", (0, 2)),
            ("p1", (1, 2)),
        ] {
            let (lanes, order) = (lanes.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = lanes.acquire(rank).await;
                order.lock().unwrap().push(name);
            }));
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["critical", "p1", "warning-1", "warning-2"]
        );
        // Every slot came back.
        assert!(lanes.try_acquire().is_some());
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_does_not_take_a_slot_with_it() {
        let lanes = Lanes::new(1);
        let held = lanes.try_acquire().unwrap();
        let gave_up =
            tokio::time::timeout(std::time::Duration::from_millis(10), lanes.acquire((0, 0))).await;
        assert!(gave_up.is_err());
        drop(held);
        assert!(lanes.try_acquire().is_some(), "the slot is free again");
    }

    #[test]
    fn the_alert_ranks_before_the_plugin() {
        let alert = |labels: &[(&str, &str)]| Trigger::Alert {
            alert: crate::record::AlertInfo {
                name: "A".into(),
                firing: true,
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                annotations: Default::default(),
                starts_at: "2026-01-01T00:00:00Z".into(),
                fingerprint: "f".into(),
            },
        };
        let critical = rank(&alert(&[("severity", "critical")]), Priority::P3);
        let p1 = rank(&alert(&[("priority", "P1")]), Priority::P3);
        let warning_of_p0_plugin = rank(&alert(&[("severity", "warning")]), Priority::P0);
        let manual = rank(&Trigger::Manual { by: "x".into() }, Priority::P2);
        assert!(critical < p1 && p1 < warning_of_p0_plugin && warning_of_p0_plugin < manual);
    }
}
