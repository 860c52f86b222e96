//! The deployed branch on a git remote, through the `git` binary: the one
//! client that speaks every transport and credential setup operators
//! already use (ssh keys, HTTPS tokens, local paths), with the exact
//! semantics of the seed's commands. Each command runs in a clean
//! environment (no user or system config, no prompts, a fixed locale) with
//! a timeout; a command that times out is killed with its whole process
//! group, so a hung push cannot land after Remedy has read the remote back.
//!
//! One local repository per backend (in a private temporary directory)
//! holds what was fetched; every prepare and rollback fetches the branch
//! afresh and works in a throwaway worktree, one at a time.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncReadExt;

use super::backend::{Commit, DeployBackend, FileChange, Revert};
use super::short;
use crate::backends::{BackendError, BackendResult, Permit};

/// How the remote is reached.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// HTTPS: user and token (a credential helper answers them from the
    /// environment of the git process only).
    pub basic: Option<(String, String)>,
    /// ssh: a private key file, and a known_hosts file to check the host.
    pub ssh_key: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
}

pub struct GitRemote {
    url: String,
    name: String,
    branch: String,
    author: (String, String),
    credentials: Credentials,
    timeout: Duration,
    auto: bool,
    /// The local repository; the lock makes its users take turns.
    local: tokio::sync::Mutex<Option<LocalRepo>>,
}

/// A private directory of the process's temporary directory, removed
/// with the backend.
struct LocalRepo(PathBuf);

impl LocalRepo {
    fn new() -> std::io::Result<LocalRepo> {
        use std::os::unix::fs::DirBuilderExt;
        let dir =
            std::env::temp_dir().join(format!("remedy-deploy-{}", uuid::Uuid::new_v4().simple()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(LocalRepo(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for LocalRepo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a git command said when it failed.
#[derive(Debug)]
enum GitError {
    /// Exit status other than 0: its stderr (last lines).
    Status(String),
    TimedOut,
    Spawn(std::io::Error),
}

impl std::fmt::Display for GitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitError::Status(e) => f.write_str(e),
            GitError::TimedOut => f.write_str("timed out"),
            GitError::Spawn(e) => write!(f, "cannot run git: {e}"),
        }
    }
}

impl GitRemote {
    pub fn new(
        url: &str,
        branch: &str,
        author: (String, String),
        credentials: Credentials,
        timeout: Duration,
        auto: bool,
    ) -> GitRemote {
        let name = url
            .trim_end_matches('/')
            .rsplit(['/', ':'])
            .next()
            .unwrap_or(url)
            .trim_end_matches(".git")
            .to_string();
        GitRemote {
            url: url.to_string(),
            name,
            branch: branch.to_string(),
            author,
            credentials,
            timeout,
            auto,
            local: tokio::sync::Mutex::new(None),
        }
    }

    /// `git ARGS` in `dir`, in a clean environment, bounded by the timeout.
    async fn git(&self, dir: &Path, args: &[&str]) -> Result<String, GitError> {
        let mut cmd = tokio::process::Command::new("git");
        cmd.args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("LC_ALL", "C")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", &self.author.0)
            .env("GIT_AUTHOR_EMAIL", &self.author.1)
            .env("GIT_COMMITTER_NAME", &self.author.0)
            .env("GIT_COMMITTER_EMAIL", &self.author.1)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let mut config: Vec<(&str, String)> = vec![("safe.directory", "*".into())];
        if let Some((user, token)) = &self.credentials.basic {
            cmd.env("REMEDY_GIT_USER", user)
                .env("REMEDY_GIT_TOKEN", token);
            config.push((
                "credential.helper",
                r#"!f() { test "$1" = get && printf 'username=%s\npassword=%s\n' "$REMEDY_GIT_USER" "$REMEDY_GIT_TOKEN"; }; f"#.into(),
            ));
        }
        for (i, (k, v)) in config.iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), k)
                .env(format!("GIT_CONFIG_VALUE_{i}"), v);
        }
        cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
        if let Some(key) = &self.credentials.ssh_key {
            let mut ssh = format!(
                "ssh -i '{}' -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes",
                key.display()
            );
            if let Some(k) = &self.credentials.known_hosts {
                ssh.push_str(&format!(" -o UserKnownHostsFile='{}'", k.display()));
            }
            cmd.env("GIT_SSH_COMMAND", ssh);
        }
        let mut child = cmd.spawn().map_err(GitError::Spawn)?;
        let pid = child.id();
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let run = async {
            let (mut o, mut e) = (Vec::new(), Vec::new());
            let (r1, r2, status) = tokio::join!(
                out.read_to_end(&mut o),
                err.read_to_end(&mut e),
                child.wait()
            );
            r1.and(r2).and(status.map(|s| (s, o, e)))
        };
        match tokio::time::timeout(self.timeout, run).await {
            Err(_) => {
                // The whole group: `git push` over a local or ssh transport
                // runs helpers (receive-pack, its hooks, ssh) of its own.
                if let Some(pid) = pid {
                    // SAFETY: signalling a process group we created.
                    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                }
                Err(GitError::TimedOut)
            }
            Ok(Err(e)) => Err(GitError::Spawn(e)),
            Ok(Ok((status, o, e))) => {
                if status.success() {
                    Ok(String::from_utf8_lossy(&o).into_owned())
                } else {
                    let e = String::from_utf8_lossy(&e);
                    let tail: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
                    let tail = tail[tail.len().saturating_sub(4)..].join("; ");
                    Err(GitError::Status(tail))
                }
            }
        }
    }

    fn remote_ref(&self) -> String {
        format!("refs/remotes/origin/{}", self.branch)
    }

    /// The local repository, made on first use, with the branch fetched
    /// afresh. Hold the guard while using it.
    async fn fetched(&self) -> BackendResult<tokio::sync::MutexGuard<'_, Option<LocalRepo>>> {
        let mut local = self.local.lock().await;
        if local.is_none() {
            let dir = LocalRepo::new()
                .map_err(|e| BackendError::Failed(format!("deploy: a working directory: {e}")))?;
            self.git(dir.path(), &["init", "--quiet", "--bare", "."])
                .await
                .map_err(|e| BackendError::Failed(format!("deploy: git init: {e}")))?;
            *local = Some(dir);
        }
        let dir = local.as_ref().expect("made above").path().to_path_buf();
        let refspec = format!("+refs/heads/{}:{}", self.branch, self.remote_ref());
        self.git(
            &dir,
            &["fetch", "--quiet", "--no-tags", &self.url, &refspec],
        )
        .await
        .map_err(|e| {
            BackendError::Unavailable(format!(
                "deploy: fetching {} of {}: {e}",
                self.branch, self.name
            ))
        })?;
        Ok(local)
    }

    /// The branch's head on the remote now, read without fetching.
    async fn remote_head(&self, dir: &Path) -> Result<Option<String>, GitError> {
        let r = format!("refs/heads/{}", self.branch);
        let out = self.git(dir, &["ls-remote", &self.url, &r]).await?;
        Ok(out.split_whitespace().next().map(str::to_string))
    }

    async fn rev(&self, dir: &Path, what: &str) -> Option<String> {
        let spec = format!("{what}^{{commit}}");
        self.git(dir, &["rev-parse", "--verify", "--quiet", &spec])
            .await
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Resolves `commit` on the fetched branch, checks it can be reverted
    /// at `base`, and makes the revert (uncommitted) in a fresh worktree.
    async fn revert_in(
        &self,
        dir: &Path,
        wt: &Path,
        commit: &str,
        base: &str,
    ) -> BackendResult<Revert> {
        let valid = commit.len() >= 7
            && commit.len() <= 64
            && commit.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(BackendError::Invalid(format!(
                "`{commit}` is not a commit id (7 to 40 hex digits)"
            )));
        }
        let not_on_branch = || {
            BackendError::Invalid(format!(
                "no commit {commit} on {} of {}",
                self.branch, self.name
            ))
        };
        let full = self.rev(dir, commit).await.ok_or_else(not_on_branch)?;
        self.git(dir, &["merge-base", "--is-ancestor", &full, base])
            .await
            .map_err(|_| not_on_branch())?;
        let at = short(base);
        let c12 = short(&full);
        let grep = format!("--grep=This reverts commit {full}");
        let by = self
            .git(
                dir,
                &[
                    "log",
                    "--format=%h",
                    "--fixed-strings",
                    &grep,
                    &format!("{full}..{base}"),
                ],
            )
            .await
            .unwrap_or_default();
        if let Some(by) = by.split_whitespace().next() {
            return Err(BackendError::Refused(format!(
                "{c12} is already reverted on {} by {by}: nothing to roll back",
                self.branch
            )));
        }
        let info = self
            .git(dir, &["log", "-1", "--format=%P%x00%s", &full])
            .await
            .map_err(|e| BackendError::Failed(format!("deploy: reading {c12}: {e}")))?;
        let (parents, subject) = info.trim_end().split_once('\0').unwrap_or(("", ""));
        let merge = parents.split_whitespace().count() > 1;
        let wt_s = wt.to_string_lossy().to_string();
        self.git(
            dir,
            &[
                "worktree", "add", "--quiet", "--detach", "--force", &wt_s, base,
            ],
        )
        .await
        .map_err(|e| BackendError::Failed(format!("deploy: a worktree at {at}: {e}")))?;
        // A merge is reverted against its first parent: the branch as it
        // was before the merge (what GitHub's "Revert" does for a PR).
        let mut args = vec!["revert", "--no-commit", "--no-edit"];
        if merge {
            args.extend(["-m", "1"]);
        }
        args.push(&full);
        if let Err(e) = self.git(wt, &args).await {
            let conflicted = self
                .git(wt, &["diff", "--name-only", "--diff-filter=U"])
                .await
                .unwrap_or_default();
            let files: Vec<&str> = conflicted.lines().collect();
            return Err(BackendError::Refused(if files.is_empty() {
                format!(
                    "reverting {c12} on {} at {at} failed: {e}; nothing pushed",
                    self.branch
                )
            } else {
                format!(
                    "reverting {c12} on {} at {at} conflicts in {}: later commits changed the same lines; nothing pushed",
                    self.branch,
                    files.join(", ")
                )
            }));
        }
        let numstat = self
            .git(wt, &["diff", "--cached", "--numstat", "--no-renames"])
            .await
            .map_err(|e| BackendError::Failed(format!("deploy: reading the revert: {e}")))?;
        let files: Vec<FileChange> = numstat
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, '\t');
                let added = f.next()?.parse().unwrap_or(0);
                let removed = f.next()?.parse().unwrap_or(0);
                Some(FileChange {
                    path: f.next()?.to_string(),
                    added,
                    removed,
                })
            })
            .collect();
        if files.is_empty() {
            return Err(BackendError::Refused(format!(
                "reverting {c12} on {} at {at} changes nothing: its changes are already undone",
                self.branch
            )));
        }
        Ok(Revert {
            commit: full.clone(),
            subject: subject.to_string(),
            base: base.to_string(),
            files,
            pushed: None,
        })
    }

    /// Runs `f` with a fresh worktree, removed afterwards whatever happens.
    async fn with_worktree<T>(
        &self,
        dir: &Path,
        f: impl AsyncFnOnce(&Path) -> BackendResult<T>,
    ) -> BackendResult<T> {
        let wt = dir.join(format!("wt-{}", uuid::Uuid::new_v4().simple()));
        let r = f(&wt).await;
        let wt_s = wt.to_string_lossy().to_string();
        let _ = self
            .git(dir, &["worktree", "remove", "--force", &wt_s])
            .await;
        let _ = std::fs::remove_dir_all(&wt);
        let _ = self.git(dir, &["worktree", "prune"]).await;
        r
    }

    async fn head_of(&self, dir: &Path) -> BackendResult<String> {
        self.rev(dir, &self.remote_ref()).await.ok_or_else(|| {
            BackendError::Unavailable(format!(
                "deploy: no branch {} in {}",
                self.branch, self.name
            ))
        })
    }
}

#[async_trait]
impl DeployBackend for GitRemote {
    fn repo(&self) -> &str {
        &self.name
    }

    fn branch(&self) -> &str {
        &self.branch
    }

    fn auto(&self) -> bool {
        self.auto
    }

    async fn recent(&self, limit: usize) -> BackendResult<Vec<Commit>> {
        let local = self.fetched().await?;
        let dir = local.as_ref().expect("fetched").path();
        let n = format!("-n{}", limit.clamp(1, super::backend::MAX_RECENT));
        let out = self
            .git(
                dir,
                &[
                    "log",
                    &n,
                    "--format=%H%x00%an%x00%ct%x00%P%x00%s",
                    &self.remote_ref(),
                ],
            )
            .await
            .map_err(|e| BackendError::Failed(format!("deploy: git log: {e}")))?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.splitn(5, '\0').collect();
                let [id, author, time, parents, subject] = f[..] else {
                    return None;
                };
                Some(Commit {
                    id: id.to_string(),
                    author: author.to_string(),
                    time: time.parse().unwrap_or(0),
                    subject: subject.to_string(),
                    merge: parents.split_whitespace().count() > 1,
                })
            })
            .collect())
    }

    async fn prepare(&self, commit: &str) -> BackendResult<Revert> {
        let local = self.fetched().await?;
        let dir = local.as_ref().expect("fetched").path().to_path_buf();
        let base = self.head_of(&dir).await?;
        self.with_worktree(&dir, async |wt| {
            self.revert_in(&dir, wt, commit, &base).await
        })
        .await
    }

    async fn rollback(
        &self,
        _: &Permit,
        commit: &str,
        base: &str,
        message: &str,
    ) -> BackendResult<Revert> {
        let local = self.fetched().await?;
        let dir = local.as_ref().expect("fetched").path().to_path_buf();
        let head = self.head_of(&dir).await?;
        if head != base {
            return Err(BackendError::Refused(format!(
                "{} moved since the plan: it was at {}, it is at {} now (someone pushed); nothing pushed — plan again",
                self.branch,
                short(base),
                short(&head)
            )));
        }
        self.with_worktree(&dir, async |wt| {
            let mut revert = self.revert_in(&dir, wt, commit, base).await?;
            self.git(wt, &["commit", "--quiet", "--no-verify", "-m", message])
                .await
                .map_err(|e| BackendError::Failed(format!("deploy: committing the revert: {e}")))?;
            let new = self.rev(wt, "HEAD").await.ok_or_else(|| {
                BackendError::Failed("deploy: the revert commit cannot be read".into())
            })?;
            let refspec = format!("{new}:refs/heads/{}", self.branch);
            let pushed = self.git(wt, &["push", "--quiet", &self.url, &refspec]).await;
            if let Err(e) = pushed {
                // The push's fate is what the remote shows now.
                let now = self.remote_head(wt).await.map_err(|re| {
                    BackendError::Unknown(format!(
                        "pushing the revert {} failed ({e}) and {} cannot be read back ({re})",
                        short(&new),
                        self.name
                    ))
                })?;
                if now.as_deref() != Some(new.as_str()) {
                    return Err(BackendError::Refused(format!(
                        "the push of the revert was not accepted ({e}); {} is at {}: nothing of this rollback landed",
                        self.branch,
                        now.as_deref().map_or("nothing", short)
                    )));
                }
            }
            revert.pushed = Some(new);
            Ok(revert)
        })
        .await
    }
}
