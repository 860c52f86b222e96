//! `GET /v1/events`: the live feed as server-sent events. The first event,
//! `ready`, says the subscription is in place (and whether automation is
//! paused); a subscriber that falls behind gets `lagged` with how many
//! events it missed, then the feed goes on.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt as _};
use tokio::sync::broadcast::error::RecvError;

use axum::http::StatusCode;

use super::{ApiError, AppState};

pub(super) async fn events(
    State(s): State<Arc<AppState>>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let feed = s.service.events.feed().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_feeds",
            format!(
                "{} event feeds are open already; close one (or poll /v1/runs)",
                crate::service::events::MAX_FEEDS
            ),
        )
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
        .keep_alive(KeepAlive::default()))
}
