//! Connections whose peer vanished without closing them (a laptop closed,
//! a VPN dropped, a NAT that forgot the flow): the kernel is told to give
//! up on them soon, so what they hold (an event feed's place, a connection
//! slot) comes back in under a minute rather than the ~15 minutes of
//! default retransmissions.

use std::time::Duration;

/// Quiet this long, a connection is probed; unanswered probes, this far
/// apart, `PROBES` times, close it.
pub const IDLE: Duration = Duration::from_secs(30);
pub const INTERVAL: Duration = Duration::from_secs(10);
pub const PROBES: u32 = 3;

/// Data written (an event feed's keep-alive comment, every 15 s) and not
/// acknowledged for this long closes the connection.
pub const UNACKED: Duration = Duration::from_secs(30);

/// TCP keep-alive and the unacknowledged-data bound on an accepted socket.
/// Best effort: a platform without an option keeps its default.
pub fn watch(io: &tokio::net::TcpStream) {
    let sock = socket2::SockRef::from(io);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(IDLE)
        .with_interval(INTERVAL)
        .with_retries(PROBES);
    if let Err(e) = sock.set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot set TCP keep-alive");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = sock.set_tcp_user_timeout(Some(UNACKED)) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_are_probed_and_give_up_on_unacknowledged_data() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (io, _) = listener.accept().await.unwrap();
        watch(&io);
        let sock = socket2::SockRef::from(&io);
        assert!(sock.keepalive().unwrap(), "SO_KEEPALIVE");
        assert_eq!(sock.tcp_keepalive_time().unwrap(), IDLE);
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), INTERVAL);
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), PROBES);
        #[cfg(target_os = "linux")]
        assert_eq!(sock.tcp_user_timeout().unwrap(), Some(UNACKED));
    }
}
