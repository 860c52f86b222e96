//! A local HTTP server that records every JSON body posted to `/{name}`: the
//! Slack, PagerDuty and webhook endpoints of the tests.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;

pub type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// Starts a sink; answers its base URL and what it has received.
pub async fn start() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app =
        Router::new()
            .route(
                "/{name}",
                post(
                    |State(seen): State<Seen>,
                     Path(name): Path<String>,
                     Json(body): Json<Value>| async move {
                        seen.lock().unwrap().push((name, body));
                        "ok"
                    },
                ),
            )
            .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

/// Bodies received on `name`.
pub fn on(seen: &Seen, name: &str) -> Vec<Value> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, b)| b.clone())
        .collect()
}
