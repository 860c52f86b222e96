//! The rollback against real repositories: a bare repository on disk is
//! the remote, a clone of it is "someone else" pushing, and hooks in the
//! remote play a protected branch and a hung server.

use std::path::PathBuf;
use std::time::Duration;

use std::sync::{Arc, Mutex};

use super::backend::{DeployBackend, Revert};
use super::git::{Credentials, GitRemote};
use super::RollbackTarget;
use crate::action::ActionKind;
use crate::backends::BackendError;
use crate::gate::{Action, Phase, RunGate};
use crate::grants::{Capability, Grants};

/// `b.rollback(…)` with the permit only the gate gives: through a live
/// gate of a one-shot run.
async fn rollback(
    b: &GitRemote,
    commit: &str,
    base: &str,
    message: &str,
) -> Result<Revert, BackendError> {
    let grants = Arc::new(Grants {
        capabilities: [Capability::Deploy].into(),
        ..Grants::default()
    });
    let gate = Arc::new(RunGate::new("test", "run", grants, false)).call(Phase::Mitigate, None);
    let target = RollbackTarget {
        repo: b.repo().into(),
        branch: "main".into(),
        commit: commit.into(),
        base: base.into(),
    };
    let out = Mutex::new(None);
    let _ = gate
        .act(
            Action::new(ActionKind::DeployRollback, target, "test"),
            Ok(()),
            |(), permit| {
                let out = &out;
                async move {
                    let r = b.rollback(&permit, commit, base, message).await;
                    *out.lock().unwrap() = Some(r.clone());
                    r.map(|_| ())
                }
            },
        )
        .await;
    out.into_inner()
        .unwrap()
        .expect("the gate ran the rollback")
}

use remedy_e2e::git;

/// A remote with `app.py` and a fault commit on top, and a clone to push
/// more from.
struct Repo {
    _dir: tempfile::TempDir,
    remote: PathBuf,
    work: PathBuf,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let remote = dir.path().join("servio.git");
        let work = dir.path().join("work");
        git(
            dir.path(),
            &[
                "init",
                "--quiet",
                "--bare",
                "-b",
                "main",
                remote.to_str().unwrap(),
            ],
        );
        git(
            dir.path(),
            &[
                "clone",
                "--quiet",
                remote.to_str().unwrap(),
                work.to_str().unwrap(),
            ],
        );
        git(&work, &["checkout", "--quiet", "-b", "main"]);
        let r = Repo {
            _dir: dir,
            remote,
            work,
        };
        r.commit(
            "app.py",
            "def pay():\n    return 200\n\ndef cart():\n    return 200\n",
            "initial",
        );
        r.commit(
            "app.py",
            "def pay():\n    return 502\n\ndef cart():\n    return 200\n",
            "pay: new provider",
        );
        r
    }

    /// Writes `file` and pushes a commit of it.
    fn commit(&self, file: &str, text: &str, subject: &str) -> String {
        std::fs::write(self.work.join(file), text).unwrap();
        git(&self.work, &["add", file]);
        git(&self.work, &["commit", "--quiet", "-m", subject]);
        git(&self.work, &["push", "--quiet", "origin", "main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    fn head(&self) -> String {
        git(&self.remote, &["rev-parse", "main"])
    }

    fn file_at_head(&self, file: &str) -> String {
        git(&self.remote, &["show", &format!("main:{file}")])
    }

    fn backend(&self, timeout: Duration) -> GitRemote {
        GitRemote::new(
            self.remote.to_str().unwrap(),
            "main",
            ("Remedy".into(), "remedy@localhost".into()),
            Credentials::default(),
            timeout,
            false,
        )
    }

    fn hook(&self, name: &str, script: &str) {
        let path = self.remote.join("hooks").join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn refused(r: Result<Revert, BackendError>) -> String {
    match r {
        Err(BackendError::Refused(m)) => m,
        other => panic!("expected refused, got {other:?}"),
    }
}

#[tokio::test]
async fn recent_lists_the_branch_newest_first() {
    let repo = Repo::new();
    let b = repo.backend(Duration::from_secs(20));
    let commits = b.recent(10).await.unwrap();
    let subjects: Vec<&str> = commits.iter().map(|c| c.subject.as_str()).collect();
    assert_eq!(subjects, ["pay: new provider", "initial"]);
    assert_eq!(commits[0].id, repo.head());
    assert_eq!(commits[0].author, "Dev");
    assert!(!commits[0].merge);
    assert_eq!(b.repo(), "servio");
}

#[tokio::test]
async fn a_prepared_revert_lists_its_changes_and_pushes_nothing() {
    let repo = Repo::new();
    let fault = repo.head();
    let b = repo.backend(Duration::from_secs(20));
    let r = b.prepare(&fault[..7]).await.unwrap();
    assert_eq!(r.commit, fault);
    assert_eq!(r.base, fault);
    assert_eq!(r.subject, "pay: new provider");
    assert_eq!(r.files.len(), 1);
    assert_eq!(
        (
            r.files[0].path.as_str(),
            r.files[0].added,
            r.files[0].removed
        ),
        ("app.py", 1, 1)
    );
    assert_eq!(repo.head(), fault, "nothing pushed");
    // Not a commit of the branch: invalid, naming it.
    let err = b.prepare("0123456789abcdef").await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Invalid(m) if m.contains("0123456789abcdef")),
        "{err:?}"
    );
    let err = b.prepare("HEAD~1; rm -rf /").await.unwrap_err();
    assert!(matches!(err, BackendError::Invalid(_)), "{err:?}");
}

#[tokio::test]
async fn a_rollback_pushes_one_revert_and_never_a_second() {
    let repo = Repo::new();
    let fault = repo.head();
    let b = repo.backend(Duration::from_secs(20));
    let r = rollback(
        &b,
        &fault,
        &fault,
        "hotfix: rollback x (remedy run r1)\n\nThis reverts commit x.\n",
    )
    .await
    .unwrap();
    let pushed = r.pushed.clone().unwrap();
    assert_eq!(repo.head(), pushed);
    assert!(
        repo.file_at_head("app.py")
            .contains("return 200\n\ndef cart"),
        "the fault is gone"
    );
    assert_eq!(
        git(&repo.remote, &["log", "-1", "--format=%s%n%an", "main"]),
        "hotfix: rollback x (remedy run r1)\nRemedy"
    );
    // The same rollback again (a repeat alert, another replica): on the
    // plan's head the branch moved; on the new head it is already reverted.
    let moved = refused(rollback(&b, &fault, &fault, "again").await);
    assert!(moved.contains("moved since the plan"), "{moved}");
    let again = refused(b.prepare(&fault).await);
    assert!(
        again.contains("already reverted") || again.contains("changes nothing"),
        "{again}"
    );
    assert_eq!(repo.head(), pushed, "one revert only");
}

#[tokio::test]
async fn a_branch_that_moved_since_the_plan_is_refused_and_untouched() {
    let repo = Repo::new();
    let fault = repo.head();
    let b = repo.backend(Duration::from_secs(20));
    let plan = b.prepare(&fault).await.unwrap();
    let theirs = repo.commit("README", "hello\n", "docs");
    let why = refused(rollback(&b, &fault, &plan.base, "m").await);
    assert!(
        why.contains("moved since the plan") && why.contains(&theirs[..12]),
        "{why}"
    );
    assert_eq!(repo.head(), theirs);
}

#[tokio::test]
async fn a_merge_is_reverted_against_its_first_parent() {
    let repo = Repo::new();
    git(&repo.work, &["checkout", "--quiet", "-b", "feature"]);
    std::fs::write(repo.work.join("feature.py"), "x = 1\n").unwrap();
    git(&repo.work, &["add", "feature.py"]);
    git(&repo.work, &["commit", "--quiet", "-m", "feature"]);
    git(&repo.work, &["checkout", "--quiet", "main"]);
    git(
        &repo.work,
        &[
            "merge",
            "--quiet",
            "--no-ff",
            "-m",
            "Merge feature",
            "feature",
        ],
    );
    git(&repo.work, &["push", "--quiet", "origin", "main"]);
    let merge = repo.head();
    let b = repo.backend(Duration::from_secs(20));
    assert!(b.recent(1).await.unwrap()[0].merge);
    let r = rollback(&b, &merge, &merge, "revert the merge")
        .await
        .unwrap();
    assert_eq!(r.files[0].path, "feature.py");
    let files = git(&repo.remote, &["ls-tree", "--name-only", "main"]);
    assert!(!files.contains("feature.py"), "{files}");
    assert!(files.contains("app.py"), "{files}");
}

#[tokio::test]
async fn a_conflicting_revert_is_refused_naming_the_file_and_nothing_is_pushed() {
    let repo = Repo::new();
    let fault = repo.head();
    let later = repo.commit(
        "app.py",
        "def pay():\n    return 503\n\ndef cart():\n    return 200\n",
        "pay: retry",
    );
    let b = repo.backend(Duration::from_secs(20));
    let why = refused(b.prepare(&fault).await);
    assert!(why.contains("conflicts in app.py"), "{why}");
    let why = refused(rollback(&b, &fault, &later, "m").await);
    assert!(
        why.contains("app.py") && why.contains("nothing pushed"),
        "{why}"
    );
    assert_eq!(repo.head(), later);
}

#[tokio::test]
async fn a_rejected_push_is_refused_after_reading_the_remote_back() {
    let repo = Repo::new();
    let fault = repo.head();
    repo.hook("pre-receive", "echo 'main is protected' >&2; exit 1");
    let b = repo.backend(Duration::from_secs(20));
    let why = refused(rollback(&b, &fault, &fault, "m").await);
    assert!(
        why.contains("not accepted") && why.contains("main is protected"),
        "{why}"
    );
    assert_eq!(repo.head(), fault);
}

#[tokio::test]
async fn a_hung_push_is_stopped_and_the_remote_decides_refused() {
    let repo = Repo::new();
    let fault = repo.head();
    // Slower than the timeout, but not by much: were the hook left
    // running, it would let the push land a moment later.
    repo.hook("pre-receive", "sleep 4");
    let b = repo.backend(Duration::from_secs(2));
    let started = std::time::Instant::now();
    let why = refused(rollback(&b, &fault, &fault, "m").await);
    assert!(
        why.contains("timed out") && why.contains("nothing of this rollback landed"),
        "{why}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // The hook and its receive-pack were killed with the push: the revert
    // can never land after Remedy said it did not.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(repo.head(), fault);
}

#[tokio::test]
async fn a_push_that_hangs_after_landing_is_executed() {
    let repo = Repo::new();
    let fault = repo.head();
    // The ref is updated, then the server hangs before answering.
    repo.hook(
        "reference-transaction",
        "[ \"$1\" = committed ] && sleep 30; exit 0",
    );
    let b = repo.backend(Duration::from_secs(2));
    let r = rollback(&b, &fault, &fault, "m").await.unwrap();
    assert_eq!(repo.head(), r.pushed.unwrap());
}

/// `git http-backend` (git's own smart-HTTP server, as a CGI) behind
/// basic auth: the remote as a forge serves it, with a token.
mod over_http {
    use std::path::PathBuf;

    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// `remedy:s3cret-token`, base64.
    const AUTH: &str = "Basic cmVtZWR5OnMzY3JldC10b2tlbg==";

    async fn cgi(State(root): State<PathBuf>, req: Request) -> Response {
        if req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            != Some(AUTH)
        {
            return (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", "Basic realm=\"git\"")],
                "",
            )
                .into_response();
        }
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, 64 << 20).await.unwrap();
        let header = |h: &str| {
            parts
                .headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let mut child = tokio::process::Command::new("git")
            .arg("http-backend")
            .env("GIT_PROJECT_ROOT", &root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("REMOTE_USER", "remedy")
            .env("REQUEST_METHOD", parts.method.as_str())
            .env("PATH_INFO", parts.uri.path())
            .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
            .env("CONTENT_TYPE", header("content-type"))
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
            .env("GIT_PROTOCOL", header("git-protocol"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&body).await.unwrap();
        drop(stdin);
        let mut out = Vec::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_end(&mut out)
            .await
            .unwrap();
        child.wait().await.unwrap();
        let split = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| (i, 4))
            .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
            .unwrap();
        let head = String::from_utf8_lossy(&out[..split.0]).to_string();
        let mut status = StatusCode::OK;
        let mut headers = HeaderMap::new();
        for line in head.lines() {
            let (k, v) = line.split_once(':').unwrap();
            if k.eq_ignore_ascii_case("status") {
                status = StatusCode::from_u16(v.trim()[..3].parse().unwrap()).unwrap();
            } else {
                headers.insert(
                    axum::http::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
                    v.trim().parse().unwrap(),
                );
            }
        }
        (
            status,
            headers,
            Body::from(out[split.0 + split.1..].to_vec()),
        )
            .into_response()
    }

    #[tokio::test]
    async fn over_https_style_auth_the_token_comes_from_the_environment_only() {
        let repo = Repo::new();
        let fault = repo.head();
        let root = repo.remote.parent().unwrap().to_path_buf();
        let app = axum::Router::new().fallback(cgi).with_state(root);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/servio.git", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let backend = |token: Option<&str>| {
            GitRemote::new(
                &url,
                "main",
                ("Remedy".into(), "remedy@localhost".into()),
                Credentials {
                    basic: token.map(|t| ("remedy".to_string(), t.to_string())),
                    ..Credentials::default()
                },
                Duration::from_secs(20),
                false,
            )
        };
        // Without the token (and no prompt to ask one): unavailable, fast.
        let err = backend(None).recent(5).await.unwrap_err();
        assert!(
            matches!(&err, BackendError::Unavailable(m) if m.contains("fetching main of servio")),
            "{err:?}"
        );
        let err = backend(Some("wrong")).recent(5).await.unwrap_err();
        assert!(matches!(err, BackendError::Unavailable(_)), "{err:?}");
        // With it: read, and a rollback pushed over HTTP.
        let b = backend(Some("s3cret-token"));
        assert_eq!(b.recent(5).await.unwrap()[0].id, fault);
        let r = rollback(&b, &fault, &fault, "hotfix: rollback over http")
            .await
            .unwrap();
        assert_eq!(repo.head(), r.pushed.unwrap());
    }
}
