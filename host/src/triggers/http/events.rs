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

use super::AppState;

pub(super) async fn events(
    State(s): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = s.service.events.subscribe();
    let ready = SseEvent::default()
        .event("ready")
        .json_data(serde_json::json!({"paused": s.service.paused()}))
        .unwrap_or_default();
    let closing = Box::pin(s.service.events.closing());
    let feed = stream::unfold((rx, closing), |(mut rx, mut closing)| async move {
        let ev = tokio::select! {
            r = rx.recv() => match r {
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
        Some((Ok(ev), (rx, closing)))
    });
    Sse::new(stream::once(async move { Ok(ready) }).chain(feed)).keep_alive(KeepAlive::default())
}
