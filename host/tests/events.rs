//! The live feed, `GET /v1/events`, against a real server: every kind of
//! event in the order it happened, `remedy runs --follow` printing it, and
//! an open feed that does not hold up a shutdown.

mod common;

use std::io::BufRead as _;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const TOKENS: &str = r#"
tokens = [
  { name = "watcher", env = "T_READ", roles = ["read", "run"] },
  { name = "lead-alice", env = "T_APPROVE", roles = ["approve", "read"] },
  { name = "root", env = "T_ADMIN", roles = ["admin"] },
  { name = "dashboard", env = "T_DASH", roles = ["read"] },
  { name = "pager", env = "T_PAGER", roles = ["read"] },
]
drain_timeout_ms = 20000"#;
const ENV: [(&str, &str); 5] = [
    ("T_READ", "read-token-0123456789"),
    ("T_APPROVE", "approve-token-0123456789"),
    ("T_ADMIN", "admin-token-0123456789"),
    ("T_DASH", "dash-token-0123456789"),
    ("T_PAGER", "pager-token-0123456789"),
];
/// The feeds one caller may hold (a quarter of the 64).
const SHARE: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_tells_runs_plans_decisions_alerts_and_the_pause_as_they_happen() {
    let StuckBreaker {
        dir: _dir,
        sim: _sim,
        mut server,
    } = stuck_breaker(
        TOKENS,
        "mode = \"approve\"\nverify_after = \"1h\"",
        "",
        &ENV,
    )
    .await;
    let mut feed = Feed::open(&server, "read-token-0123456789").await;

    // A run in approve mode: started, finished as a plan, pending.
    let (code, plan) = server
        .post_as(
            "read-token-0123456789",
            "/v1/plugins/circuit-breaker-open/runs?wait=true",
            json!({}),
        )
        .await;
    assert_eq!(code, 200, "{plan}");
    let id = plan["id"].as_str().unwrap().to_string();
    let (started, _) = feed.until("run.started", Some(&id)).await;
    assert_eq!(started["plugin"], "circuit-breaker-open");
    assert_eq!(started["detail"]["dry_run"], true, "{started}");
    let (finished, _) = feed.until("run.finished", Some(&id)).await;
    assert_eq!(
        finished["detail"]["status"], "pending_approval",
        "{finished}"
    );
    assert!(finished["seq"].as_u64() > started["seq"].as_u64());
    let (pending, _) = feed.until("approval.pending", Some(&id)).await;
    assert_eq!(
        pending["detail"]["plan"],
        json!([{"kind": "breaker.force-state", "target": "breaker:stripe"}])
    );

    // Approved: the decision, then the live run and the action it took.
    let (code, decided) = server
        .post_as(
            "approve-token-0123456789",
            &format!("/v1/runs/{id}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(code, 202, "{decided}");
    let live = decided["live_run"].as_str().unwrap().to_string();
    let (decision, _) = feed.until("approval.decided", Some(&id)).await;
    assert_eq!(decision["detail"]["decision"], "approved");
    assert_eq!(decision["detail"]["by"], "lead-alice");
    assert_eq!(decision["detail"]["live_run"], live.as_str());
    let (action, _) = feed.until("action", Some(&live)).await;
    assert_eq!(action["detail"]["kind"], "breaker.force-state", "{action}");
    assert_eq!(action["detail"]["applied"], "executed", "{action}");

    // `remedy runs --follow` prints the same feed in the terminal.
    let mut follow = std::process::Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args(["runs", "--follow", "--server", &server.base])
        .env("REMEDY_TOKEN", "read-token-0123456789")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("following live events"), "{first}");

    // The kill switch, and an alert.
    let (code, _) = server
        .post_as(
            "admin-token-0123456789",
            "/v1/admin/pause",
            json!({"reason": "feed test"}),
        )
        .await;
    assert_eq!(code, 200);
    let (paused, _) = feed.until("pause.changed", None).await;
    assert_eq!(paused["detail"]["paused"]["by"], "root", "{paused}");
    assert_eq!(paused["detail"]["paused"]["reason"], "feed test");
    let alert = alert(
        "CircuitBreakerOpen",
        "firing",
        json!({"breaker": "stripe"}),
        "feedfp1",
        "2026-11-28T10:00:00Z",
    );
    let (code, receipt) = server
        .post_as("admin-token-0123456789", "/v1/alerts", payload(vec![alert]))
        .await;
    assert_eq!(code, 202, "{receipt}");
    let alert_run = receipt["runs"][0]["run_id"].as_str().unwrap().to_string();
    let (received, before) = feed.until("alert.received", None).await;
    assert_eq!(received["detail"]["alertname"], "CircuitBreakerOpen");
    assert_eq!(received["detail"]["status"], "firing");
    assert_eq!(received["detail"]["runs"][0]["run_id"], alert_run.as_str());
    assert!(
        !before
            .iter()
            .any(|(_, v)| v["run_id"] == alert_run.as_str()),
        "the alert is told before the run it started: {before:?}"
    );
    let (run_started, _) = feed.until("run.started", Some(&alert_run)).await;
    assert!(run_started["seq"].as_u64() > received["seq"].as_u64());

    let line = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find(|l| l.contains("pause.changed"))
        .unwrap();
    assert!(line.contains("automation PAUSED by root"), "{line}");
    let line = lines
        .map(|l| l.unwrap())
        .find(|l| l.contains("alert.received"))
        .unwrap();
    assert!(
        line.contains("CircuitBreakerOpen firing (1 run(s))"),
        "{line}"
    );
    let _ = follow.kill();
    let _ = follow.wait();

    // An open feed does not hold the shutdown until the drain bound (20 s).
    let at = Instant::now();
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    server
        .exited("an open event feed held the shutdown for 15 s")
        .await;
    assert!(
        at.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        at.elapsed()
    );
    // What was still buffered is read, then the stream ends.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = feed.resp.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the feed ended with the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_needs_a_token_with_read_and_follow_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(dir.path());
    let r = server
        .http
        .get(format!("{}/v1/events", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args(["runs", "--follow", "--server", &server.base])
        .env("REMEDY_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("401") && err.contains("unknown token"),
        "{err}"
    );
}

/// One token opens feeds up to its share; the next is refused (`429`,
/// naming the limit) while another token still gets one: a script with a
/// read token cannot take the admin console's feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_holds_at_most_its_share_of_the_feeds() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(dir.path());
    let mut open = Vec::new();
    for _ in 0..SHARE {
        open.push(Feed::open(&server, "read-token-0123456789").await);
    }
    let (code, body) = refused(&server, "read-token-0123456789").await;
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("too_many_feeds"), "{body}");
    assert!(
        body.contains("token `watcher` has 16 event feeds open already")
            && body.contains("of 64 in all"),
        "{body}"
    );
    let _admin = Feed::open(&server, "admin-token-0123456789").await;
}

/// Without tokens, each peer address is one caller: loopback gets its
/// share and no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_a_peer_address_holds_at_most_its_share() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\ndata_dir = \"{}\"\n",
        dir.path().join("data").display()
    );
    let server = start(dir.path(), &config, &[]);
    let mut open = Vec::new();
    for _ in 0..SHARE {
        open.push(Feed::open(&server, "").await);
    }
    let (code, body) = refused(&server, "").await;
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("peer 127.0.0.1 has 16 event feeds"), "{body}");
}

/// The cap in all: four callers at their share fill it, a fifth gets
/// `503`; the places of clients that gave up are free again once the
/// server next writes to them (here: the next event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_past_the_cap_are_refused_and_abandoned_ones_free_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(dir.path());
    let mut open = Vec::new();
    for token in [
        "read-token-0123456789",
        "approve-token-0123456789",
        "admin-token-0123456789",
        "dash-token-0123456789",
    ] {
        for _ in 0..SHARE {
            open.push(Feed::open(&server, token).await);
        }
    }
    let (code, body) = refused(&server, "pager-token-0123456789").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("64 event feeds are open already"), "{body}");

    // Ten clients give up mid-stream; an event makes the server notice.
    open.truncate(54);
    let (code, _) = server
        .post_as("admin-token-0123456789", "/v1/admin/pause", json!({}))
        .await;
    assert_eq!(code, 200);
    eventually("an abandoned feed's place is free", 15, || async {
        let r = server
            .http
            .get(format!("{}/v1/events", server.base))
            .bearer_auth("pager-token-0123456789")
            .send()
            .await
            .unwrap();
        (r.status() == 200).then_some(())
    })
    .await;
}

/// An idle feed sends keep-alive comments (every 15 s; shortened here), so
/// a client gone without closing is found out by the writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_feed_sends_keep_alive_comments() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\ndata_dir = \"{}\"\n{TOKENS}\n",
        dir.path().join("data").display()
    );
    let mut env = ENV.to_vec();
    env.push(("REMEDY_TEST_FEED_KEEP_ALIVE_MS", "200"));
    let server = start(dir.path(), &config, &env);
    let mut feed = Feed::open(&server, "read-token-0123456789").await;
    let comment = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            let chunk = feed.resp.chunk().await.unwrap().expect("the feed ended");
            let text = String::from_utf8_lossy(&chunk).into_owned();
            if text.starts_with(':') {
                return text;
            }
        }
    })
    .await
    .expect("no keep-alive comment within 3 s");
    assert!(comment.ends_with("\n\n"), "{comment:?}");
}

/// A refused `GET /v1/events`: its status and body.
async fn refused(server: &Server, token: &str) -> (u16, String) {
    let mut req = server.http.get(format!("{}/v1/events", server.base));
    if !token.is_empty() {
        req = req.bearer_auth(token);
    }
    let r = req.send().await.unwrap();
    match r.status().as_u16() {
        // An open feed: its body never ends.
        200 => (200, String::new()),
        code => (code, r.text().await.unwrap()),
    }
}

/// A server with this file's tokens and nothing else configured.
fn start_with_tokens(dir: &std::path::Path) -> Server {
    let config = format!(
        "[server]\ndata_dir = \"{}\"\n{TOKENS}\n",
        dir.join("data").display()
    );
    start(dir, &config, &ENV)
}
