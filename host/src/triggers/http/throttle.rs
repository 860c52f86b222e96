//! Failed token checks per peer: a handful at once, then about one a
//! second. Unthrottled, the login form answered ~4,300 guesses a second, and
//! a token an operator chose may be a guessable phrase.
//!
//! A peer whose failures are spent is answered `429` before its token is
//! looked at, whether it is right or not: answering a right token would tell
//! a guesser which guess was right at full speed. Only failures spend, so a
//! client that keeps presenting a known token is never slowed, and one that
//! fails less than once a second (a stale token in a retrying sender) never
//! locks out the others behind the same address.

use crate::locks::MutexExt;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures a peer may make at once.
pub const BURST: f64 = 5.0;
/// Failures a peer is given back per second.
pub const PER_SECOND: f64 = 1.0;
/// A peer that fails faster than it is given back waits at most this long
/// however many failures it sent at once (many at the same instant all pass
/// the check before any is counted).
const MOST_OWED: f64 = 60.0;
/// Peers kept at most: beyond, a peer whose bucket has refilled is
/// forgotten, and when none has, a new peer is not counted (a guesser with
/// that many addresses is past what a per-address limit can stop).
const MAX_PEERS: usize = 65_536;

pub struct Throttle {
    peers: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    /// Failures still allowed at `at` (below zero: owed).
    left: f64,
    at: Instant,
}

impl Bucket {
    fn now(self, now: Instant) -> f64 {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * PER_SECOND;
        (self.left + refill).min(BURST)
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            peers: Mutex::new(HashMap::new()),
        }
    }
}

/// The address a peer is counted under: an IPv6 peer by its /64 (one
/// host's usual allocation, which it may spread its guesses over), an
/// IPv4-mapped one as IPv4.
fn key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Bucket>> {
        self.peers.locked()
    }

    /// `Err(wait)` when `peer` has no failure left: how long until it has
    /// one. A request without a peer address (only an in-process caller of
    /// the router) is not counted.
    pub fn check(&self, peer: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let Some(peer) = peer else { return Ok(()) };
        let peers = self.lock();
        match peers.get(&key(peer)) {
            Some(b) if b.now(now) < 1.0 => {
                Err(Duration::from_secs_f64((1.0 - b.now(now)) / PER_SECOND))
            }
            _ => Ok(()),
        }
    }

    /// Counts one failure of `peer`.
    pub fn failed(&self, peer: Option<IpAddr>, now: Instant) {
        let Some(peer) = peer else { return };
        let mut peers = self.lock();
        let k = key(peer);
        if !peers.contains_key(&k) && peers.len() >= MAX_PEERS {
            peers.retain(|_, b| b.now(now) < BURST);
            if peers.len() >= MAX_PEERS {
                return;
            }
        }
        let b = peers.entry(k).or_insert(Bucket {
            left: BURST,
            at: now,
        });
        *b = Bucket {
            left: (b.now(now) - 1.0).max(-MOST_OWED),
            at: now,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_fails_a_handful_of_times_then_once_a_second_and_others_are_untouched() {
        let t = Throttle::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(t.check(Some(a), t0).is_ok(), "failure {i} is allowed");
            t.failed(Some(a), t0);
        }
        let wait = t.check(Some(a), t0).expect_err("the sixth is refused");
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(t.check(Some(b), t0).is_ok(), "another peer is untouched");
        assert!(t.check(None, t0).is_ok(), "an in-process caller");

        let later = t0 + Duration::from_millis(1_000);
        assert!(t.check(Some(a), later).is_ok(), "one a second comes back");
        t.failed(Some(a), later);
        assert!(t.check(Some(a), later).is_err());
        let much_later = later + Duration::from_secs(10);
        for _ in 0..5 {
            assert!(t.check(Some(a), much_later).is_ok());
            t.failed(Some(a), much_later);
        }
        assert!(
            t.check(Some(a), much_later).is_err(),
            "refilled to the burst, no more"
        );
    }

    #[test]
    fn failures_sent_at_once_are_owed_and_an_ipv6_host_is_one_peer() {
        let t = Throttle::default();
        let t0 = Instant::now();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        // Twenty checked before any was counted, then counted.
        for _ in 0..20 {
            t.failed(Some(a), t0);
        }
        let wait = t.check(Some(a), t0).unwrap_err();
        assert!(wait >= Duration::from_secs(15), "{wait:?}");
        let same_64: IpAddr = "2001:db8::ffff:1234".parse().unwrap();
        assert!(t.check(Some(same_64), t0).is_err(), "same /64");
        let other_64: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        assert!(t.check(Some(other_64), t0).is_ok());
        let mapped: IpAddr = "::ffff:10.0.0.9".parse().unwrap();
        for _ in 0..5 {
            t.failed(Some(mapped), t0);
        }
        assert!(t.check(Some("10.0.0.9".parse().unwrap()), t0).is_err());
    }
}
