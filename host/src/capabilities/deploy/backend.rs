//! Where the deployed branch lives: its head and recent commits (read),
//! a revert prepared without pushing (a dry run's plan), and a revert
//! pushed (the rollback, behind the gate's permit).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::backends::{BackendResult, Permit};

/// Most commits `recent` answers.
pub const MAX_RECENT: usize = 50;

/// One commit of the deployed branch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commit {
    pub id: String,
    pub author: String,
    /// Commit time, Unix seconds.
    pub time: i64,
    pub subject: String,
    #[serde(default)]
    pub merge: bool,
}

/// A file a revert changes, with its line counts (binary files count 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileChange {
    pub path: String,
    pub added: u32,
    pub removed: u32,
}

/// A revert of `commit` on the branch at `base`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revert {
    /// The reverted commit, in full.
    pub commit: String,
    /// Its subject.
    pub subject: String,
    /// The branch's head it applies to, in full.
    pub base: String,
    pub files: Vec<FileChange>,
    /// The revert commit pushed; `None` while only prepared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<String>,
}

#[async_trait]
pub trait DeployBackend: Send + Sync {
    /// The repository as records name it: its last path segment, never
    /// its URL (which may carry a user).
    fn repo(&self) -> &str;

    fn branch(&self) -> &str;

    /// Automatic rollbacks allowed (`backends.deploy.auto_rollback`):
    /// without it a rollback runs only in an approved plan.
    fn auto(&self) -> bool;

    /// The last `limit` commits of the branch, newest first.
    async fn recent(&self, limit: usize) -> BackendResult<Vec<Commit>>;

    /// The revert of `commit` on the branch as it is now, without pushing:
    /// `Invalid` when the commit is not on the branch, `Refused` (naming
    /// why) when it is already reverted, would change nothing, or
    /// conflicts.
    async fn prepare(&self, commit: &str) -> BackendResult<Revert>;

    /// Reverts `commit` on the branch, which must still be at `base`, with
    /// `message`, and pushes. `Refused` when nothing was pushed (the
    /// branch moved, the revert conflicts, the remote rejected the push and
    /// re-reading it shows the revert is not there); `Unknown` only when
    /// the push's fate cannot be read back.
    async fn rollback(
        &self,
        permit: &Permit,
        commit: &str,
        base: &str,
        message: &str,
    ) -> BackendResult<Revert>;
}
