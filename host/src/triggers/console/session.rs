//! Who is at the console: the token from the login page, kept in a cookie
//! (or a bearer header, for scripts), its roles, and the CSRF token its
//! forms carry.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use serde::Deserialize;

use super::views::render;
use crate::config::Role;
use crate::triggers::http::{bearer, cookie_token, AppState, COOKIE};

/// How long the console's cookie lasts.
const COOKIE_MAX_AGE_S: u64 = 12 * 3600;

/// A caller of the console who may read.
pub struct Session {
    pub who: String,
    /// The token presented (none on an open API).
    pub token: Option<String>,
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

/// The caller's session if it may `role`: else the login page (no or an
/// unknown token, for a page; it comes back to `page` once logged in) or an
/// error page.
pub fn session(
    s: &AppState,
    method: &Method,
    headers: &HeaderMap,
    role: Role,
    page: &str,
) -> Result<Session, Response> {
    // Unlike the API, the console's forms take the cookie on POST too:
    // they carry a CSRF token besides.
    let token = bearer(headers).or_else(|| cookie_token(headers));
    match s.auth.check_token(token.as_deref(), role) {
        Ok(who) => {
            let may = |r| s.auth.check_token(token.as_deref(), r).is_ok();
            Ok(Session {
                who,
                csrf: s.auth.csrf(token.as_deref()),
                can_approve: may(Role::Approve),
                can_admin: may(Role::Admin),
                open: s.auth.is_open(),
                token,
            })
        }
        Err(e) if e.status == StatusCode::UNAUTHORIZED && method == Method::GET => {
            let next: String = url_escape(page);
            Err(see_other(&format!("/login?next={next}")))
        }
        Err(e) => Err(error_page(e.status, &e.message)),
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

/// A path as a query value.
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
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
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if let Err(r) = super::forms::same_origin(&headers) {
        return r;
    }
    let Ok(Form(form)) = form else {
        return error_page(StatusCode::BAD_REQUEST, "the login form needs a `token`");
    };
    let token = form.token.trim();
    let next = local(form.next.as_deref());
    // Behind a TLS-terminating proxy the cookie is never sent in clear.
    let secure = if super::forms::over_https(&headers) {
        "; Secure"
    } else {
        ""
    };
    match s.auth.check_token(Some(token), Role::Read) {
        Ok(_) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, next),
                (
                    header::SET_COOKIE,
                    format!(
                        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={COOKIE_MAX_AGE_S}{secure}",
                        hex::encode(token)
                    ),
                ),
            ],
        )
            .into_response(),
        Err(e) => {
            let body = render("login.html", minijinja::context! { error => e.message, next });
            (e.status, body).into_response()
        }
    }
}

pub(super) async fn logout(headers: HeaderMap) -> Response {
    if let Err(r) = super::forms::same_origin(&headers) {
        return r;
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
