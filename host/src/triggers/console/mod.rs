//! The operator's console (`remedy serve` at `/`): server-rendered pages of
//! what fires, what Remedy did, what waits for approval and whether
//! automation is paused, kept live by the event feed (`/v1/events`).
//!
//! It answers to the API's tokens and roles: a token entered once on the
//! login page opens a session kept in the store, whose random id is an
//! `HttpOnly`, `SameSite=Strict` cookie, and every form that changes state
//! carries a CSRF token derived from that id (and a cross-site `Origin` or
//! `Sec-Fetch-Site` is refused). Without tokens it is,
//! like the API, answered on loopback names only (the front door).

// A refusal here is the page to send back (`Err(Response)`), built once per
// request: its size does not matter.
#![allow(clippy::result_large_err)]

mod chart;
mod forms;
mod guard;
mod pages;
mod session;
mod views;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::config::Role;
use crate::triggers::http::AppState;

/// The largest body a console form may send.
pub const MAX_FORM: usize = 16 << 10;

/// Whether `path` is one of the console's: they check who is asking
/// themselves (an unknown caller gets the login page, not a 401).
pub fn owns(path: &str) -> bool {
    path == "/"
        || path == "/login"
        || path == "/logout"
        || path.starts_with("/runs/")
        || path.starts_with("/console/")
}

/// The console's routes, merged into the API's router. Pages and forms
/// are grouped by the role they need, each group behind its guard (as the
/// API's routes are): a route cannot be added without saying who may use it.
pub fn routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    use guard::guarded;
    let public = Router::new()
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/console/assets/{file}", get(pages::asset));
    let pages = Router::new()
        .route("/", get(pages::overview))
        .route("/runs/{id}", get(pages::run));
    let approve = Router::new()
        .route("/console/runs/{id}/approve", post(forms::approve))
        .route("/console/runs/{id}/reject", post(forms::reject))
        .route(
            "/console/alerts/{fingerprint}/clear-flap",
            post(forms::clear_flap),
        );
    let admin = Router::new()
        .route("/console/pause", post(forms::pause))
        .route("/console/resume", post(forms::resume));
    public
        .merge(guarded(state, Role::Read, false, pages))
        .merge(guarded(state, Role::Approve, true, approve))
        .merge(guarded(state, Role::Admin, true, admin))
        .layer(axum::middleware::map_response(headers))
}

/// What a browser may do with the console's pages: run only this server's
/// script, never frame them (an approve button under someone else's page),
/// send no referrer with a run id in it to another site. (Not
/// `no-referrer`: with it a browser sends `Origin: null` on its own forms,
/// which the same-origin check must refuse.)
async fn headers(mut r: axum::response::Response) -> axum::response::Response {
    use axum::http::{header, HeaderValue};
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // A page holds runs, plans and a CSRF token: no cache (a proxy's, a
    // shared machine's back button after logout) keeps it. The assets say
    // how long they keep themselves.
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}
