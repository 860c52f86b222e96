//! WAL checkpoints, mostly off the writer thread.
//!
//! With SQLite's automatic checkpoint the writer thread itself copied up to
//! 8,000 pages back into the database file (and fsynced it) inside a
//! commit, every few thousand runs: every run waiting on that commit
//! stalled for tens of milliseconds, which was the p99 of a load at a
//! quarter of the maximum rate as much as at half.
//!
//! Here the writer never checkpoints on commit (`wal_autocheckpoint = 0`).
//! This thread copies the WAL back with `PASSIVE` checkpoints, which take no
//! write lock, so commits go on meanwhile. But a passive checkpoint can only
//! copy what was committed before it began, and SQLite starts the WAL over
//! from its beginning only once a checkpoint has caught up with the last
//! commit: under steady load one on another thread never quite does, and
//! the WAL (and every page lookup in it) would grow without end. So when
//! this thread has copied all but the last moments' pages, it asks the
//! writer (`Handoff`) to copy the remainder itself between two batches: a
//! few pages, not thousands, after which the next transaction restarts the
//! WAL.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

use super::StoreError;

/// How often the WAL is copied back. Often, in small steps: the fsync that
/// ends a checkpoint stalls the writer's own WAL writes for as long as it
/// flushes (measured at a fixed 5,000 runs/s: every 2 s → writer pauses of
/// 70–100 ms and p99 83 ms; every 200 ms → p99 12–24 ms; every 50 ms →
/// p99 6 ms).
const EVERY: Duration = Duration::from_millis(50);
/// The WAL is left to grow to this many pages (4 KiB each) before it is
/// started over. Small, so each hand-off is short: measured at a fixed
/// 7,000 runs/s, two runs each (`REMEDY_LOAD_RATE=7000 scripts/load.sh`),
/// p99 was 16–18 ms at 4,000 pages (remainder 500), 14–15 ms at 2,000
/// (300), 10–11 ms at 1,000 (200), 9.3–9.8 ms at 500 (100) and 11 ms at 200
/// (50); 32,000 gave 53 ms. The maximum rate moved within its noise (±3 %).
const RESTART_AT: i64 = 500;
/// At most this many pages are left for the writer to copy itself.
const REMAINDER: i64 = 100;

/// Set by the checkpoint thread, taken by the writer: the WAL is copied
/// back all but the last few pages; copy those and let the WAL restart.
#[derive(Clone, Default)]
pub(super) struct Handoff(Arc<AtomicBool>);

impl Handoff {
    /// Called by the writer between batches.
    pub(super) fn finish(&self, conn: &Connection) {
        if self.0.swap(false, Ordering::AcqRel) {
            if let Err(e) = checkpoint(conn, "PASSIVE") {
                tracing::warn!(error = %e, "WAL checkpoint in the writer failed");
            }
        }
    }
}

/// Starts the checkpoint thread for the store at `path`; it ends once
/// `alive` is cleared (the writer thread has ended).
pub(super) fn spawn(
    path: &Path,
    alive: Arc<AtomicBool>,
    handoff: Handoff,
) -> Result<(), StoreError> {
    let conn = super::schema::connect(path)?;
    std::thread::Builder::new()
        .name("remedy-checkpoint".into())
        .spawn(move || {
            // Said once per run of failures, not 20 times a second.
            let mut failing = false;
            while alive.load(Ordering::Relaxed) {
                std::thread::sleep(EVERY);
                match step(&conn, &handoff) {
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "WAL checkpoint failed; retried every 50 ms");
                    }
                    Err(_) => {}
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!("WAL checkpoints work again");
                    }
                    Ok(()) => {}
                }
            }
            // The writer has stopped: fold the whole WAL back in.
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        })
        .map_err(|source| StoreError::Dir {
            path: "store checkpoint thread".into(),
            source,
        })?;
    Ok(())
}

/// Copies back what it can; once the WAL is long and nearly all copied,
/// hands the rest to the writer.
fn step(conn: &Connection, handoff: &Handoff) -> Result<(), StoreError> {
    // Each pass copies what the one before left, which is less each time.
    for _ in 0..4 {
        let (log, done) = checkpoint(conn, "PASSIVE")?;
        if log < RESTART_AT {
            return Ok(());
        }
        // Far past the mark (a writer this thread cannot keep up with), the
        // writer copies more itself: a longer pause, but a bounded WAL.
        if log - done <= REMAINDER || log >= 8 * RESTART_AT {
            handoff.0.store(true, Ordering::Release);
            return Ok(());
        }
    }
    Ok(())
}

/// Runs `PRAGMA wal_checkpoint(MODE)`: (pages in the WAL, pages copied
/// back). A passive checkpoint with nothing new to copy costs a lock and
/// a read of the WAL index.
fn checkpoint(conn: &Connection, mode: &str) -> Result<(i64, i64), StoreError> {
    let (_busy, log, done): (i64, i64, i64) =
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok((log, done))
}

#[cfg(test)]
mod tests {
    use crate::record::{PluginRef, RunRecord, RunStatus, Trigger};
    use crate::store::sqlite::SqliteStore;
    use crate::store::Store;

    /// The writer never checkpoints, so without this thread every page
    /// would stay in the WAL and the database file would not grow.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_checkpoint_thread_copies_the_wal_back_while_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let db = dir.path().join("remedy.db");
        let empty = std::fs::metadata(&db).unwrap().len();
        let plugin = PluginRef {
            name: "ckpt".into(),
            version: "1".into(),
            digest: "sha256:0".into(),
        };
        for i in 0..2_000 {
            let mut rec = RunRecord::begin(
                format!("run-{i}"),
                &plugin,
                Trigger::Manual { by: "test".into() },
                true,
                RunStatus::Running,
            );
            rec.logs = vec!["x".repeat(500)];
            store.put_run(&rec).await.unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let grown = loop {
            let now = std::fs::metadata(&db).unwrap().len();
            if now > empty + 1_000_000 || std::time::Instant::now() > deadline {
                break now;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert!(
            grown > empty + 1_000_000,
            "database file {empty} → {grown} bytes: the WAL was not checkpointed"
        );
        assert_eq!(
            store.get_run("run-1999").await.unwrap().unwrap().id,
            "run-1999"
        );
    }
}
