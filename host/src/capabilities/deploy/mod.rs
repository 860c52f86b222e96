//! `deploy`: the deployed branch of a git repository. `recent` reads its
//! last commits; `rollback` reverts one through the gate
//! (`deploy.rollback`), on the branch's head as it was when the plan was
//! made — the action's target names that head, so an approval holds for
//! that head only. By default a rollback runs only as part of an approved
//! plan, even when the plugin is `auto`; `backends.deploy.auto_rollback`
//! lets `auto` roll back on its own.

use crate::locks::MutexExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::action::ActionKind;
use crate::bindings::remedy::plugin::deploy::{
    Commit as WitCommit, FileChange as WitFileChange, Host, RollbackResult,
};
use crate::bindings::types::Error;
use crate::config::BackendsConfig;
use crate::gate::{Action, ActionTarget};
use crate::grants::{Capability, Scope};
use crate::guardrails::Stage;

use super::{HostCtx, Wiring};

pub mod backend;
pub mod fixture;
pub mod git;
#[cfg(test)]
mod tests;

use backend::{DeployBackend, Revert};

const DEPLOY: Wiring = Wiring {
    cap: Capability::Deploy,
    name: "the git remote",
    key: "deploy",
    env: "no environment variable ([backends.deploy] repo = \"…\")",
};

/// The branch `[backends.deploy]` configures, if any.
pub fn from_config(
    cfg: &BackendsConfig,
    _timeout: Duration,
) -> anyhow::Result<Option<Arc<dyn DeployBackend>>> {
    let Some(d) = &cfg.deploy else {
        return Ok(None);
    };
    let basic = match &d.token_env {
        None => None,
        Some(var) => {
            let token = crate::backends::env_value(var).ok_or_else(|| {
                anyhow::anyhow!("backends.deploy.token_env: environment variable {var} is not set")
            })?;
            let user = d
                .username
                .clone()
                .unwrap_or_else(|| "x-access-token".into());
            Some((user, token))
        }
    };
    let credentials = git::Credentials {
        basic,
        ssh_key: d.ssh_key.clone(),
        known_hosts: d.known_hosts.clone(),
    };
    let author = (
        d.author_name.clone().unwrap_or_else(|| "Remedy".into()),
        d.author_email
            .clone()
            .unwrap_or_else(|| "remedy@localhost".into()),
    );
    let timeout = d.timeout_ms.map_or(Duration::from_secs(20), |t| t.get());
    Ok(Some(Arc::new(git::GitRemote::new(
        &d.repo,
        d.branch.as_deref().unwrap_or("main"),
        author,
        credentials,
        timeout,
        d.auto_rollback.unwrap_or(false),
    ))))
}

/// A revert of `commit` on `repo`'s `branch` at `base`: what a plan
/// approves, so a plan made at one head never pushes onto another.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackTarget {
    pub repo: String,
    pub branch: String,
    pub commit: String,
    pub base: String,
}

/// The first 12 characters of a commit id, as humans quote it.
fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

impl RollbackTarget {
    /// The label without the head: which rollback, whatever the head.
    fn which(&self) -> String {
        format!(
            "deploy:{}/{} revert {}",
            self.repo,
            self.branch,
            short(&self.commit)
        )
    }
}

impl ActionTarget for RollbackTarget {
    fn label(&self) -> String {
        format!("{} at {}", self.which(), short(&self.base))
    }

    fn describe(&self) -> String {
        format!(
            "the rollback of {} on {} of {}",
            short(&self.commit),
            self.branch,
            self.repo
        )
    }

    /// The repository is the operator's `[backends.deploy]`: granting the
    /// interface grants it.
    fn check_scope(&self, _: &Scope, _: &str) -> Result<(), String> {
        Ok(())
    }

    /// One rollback per repository per cooldown, whatever the commit.
    fn cooldown_key(&self) -> String {
        format!("deploy:{}/{}", self.repo, self.branch)
    }
}

impl HostCtx {
    /// Why this rollback may not run now, if so: the plan approved it at
    /// another head, or the run is live without an approved plan and
    /// automatic rollbacks are off.
    fn rollback_hold(&self, target: &RollbackTarget, auto: bool) -> Option<String> {
        match &self.gate.stage {
            Stage::Approved(plan) => {
                let which = target.which();
                let planned = plan
                    .iter()
                    .filter(|p| p.kind == ActionKind::DeployRollback)
                    .find(|p| p.target.starts_with(&which))?;
                (planned.target != target.label()).then(|| {
                    format!(
                        "{} moved since the plan: the approved rollback was `{}`, the branch is at {} now; nothing pushed — plan again",
                        target.branch,
                        planned.target,
                        short(&target.base)
                    )
                })
            }
            _ if self.gate.dry_run || auto => None,
            _ => Some(format!(
                "a rollback runs only in an approved plan (mode `approve`); set backends.deploy.auto_rollback = true to let {} roll back on its own",
                self.gate.plugin
            )),
        }
    }

    /// The revert commit's message: the seed's hotfix line, then the
    /// evidence a reviewer of the branch needs.
    fn rollback_message(&self, r: &Revert, reason: &str) -> String {
        format!(
            "hotfix: rollback {} (remedy run {})\n\n\
             This reverts commit {}.\n\
             Reverted: \"{}\"\n\n\
             Reason: {}\n\n\
             Runbook: {}\n\
             Run: {}\n\
             Approved plan: {}\n",
            short(&r.commit),
            self.gate.run_id,
            r.commit,
            r.subject,
            reason,
            self.gate.plugin,
            self.gate.run_id,
            if matches!(self.gate.stage, Stage::Approved(_)) {
                "yes"
            } else {
                "no (auto_rollback)"
            },
        )
    }
}

fn files(r: &Revert) -> Vec<WitFileChange> {
    r.files
        .iter()
        .map(|f| WitFileChange {
            path: f.path.clone(),
            added: f.added,
            removed: f.removed,
        })
        .collect()
}

impl Host for HostCtx {
    async fn recent(&mut self, limit: u32) -> Result<Vec<WitCommit>, Error> {
        let deploy = self.backend(&DEPLOY, &self.backends.deploy)?;
        let commits = self
            .read(
                &DEPLOY,
                "recent",
                deploy.branch(),
                deploy.recent(limit as usize),
            )
            .await?;
        Ok(commits
            .into_iter()
            .map(|c| WitCommit {
                short_id: short(&c.id).to_string(),
                id: c.id,
                author: c.author,
                time: c.time,
                subject: c.subject,
                merge: c.merge,
            })
            .collect())
    }

    async fn rollback(&mut self, commit: String, reason: String) -> Result<RollbackResult, Error> {
        let deploy = self.backend(&DEPLOY, &self.backends.deploy)?;
        let mut target = RollbackTarget {
            repo: deploy.repo().to_string(),
            branch: deploy.branch().to_string(),
            commit: commit.clone(),
            base: String::new(),
        };
        // What the revert would change on the branch as it is now: the
        // plan's content in a dry run, the last check before a live one.
        let prepared = self
            .read(&DEPLOY, "prepare", &commit, deploy.prepare(&commit))
            .await;
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                let action = Action::new(ActionKind::DeployRollback, target, reason);
                return Err(self.gate.refuse(&action, e));
            }
        };
        target.commit = prepared.commit.clone();
        target.base = prepared.base.clone();
        if let Some(why) = self.rollback_hold(&target, deploy.auto()) {
            let action = Action::new(ActionKind::DeployRollback, target, reason);
            return Err(self.gate.refuse(&action, Error::Refused(why)));
        }
        if self.gate.dry_run {
            let changed: Vec<String> = prepared
                .files
                .iter()
                .map(|f| format!("{} +{} -{}", f.path, f.added, f.removed))
                .collect();
            self.gate.note(format!(
                "deploy.rollback of {} would change {} file(s): {}",
                short(&prepared.commit),
                prepared.files.len(),
                changed.join(", ")
            ));
        }
        let message = self.rollback_message(&prepared, &reason);
        let done: Mutex<Option<Revert>> = Mutex::new(None);
        let action = Action::new(ActionKind::DeployRollback, target.clone(), reason);
        let produced = action.result_cell();
        let applied = self
            .gate
            .act(action, Ok(deploy), |d, permit| {
                let done = &done;
                let (commit, base, message) = (&target.commit, &target.base, &message);
                async move {
                    let r = d.rollback(&permit, commit, base, message).await?;
                    if let Some(id) = &r.pushed {
                        let _ = produced.set(format!("revert {id} pushed to {}", target.branch));
                    }
                    *done.locked() = Some(r);
                    Ok(())
                }
            })
            .await?;
        let pushed = done.into_inner().unwrap_or_else(|p| p.into_inner());
        let result = pushed.as_ref().unwrap_or(&prepared);
        Ok(RollbackResult {
            applied,
            revert: result.pushed.clone(),
            base: result.base.clone(),
            files: files(result),
        })
    }
}
