//! The cluster's live feed over PostgreSQL's LISTEN/NOTIFY (see
//! `store::bus`): one connection of its own per replica, outside the
//! pool, listening on `remedy_events` and `remedy_watch` and publishing
//! this replica's events in the order they were emitted (one session's
//! notifications are delivered in the order they were sent), several to a
//! notification.

use crate::locks::MutexExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::AsyncMessage;

use crate::store::bus::{Bus, Remote, MAX_EVENT, WATCH_TTL};

/// Events waiting to be published before new ones are dropped (the feed
/// is a view; a replica never waits for it).
const QUEUE: usize = 4096;
/// Other replicas' events a slow subscriber may fall behind by (as the
/// local feed's backlog).
const BACKLOG: usize = 1024;
/// Largest notification payload sent (PostgreSQL's limit is 8,000 bytes).
const MAX_PAYLOAD: usize = 7_800;

enum Out {
    Event(String),
    Watched,
}

pub(super) struct PgBus {
    out: mpsc::Sender<Out>,
    incoming: broadcast::Sender<Arc<Remote>>,
    /// Until when another replica's feed is watched.
    elsewhere: Arc<Mutex<Option<Instant>>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Packet {
    /// The sending replica's id (its own packets come back to it).
    id: String,
    name: String,
    events: Vec<serde_json::Value>,
}

type Tls = tokio_postgres_rustls::MakeRustlsConnect;

impl PgBus {
    pub(super) fn start(
        config: tokio_postgres::Config,
        tls: Tls,
        id: String,
        name: String,
    ) -> PgBus {
        let (out, rx) = mpsc::channel(QUEUE);
        let incoming = broadcast::channel(BACKLOG).0;
        let elsewhere = Arc::new(Mutex::new(None));
        tokio::spawn(run(
            config,
            tls,
            Me { id, name },
            rx,
            incoming.clone(),
            elsewhere.clone(),
        ));
        PgBus {
            out,
            incoming,
            elsewhere,
        }
    }
}

impl Bus for PgBus {
    fn publish(&self, event: String) {
        if event.len() <= MAX_EVENT {
            let _ = self.out.try_send(Out::Event(event));
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Remote>> {
        self.incoming.subscribe()
    }

    fn watched_here(&self) {
        let _ = self.out.try_send(Out::Watched);
    }

    fn watched_elsewhere(&self) -> bool {
        self.elsewhere
            .locked()
            .is_some_and(|until| Instant::now() < until)
    }
}

struct Me {
    id: String,
    name: String,
}

/// Connects, listens and publishes until the store is dropped; after a
/// broken connection, connects again (what was sent meanwhile is lost).
async fn run(
    config: tokio_postgres::Config,
    tls: Tls,
    me: Me,
    mut out: mpsc::Receiver<Out>,
    incoming: broadcast::Sender<Arc<Remote>>,
    elsewhere: Arc<Mutex<Option<Instant>>>,
) {
    let mut wait = Duration::from_millis(250);
    loop {
        let began = Instant::now();
        let ended = session(&config, &tls, &me, &mut out, &incoming, &elsewhere).await;
        if out.is_closed() {
            return;
        }
        if began.elapsed() > Duration::from_secs(30) {
            // A connection that lived: its loss is news, not a failing server.
            wait = Duration::from_millis(250);
        }
        match ended {
            Ok(()) => {
                tracing::warn!("cluster events: connection ended; connecting again in {wait:?}")
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster events: connection lost; connecting again in {wait:?}")
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// One connection's life, until it ends or the store is gone.
async fn session(
    config: &tokio_postgres::Config,
    tls: &Tls,
    me: &Me,
    out: &mut mpsc::Receiver<Out>,
    incoming: &broadcast::Sender<Arc<Remote>>,
    elsewhere: &Mutex<Option<Instant>>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls.clone()).await?;
    let (notes, mut notified) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if notes.send(n).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cluster events: connection failed");
                    return;
                }
            }
        }
    });
    let _stop_driver = AbortOnDrop(driver);
    client
        .batch_execute("LISTEN remedy_events; LISTEN remedy_watch")
        .await?;
    let notify = client.prepare("SELECT pg_notify($1, $2)").await?;
    loop {
        tokio::select! {
            note = notified.recv() => {
                // The driver ended: the connection is gone.
                let Some(note) = note else { return Ok(()) };
                match note.channel() {
                    "remedy_watch" if note.payload() != me.id => {
                        *elsewhere.locked() = Some(Instant::now() + WATCH_TTL);
                    }
                    "remedy_events" => received(note.payload(), me, incoming),
                    _ => {}
                }
            }
            first = out.recv() => {
                let Some(first) = first else { return Ok(()) };
                let mut batch = vec![first];
                while batch.len() < 1024 {
                    match out.try_recv() {
                        Ok(o) => batch.push(o),
                        Err(_) => break,
                    }
                }
                send(&client, &notify, me, batch).await?;
            }
        }
    }
}

/// Ends the connection's driver with the session.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn received(payload: &str, me: &Me, incoming: &broadcast::Sender<Arc<Remote>>) {
    let packet: Packet = match serde_json::from_str(payload) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cluster events: a notification that is not Remedy's was ignored");
            return;
        }
    };
    if packet.id == me.id {
        return;
    }
    for event in packet.events {
        // No subscriber: nobody here watches.
        let _ = incoming.send(Arc::new(Remote {
            from: packet.name.clone(),
            event,
        }));
    }
}

/// Publishes a batch: events packed into as few notifications as fit,
/// in order, pipelined on the connection.
async fn send(
    client: &tokio_postgres::Client,
    notify: &tokio_postgres::Statement,
    me: &Me,
    batch: Vec<Out>,
) -> Result<(), tokio_postgres::Error> {
    let mut watched = false;
    let mut payloads: Vec<(&str, String)> = Vec::new();
    let head = serde_json::json!({"id": me.id, "name": me.name}).to_string();
    // `{"id":…,"name":…,"events":[` … `]}`
    let open = format!("{},\"events\":[", &head[..head.len() - 1]);
    let mut current = String::new();
    for o in batch {
        match o {
            Out::Watched => watched = true,
            Out::Event(e) => {
                if !current.is_empty() && open.len() + current.len() + e.len() + 3 > MAX_PAYLOAD {
                    payloads.push(("remedy_events", format!("{open}{current}]}}")));
                    current.clear();
                }
                if !current.is_empty() {
                    current.push(',');
                }
                current.push_str(&e);
            }
        }
    }
    if !current.is_empty() {
        payloads.push(("remedy_events", format!("{open}{current}]}}")));
    }
    if watched {
        payloads.push(("remedy_watch", me.id.clone()));
    }
    let sent = futures_util::future::join_all(
        payloads
            .iter()
            .map(|(channel, p)| async move { client.execute(notify, &[channel, p]).await }),
    )
    .await;
    for r in sent {
        r?;
    }
    Ok(())
}
