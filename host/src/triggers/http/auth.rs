//! Bearer tokens, console sessions and their roles. Every route sits behind
//! exactly one role (see `router`): the role check is a layer, so a handler
//! cannot forget it.
//!
//! A console session is a random id in the browser's cookie; the store
//! keeps only its hash, the *name* of the token it was opened with and its
//! expiry, so every replica sharing the store knows it and a logout on one
//! ends it on all. Its roles are those its token has in this process's
//! config, read on every request: a token taken out of the config (or given
//! a new value) ends its sessions.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::throttle::Throttle;
use super::{ApiError, AppState};
use crate::config::Role;
use crate::store::{Store, StoredSession};

/// The shortest token value accepted: a short one is guessed.
pub const MIN_TOKEN_BYTES: usize = 16;

/// How long a console session lasts (its cookie's `Max-Age` too).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

struct Token {
    name: String,
    value: String,
    roles: Vec<Role>,
}

/// Bearer tokens and their roles; empty means the API is open.
pub struct Auth {
    tokens: Vec<Token>,
    /// The secret of the console's CSRF tokens: derived from the token
    /// values when there are tokens (every replica derives the same), else
    /// random per process.
    secret: String,
    /// Failed token checks per peer.
    throttle: Throttle,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            tokens: Vec::new(),
            secret: format!("{}{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4()),
            throttle: Throttle::default(),
        }
    }
}

/// A caller the API knows: who, with which roles.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name (`anonymous` on an open API).
    pub who: String,
    roles: Vec<Role>,
    /// What the console's CSRF tokens derive from: the session id, or the
    /// bearer token of a script (none on an open API).
    pub csrf_key: Option<String>,
}

impl Caller {
    /// Whether the caller holds `role` (admin holds every role).
    pub fn may(&self, role: Role) -> bool {
        self.roles.contains(&role) || self.roles.contains(&Role::Admin)
    }

    /// `403` unless the caller holds `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.may(role) {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("token `{}` lacks the `{}` role", self.who, role.as_str()),
        ))
    }
}

impl Auth {
    /// Reads each token's value from its environment variable. A value
    /// shorter than [`MIN_TOKEN_BYTES`], or one two tokens share (one would
    /// silently answer for the other), is refused; errors name the token and
    /// its variable, never the value.
    pub fn from_config(tokens: &[crate::config::TokenConfig]) -> anyhow::Result<Auth> {
        let mut out: Vec<(Token, &str)> = Vec::new();
        for t in tokens {
            let value = crate::backends::env_value(&t.env).ok_or_else(|| {
                anyhow::anyhow!(
                    "token `{}`: environment variable {} is not set",
                    t.name,
                    t.env
                )
            })?;
            if value.trim().len() < MIN_TOKEN_BYTES {
                anyhow::bail!(
                    "token `{}`: the value of {} is shorter than {MIN_TOKEN_BYTES} bytes; use a random one (`openssl rand -hex 32`)",
                    t.name,
                    t.env
                );
            }
            if let Some((other, other_env)) = out.iter().find(|(o, _)| o.value == value) {
                anyhow::bail!(
                    "tokens `{}` ({}) and `{}` ({}) have the same value: one would answer for the other; give each its own",
                    other.name,
                    other_env,
                    t.name,
                    t.env
                );
            }
            out.push((
                Token {
                    name: t.name.clone(),
                    value,
                    roles: t.roles.clone(),
                },
                &t.env,
            ));
        }
        let tokens: Vec<Token> = out.into_iter().map(|(t, _)| t).collect();
        // Replicas behind one load balancer share their tokens, so they
        // share this secret too: a page served by one may be posted to
        // another (and to the same one after a restart). Without tokens
        // (loopback only, one process) it stays random.
        let secret = if tokens.is_empty() {
            Auth::default().secret
        } else {
            use sha2::Digest as _;
            let mut values: Vec<&str> = tokens.iter().map(|t| t.value.as_str()).collect();
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
            tokens,
            secret,
            throttle: Throttle::default(),
        })
    }

    /// The CSRF token of a console session whose key (session id, or a
    /// script's bearer token) is `key`; none on an open API. Only a page
    /// this service served knows it.
    pub fn csrf(&self, key: Option<&str>) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(self.secret.as_bytes());
        h.update([0]);
        h.update(key.unwrap_or("").as_bytes());
        hex::encode(&h.finalize()[..16])
    }

    /// Whether `presented` is the CSRF token of the session keyed `key`.
    pub fn csrf_ok(&self, key: Option<&str>, presented: &str) -> bool {
        constant_time_eq(self.csrf(key).as_bytes(), presented.as_bytes())
    }

    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether the caller's bearer token (a `POST` takes no cookie) holds
    /// `role` (admin holds every role; an open API has no roles to hold
    /// back).
    pub fn may(&self, headers: &HeaderMap, role: Role) -> bool {
        self.check(headers, role).is_ok()
    }

    /// Who is asking by bearer token, if they may `role`. Unthrottled and
    /// blind to sessions: for a check after [`Auth::caller`] let the
    /// request in.
    pub fn check(&self, headers: &HeaderMap, role: Role) -> Result<String, ApiError> {
        if self.is_open() {
            return Ok("anonymous".into());
        }
        let presented = bearer(headers).ok_or_else(token_required)?;
        let token = self.token(&presented).ok_or_else(unknown_token)?;
        let caller = self.caller_of(token, None);
        caller.require(role)?;
        Ok(caller.who)
    }

    /// The token whose value is `presented`.
    fn token(&self, presented: &str) -> Option<&Token> {
        let presented = presented.trim().as_bytes();
        self.tokens
            .iter()
            .find(|t| constant_time_eq(t.value.as_bytes(), presented))
    }

    fn caller_of(&self, t: &Token, csrf_key: Option<String>) -> Caller {
        Caller {
            who: t.name.clone(),
            roles: t.roles.clone(),
            csrf_key,
        }
    }

    /// Who is asking: their bearer token, else (when `cookie`: a read of
    /// the API, any request of the console) their console session. A peer
    /// that has spent its failed token checks is answered `429` before its
    /// token is looked at.
    pub async fn caller(
        &self,
        store: &dyn Store,
        headers: &HeaderMap,
        cookie: bool,
        peer: Option<IpAddr>,
    ) -> Result<Caller, ApiError> {
        if self.is_open() {
            return Ok(Caller {
                who: "anonymous".into(),
                roles: vec![Role::Admin],
                csrf_key: None,
            });
        }
        if headers.contains_key(header::AUTHORIZATION) {
            let presented = bearer(headers).ok_or_else(token_required)?;
            let t = self.checked(&presented, peer, "bearer token")?;
            return Ok(self.caller_of(t, Some(presented)));
        }
        match cookie.then(|| session_cookie(headers)).flatten() {
            Some(id) => self.session(store, id).await,
            None => Err(token_required()),
        }
    }

    /// Failed credential checks per peer (tokens, and Slack signatures).
    pub(super) fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// The token `presented` is, counted against `peer` when it is none.
    fn checked(
        &self,
        presented: &str,
        peer: Option<IpAddr>,
        what: &str,
    ) -> Result<&Token, ApiError> {
        let now = Instant::now();
        if let Err(wait) = self.throttle.check(peer, now) {
            return Err(ApiError::throttled(wait));
        }
        self.token(presented).ok_or_else(|| {
            self.throttle.failed(peer, now);
            let peer = peer.map_or("unknown".to_string(), |p| p.to_string());
            tracing::warn!(%peer, "refused an unknown {what}");
            unknown_token()
        })
    }

    /// The session whose id is `id`, if the store has it unexpired and its
    /// token still has the value it was opened with.
    async fn session(&self, store: &dyn Store, id: &str) -> Result<Caller, ApiError> {
        let ended = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the session has ended: log in again",
            )
        };
        if !is_session_id(id) {
            return Err(ended());
        }
        let Some(stored) = store.session(&id_hash(id)).await? else {
            return Err(ended());
        };
        let token = self
            .tokens
            .iter()
            .find(|t| t.name == stored.token)
            .filter(|t| {
                constant_time_eq(binding(id, &t.value).as_bytes(), stored.binding.as_bytes())
            })
            .ok_or_else(ended)?;
        Ok(self.caller_of(token, Some(id.to_string())))
    }

    /// Opens a console session for the token `presented` (which must hold
    /// `read`): answers who it is and the session id, the cookie's value.
    pub async fn open_session(
        &self,
        store: &dyn Store,
        presented: &str,
        peer: Option<IpAddr>,
    ) -> Result<(Caller, String), ApiError> {
        let t = self.checked(presented, peer, "token at the login form")?;
        let id = new_session_id();
        let caller = self.caller_of(t, Some(id.clone()));
        caller.require(Role::Read)?;
        store
            .create_session(
                &StoredSession {
                    id_hash: id_hash(&id),
                    token: t.name.clone(),
                    binding: binding(&id, &t.value),
                },
                SESSION_TTL,
            )
            .await?;
        Ok((caller, id))
    }

    /// Ends the request's console session (nothing without one).
    pub async fn end_session(
        &self,
        store: &dyn Store,
        headers: &HeaderMap,
    ) -> Result<(), ApiError> {
        match session_cookie(headers).filter(|id| is_session_id(id)) {
            Some(id) => Ok(store.end_session(&id_hash(id)).await?),
            None => Ok(()),
        }
    }
}

fn token_required() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a bearer token is required",
    )
}

fn unknown_token() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown token")
}

/// A new session id: 32 bytes of the system's random generator (two v4
/// UUIDs: 244 random bits), in hex.
fn new_session_id() -> String {
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    format!("{}{}", a.simple(), b.simple())
}

fn is_session_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What the store keeps of a session id: a reader of the store finds no
/// cookie that works.
fn id_hash(id: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(format!("remedy session v1\0{id}")))
}

/// Ties a session to its token's value without storing it (nor anything a
/// reader of the store could test guesses of it against: the id is not
/// stored).
fn binding(id: &str, value: &str) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(b"remedy session binding v1\0");
    h.update(id.as_bytes());
    h.update([0]);
    h.update(value.as_bytes());
    hex::encode(h.finalize())
}

/// The console's cookie: the session's id.
pub const COOKIE: &str = "remedy_session";

/// The request's bearer token, if it sends one.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(String::from)
}

/// The session id in the console's cookie, if the request carries one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, COOKIE)
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

/// The peer's address, put into each request by the listener (absent for
/// an in-process caller of the router).
pub fn peer(req: &Request) -> Option<IpAddr> {
    peer_of(req.extensions())
}

fn peer_of(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The peer's address, for a handler (see [`peer`]).
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(peer_of(&parts.extensions)))
    }
}

/// Whether a request to the API may be answered by the console's session
/// cookie: reads only (`GET`, `HEAD`). The browser sends the cookie only
/// with same-site requests (`SameSite=Strict`), and no state-changing API
/// route takes it; the console's own forms check a CSRF token as well.
pub fn cookie_reads(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// The role layer: `401`/`403` unless the caller holds `role`. The front
/// door has usually found the caller already.
pub async fn require(
    State((s, role)): State<(Arc<AppState>, Role)>,
    mut req: Request,
    next: Next,
) -> Response {
    let caller = match req.extensions().get::<Caller>() {
        Some(c) => Ok(c.clone()),
        None => {
            let cookie = cookie_reads(req.method());
            s.auth
                .caller(s.service.store.as_ref(), req.headers(), cookie, peer(&req))
                .await
        }
    };
    match caller.and_then(|c| c.require(role).map(|()| c)) {
        Ok(c) => {
            req.extensions_mut().insert(Who(c.who));
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;

    fn token(name: &str, env: &str) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            env: env.into(),
            roles: vec![Role::Read],
        }
    }

    #[test]
    fn a_short_token_is_refused_naming_it_and_not_its_value() {
        std::env::set_var("AUTH_UT_SHORT", "x");
        std::env::set_var("AUTH_UT_FIFTEEN", "fifteen-bytes!!");
        std::env::set_var("AUTH_UT_OK", "sixteen-bytes-ok");
        for env in ["AUTH_UT_SHORT", "AUTH_UT_FIFTEEN"] {
            let err = Auth::from_config(&[token("ops", env)])
                .err()
                .expect("refused")
                .to_string();
            assert!(
                err.contains("`ops`") && err.contains(env) && err.contains("16 bytes"),
                "{err}"
            );
            assert!(
                !err.contains("fifteen-bytes"),
                "the value is not said: {err}"
            );
        }
        assert!(Auth::from_config(&[token("ops", "AUTH_UT_OK")]).is_ok());
    }

    #[test]
    fn two_tokens_with_one_value_are_refused_naming_both() {
        std::env::set_var("AUTH_UT_DUP_A", "the-same-value-0123456789");
        std::env::set_var("AUTH_UT_DUP_B", "the-same-value-0123456789");
        let err = Auth::from_config(&[
            token("alice", "AUTH_UT_DUP_A"),
            token("bob", "AUTH_UT_DUP_B"),
        ])
        .err()
        .expect("refused")
        .to_string();
        for part in ["`alice`", "AUTH_UT_DUP_A", "`bob`", "AUTH_UT_DUP_B"] {
            assert!(err.contains(part), "{part}: {err}");
        }
        assert!(!err.contains("the-same-value"), "{err}");
    }

    #[test]
    fn a_session_id_is_random_hex_and_only_its_hash_is_kept() {
        let (a, b) = (new_session_id(), new_session_id());
        assert!(is_session_id(&a) && is_session_id(&b) && a != b);
        assert_ne!(id_hash(&a), a);
        assert_ne!(
            binding(&a, "value-one-0123456"),
            binding(&a, "value-two-0123456")
        );
        assert!(!is_session_id(&hex::encode("read-token-0123456789")));
    }
}
