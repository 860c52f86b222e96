//! Every route of the HTTP API in-process (`tower::ServiceExt::oneshot`,
//! no socket): the role each one needs, and the status codes and error
//! bodies of its failures. The route table below must match the OpenAPI
//! document, so a new route cannot be added without deciding its role here.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use remedy::config::{Config, Role};
use remedy::service::Service;
use remedy::triggers::http::{router, AppState, Auth};
use serde_json::Value;
use tower::ServiceExt;

/// (method, path, role); `None` is public.
const ROUTES: &[(&str, &str, Option<Role>)] = &[
    ("GET", "/healthz", None),
    ("GET", "/metrics", None),
    ("GET", "/v1/openapi.json", None),
    ("GET", "/v1/plugins", Some(Role::Read)),
    ("POST", "/v1/plugins/reload", Some(Role::Admin)),
    ("POST", "/v1/plugins/{name}/runs", Some(Role::Run)),
    ("GET", "/v1/runs", Some(Role::Read)),
    ("GET", "/v1/runs/{id}", Some(Role::Read)),
    ("POST", "/v1/runs/{id}/approve", Some(Role::Approve)),
    ("POST", "/v1/runs/{id}/reject", Some(Role::Approve)),
    (
        "POST",
        "/v1/alerts/{fingerprint}/clear-flap",
        Some(Role::Approve),
    ),
    ("GET", "/v1/runs/{id}/report", Some(Role::Read)),
    ("GET", "/v1/admin/pause", Some(Role::Read)),
    ("GET", "/v1/cluster", Some(Role::Read)),
    ("POST", "/v1/admin/pause", Some(Role::Admin)),
    ("POST", "/v1/admin/resume", Some(Role::Admin)),
    ("GET", "/v1/alerts", Some(Role::Read)),
    ("POST", "/v1/alerts", Some(Role::Alerts)),
    ("GET", "/v1/audit", Some(Role::Read)),
    ("GET", "/v1/events", Some(Role::Read)),
    ("POST", "/mcp", Some(Role::Agent)),
];

const ROLES: [Role; 6] = [
    Role::Read,
    Role::Run,
    Role::Approve,
    Role::Alerts,
    Role::Agent,
    Role::Admin,
];

fn token(role: Role) -> String {
    format!("routes-test-token-{}", role.as_str())
}

/// A service with one token per role (and a bundled plugin or two), its
/// store in `dir`.
async fn app(dir: &std::path::Path, tokens: bool) -> (axum::Router, Arc<Service>) {
    let mut text = format!(
        "[server]\ndata_dir = \"{}\"\nmax_body_bytes = 4096\n",
        dir.display()
    );
    if tokens {
        for role in ROLES {
            let env = format!("ROUTES_TEST_TOKEN_{}", role.as_str().to_uppercase());
            // Set before any thread reads the environment.
            std::env::set_var(&env, token(role));
            text.push_str(&format!(
                "[[server.tokens]]\nname = \"{r}-holder\"\nenv = \"{env}\"\nroles = [\"{r}\"]\n",
                r = role.as_str()
            ));
        }
    }
    let config = Config::parse(&text, std::path::Path::new("routes.toml")).unwrap();
    let auth = Auth::from_config(&config.server.tokens).unwrap();
    let service = Service::start(config).await.unwrap();
    let state = Arc::new(AppState {
        service: service.clone(),
        auth,
    });
    (router(state, 4096, Duration::from_secs(5)), service)
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "00000000-0000-4000-8000-000000000000")
        .replace("{name}", "circuit-breaker-open")
        .replace("{fingerprint}", "4f2a9c0d1e3b5a77")
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(path)
        .header("host", "127.0.0.1:8080")
        .header("content-type", "application/json");
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    // The live feed never ends: its status is the answer.
    if resp.headers()["content-type"] == "text/event-stream" {
        return (status, Value::Null);
    }
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
        .await
        .unwrap();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v)
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str, what: &str) {
    assert_eq!(status, want, "{what}: {body}");
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
}

#[test]
fn the_route_table_is_the_openapi_document() {
    let doc = remedy::triggers::openapi::document(true);
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let mut ours: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    // Signed by Slack instead of carrying a token: its checks are in
    // tests/slack.rs.
    ours.push(("POST".into(), "/v1/slack/interactions".into()));
    ours.sort();
    assert_eq!(ours, documented);
}

/// Every route answers 401 without a token (public ones excepted), 403 in
/// the API's error shape to every role but its own (and admin), and gets
/// past authorisation with its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_its_role() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _service) = app(dir.path(), true).await;
    for &(method, path, role) in ROUTES {
        let uri = concrete(path);
        let what = format!("{method} {path}");
        let (status, body) = call(&app, method, &uri, None, "").await;
        match role {
            None => assert!(status.is_success(), "{what}: {status} {body}"),
            Some(_) => assert_error(
                status,
                &body,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                &what,
            ),
        }
        let (status, body) = call(&app, method, &uri, Some("not-a-token"), "").await;
        if role.is_some() {
            assert_error(
                status,
                &body,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                &what,
            );
        }
        for holder in ROLES {
            let (status, body) = call(&app, method, &uri, Some(&token(holder)), "{}").await;
            let allowed = role.is_none_or(|r| r == holder || holder == Role::Admin);
            if allowed {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{what} as {}: {status} {body}",
                    holder.as_str()
                );
            } else {
                assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden", &what);
                assert!(
                    body["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains(role.unwrap().as_str()),
                    "{what}: {body}"
                );
            }
        }
    }
}

/// The failures each route can answer, in the API's one error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_have_precise_status_codes_and_error_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _service) = app(dir.path(), true).await;
    let admin = Some(token(Role::Admin));
    let admin = admin.as_deref();
    let unknown = "/v1/runs/00000000-0000-4000-8000-000000000000";
    let big = "x".repeat(5000);
    let cases: Vec<(&str, String, &str, StatusCode, &str)> = vec![
        // Unsigned, with Slack not configured: unsigned all the same.
        (
            "POST",
            "/v1/slack/interactions".into(),
            "payload=%7B%7D",
            StatusCode::UNAUTHORIZED,
            "bad_signature",
        ),
        (
            "GET",
            "/v1/nowhere".into(),
            "",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "DELETE",
            "/v1/runs".into(),
            "",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "GET",
            unknown.into(),
            "",
            StatusCode::NOT_FOUND,
            "unknown_run",
        ),
        (
            "GET",
            format!("{unknown}/report"),
            "",
            StatusCode::NOT_FOUND,
            "unknown_run",
        ),
        (
            "POST",
            format!("{unknown}/approve"),
            "",
            StatusCode::NOT_FOUND,
            "unknown_run",
        ),
        (
            "POST",
            format!("{unknown}/reject"),
            "",
            StatusCode::NOT_FOUND,
            "unknown_run",
        ),
        (
            "POST",
            "/v1/plugins/nope/runs".into(),
            "",
            StatusCode::NOT_FOUND,
            "unknown_plugin",
        ),
        (
            "POST",
            "/v1/plugins/circuit-breaker-open/runs".into(),
            "[1]",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "POST",
            "/v1/plugins/circuit-breaker-open/runs".into(),
            r#"{"mode":"yolo"}"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "POST",
            "/v1/plugins/circuit-breaker-open/runs".into(),
            r#"{"mode":"auto","dry_run":true}"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "POST",
            "/v1/plugins/circuit-breaker-open/runs".into(),
            r#"{"config":{"protected_x":"y"}}"#,
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "POST",
            "/v1/plugins/circuit-breaker-open/runs?wait=maybe".into(),
            "",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "GET",
            "/v1/runs?limit=100000".into(),
            "",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "GET",
            "/v1/alerts?limit=-1".into(),
            "",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "GET",
            "/v1/audit?limit=100000".into(),
            "",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "POST",
            "/v1/alerts".into(),
            r#"{"alerts":3}"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "POST",
            "/v1/alerts".into(),
            r#"{"alerts":[{"status":"firing","labels":{},"startsAt":"2026-01-01T00:00:00Z"}]}"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "POST",
            "/v1/alerts".into(),
            big.as_str(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "POST",
            "/v1/admin/pause".into(),
            r#"{"why":"typo"}"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (got, v) = call(&app, method, &path, admin, body).await;
        assert_error(
            got,
            &v,
            status,
            code,
            &format!("{method} {path} {body:.40}"),
        );
    }
    // A dry run needs `run`; running live what is configured dry needs
    // `approve` too.
    let run = token(Role::Run);
    let (got, v) = call(
        &app,
        "POST",
        "/v1/plugins/circuit-breaker-open/runs",
        Some(&run),
        r#"{"mode":"auto"}"#,
    )
    .await;
    assert_error(
        got,
        &v,
        StatusCode::FORBIDDEN,
        "forbidden",
        "live run as `run`",
    );
    let (got, v) = call(
        &app,
        "POST",
        "/v1/plugins/circuit-breaker-open/runs?wait=true",
        Some(&run),
        "",
    )
    .await;
    assert_eq!(got, StatusCode::OK, "{v}");
    assert_eq!(v["dry_run"], true, "{v}");
    // Deciding a run that is not waiting for approval is a conflict.
    let id = v["id"].as_str().unwrap();
    let (got, v) = call(&app, "POST", &format!("/v1/runs/{id}/approve"), admin, "").await;
    assert_error(
        got,
        &v,
        StatusCode::CONFLICT,
        "not_pending",
        "approve a finished run",
    );
}

/// With no tokens the API answers only requests addressed to loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_api_answers_only_loopback_hosts_and_origins() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _service) = app(dir.path(), false).await;
    let send = |host: &'static str, origin: Option<&'static str>| {
        let app = app.clone();
        async move {
            let mut req = Request::builder().uri("/v1/plugins").header("host", host);
            if let Some(o) = origin {
                req = req.header("origin", o);
            }
            let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
                .await
                .unwrap();
            (
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
            )
        }
    };
    let (s, _) = send("localhost:8080", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = send("evil.example:8080", None).await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden_host", "rebinding");
    let (s, v) = send("127.0.0.1:8080", Some("https://evil.example")).await;
    assert_error(
        s,
        &v,
        StatusCode::FORBIDDEN,
        "forbidden_origin",
        "cross-site",
    );
    // Another web app on this machine is another site (issue 28), and an
    // origin that names no site (`null`) is refused, not compared.
    for origin in ["http://localhost:3000", "http://127.0.0.1:3000", "null", ""] {
        let (s, v) = send("127.0.0.1:8080", Some(origin)).await;
        assert_error(
            s,
            &v,
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            "cross-site",
        );
    }
    let (s, _) = send("127.0.0.1:8080", Some("http://127.0.0.1:8080")).await;
    assert_eq!(s, StatusCode::OK);
}

/// The whole service in-process on a socket of the test's own, stopped by
/// the test's own signal: `serve` is this plus binding and SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_serves_a_listener_until_its_shutdown_future_completes() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(
        &format!("[server]\ndata_dir = \"{}\"\n", dir.path().display()),
        std::path::Path::new("routes.toml"),
    )
    .unwrap();
    let service = Service::start(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(remedy::serve::serve_with(listener, service, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let health: Value = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let rec: Value = http
        .post(format!(
            "{base}/v1/plugins/circuit-breaker-open/runs?wait=true"
        ))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // No breaker API is configured here: the run ends, saying so.
    assert_eq!(rec["status"], "failed", "{rec}");
    assert!(
        rec["error"]
            .as_str()
            .unwrap()
            .contains("no breaker backend configured"),
        "{rec}"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("serve_with returns after its shutdown future")
        .unwrap()
        .unwrap();
    assert!(
        http.get(format!("{base}/healthz")).send().await.is_err(),
        "nothing listens after shutdown"
    );
}
