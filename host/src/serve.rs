//! `remedy serve`: listen, load, schedule, watch the plugins directory, and
//! on SIGTERM/SIGINT stop accepting, drain running runs up to a bound, exit.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::sync::watch;

use crate::config::Config;
use crate::service::{Service, PLUGIN_SCAN_INTERVAL};
use crate::triggers::http::{router, AppState, Auth, MAX_BODY};
use crate::triggers::schedule;

/// The address to listen on: `--listen`, else `REMEDY_LISTEN`, else the
/// config, else 127.0.0.1:8080.
pub fn listen_addr(config: &Config, flag: Option<&str>) -> anyhow::Result<SocketAddr> {
    let env = std::env::var("REMEDY_LISTEN")
        .ok()
        .filter(|v| !v.is_empty());
    let (value, from) = match (flag, env, &config.server.listen) {
        (Some(f), _, _) => (f.to_string(), "--listen"),
        (None, Some(e), _) => (e, "REMEDY_LISTEN"),
        (None, None, Some(c)) => (c.to_string(), "server.listen"),
        (None, None, None) => ("127.0.0.1:8080".to_string(), "the default"),
    };
    value
        .parse()
        .with_context(|| format!("{from}: `{value}` is not an address like 127.0.0.1:8080"))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// `remedy serve`: loads, binds the listen address, serves until SIGINT or
/// SIGTERM, then drains.
pub async fn serve(config: Config, listen: Option<&str>) -> anyhow::Result<()> {
    let addr = listen_addr(&config, listen)?;
    if config.server.tokens.is_empty() && !addr.ip().is_loopback() {
        bail!("refusing to listen on {addr} with no tokens configured: add [[server.tokens]] or listen on a loopback address");
    }
    // Tokens are read before the (slower) start, so a missing variable is
    // the first thing said.
    Auth::from_config(&config.server.tokens)?;
    let service = Service::start(config).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, "remedy listening");
    println!("remedy listening on http://{local}");
    let _ = std::io::stdout().flush();
    serve_with(listener, service, shutdown_signal()).await
}

/// Serves `service` on `listener` (with its schedules, sweepers and plugin
/// watcher) until `shutdown` completes, then stops taking requests and
/// drains runs, each bounded by `server.drain_timeout_ms`. Tests run the
/// whole service in-process through this.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let server_cfg = &service.remedy.config.server;
    crate::triggers::http::admission::raise_nofile_limit();
    let auth = Auth::from_config(&server_cfg.tokens)?;
    let max_body = server_cfg.max_body_bytes.unwrap_or(MAX_BODY);
    let ms = |t: Option<crate::units::TimeoutMs>| t.map_or(Duration::from_secs(10), |t| t.get());
    let drain = ms(server_cfg.drain_timeout_ms);
    let read_timeout = ms(server_cfg.read_timeout_ms);
    let (stop_tx, stop_rx) = watch::channel(false);
    schedule::spawn_all(&service, stop_rx.clone());
    spawn_expiry_sweeper(service.clone(), stop_rx.clone());
    spawn_retention_sweeper(service.clone(), stop_rx.clone());
    spawn_plugin_watcher(service.clone(), stop_rx);
    // The heartbeat outlives the drain: a replica still finishing runs must
    // not look dead to the others.
    let (beat_stop, beat_rx) = watch::channel(false);
    spawn_heartbeat(service.clone(), beat_rx);
    let app = router(
        Arc::new(AppState {
            service: service.clone(),
            auth,
        }),
        max_body,
        read_timeout,
    );
    // Graceful shutdown waits for open connections; a client that never
    // finishes its request must not hold the process past the drain bound.
    let (signalled_tx, signalled_rx) = watch::channel(None);
    let feeds = service.clone();
    let server = serve_http(listener, app, read_timeout, async move {
        shutdown.await;
        feeds.events.close();
        tracing::info!("shutdown requested: no new requests; draining runs");
        let _ = signalled_tx.send(Some(tokio::time::Instant::now()));
    });
    let mut signalled = signalled_rx.clone();
    let bound = async move {
        let at = loop {
            if let Some(at) = *signalled.borrow_and_update() {
                break at;
            }
            if signalled.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::time::sleep_until(at + drain).await;
    };
    tokio::select! {
        r = server => r?,
        _ = bound => tracing::warn!("connections still open at the drain bound: closed"),
    }
    let _ = stop_tx.send(true);
    // Another replica takes over the schedules now, not a lease later.
    service.stop_scheduling().await;
    let since = (*signalled_rx.borrow())
        .map(|at| at.elapsed())
        .unwrap_or_default();
    let left = service.drain(drain.saturating_sub(since)).await;
    if left > 0 {
        tracing::warn!(left, "runs still in flight at the drain bound; they will read `interrupted` at the next start");
    }
    let _ = beat_stop.send(true);
    // Other replicas take over what is left now, not a lease later.
    if let Err(e) = service.store.leave().await {
        tracing::warn!(error = %e, "could not leave the cluster; the others take over when the lease ends");
    }
    Ok(())
}

/// Serves `app` on `listener` until `shutdown` completes, then waits for the
/// open connections to finish (the caller bounds that wait). Unlike
/// `axum::serve`, a connection must send its request headers within
/// `read_timeout`, so a client that opens connections and sends nothing
/// cannot hold them (the body has the same bound, in the router).
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    read_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout);
    tokio::pin!(shutdown);
    use crate::triggers::http::admission::{self, AcceptErrors, Admission};
    let admission = Admission::new(admission::MAX_CONNECTIONS, admission::MAX_PER_PEER);
    let mut errors = AcceptErrors::default();
    let builder = Arc::new(builder);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (io, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, go on.
                        errors.failed(&e);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(slot) = admission.admit(peer.ip()) else {
                    errors.refused(peer.ip());
                    continue;
                };
                // Watched from the accept: a connection still waiting for
                // its first byte is waited for at shutdown (bounded by the
                // first-byte deadline).
                let (app, builder, watcher) = (app.clone(), builder.clone(), graceful.watcher());
                tokio::spawn(async move {
                    let _slot = slot;
                    // hyper's header timeout starts at the first byte.
                    if !admission::first_byte(&io, read_timeout).await {
                        return;
                    }
                    crate::triggers::http::dead_peers::watch(&io);
                    // Each request carries its peer's address: failed token checks
                    // are throttled, and feeds shared, per peer.
                    let app = tower::Layer::layer(
                        &axum::Extension(axum::extract::ConnectInfo(peer)),
                        app,
                    );
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(io), service)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Plans past their `approval_ttl` become `expired` within this long, so
/// that listings of `pending_approval` show only what can still be approved.
const EXPIRY_SWEEP: Duration = Duration::from_secs(5);

fn spawn_expiry_sweeper(service: Arc<Service>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EXPIRY_SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => service.expire_stale_plans().await,
                _ = stop.changed() => return,
            }
        }
    });
}

/// Retention is applied at start and then hourly.
const RETENTION_SWEEP: Duration = Duration::from_secs(3600);

fn spawn_retention_sweeper(service: Arc<Service>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RETENTION_SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => service.apply_retention().await,
                _ = stop.changed() => return,
            }
        }
    });
}

/// Every [`HEARTBEAT`](crate::service::cluster::HEARTBEAT): on a shared
/// store the heartbeat, scheduler lease, kill switch and take-over; on
/// every store the reconciler (records and flights not yet written).
fn spawn_heartbeat(service: Arc<Service>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::service::cluster::HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    service.beat().await;
                    service.reconcile().await;
                }
                _ = stop.changed() => return,
            }
        }
    });
}

fn spawn_plugin_watcher(service: Arc<Service>, mut stop: watch::Receiver<bool>) {
    if service.remedy.config.server.plugins_dir.is_none() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PLUGIN_SCAN_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => service.scan_plugins_dir().await,
                _ = stop.changed() => return,
            }
        }
    });
}
