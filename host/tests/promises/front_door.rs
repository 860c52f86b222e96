//! The API's front door: foreign hosts and origins, unknown callers,
//! half-sent requests, and an OpenAPI document that matches every route.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_foreign_hosts_and_origins_are_refused_and_every_error_is_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &format!(
            "[server]\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
        &[],
    );
    let url = |p: &str| format!("{}{p}", server.base);
    let port = server.base.rsplit(':').next().unwrap().to_string();
    // DNS rebinding: the page's own name, resolved to 127.0.0.1.
    let r = server
        .http
        .get(url("/v1/runs"))
        .header("host", format!("evil.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden_host", "{body}");
    // Cross-site: a page elsewhere posting to the loopback API.
    for path in ["/v1/admin/resume", "/v1/alerts", "/v1/plugins/hostile/runs"] {
        let r = server
            .http
            .post(url(path))
            .header("origin", "https://evil.example")
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden_origin", "{body}");
    }
    for host in ["localhost", "127.0.0.1", "[::1]"] {
        let r = server
            .http
            .get(url("/v1/admin/pause"))
            .header("host", format!("{host}:{port}"))
            .header("origin", format!("http://{host}:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
    // Error shapes: a bad query string and a wrong method.
    let r = server
        .http
        .get(url("/v1/runs?limit=lots"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("limit"));
    let r = server.http.delete(url("/v1/runs")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_an_unknown_caller_is_refused_before_its_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[server]\ndata_dir = \"{}\"\n{TOKENS}\n",
        dir.path().join("data").display()
    );
    let server = start(dir.path(), &cfg, &ENV);
    // Headers promising a 900 KB body that never comes: answered at once.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    sock.write_all(
        format!("POST /v1/alerts HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 900000\r\n\r\n{{").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
        .await
        .expect("answered without the body")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(head.contains("unauthorized"), "{head}");
    // Open endpoints stay open; a known token gets through.
    assert_eq!(server.text("/healthz").await, r#"{"status":"ok"}"#);
    let (code, _) = server.get_as("run-token-0123456789", "/v1/runs").await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_dropped_and_do_not_hold_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[server]\ndata_dir = \"{}\"\nread_timeout_ms = 500\ndrain_timeout_ms = 1000\n",
        dir.path().join("data").display()
    );
    let mut server = start(dir.path(), &cfg, &[]);
    let addr = server.base.trim_start_matches("http://").to_string();
    // Headers that never end: the connection is closed.
    let mut headers = tokio::net::TcpStream::connect(&addr).await.unwrap();
    headers
        .write_all(b"POST /v1/alerts HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), headers.read(&mut buf))
        .await
        .expect("closed by the server")
        .unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || head.starts_with("HTTP/1.1 408"), "{head}");
    // A body that never ends: 408.
    let mut body = tokio::net::TcpStream::connect(&addr).await.unwrap();
    body.write_all(
        format!("POST /v1/alerts HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"alerts\"").as_bytes(),
    )
    .await
    .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), body.read(&mut buf))
        .await
        .expect("answered")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(head.contains("request_timeout"), "{head}");
    // Shutdown is not held by a client that stalls.
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled.write_all(b"GET /v1/ru").await.unwrap();
    let pid = server.child.id().to_string();
    let started = Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route_that_answers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[server]\ndata_dir = \"{}\"\n",
        dir.path().join("data").display()
    );
    let server = start(dir.path(), &cfg, &[]);
    let doc = server.get("/v1/openapi.json").await;
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 15, "{paths:?}");
    let id = "00000000-0000-4000-8000-000000000000";
    for (path, ops) in paths {
        let concrete = path
            .replace("{id}", id)
            .replace("{name}", "circuit-breaker-open");
        for method in ops.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = server
                .http
                .request(m, format!("{}{concrete}", server.base))
                .header("content-type", "application/json")
                .body(if path.ends_with("alerts") {
                    r#"{"alerts":[]}"#
                } else {
                    "{}"
                })
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            // The live feed never ends: its headers are the answer.
            let body = if r.headers()["content-type"] == "text/event-stream" {
                String::new()
            } else {
                r.text().await.unwrap()
            };
            assert!(
                code != 405 && !body.contains("no such endpoint"),
                "{method} {path} is documented but not served: {code} {body}"
            );
            // Schemas referenced by the operation exist.
            for reference in ops[method].to_string().split("\"$ref\":\"").skip(1) {
                let name = reference.split('"').next().unwrap();
                let name = name.trim_start_matches("#/components/schemas/");
                assert!(
                    doc["components"]["schemas"][name].is_object(),
                    "{name} is referenced but not defined"
                );
            }
        }
    }
    for schema in [
        "RunRecord",
        "Receipt",
        "Webhook",
        "EntryView",
        "AuditEvent",
        "Pause",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}
