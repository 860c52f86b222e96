//! The web console in-process (the router, no socket): logging in, the
//! pages, and every way a form can be refused: no session, a role the
//! token lacks, a missing or foreign CSRF token, a cross-site request.
//! (`browser.rs` drives the same console in a real headless browser.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use remedy::config::Config;
use remedy::service::Service;
use remedy::triggers::http::{router, AppState, Auth};
use serde_json::{json, Value};
use tower::ServiceExt;

const TOKENS: &str = r#"
tokens = [
  { name = "watcher", env = "CONSOLE_T_READ", roles = ["read", "run"] },
  { name = "lead-alice", env = "CONSOLE_T_APPROVE", roles = ["approve", "read"] },
  { name = "root", env = "CONSOLE_T_ADMIN", roles = ["admin"] },
]"#;

struct App {
    router: axum::Router,
    service: Arc<Service>,
    _sim: servio_sim::Sim,
    _dir: tempfile::TempDir,
}

async fn app(tokens: bool) -> App {
    for (env, v) in [
        ("CONSOLE_T_READ", "read-token-0123456789"),
        ("CONSOLE_T_APPROVE", "approve-token-0123456789"),
        ("CONSOLE_T_ADMIN", "admin-token-0123456789"),
    ] {
        std::env::set_var(env, v);
    }
    let dir = tempfile::tempdir().unwrap();
    let sim = common::sim().await;
    sim.open_breaker("stripe");
    let text = common::breaker_config(
        dir.path(),
        &sim,
        if tokens { TOKENS } else { "" },
        "mode = \"approve\"\nverify_after = \"1h\"",
        "",
    );
    let config = Config::parse(&text, std::path::Path::new("console.toml")).unwrap();
    let auth = Auth::from_config(&config.server.tokens).unwrap();
    let service = Service::start(config).await.unwrap();
    let state = Arc::new(AppState {
        service: service.clone(),
        auth,
    });
    App {
        router: router(state, 1 << 20, Duration::from_secs(5)),
        service,
        _sim: sim,
        _dir: dir,
    }
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl App {
    async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
            .await
            .unwrap();
        Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Resp {
        let mut req = Request::get(path).header(header::HOST, "127.0.0.1:8080");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.send(req.body(Body::empty()).unwrap()).await
    }

    /// A form post, from the console's own origin unless `headers` say
    /// otherwise.
    async fn form(
        &self,
        path: &str,
        cookie: Option<&str>,
        form: &str,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = Request::post(path)
            .header(header::HOST, "127.0.0.1:8080")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(Body::from(form.to_string())).unwrap())
            .await
    }

    /// Logs in with `token`: the session cookie.
    async fn login(&self, token: &str) -> String {
        let r = self
            .form("/login", None, &format!("token={token}"), &[])
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        let set = r.headers[header::SET_COOKIE].to_str().unwrap().to_string();
        set.split(';').next().unwrap().to_string()
    }

    /// A plan waiting for approval (its id).
    async fn plan(&self) -> String {
        let req = Request::post("/v1/plugins/circuit-breaker-open/runs?wait=true")
            .header(header::HOST, "127.0.0.1:8080")
            .header(header::AUTHORIZATION, "Bearer read-token-0123456789")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let r = self.send(req).await;
        let rec: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(rec["status"], "pending_approval", "{rec}");
        rec["id"].as_str().unwrap().to_string()
    }

    async fn status_of(&self, id: &str) -> String {
        let rec = self.service.store.get_run(id).await.unwrap().unwrap();
        rec.status.as_str().to_string()
    }
}

/// The CSRF token a page's forms carry.
fn csrf(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    page[at..at + 32].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_without_a_session_is_sent_to_log_in_and_a_token_opens_the_console() {
    let app = app(true).await;
    let r = app.get("/", None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers[header::LOCATION], "/login?next=/");
    // A link to a run (from a page, a chat) comes back to it once logged in.
    let run = "/runs/00000000-0000-4000-8000-000000000000";
    let r = app.get(run, None).await;
    assert_eq!(
        r.headers[header::LOCATION],
        format!("/login?next={run}").as_str()
    );
    let r = app.get(&format!("/login?next={run}"), None).await;
    assert!(
        r.body.contains(
            "name=\"next\" value=\"&#x2f;runs&#x2f;00000000-0000-4000-8000-000000000000\""
        ),
        "{}",
        r.body
    );
    let r = app
        .form(
            "/login",
            None,
            &format!("token=read-token-0123456789&next={run}"),
            &[],
        )
        .await;
    assert_eq!(r.headers[header::LOCATION], run);
    for elsewhere in [
        "//evil.example/x",
        "https://evil.example",
        "/\\evil.example",
    ] {
        let r = app
            .form(
                "/login",
                None,
                &format!("token=read-token-0123456789&next={elsewhere}"),
                &[],
            )
            .await;
        assert_eq!(
            r.headers[header::LOCATION],
            "/",
            "{elsewhere}: no open redirect"
        );
    }
    let r = app.get("/login", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("name=\"token\""), "{}", r.body);

    let r = app.form("/login", None, "token=not-a-token", &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("unknown token"), "{}", r.body);
    assert!(!r.headers.contains_key(header::SET_COOKIE));

    let r = app
        .form("/login", None, "token=read-token-0123456789", &[])
        .await;
    let set = r.headers[header::SET_COOKIE].to_str().unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "plain http: {set}");
    let https = app
        .form(
            "/login",
            None,
            "token=read-token-0123456789",
            &[("x-forwarded-proto", "https")],
        )
        .await;
    let secure = https.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(secure.contains("; Secure"), "behind a TLS proxy: {secure}");
    assert!(
        !set.contains("read-token-0123456789"),
        "the token is not kept in clear: {set}"
    );
    let cookie = set.split(';').next().unwrap();
    let r = app.get("/", Some(cookie)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    for section in [
        "id=\"killswitch\"",
        "id=\"pending\"",
        "id=\"recent\"",
        "id=\"plugins\"",
        "id=\"budgets\"",
        "<svg class=\"chart\"",
    ] {
        assert!(r.body.contains(section), "{section} missing");
    }
    assert!(
        r.body.contains("circuit-breaker-open"),
        "the plugin is listed"
    );
    assert!(
        r.body.contains("breaker.force-state"),
        "its budget is listed"
    );
    // The cookie reads the API too (the live feed's EventSource cannot
    // send a header), but only for reads.
    let r = app.get("/v1/plugins", Some(cookie)).await;
    assert_eq!(r.status, StatusCode::OK);
    let req = Request::post("/v1/admin/pause")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::COOKIE, app.login("admin-token-0123456789").await)
        .body(Body::from("{}"))
        .unwrap();
    let r = app.send(req).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "an API post does not take the cookie"
    );
    assert!(app.service.paused().is_none());

    // Replicas with the same tokens make the same CSRF tokens for a
    // session: a page served by one may be posted to another.
    let text = format!("[server]\n{TOKENS}\n");
    let config = Config::parse(&text, std::path::Path::new("c.toml")).unwrap();
    let (a, b) = (
        Auth::from_config(&config.server.tokens).unwrap(),
        Auth::from_config(&config.server.tokens).unwrap(),
    );
    assert_eq!(a.csrf(Some("session-one")), b.csrf(Some("session-one")));
    assert_ne!(a.csrf(Some("session-one")), a.csrf(Some("session-two")));
    assert_ne!(
        Auth::default().csrf(None),
        Auth::default().csrf(None),
        "open: per process"
    );

    for h in [header::CONTENT_SECURITY_POLICY, header::X_FRAME_OPTIONS] {
        assert!(
            app.get("/login", None).await.headers.contains_key(&h),
            "{h}"
        );
    }
    // An unknown caller's login is read only up to a form's size.
    let big = format!("token={}", "x".repeat(20 << 10));
    let r = app.form("/login", None, &big, &[]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let js = app.get("/console/assets/console.js", None).await;
    assert!(js.body.contains("EventSource"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_is_refused_cross_site_without_its_csrf_token_or_without_the_role() {
    let app = app(true).await;
    let id = app.plan().await;
    let approve = format!("/console/runs/{id}/approve");

    // A reader sees the plan but no approve button, and is refused anyway.
    let reader = app.login("read-token-0123456789").await;
    let page = app.get("/", Some(&reader)).await.body;
    assert!(
        page.contains(&id) && page.contains("breaker:stripe"),
        "the plan is shown"
    );
    assert!(
        !page.contains("class=\"approve"),
        "no approve button for a reader"
    );
    assert!(page.contains("Your token cannot approve"));
    let r = app
        .form(
            &approve,
            Some(&reader),
            &format!("csrf={}", csrf(&page)),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body.contains("lacks the `approve` role"), "{}", r.body);

    let lead = app.login("approve-token-0123456789").await;
    let page = app.get("/", Some(&lead)).await.body;
    assert!(
        page.contains("class=\"approve"),
        "the approver has the button"
    );
    let token = csrf(&page);
    let ok = format!("csrf={token}");
    for (what, form, headers) in [
        (
            "a foreign Origin",
            ok.as_str(),
            vec![("origin", "http://evil.example")],
        ),
        (
            "a cross-site fetch",
            ok.as_str(),
            vec![("sec-fetch-site", "cross-site")],
        ),
        // An opaque origin names no site: once compared equal to a
        // missing Host ("" == ""), now refused.
        ("Origin: null", ok.as_str(), vec![("origin", "null")]),
        ("no CSRF token", "", vec![]),
        (
            "another session's CSRF token",
            &format!("csrf={}", csrf(&app.get("/", Some(&reader)).await.body)),
            vec![],
        ),
    ] {
        let r = app.form(&approve, Some(&lead), form, &headers).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {}", r.body);
        assert_eq!(
            app.status_of(&id).await,
            "pending_approval",
            "{what} approved the plan"
        );
    }
    let r = app.form(&approve, None, &ok, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "no session");
    assert_eq!(app.status_of(&id).await, "pending_approval");

    let kind = remedy::action::ActionKind::BreakerForceState;
    let hour = Duration::from_secs(3600);
    let used = || {
        app.service
            .store
            .budget_used("circuit-breaker-open", kind, hour)
    };
    assert_eq!(used().await.unwrap(), 0, "planning spends no budget");

    // Behind a proxy that rewrites Host, the browser's host is forwarded.
    let proxied = app
        .form(
            &format!("/console/runs/{id}/reject"),
            Some(&lead),
            "csrf=bad",
            &[
                ("origin", "https://remedy.example"),
                ("x-forwarded-host", "remedy.example"),
            ],
        )
        .await;
    assert!(
        proxied.body.contains("CSRF"),
        "the origin check passed, the token did not: {}",
        proxied.body
    );

    // Same origin, the session's token: approved, and sent to the live run.
    let r = app
        .form(
            &approve,
            Some(&lead),
            &ok,
            &[("origin", "http://127.0.0.1:8080")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let to = r.headers[header::LOCATION].to_str().unwrap().to_string();
    assert!(to.starts_with("/runs/") && !to.ends_with(&id), "{to}");
    assert_eq!(app.status_of(&id).await, "succeeded");
    common::eventually("the live run spends its budget", 15, || async {
        (used().await.unwrap() == 1).then_some(())
    })
    .await;
    let page = app.get("/", Some(&lead)).await.body;
    assert!(page.contains("1 / "), "the budget's use is shown");
    let plan = app.get(&format!("/runs/{id}"), Some(&lead)).await.body;
    assert!(
        plan.contains("approved") && plan.contains("lead-alice"),
        "the run page shows the decision"
    );
    assert!(
        plan.contains("id=\"timeline\"") && plan.contains("Plan approved by lead-alice"),
        "{plan}"
    );

    // Pausing is an admin's: an approver is refused, an admin's wrong
    // token is refused, the admin's own works.
    let r = app.form("/console/pause", Some(&lead), &ok, &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let root = app.login("admin-token-0123456789").await;
    let r = app.form("/console/pause", Some(&root), &ok, &[]).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "the approver's CSRF token is not root's"
    );
    assert!(app.service.paused().is_none());
    let root_csrf = csrf(&app.get("/", Some(&root)).await.body);
    let r = app
        .form(
            "/console/pause",
            Some(&root),
            &format!("csrf={root_csrf}&reason=db+migration"),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let pause = app.service.paused().expect("paused");
    assert_eq!(
        (pause.by.as_str(), pause.reason.as_deref()),
        ("root", Some("db migration"))
    );
    let page = app.get("/", Some(&reader)).await.body;
    assert!(page.contains("data-paused=\"true\"") && page.contains("db migration"));
    let r = app
        .form(
            "/console/resume",
            Some(&root),
            &format!("csrf={root_csrf}"),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(app.service.paused().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_alerts_and_plugins_wrote_is_shown_as_text() {
    let app = app(false).await;
    let hostile = "<script>alert(1)</script>";
    let body = common::payload(vec![common::alert(
        "ConsoleEscape",
        "firing",
        json!({"instance": hostile}),
        "escfp",
        "2026-11-28T10:00:00Z",
    )]);
    let req = Request::post("/v1/alerts")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::ACCEPTED);
    // Open (no tokens): loopback only, no login.
    let page = app.get("/", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("ConsoleEscape"),
        "the firing alert is listed"
    );
    assert!(!page.body.contains(hostile), "a label is not markup");
    assert!(page.body.contains("&lt;script&gt;"));
    let r = app.get("/login", None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "nothing to log in to");

    // Open, a cross-site form is still refused, at the front door.
    let csrf = csrf(&page.body);
    let r = app
        .form(
            "/console/pause",
            None,
            &format!("csrf={csrf}"),
            &[("origin", "http://evil.example")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(app.service.paused().is_none());
    let mut req = Request::get("/").header(header::HOST, "evil.example");
    req = req.header(header::ACCEPT, "text/html");
    assert_eq!(
        app.send(req.body(Body::empty()).unwrap()).await.status,
        StatusCode::FORBIDDEN
    );
}

/// The value of the session cookie a login set.
fn session_of(r: &Resp) -> String {
    let set = r.headers[header::SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

/// A console login from `peer` (the listener puts its address into each
/// request; in-process, the test does).
async fn login_from(app: &App, peer: &str, token: &str) -> Resp {
    let mut req = Request::post("/login")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={token}")))
        .unwrap();
    let addr: std::net::SocketAddr = format!("{peer}:40000").parse().unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(addr));
    app.send(req).await
}

/// The cookie held the token itself (hex): a logout revoked nothing, and a
/// cookie copied before it opened the console and read the API for as long
/// as the token lived. Now it holds a session id the store knows, and a
/// logout ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_ends_the_session_and_its_old_cookie_opens_nothing() {
    let app = app(true).await;
    let cookie = app.login("read-token-0123456789").await;
    assert_eq!(app.get("/", Some(&cookie)).await.status, StatusCode::OK);
    assert_eq!(
        app.get("/v1/plugins", Some(&cookie)).await.status,
        StatusCode::OK
    );

    let other = app.login("read-token-0123456789").await;
    let r = app.form("/logout", Some(&cookie), "", &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(r.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let r = app.get("/", Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "the old cookie is refused");
    assert_eq!(r.headers[header::LOCATION], "/login?next=/");
    let r = app.get("/v1/plugins", Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert!(r.body.contains("the session has ended"), "{}", r.body);
    assert_eq!(
        app.get("/", Some(&other)).await.status,
        StatusCode::OK,
        "the other session holds"
    );
    let hex_token = cookie_hex("read-token-0123456789");
    assert!(
        !other.contains(&hex_token),
        "the cookie is not the token: {other}"
    );

    // Two logins with one token are two sessions, each with its own CSRF
    // token: a page of one does not serve a form of the other.
    let third = app.login("read-token-0123456789").await;
    assert_ne!(third, other);
    let (mine, theirs) = (
        csrf(&app.get("/", Some(&third)).await.body),
        csrf(&app.get("/", Some(&other)).await.body),
    );
    assert_ne!(mine, theirs, "the CSRF token derives from the session");

    // A session is its token's: taken out of the config, or given a new
    // value, the token no longer holds it (the store still has it).
    let config_without = |tokens: &str| {
        let text = format!("[server]\ntokens = [\n{tokens}\n]\n");
        Config::parse(&text, std::path::Path::new("c.toml")).unwrap()
    };
    std::env::set_var("CONSOLE_T_ROTATED", "a-new-read-token-0123456789");
    for (why, tokens) in [
        (
            "taken out",
            r#"{ name = "root", env = "CONSOLE_T_ADMIN", roles = ["admin"] }"#,
        ),
        (
            "a new value",
            r#"{ name = "watcher", env = "CONSOLE_T_ROTATED", roles = ["read"] }"#,
        ),
    ] {
        let config = config_without(tokens);
        let restarted = router(
            Arc::new(AppState {
                service: app.service.clone(),
                auth: Auth::from_config(&config.server.tokens).unwrap(),
            }),
            1 << 20,
            Duration::from_secs(5),
        );
        let req = Request::get("/")
            .header(header::HOST, "127.0.0.1:8080")
            .header(header::COOKIE, &other)
            .body(Body::empty())
            .unwrap();
        let r = restarted.oneshot(req).await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "token {why}");
    }
}

fn cookie_hex(token: &str) -> String {
    token.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Pages held runs, plans and CSRF tokens with no `Cache-Control`: a
/// shared machine's back button or a proxy could show them after logout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_page_is_sent_no_store() {
    let app = app(true).await;
    let cookie = app.login("read-token-0123456789").await;
    let pages = [
        ("the login page", app.get("/login", None).await),
        (
            "a refused login",
            app.form("/login", None, "token=not-a-token-0123456789", &[])
                .await,
        ),
        ("the way to log in", app.get("/", None).await),
        ("the overview", app.get("/", Some(&cookie)).await),
        (
            "an error page",
            app.get("/runs/no-such-run", Some(&cookie)).await,
        ),
        (
            "a refused form",
            app.form("/console/pause", Some(&cookie), "csrf=x", &[])
                .await,
        ),
    ];
    for (what, r) in pages {
        assert_eq!(
            r.headers
                .get(header::CACHE_CONTROL)
                .map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{what} ({})",
            r.status
        );
    }
    let css = app.get("/console/assets/console.css", None).await;
    assert_eq!(css.headers[header::CACHE_CONTROL], "public, max-age=300");
}

/// The login form answered every guess at once (~4,300 a second), and
/// logged none. Now an address gets a handful, then about one a second;
/// while it waits even the right token is not looked at, and other
/// addresses are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_from_one_address_are_throttled_and_others_are_not() {
    let app = app(true).await;
    let guesser = "192.0.2.7";
    for i in 0..5 {
        let r = login_from(&app, guesser, &format!("guess-{i}-0123456789abcdef")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "guess {i}: {}", r.body);
    }
    let r = login_from(&app, guesser, "guess-5-0123456789abcdef").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert_eq!(r.headers[header::RETRY_AFTER], "1");
    assert!(r.body.contains("too many failed"), "{}", r.body);
    let r = login_from(&app, guesser, "admin-token-0123456789").await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the right token is not checked while the address waits"
    );
    assert!(!r.headers.contains_key(header::SET_COOKIE));

    let r = login_from(&app, "192.0.2.8", "admin-token-0123456789").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "another address logs in");

    // The API's bearer tokens count against the same address.
    let mut req = Request::get("/v1/plugins")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::AUTHORIZATION, "Bearer read-token-0123456789")
        .body(Body::empty())
        .unwrap();
    let addr: std::net::SocketAddr = format!("{guesser}:40001").parse().unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(addr));
    let r = app.send(req).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert_eq!(r.headers[header::RETRY_AFTER], "1");

    // About a second later, one attempt more.
    let r = common::eventually("the address may try again", 5, || async {
        let r = login_from(&app, guesser, "admin-token-0123456789").await;
        (r.status != StatusCode::TOO_MANY_REQUESTS).then_some(r)
    })
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(session_of(&r).starts_with("remedy_session="));
}
