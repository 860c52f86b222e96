//! A consistent copy of the SQLite store, taken while a server writes it.
//!
//! `VACUUM INTO` reads one snapshot through an ordinary read transaction:
//! in WAL mode that blocks neither the writer nor the checkpointer, and the
//! copy holds every transaction committed before it began and none after.
//! The result is one self-contained database file (no `-wal` beside it).

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::super::StoreError;

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub runs: u64,
    pub alerts: u64,
    pub audit_events: u64,
    pub bytes: u64,
}

/// Copies `dir/remedy.db` to `out`, a new file readable by this user only,
/// and checks the copy (`PRAGMA integrity_check`) before answering.
pub fn backup(dir: &Path, out: &Path) -> Result<Backup, StoreError> {
    let db = dir.join("remedy.db");
    if !db.exists() {
        return Err(StoreError::Failed(format!(
            "no store at {} (server.data_dir)",
            db.display()
        )));
    }
    let out_text = out
        .to_str()
        .ok_or_else(|| StoreError::Failed(format!("{}: not a UTF-8 path", out.display())))?;
    // Created empty and 0600 first (VACUUM INTO fills an empty file):
    // records can hold query text and alert labels.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode_private()
        .open(out)
        .map_err(|source| StoreError::Dir {
            path: out.display().to_string(),
            source,
        })?;
    let copy = || -> Result<Backup, StoreError> {
        // Read-write flags, only read: a read-only connection cannot open a
        // WAL database whose `-shm` is missing (no server running).
        let src = Connection::open(&db)?;
        src.busy_timeout(std::time::Duration::from_secs(5))?;
        src.execute("VACUUM INTO ?1", [out_text])?;
        let dst = Connection::open_with_flags(out, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let check: String = dst.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(StoreError::Failed(format!("the copy is damaged: {check}")));
        }
        let count = |table: &str| -> Result<u64, StoreError> {
            Ok(
                dst.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
                    r.get::<_, i64>(0)
                })? as u64,
            )
        };
        Ok(Backup {
            runs: count("runs")?,
            alerts: count("alerts")?,
            audit_events: count("audit")?,
            bytes: std::fs::metadata(out).map(|m| m.len()).unwrap_or(0),
        })
    };
    copy().inspect_err(|_| {
        // Half a backup is worse than none: it looks like one.
        let _ = std::fs::remove_file(out);
    })
}

/// `mode(0o600)` where the platform has modes.
trait ModePrivate {
    fn mode_private(&mut self) -> &mut Self;
}

impl ModePrivate for std::fs::OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600);
        self
    }
}
