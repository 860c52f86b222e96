//! Who is at the console: a session opened at the login page, its id kept
//! in a cookie (or a bearer header, for scripts), its roles, and the CSRF
//! token its forms carry. Sessions live in the store (see
//! `triggers::http::auth`), so a logout ends one on every replica.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use serde::Deserialize;

use super::views::render;
use crate::config::Role;
use crate::triggers::http::{ApiError, AppState, Peer, COOKIE, SESSION_TTL};

/// A caller of the console who may read.
pub struct Session {
    pub who: String,
    /// What its CSRF tokens derive from: the session id, or a script's
    /// bearer token (none on an open API).
    pub csrf_key: Option<String>,
    pub csrf: String,
    pub can_approve: bool,
    pub can_admin: bool,
    /// No tokens are configured (nothing to log out of).
    pub open: bool,
}

impl Session {
    /// What every page's template is given about the session (`base.html`
    /// and the forms use it).
    pub fn page(&self, page: &str) -> minijinja::Value {
        minijinja::context! {
            page,
            who => self.who,
            open => self.open,
            csrf => self.csrf,
            can_approve => self.can_approve,
            can_admin => self.can_admin,
        }
    }
}

/// The caller's session if it may `role`: else the login page (no session,
/// an ended one or an unknown token, for a page; it comes back to `page`
/// once logged in) or an error page.
pub async fn session(
    s: &AppState,
    peer: &Peer,
    method: &Method,
    headers: &HeaderMap,
    role: Role,
    page: &str,
) -> Result<Session, Response> {
    // Unlike the API, the console's forms take the cookie on POST too:
    // they carry a CSRF token besides.
    let caller = s
        .auth
        .caller(s.service.store.as_ref(), headers, true, peer.0)
        .await
        .and_then(|c| c.require(role).map(|()| c));
    match caller {
        Ok(c) => Ok(Session {
            csrf: s.auth.csrf(c.csrf_key.as_deref()),
            can_approve: c.may(Role::Approve),
            can_admin: c.may(Role::Admin),
            open: s.auth.is_open(),
            who: c.who,
            csrf_key: c.csrf_key,
        }),
        Err(e) if e.status == StatusCode::UNAUTHORIZED && method == Method::GET => {
            let next: String = url_escape(page);
            Err(see_other(&format!("/login?next={next}")))
        }
        Err(e) => Err(api_error_page(e)),
    }
}

/// A 303 to `to` (after a form, or to the login page).
pub fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// An error as a page of the console.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let body = render(
        "error.html",
        minijinja::context! { status => status.as_u16(), reason => status.canonical_reason(), message },
    );
    (status, body).into_response()
}

/// An API error as a page of the console, with its `Retry-After`.
fn api_error_page(e: ApiError) -> Response {
    let mut r = error_page(e.status, &e.message);
    retry_after(&mut r, &e);
    r
}

fn retry_after(r: &mut Response, e: &ApiError) {
    if let Some(secs) = e.retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, secs.into());
    }
}

/// Where to go after logging in: a path of this server, never another
/// site (`//evil`, `/\\evil`, `https://evil`).
fn local(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && n.chars().all(|c| c.is_ascii_graphic() && c != '\\') =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

/// What a path keeps as is in a query value.
const QUERY_PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'/');

/// A path as a query value.
fn url_escape(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY_PATH).to_string()
}

#[derive(Deserialize)]
pub(super) struct NextQuery {
    next: Option<String>,
}

pub(super) async fn login_page(
    State(s): State<Arc<AppState>>,
    q: Result<axum::extract::Query<NextQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let next = local(q.as_ref().ok().and_then(|q| q.next.as_deref()));
    if s.auth.is_open() {
        return see_other(&next);
    }
    render("login.html", minijinja::context! { next }).into_response()
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
    next: Option<String>,
}

pub(super) async fn login(
    State(s): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if let Err(r) = super::forms::same_origin(&headers) {
        return r;
    }
    let Ok(Form(form)) = form else {
        return error_page(StatusCode::BAD_REQUEST, "the login form needs a `token`");
    };
    let next = local(form.next.as_deref());
    if s.auth.is_open() {
        return see_other(&next);
    }
    // Behind a TLS-terminating proxy the cookie is never sent in clear.
    let secure = if super::forms::over_https(&headers) {
        "; Secure"
    } else {
        ""
    };
    match s
        .auth
        .open_session(s.service.store.as_ref(), &form.token, peer.0)
        .await
    {
        Ok((caller, id)) => {
            let peer = peer.0.map_or("unknown".to_string(), |p| p.to_string());
            tracing::info!(who = %caller.who, %peer, "console login");
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, next),
                    (
                        header::SET_COOKIE,
                        format!(
                            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                            SESSION_TTL.as_secs()
                        ),
                    ),
                ],
            )
                .into_response()
        }
        Err(e) => {
            let body = render(
                "login.html",
                minijinja::context! { error => e.message, next },
            );
            let mut r = (e.status, body).into_response();
            retry_after(&mut r, &e);
            r
        }
    }
}

/// Ends the session in the store (on every replica), then drops the
/// cookie. Should the store fail, the cookie is kept: the session still
/// holds until it expires, and the operator can try again.
pub(super) async fn logout(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(r) = super::forms::same_origin(&headers) {
        return r;
    }
    if let Err(e) = s.auth.end_session(s.service.store.as_ref(), &headers).await {
        return error_page(
            e.status,
            &format!(
                "the session could not be ended and still holds: {}",
                e.message
            ),
        );
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/login".to_string()),
            (
                header::SET_COOKIE,
                format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
            ),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_path_is_escaped_as_a_query_value() {
        assert_eq!(super::url_escape("/runs/ab-1_2.x"), "/runs/ab-1_2.x");
        assert_eq!(
            super::url_escape("/runs/a b?c=d&e#f"),
            "/runs/a%20b%3Fc%3Dd%26e%23f"
        );
    }
}
