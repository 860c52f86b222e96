//! What every backend shares: its error type, the permit its mutations take
//! and the HTTP helpers (errors without secrets, capped bodies). Each
//! capability's own backend trait and implementations live in its folder
//! under `capabilities/`.

pub mod pg_tls;

pub use crate::permit::Permit;

/// A backend could not do what was asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    #[error("{0}")]
    Unavailable(String),
    /// The request was sent and no answer came: a change may or may not
    /// have taken effect (a timeout after sending).
    #[error("{0}")]
    Unknown(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
    /// The backend declined to act and changed nothing (the target is not
    /// in the state the action was planned for): recorded `refused`.
    #[error("{0}")]
    Refused(String),
}

pub type BackendResult<T> = Result<T, BackendError>;

/// The value of environment variable `name` when it is set and not empty:
/// where the config says a secret comes from (each caller names the key in
/// its error).
pub(crate) fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A request that never got an answer: the backend is unreachable or slow.
/// reqwest's own message hides the cause, so the whole chain is spelled out.
pub(crate) fn transport_error(what: &str, e: reqwest::Error) -> BackendError {
    // A URL can carry secrets (a Slack webhook's path, `user:pass@`, a
    // token in the query): errors name only scheme, host and port, and the
    // error chain is printed without the URL reqwest would add.
    let at = e
        .url()
        .map(|u| format!(" ({})", origin(u)))
        .unwrap_or_default();
    let e = e.without_url();
    if e.is_timeout() {
        return BackendError::Unavailable(format!("{what}{at}: timed out"));
    }
    let mut msg = format!("{what}{at}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    BackendError::Unavailable(msg)
}

/// `transport_error` for a request that changes something: a timeout other
/// than a connect timeout may have been applied, so its outcome is unknown.
pub(crate) fn write_error(what: &str, e: reqwest::Error) -> BackendError {
    let unknown = e.is_timeout() && !e.is_connect();
    match transport_error(what, e) {
        BackendError::Unavailable(m) if unknown => BackendError::Unknown(m),
        other => other,
    }
}

/// The body of `resp`, refused past `max` bytes: a backend answering
/// without end must not exhaust the host.
pub(crate) async fn read_capped(
    what: &str,
    mut resp: reqwest::Response,
    max: usize,
) -> BackendResult<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport_error(what, e))? {
        if body.len() + chunk.len() > max {
            return Err(BackendError::Failed(format!(
                "{what}: answer larger than {max} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `scheme://host:port` of a URL: what an error may show of it.
pub fn origin(u: &reqwest::Url) -> String {
    match (u.host_str(), u.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{}://{h}:{p}", u.scheme()),
        (Some(h), None) => format!("{}://{h}", u.scheme()),
        _ => u.scheme().to_string(),
    }
}
