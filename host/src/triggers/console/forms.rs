//! The console's forms: approve or reject a plan, pause or resume
//! automation. Their guard (`guard.rs`) has checked, in order, that the
//! request is not cross-site, the caller holds the role and the form's CSRF
//! token is this session's; each does what the API route does and sends
//! the browser back to a page.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;

use super::guard::Checked;
use super::session::{error_page, see_other};
use crate::service::approval::DecideError;
use crate::triggers::http::AppState;

/// A console form's fields (its `csrf` was checked by the guard).
#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    reason: Option<String>,
}

/// Refuses a request a browser marks as cross-site (`Sec-Fetch-Site`) or
/// whose `Origin` is not the host it was sent to.
pub fn same_origin(headers: &HeaderMap) -> Result<(), Response> {
    let refuse = |why: String| Err(error_page(StatusCode::FORBIDDEN, &why));
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return refuse(format!(
                "a cross-site form is refused (Sec-Fetch-Site: {site})"
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = first(headers, header::HOST.as_str());
        let authority = origin.split_once("://").map_or("", |(_, a)| a);
        let authority = authority.trim_end_matches('/');
        // Behind a proxy that sends its upstream's name as `Host`, the name
        // the browser used is in `X-Forwarded-Host`, a header no cross-site
        // form can set.
        // `Origin: null` (a sandboxed frame, a redirect) names no site:
        // refused, not compared ("" == "" when `Host` is missing too).
        if authority.is_empty()
            || (authority != host && authority != first(headers, "x-forwarded-host"))
        {
            return refuse(format!(
                "a cross-site form is refused (Origin `{origin}` is not this host, `{host}`)"
            ));
        }
    }
    Ok(())
}

/// The first value of header `name` ("" when absent).
fn first<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map_or("", str::trim)
}

/// Whether the browser reached us over https (a TLS-terminating proxy says
/// so in `X-Forwarded-Proto`): the session cookie is then `Secure`.
pub fn over_https(headers: &HeaderMap) -> bool {
    first(headers, "x-forwarded-proto").eq_ignore_ascii_case("https")
}

type FormResult = Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>;

async fn decide(s: Arc<AppState>, session: Checked, id: String, approve: bool) -> Response {
    let Checked(session) = session;
    let Ok(id) = uuid::Uuid::parse_str(&id).map(|u| u.hyphenated().to_string()) else {
        return error_page(StatusCode::NOT_FOUND, "no such run");
    };
    match s.service.decide(&id, approve, &session.who).await {
        Ok(d) => see_other(&format!("/runs/{}", d.live_run.unwrap_or(id))),
        Err(e) => {
            let status = match &e {
                DecideError::NotFound(_) => StatusCode::NOT_FOUND,
                DecideError::Expired { .. } => StatusCode::GONE,
                DecideError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
                DecideError::OwnRequest { .. } => StatusCode::FORBIDDEN,
                _ => StatusCode::CONFLICT,
            };
            error_page(status, &e.to_string())
        }
    }
}

pub(super) async fn approve(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    session: Checked,
) -> Response {
    decide(s, session, id, true).await
}

pub(super) async fn reject(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    session: Checked,
) -> Response {
    decide(s, session, id, false).await
}

pub(super) async fn pause(
    State(s): State<Arc<AppState>>,
    Checked(session): Checked,
    form: FormResult,
) -> Response {
    let reason = form
        .ok()
        .and_then(|Form(f)| f.reason)
        .map(|r| r.chars().take(500).collect::<String>())
        .filter(|r| !r.trim().is_empty());
    // As the API: a pause that cannot be stored still holds here.
    match s.service.set_paused(true, &session.who, reason).await {
        Ok(_) => see_other("/"),
        Err(e) => error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the pause holds in this process but was not stored and a restart will forget it: {e}"),
        ),
    }
}

pub(super) async fn resume(State(s): State<Arc<AppState>>, Checked(session): Checked) -> Response {
    match s.service.set_paused(false, &session.who, None).await {
        Ok(_) => see_other("/"),
        Err(e) => error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("not resumed: {e}"),
        ),
    }
}

/// Clears an alert's flapping (role approve): Remedy acts on it again.
pub(super) async fn clear_flap(
    State(s): State<Arc<AppState>>,
    Path(fingerprint): Path<String>,
    Checked(session): Checked,
) -> Response {
    if !crate::service::valid_fingerprint(&fingerprint) {
        return error_page(StatusCode::BAD_REQUEST, "not an alert fingerprint");
    }
    match s.service.clear_flap(&fingerprint, &session.who).await {
        Ok(()) => see_other("/"),
        Err(e) => error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("not cleared: {e}"),
        ),
    }
}
