//! Bearer tokens and their roles. Every route sits behind exactly one role
//! (see `router`): the role check is a layer, so a handler cannot forget it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::config::Role;

/// Bearer tokens and their roles; empty means the API is open.
pub struct Auth {
    tokens: Vec<(String, String, Vec<Role>)>,
    /// The secret of the console's CSRF tokens: derived from the token
    /// values when there are tokens (every replica derives the same), else
    /// random per process.
    secret: String,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            tokens: Vec::new(),
            secret: format!("{}{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4()),
        }
    }
}

impl Auth {
    /// Reads each token's value from its environment variable.
    pub fn from_config(tokens: &[crate::config::TokenConfig]) -> anyhow::Result<Auth> {
        let mut out = Vec::new();
        for t in tokens {
            let value = std::env::var(&t.env)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "token `{}`: environment variable {} is not set",
                        t.name,
                        t.env
                    )
                })?;
            out.push((t.name.clone(), value, t.roles.clone()));
        }
        // Replicas behind one load balancer share their tokens, so they
        // share this secret too: a page served by one may be posted to
        // another (and to the same one after a restart). Without tokens
        // (loopback only, one process) it stays random.
        let secret = if out.is_empty() {
            Auth::default().secret
        } else {
            use sha2::Digest as _;
            let mut values: Vec<&str> = out.iter().map(|(_, v, _)| v.as_str()).collect();
            values.sort_unstable();
            let mut h = sha2::Sha256::new();
            h.update(b"remedy console csrf v1");
            for v in values {
                h.update((v.len() as u64).to_le_bytes());
                h.update(v.as_bytes());
            }
            hex::encode(h.finalize())
        };
        Ok(Auth {
            tokens: out,
            secret,
        })
    }

    /// The CSRF token of a console session holding `token` (none on an
    /// open API): only a page this process served knows it.
    pub fn csrf(&self, token: Option<&str>) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(self.secret.as_bytes());
        h.update([0]);
        h.update(token.unwrap_or("").as_bytes());
        hex::encode(&h.finalize()[..16])
    }

    /// Whether `presented` is the CSRF token of `token`'s session.
    pub fn csrf_ok(&self, token: Option<&str>, presented: &str) -> bool {
        constant_time_eq(self.csrf(token).as_bytes(), presented.as_bytes())
    }

    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether the caller also holds `role` (admin holds every role; an
    /// open API has no roles to hold back).
    pub fn may(&self, method: &Method, headers: &HeaderMap, role: Role) -> bool {
        self.check(method, headers, role).is_ok()
    }

    /// The caller's token, if it is one of ours (any role).
    pub fn known(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        match self.check(method, headers, Role::Admin) {
            Err(e) if e.status == StatusCode::FORBIDDEN => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Who is asking, if they may `role`.
    pub fn check(
        &self,
        method: &Method,
        headers: &HeaderMap,
        role: Role,
    ) -> Result<String, ApiError> {
        self.check_token(presented(method, headers).as_deref(), role)
    }

    /// Who `presented` is, if it may `role`.
    pub fn check_token(&self, presented: Option<&str>, role: Role) -> Result<String, ApiError> {
        if self.tokens.is_empty() {
            return Ok("anonymous".into());
        }
        let presented = presented.ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a bearer token is required",
            )
        })?;
        let (name, _, roles) = self
            .tokens
            .iter()
            .find(|(_, v, _)| constant_time_eq(v.as_bytes(), presented.trim().as_bytes()))
            .ok_or_else(|| {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown token")
            })?;
        if roles.contains(&role) || roles.contains(&Role::Admin) {
            Ok(name.clone())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("token `{name}` lacks the `{}` role", role.as_str()),
            ))
        }
    }
}

/// The console's cookie: the token an operator entered once.
pub const COOKIE: &str = "remedy_token";

/// The token a request presents: its bearer token, else (for a request
/// that only reads: GET or HEAD) the console's cookie. The browser sends
/// the cookie only with same-site requests (`SameSite=Strict`), and no
/// state-changing API route takes it; the console's own forms check a
/// CSRF token as well.
fn presented(method: &Method, headers: &HeaderMap) -> Option<String> {
    if headers.contains_key(header::AUTHORIZATION) {
        return bearer(headers);
    }
    if method == Method::GET || method == Method::HEAD {
        return cookie_token(headers);
    }
    None
}

/// The request's bearer token, if it sends one.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(String::from)
}

/// The token kept in the console's cookie (hex, since a token may hold
/// bytes a cookie cannot).
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    cookie(headers, COOKIE)
        .and_then(|v| hex::decode(v).ok())
        .and_then(|b| String::from_utf8(b).ok())
}

/// The value of cookie `name`, if the request carries it.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who is calling (a token's name, or `anonymous` on an open API), put
/// into the request by the role layer.
#[derive(Debug, Clone)]
pub struct Who(pub String);

/// The role layer: `401`/`403` unless the caller holds `role`.
pub async fn require(
    State((s, role)): State<(Arc<AppState>, Role)>,
    mut req: Request,
    next: Next,
) -> Response {
    match s.auth.check(req.method(), req.headers(), role) {
        Ok(who) => {
            req.extensions_mut().insert(Who(who));
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}
