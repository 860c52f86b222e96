//! Who may reach a console route, checked before its handler runs, as the
//! API's `guarded` routers do: a page needs a session that may `read`; a
//! form needs, in this order, a same-origin request, a session holding the
//! form's role and the session's CSRF token in the form. A handler gets the
//! checked [`Session`] through the [`Checked`] extractor, which only a guard
//! provides: a route added outside a guard answers 500, never unchecked.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{request::Parts, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use serde::Deserialize;

use super::session::{error_page, session, Session};
use crate::config::Role;
use crate::triggers::http::{AppState, Peer};

/// The routes of `router`, each behind a session that may `role`; forms
/// (`form`) are also checked for origin and CSRF token.
pub(super) fn guarded(
    state: &Arc<AppState>,
    role: Role,
    form: bool,
    router: Router<Arc<AppState>>,
) -> Router<Arc<AppState>> {
    router.route_layer(axum::middleware::from_fn_with_state(
        (state.clone(), role, form),
        check,
    ))
}

async fn check(
    State((s, role, form)): State<(Arc<AppState>, Role, bool)>,
    peer: Peer,
    req: Request,
    next: Next,
) -> Response {
    if form {
        if let Err(r) = super::forms::same_origin(req.headers()) {
            return r;
        }
    }
    // A page the login sends the caller back to; a form sends it home.
    let page = if req.method() == Method::GET {
        req.uri().path().to_string()
    } else {
        "/".to_string()
    };
    let method = req.method().clone();
    let session = match session(&s, &peer, &method, req.headers(), role, &page).await {
        Ok(session) => session,
        Err(r) => return r,
    };
    let mut req = if form {
        match csrf_checked(&s, &session, req).await {
            Ok(req) => req,
            Err(r) => return r,
        }
    } else {
        req
    };
    req.extensions_mut().insert(Arc::new(session));
    next.run(req).await
}

#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

/// The request again, once its form carries this session's CSRF token.
async fn csrf_checked(s: &AppState, session: &Session, req: Request) -> Result<Request, Response> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, super::MAX_FORM)
        .await
        .map_err(|_| error_page(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large"))?;
    let presented = serde_urlencoded::from_bytes::<CsrfField>(&bytes)
        .map(|f| f.csrf)
        .unwrap_or_default();
    if !s.auth.csrf_ok(session.csrf_key.as_deref(), &presented) {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            "the form's CSRF token is missing or not this session's: reload the page and try again",
        ));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// The session a guard checked.
pub(super) struct Checked(pub Arc<Session>);

impl<S: Send + Sync> FromRequestParts<S> for Checked {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        parts
            .extensions
            .get::<Arc<Session>>()
            .cloned()
            .map(Checked)
            .ok_or_else(|| {
                tracing::error!(path = %parts.uri.path(), "a console route outside a guard");
                error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "this page is not behind the console's login",
                )
            })
    }
}
