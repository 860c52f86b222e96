//! Pre-auth connection exhaustion (issue 28): sockets that never send a
//! byte were never timed out, and 1,100 of them at a 1,024 fd limit
//! stopped Alertmanager's posts and `/healthz` for over a minute.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt as _;

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_at_the_first_byte_deadline_and_the_service_answers_meanwhile(
) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[server]\ndata_dir = \"{}\"\nread_timeout_ms = 1000\n",
        dir.path().join("data").display()
    );
    // The server raises its soft open-files limit to the hard one: start
    // it under a soft limit lower than the sockets opened here.
    let server = start_limited(dir.path(), &cfg, 512);
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut silent = Vec::new();
    for _ in 0..700 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let opened = Instant::now();
    // The service answers while they are open.
    let t = Instant::now();
    let health = server.get("/healthz").await;
    assert_eq!(health["status"], "ok", "{health}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Each is closed by the server at the deadline: a read sees the end.
    for s in silent.iter_mut() {
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "still open: {r:?}");
    }
    assert!(
        opened.elapsed() < Duration::from_secs(5),
        "{:?}",
        opened.elapsed()
    );
    let log = std::fs::read_to_string(dir.path().join("remedy.log")).unwrap_or_default();
    assert!(
        log.matches("accept failed").count() <= 3,
        "accept errors are rate-limited: {log}"
    );
}

/// `start_logged` under a soft open-files limit of `soft`.
fn start_limited(dir: &std::path::Path, config: &str, soft: u64) -> Server {
    // SAFETY: lowers this test process's soft limit, which the child
    // inherits; the hard limit is untouched, so it can be raised again.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        let before = lim.rlim_cur;
        lim.rlim_cur = soft.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        let server = start_logged(dir, config, &[]);
        lim.rlim_cur = before;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        server
    }
}
