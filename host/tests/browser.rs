//! The console in a real headless browser (Debian's chromium through
//! chromedriver): log in with a token, see a plan waiting, approve it,
//! watch a run appear without reloading, pause and resume; a reader has no
//! approve button and is refused if it posts anyway; a form posted from
//! another origin is refused; a plan needing two people shows who approved.
//! Screenshots of the overview, a run page and a half-approved plan are
//! saved under `target/console-screenshots/` (the docs' images come from
//! there).

mod common;
#[path = "browser/webdriver.rs"]
mod webdriver;

use std::path::PathBuf;

use common::*;
use serde_json::{json, Value};
use webdriver::Driver;

const TOKENS: &str = r#"
tokens = [
  { name = "ops-runner", env = "B_RUN", roles = ["run", "read"] },
  { name = "on-call", env = "B_READ", roles = ["read"] },
  { name = "root", env = "B_ADMIN", roles = ["admin"] },
]"#;
const ENV: [(&str, &str); 3] = [
    ("B_RUN", "run-token-0123456789"),
    ("B_READ", "read-token-0123456789"),
    ("B_ADMIN", "admin-token-0123456789"),
];

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A plan of circuit-breaker-open waiting for approval (its id).
async fn plan(server: &Server) -> String {
    let (code, rec) = server
        .post_as(
            "run-token-0123456789",
            "/v1/plugins/circuit-breaker-open/runs?wait=true",
            json!({}),
        )
        .await;
    assert_eq!(code, 200, "{rec}");
    assert_eq!(rec["status"], "pending_approval", "{rec}");
    rec["id"].as_str().unwrap().to_string()
}

async fn paused(server: &Server) -> Value {
    let (_, text) = server
        .get_as("read-token-0123456789", "/v1/admin/pause")
        .await;
    serde_json::from_str::<Value>(&text).unwrap()["paused"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_approves_watches_pauses_and_resumes_in_a_browser() {
    let StuckBreaker {
        dir: _dir,
        sim,
        server,
    } = stuck_breaker(
        TOKENS,
        "mode = \"approve\"\nverify_after = \"1h\"",
        "",
        &ENV,
    )
    .await;
    let id = plan(&server).await;
    let driver = Driver::start().await;
    let b = driver.browser().await;

    // Not logged in: the login page; a wrong token is refused.
    b.goto(&format!("{}/", server.base)).await;
    assert!(
        b.url().await.ends_with("/login?next=/"),
        "{}",
        b.url().await
    );
    b.type_into("#token", "wrong").await;
    b.click("#login").await;
    // The refusal is a new page: wait for it, not for the click's return.
    b.wait_for("#login-error").await;
    assert!(b.text("#login-error").await.contains("unknown token"));
    b.type_into("#token", "admin-token-0123456789").await;
    b.click("#login").await;
    b.wait_for("#killswitch").await;
    let cookie = b.js("return document.cookie;", vec![]).await;
    assert_eq!(
        cookie, "",
        "the session cookie is HttpOnly: scripts cannot read it"
    );

    // The plan waits, with what it would do.
    let pending = b.text("#pending").await;
    assert!(
        pending.contains("breaker.force-state") && pending.contains("breaker:stripe"),
        "{pending}"
    );
    b.wait_for("#live.on").await;
    std::fs::write(screenshots().join("overview.png"), b.screenshot().await).unwrap();

    // Approve: the browser lands on the live run, which acted.
    b.click(&format!("[data-run=\"{id}\"] button.approve"))
        .await;
    b.wait_for("#run[data-status=\"succeeded\"]").await;
    let live_url = b.url().await;
    assert!(!live_url.ends_with(&id), "{live_url}");
    let actions = b.text("#actions").await;
    assert!(
        actions.contains("breaker.force-state") && actions.contains("executed"),
        "{actions}"
    );
    assert!(b.text("#timeline").await.contains("Plan approved by root"));
    assert!(b.text("#report").await.contains("Post-incident review"));
    std::fs::write(screenshots().join("run.png"), b.screenshot().await).unwrap();
    assert_ne!(
        sim.breaker_state("stripe").unwrap(),
        "OPEN",
        "the approved action ran"
    );

    // A run started elsewhere appears on the open overview, no reload.
    b.goto(&format!("{}/", server.base)).await;
    b.wait_for("#live.on").await;
    b.js("window.__sameDocument = true;", vec![]).await;
    let (code, started) = server
        .post_as(
            "run-token-0123456789",
            "/v1/plugins/circuit-breaker-open/runs?dry_run=true",
            json!({}),
        )
        .await;
    assert_eq!(code, 202, "{started}");
    let new_run = started["run_id"].as_str().unwrap();
    b.wait_for(&format!("tr.run-row[data-run=\"{new_run}\"]"))
        .await;
    assert_eq!(
        b.js("return window.__sameDocument === true;", vec![]).await,
        true,
        "the page updated in place"
    );

    // Pause with a reason, then resume.
    b.type_into("#pause-reason", "db failover drill").await;
    b.click("#pause").await;
    b.wait_for("#pause-state[data-paused=\"true\"]").await;
    assert!(b.text("#killswitch").await.contains("db failover drill"));
    assert_eq!(paused(&server).await["by"], "root");
    b.click("#resume").await;
    b.wait_for("#pause-state[data-paused=\"false\"]").await;
    assert_eq!(paused(&server).await, Value::Null);

    // A reader: the plan is shown without an approve button, and posting
    // the form anyway (with the session's own CSRF token) is refused.
    sim.open_breaker("stripe");
    let second = plan(&server).await;
    b.click("#logout").await;
    b.type_into("#token", "read-token-0123456789").await;
    b.click("#login").await;
    b.wait_for(&format!("[data-run=\"{second}\"]")).await;
    assert!(
        b.find("button.approve").await.is_none(),
        "no approve button for a reader"
    );
    let status = b
        .js(
            "const f = new FormData(); f.append('csrf', document.querySelector('input[name=csrf]').value);
             return fetch('/console/runs/' + arguments[0] + '/approve', {method: 'POST', body: new URLSearchParams(f)})
               .then(r => r.status);",
            vec![json!(second)],
        )
        .await;
    // (chromedriver waits for a returned promise.)
    assert_eq!(status, 403, "a reader's approve post");
    let rec = server
        .get_as("read-token-0123456789", &format!("/v1/runs/{second}"))
        .await
        .1;
    assert!(
        rec.contains("\"pending_approval\""),
        "a reader approved: {rec}"
    );
    b.close().await;
}

/// A page on another origin that posts the console's pause form on load,
/// as a malicious page an operator visits would.
async fn foreign_page(target: String) -> (String, tokio::task::JoinHandle<()>) {
    let html = format!(
        r#"<!doctype html><form id="f" method="post" action="{target}/console/pause">
        <input name="csrf" value="guessed"><input name="reason" value="pwned"></form>
        <script>document.getElementById('f').submit();</script>"#
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move { axum::response::Html(html) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://localhost:{}/",
        listener.local_addr().unwrap().port()
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_posted_from_another_site_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\ndata_dir = \"{}\"\n{TOKENS}\n",
        dir.path().join("data").display()
    );
    let server = start(dir.path(), &config, &ENV);
    let driver = Driver::start().await;
    let b = driver.browser().await;
    b.goto(&format!("{}/login", server.base)).await;
    b.type_into("#token", "admin-token-0123456789").await;
    b.click("#login").await;
    b.wait_for("#killswitch").await;
    let (foreign, task) = foreign_page(server.base.clone()).await;
    b.goto(&foreign).await;
    common::eventually("the foreign form was posted", 15, || async {
        b.url().await.contains("/console/pause").then_some(())
    })
    .await;
    let body = b.text("body").await;
    assert!(
        body.contains("401") || body.contains("403"),
        "the foreign post was not refused: {body}"
    );
    assert_eq!(
        paused(&server).await,
        Value::Null,
        "a foreign page paused automation"
    );
    task.abort();
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_needing_two_people_shows_who_approved_and_waits_for_the_second() {
    let tokens = r#"
tokens = [
  { name = "ops-runner", env = "B_RUN", roles = ["run", "read", "approve"] },
  { name = "on-call", env = "B_READ", roles = ["read", "approve"] },
  { name = "root", env = "B_ADMIN", roles = ["admin"] },
]"#;
    let StuckBreaker {
        dir: _dir,
        sim,
        server,
    } = stuck_breaker(
        tokens,
        "mode = \"approve\"\nverify_after = \"1h\"\napprovals_required = 2",
        "",
        &ENV,
    )
    .await;
    // Requested by ops-runner, who may approve plans but not this one.
    let id = plan(&server).await;
    let driver = Driver::start().await;
    let b = driver.browser().await;
    b.goto(&format!("{}/login", server.base)).await;
    b.type_into("#token", "admin-token-0123456789").await;
    b.click("#login").await;
    b.wait_for(&format!("[data-run=\"{id}\"]")).await;
    assert!(
        b.text("#pending").await.contains("0 of 2 approvals"),
        "{}",
        b.text("#pending").await
    );

    // The first approval: the plan's page says who, and that it waits.
    b.click(&format!("[data-run=\"{id}\"] button.approve"))
        .await;
    b.wait_for("#approvals").await;
    assert!(b.url().await.ends_with(&format!("/runs/{id}")));
    let progress = b.text("#approvals").await;
    assert_eq!(progress, "1 of 2 approvals, by root");
    std::fs::write(
        screenshots().join("run-two-person.png"),
        b.screenshot().await,
    )
    .unwrap();
    assert_eq!(
        sim.breaker_state("stripe").unwrap(),
        "OPEN",
        "one is not two"
    );

    // The requester's own approval does not count; a second person's runs it.
    let (code, body) = server
        .post_as(
            "run-token-0123456789",
            &format!("/v1/runs/{id}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = server
        .post_as(
            "read-token-0123456789",
            &format!("/v1/runs/{id}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    b.goto(&format!("{}/runs/{id}", server.base)).await;
    b.wait_for("#run").await;
    let decided = b.text("body").await;
    assert!(
        decided.contains("approved by root and on-call"),
        "{decided}"
    );
    b.close().await;
}
