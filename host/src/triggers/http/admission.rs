//! Which connections the listener takes, before any byte of HTTP: a cap on
//! open connections in all and per peer address, a deadline for the first
//! byte (hyper's header timeout starts only at the first byte, so sockets
//! that never send one were held forever), and a rate-limited log of
//! failed accepts. 1,100 silent sockets once stopped Alertmanager's posts
//! and `/healthz` for over a minute and wrote 1,384 `accept failed` lines.

use crate::locks::MutexExt;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Open connections in all, whatever the file-descriptor limit allows.
pub const MAX_CONNECTIONS: usize = 8192;
/// Open connections from one peer address. Generous: a load balancer or
/// an Alertmanager cluster is one or a few peers.
pub const MAX_PER_PEER: usize = 1024;

/// Counts of open connections, in all and per peer.
#[derive(Clone)]
pub struct Admission {
    inner: Arc<Mutex<Counts>>,
    max_total: usize,
    max_per_peer: usize,
}

#[derive(Default)]
struct Counts {
    total: usize,
    peers: HashMap<IpAddr, usize>,
}

/// One admitted connection; its slot is given back when it drops.
pub struct Admitted {
    admission: Admission,
    peer: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut c = self.admission.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.peers.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                c.peers.remove(&self.peer);
            }
        }
    }
}

impl Admission {
    pub fn new(max_total: usize, max_per_peer: usize) -> Admission {
        Admission {
            inner: Arc::default(),
            max_total,
            max_per_peer,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.inner.locked()
    }

    /// A slot for a connection from `peer`, or `None` when it is over a cap
    /// (the connection is closed at once).
    pub fn admit(&self, peer: IpAddr) -> Option<Admitted> {
        let mut c = self.lock();
        let from_peer = c.peers.get(&peer).copied().unwrap_or(0);
        if c.total >= self.max_total || from_peer >= self.max_per_peer {
            return None;
        }
        c.total += 1;
        *c.peers.entry(peer).or_insert(0) += 1;
        Some(Admitted {
            admission: self.clone(),
            peer,
        })
    }
}

/// Waits at most `deadline` for the connection's first byte; `false` when
/// none came (the caller closes it).
pub async fn first_byte(io: &tokio::net::TcpStream, deadline: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(deadline, io.peek(&mut byte)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// Logs failed accepts (out of file descriptors and the like) at most once
/// a second, with how many it did not log.
#[derive(Default)]
pub struct AcceptErrors {
    last: Option<Instant>,
    quiet: u64,
}

impl AcceptErrors {
    pub fn failed(&mut self, e: &std::io::Error) {
        if let Some(suppressed) = self.due() {
            tracing::warn!(error = %e, suppressed, "accept failed");
        }
    }

    pub fn refused(&mut self, peer: IpAddr) {
        if let Some(suppressed) = self.due() {
            tracing::warn!(%peer, suppressed, "connection refused: over the connection cap (in all or for this peer)");
        }
    }

    /// `Some(lines not logged since the last)` when a line may be logged
    /// now (once a second).
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.quiet += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.quiet))
    }
}

/// Raises the soft limit of open files to the hard limit, so that the cap
/// above is what refuses connections, not `EMFILE`.
pub fn raise_nofile_limit() {
    // SAFETY: getrlimit/setrlimit read and write only the struct passed.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let before = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                tracing::info!(
                    from = before,
                    to = lim.rlim_max,
                    "raised the open-files limit"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_in_all_and_per_peer_and_slots_come_back() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let adm = Admission::new(3, 2);
        let a1 = adm.admit(a).unwrap();
        let _a2 = adm.admit(a).unwrap();
        assert!(adm.admit(a).is_none(), "per peer");
        let _b1 = adm.admit(b).unwrap();
        assert!(adm.admit(b).is_none(), "in all");
        drop(a1);
        assert!(adm.admit(b).is_some(), "a slot came back");
    }
}
