//! `[answers.deploy]`: the branch's commits (newest first) in a fixture's
//! world, what reverting each changes, and a rollback that puts its revert
//! on top (so a runbook that re-reads sees it); a recorder keeps the
//! commits and reverts it saw.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::backend::{Commit, DeployBackend, FileChange, Revert};
use crate::backends::{BackendError, BackendResult, Permit};
use crate::capabilities::world::{unconfigured, Recorder, World};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answers {
    #[serde(default = "main")]
    pub branch: String,
    /// The branch's commits, newest (its head) first.
    #[serde(default)]
    pub commits: Vec<FixtureCommit>,
    /// Commit id → the files reverting it changes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reverts: BTreeMap<String, Vec<FileChange>>,
    /// `backends.deploy.auto_rollback`.
    #[serde(default)]
    pub auto_rollback: bool,
}

fn main() -> String {
    "main".into()
}

/// A commit as a fixture gives it: its age (`minutes_ago`, so the case
/// reads the same on any day) or its time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureCommit {
    pub id: String,
    #[serde(default)]
    pub author: String,
    #[serde(default)]
    pub subject: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub merge: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minutes_ago: Option<f64>,
    /// Unix seconds, when `minutes_ago` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<i64>,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl FixtureCommit {
    fn commit(&self) -> Commit {
        let time = match (self.minutes_ago, self.time) {
            (Some(m), _) => now() - (m * 60.0) as i64,
            (None, Some(t)) => t,
            (None, None) => 0,
        };
        Commit {
            id: self.id.clone(),
            author: self.author.clone(),
            time,
            subject: self.subject.clone(),
            merge: self.merge,
        }
    }

    /// Kept as its age when recorded: a replay tomorrow sees the same.
    fn of(c: &Commit) -> FixtureCommit {
        FixtureCommit {
            id: c.id.clone(),
            author: c.author.clone(),
            subject: c.subject.clone(),
            merge: c.merge,
            minutes_ago: Some(((now() - c.time).max(0) as f64 / 60.0).round()),
            time: None,
        }
    }
}

fn deploy(w: &World) -> Option<Answers> {
    w.answers().deploy.clone()
}

impl World {
    fn no_deploy<T>(&self, call: String) -> BackendResult<T> {
        self.missing(call, "[answers.deploy] commits = […]")
    }
}

#[async_trait]
impl DeployBackend for World {
    fn repo(&self) -> &str {
        "fixture"
    }

    fn branch(&self) -> &str {
        "main"
    }

    fn auto(&self) -> bool {
        deploy(self).is_some_and(|d| d.auto_rollback)
    }

    async fn recent(&self, limit: usize) -> BackendResult<Vec<Commit>> {
        match deploy(self) {
            Some(d) => Ok(d
                .commits
                .iter()
                .take(limit)
                .map(FixtureCommit::commit)
                .collect()),
            None => self.no_deploy(format!("deploy.recent({limit})")),
        }
    }

    async fn prepare(&self, commit: &str) -> BackendResult<Revert> {
        let Some(d) = deploy(self) else {
            return self.no_deploy(format!("deploy.rollback({commit:?})"));
        };
        let Some(c) = d
            .commits
            .iter()
            .find(|c| !commit.is_empty() && c.id.starts_with(commit))
        else {
            return Err(BackendError::Invalid(format!(
                "no commit {commit} on {}",
                d.branch
            )));
        };
        let reverted = format!("This reverts commit {}", c.id);
        if d.commits.iter().any(|x| x.subject.contains(&reverted)) {
            return Err(BackendError::Refused(format!(
                "{commit} is already reverted"
            )));
        }
        Ok(Revert {
            commit: c.id.clone(),
            subject: c.subject.clone(),
            base: d.commits[0].id.clone(),
            files: d.reverts.get(&c.id).cloned().unwrap_or_default(),
            pushed: None,
        })
    }

    async fn rollback(
        &self,
        _: &Permit,
        commit: &str,
        base: &str,
        message: &str,
    ) -> BackendResult<Revert> {
        let mut revert = self.prepare(commit).await?;
        if revert.base != base {
            return Err(BackendError::Refused(format!(
                "main moved since the plan (at {})",
                revert.base
            )));
        }
        let id = hex::encode(sha2::Sha256::digest(message.as_bytes()))[..40].to_string();
        let mut a = self.answers();
        if let Some(d) = a.deploy.as_mut() {
            // The subject carries the marker the already-reverted check reads.
            let subject = format!(
                "{} / This reverts commit {}",
                message.lines().next().unwrap_or(""),
                revert.commit
            );
            d.commits.insert(
                0,
                FixtureCommit {
                    id: id.clone(),
                    author: "Remedy".into(),
                    subject,
                    minutes_ago: Some(0.0),
                    ..FixtureCommit::default()
                },
            );
        }
        revert.pushed = Some(id);
        Ok(revert)
    }
}

#[async_trait]
impl DeployBackend for Recorder {
    fn repo(&self) -> &str {
        self.real.deploy.as_ref().map_or("", |d| d.repo())
    }

    fn branch(&self) -> &str {
        self.real.deploy.as_ref().map_or("main", |d| d.branch())
    }

    fn auto(&self) -> bool {
        self.real.deploy.as_ref().is_some_and(|d| d.auto())
    }

    async fn recent(&self, limit: usize) -> BackendResult<Vec<Commit>> {
        let Some(real) = &self.real.deploy else {
            return unconfigured("deploy");
        };
        let r = real.recent(limit).await;
        if let Ok(commits) = &r {
            let mut a = self.answers();
            let d = a.deploy.get_or_insert_with(Default::default);
            d.branch = real.branch().to_string();
            d.auto_rollback = real.auto();
            if commits.len() > d.commits.len() {
                d.commits = commits.iter().map(FixtureCommit::of).collect();
            }
        }
        r
    }

    async fn prepare(&self, commit: &str) -> BackendResult<Revert> {
        let Some(real) = &self.real.deploy else {
            return unconfigured("deploy");
        };
        let r = real.prepare(commit).await;
        if let Ok(p) = &r {
            let mut a = self.answers();
            let d = a.deploy.get_or_insert_with(Default::default);
            d.reverts.insert(p.commit.clone(), p.files.clone());
        }
        r
    }

    async fn rollback(
        &self,
        permit: &Permit,
        commit: &str,
        base: &str,
        message: &str,
    ) -> BackendResult<Revert> {
        match &self.real.deploy {
            Some(real) => real.rollback(permit, commit, base, message).await,
            None => unconfigured("deploy"),
        }
    }
}

/// Commit ids look random but are printed in every log and chat.
impl crate::capabilities::PublicValues for Answers {
    fn public_values(&self) -> Vec<String> {
        self.commits.iter().map(|c| c.id.clone()).collect()
    }
}
