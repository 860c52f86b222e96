//! The front door, before any handler: who may knock (loopback only on an
//! open API, a known token otherwise) and the body, read within its time
//! and size bounds.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// Where Slack sends interactions and slash commands.
pub const SLACK_PATH: &str = "/v1/slack/interactions";

/// The front door, before any handler reads a body. With tokens, a request
/// without a known one is answered `401` here. With no tokens configured the
/// API is open, so it must be reachable only
/// from this machine *as this machine*: a web page in a local browser can
/// send requests to 127.0.0.1 (cross-site) or, by DNS rebinding, under a
/// name of its own. Both are refused: the `Host` must be a loopback name or
/// address, and an `Origin`, when the browser sends one, too.
pub async fn front_door(
    State((s, max_body, read_timeout)): State<(Arc<AppState>, usize, std::time::Duration)>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let console = crate::triggers::console::owns(req.uri().path());
    // Slack's requests come from Slack, under the name Slack was given, and
    // carry no token: their signature is checked by the handler, on a body
    // held to a size Slack's requests fit.
    let slack = req.uri().path() == SLACK_PATH;
    if slack {
        // Checked by `slack::interactions`.
    } else if s.auth.is_open() {
        if let Err(e) = loopback_request(req.headers()) {
            return e.into_response();
        }
    } else if !matches!(
        req.uri().path(),
        "/healthz" | "/metrics" | "/v1/openapi.json"
    ) && !console
    {
        // Who is asking is settled before any body is read: an unknown
        // caller cannot make the server buffer a megabyte per request.
        // (The console's pages answer an unknown caller with its login
        // page, and its forms are small.) The role layer reads it from here.
        let cookie = super::auth::cookie_reads(req.method());
        let peer = super::auth::peer(&req);
        match s
            .auth
            .caller(s.service.store.as_ref(), req.headers(), cookie, peer)
            .await
        {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
            }
            Err(e) => return e.into_response(),
        }
    }
    // The body, read here within `read_timeout` and `max_body`: a client
    // trickling a body holds nothing for long.
    // The console's pages take no one's word for who is asking before the
    // body is read, so their bodies (a login, a CSRF token, a pause reason)
    // are held to a few KiB.
    let max_body = if console {
        max_body.min(crate::triggers::console::MAX_FORM)
    } else if slack {
        max_body.min(super::slack::MAX_SLACK_BODY)
    } else {
        max_body
    };
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(read_timeout, axum::body::to_bytes(body, max_body)).await
    {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let too_large = e.to_string().contains("length limit");
            return if too_large {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the body is larger than {max_body} bytes"),
                )
            } else {
                ApiError::bad_request(format!("reading the body failed: {e}"))
            }
            .into_response();
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the body did not arrive within {} ms",
                    read_timeout.as_millis()
                ),
            )
            .into_response()
        }
    };
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

fn loopback_request(h: &HeaderMap) -> Result<(), ApiError> {
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !is_loopback_authority(host) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_host",
            format!("with no [[server.tokens]] configured, only requests addressed to a loopback name or address are answered (Host: `{host}`)"),
        ));
    }
    if let Some(origin) = h.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let authority = origin
            .split_once("://")
            .map(|(_, a)| a.trim_end_matches('/'))
            .unwrap_or("");
        // This server's own origin only: a web app on another loopback
        // port (`http://localhost:3000`) is another site.
        if authority.is_empty() || !authority.eq_ignore_ascii_case(host) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                format!("with no [[server.tokens]] configured, cross-site requests are refused: only this server's own origin (`{host}`) may send them (Origin: `{origin}`)"),
            ));
        }
    }
    Ok(())
}

/// `localhost`, `127.0.0.1:8080`, `[::1]:8080` and the like.
fn is_loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(authority),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
