//! `GET /v1/events`: the live feed as server-sent events. The first event,
//! `ready`, says the subscription is in place (and whether automation is
//! paused); a subscriber that falls behind gets `lagged` with how many
//! events it missed, then the feed goes on.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Extension;
use futures_util::stream::{self, Stream, StreamExt as _};
use tokio::sync::broadcast::error::RecvError;

use axum::http::StatusCode;

use super::{ApiError, AppState, Who};
use crate::service::events::{Refused, KEEP_ALIVE};

pub(super) async fn events(
    State(s): State<Arc<AppState>>,
    Extension(Who(who)): Extension<Who>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    // Every request on an API with tokens has one; without tokens, the
    // peer's address is all that tells callers apart.
    let caller = match peer {
        Some(Extension(ConnectInfo(addr))) if s.auth.is_open() => format!("peer {}", addr.ip()),
        _ => format!("token `{who}`"),
    };
    let feed = s.service.events.feed(&caller).map_err(|e| {
        let status = match e {
            Refused::Full => StatusCode::SERVICE_UNAVAILABLE,
            Refused::CallerFull { .. } => StatusCode::TOO_MANY_REQUESTS,
        };
        ApiError::new(status, "too_many_feeds", e.to_string())
    })?;
    let ready = SseEvent::default()
        .event("ready")
        .json_data(serde_json::json!({"paused": s.service.paused()}))
        .unwrap_or_default();
    let closing = Box::pin(s.service.events.closing());
    let feed = stream::unfold((feed, closing), |(mut feed, mut closing)| async move {
        let ev = tokio::select! {
            r = feed.rx.recv() => match r {
                Ok(ev) => SseEvent::default()
                    .event(ev.kind)
                    .id(ev.seq.to_string())
                    .json_data(&*ev)
                    .unwrap_or_default(),
                Err(RecvError::Lagged(n)) => SseEvent::default()
                    .event("lagged")
                    .data(serde_json::json!({"missed": n}).to_string()),
                Err(RecvError::Closed) => return None,
            },
            _ = &mut closing => return None,
        };
        Some((Ok(ev), (feed, closing)))
    });
    Ok(Sse::new(stream::once(async move { Ok(ready) }).chain(feed))
        .keep_alive(KeepAlive::new().interval(keep_alive())))
}

/// [`KEEP_ALIVE`]; the tests' builds take a shorter one from
/// `REMEDY_TEST_FEED_KEEP_ALIVE_MS`.
fn keep_alive() -> Duration {
    #[cfg(feature = "fault-injection")]
    if let Some(ms) = std::env::var("REMEDY_TEST_FEED_KEEP_ALIVE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Duration::from_millis(ms);
    }
    KEEP_ALIVE
}
