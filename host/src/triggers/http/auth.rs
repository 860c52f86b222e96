//! Bearer tokens and their roles. Every route sits behind exactly one role
//! (see `router`): the role check is a layer, so a handler cannot forget it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::config::Role;

/// Bearer tokens and their roles; empty means the API is open.
#[derive(Default)]
pub struct Auth {
    tokens: Vec<(String, String, Vec<Role>)>,
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
        Ok(Auth { tokens: out })
    }

    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether the caller also holds `role` (admin holds every role; an
    /// open API has no roles to hold back).
    pub fn may(&self, headers: &HeaderMap, role: Role) -> bool {
        self.check(headers, role).is_ok()
    }

    /// The caller's token, if it is one of ours (any role).
    pub fn known(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match self.check(headers, Role::Admin) {
            Err(e) if e.status == StatusCode::FORBIDDEN => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Who is asking, if they may `role`.
    pub fn check(&self, headers: &HeaderMap, role: Role) -> Result<String, ApiError> {
        if self.tokens.is_empty() {
            return Ok("anonymous".into());
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
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
    match s.auth.check(req.headers(), role) {
        Ok(who) => {
            req.extensions_mut().insert(Who(who));
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}
