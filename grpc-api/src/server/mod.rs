//! Listeners and the server: the MapSync service, `grpc.health.v1` (Serving
//! once the store is ready) and server reflection, over HTTP/2 connections
//! that are bounded in number, time and streams.
//!
//! # Layout
//! - [`listener`]: binding TCP and Unix sockets (never over a live server's
//!   socket), accepting.
//! - [`limits`]: [`ConnectionLimits`], the transport's bounds.
//! - `connection`: one connection's HTTP/2 with its timeouts.
//! - `registry`: the open connections; at the limit, an idle one makes room.

use std::future::Future;
use std::sync::Arc;

use mapsync_core::ratelimit::LogLimiter;
use mapsync_core::{CommandHandle, Store};
use tonic_health::ServingStatus;
use tracing::Instrument;

use crate::error::ServeError;
use crate::pb;
use crate::peer::{Peer, WritePolicy};
use crate::service::{Limits, MapSyncService, WatchStats};
use crate::tls::ServerTls;

mod connection;
pub mod limits;
pub mod listener;
mod registry;

pub use limits::ConnectionLimits;
pub use listener::{Listener, SocketFile, SocketOptions};

/// How the server runs: the service's limits, the transport's, and where it
/// counts watches.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Bounds of the service.
    pub limits: Limits,
    /// Bounds of connections and HTTP/2.
    pub connections: ConnectionLimits,
    /// Live counts of streams, watches and queued messages.
    pub stats: Arc<WatchStats>,
    /// Where writes go and who may send them; `None` (the default): the
    /// server accepts no writes (`UNIMPLEMENTED`).
    pub writes: Option<(CommandHandle, WritePolicy)>,
    /// TLS for a TCP listener (ignored on a Unix socket); `None`: plain
    /// HTTP/2.
    pub tls: Option<Arc<ServerTls>>,
    /// The capture side's counters for `Status` (`None`: `Status` says
    /// what the snapshot and the watch counts say, `kernel` false).
    pub status: Option<Arc<dyn mapsync_core::status::StatusSource>>,
    /// Who may read and write which map (the default: no policy file, see
    /// [`crate::authz`]).
    pub authz: Arc<crate::authz::Authorizer>,
}

/// Serves the MapSync API for `store` on `listener` until `shutdown`
/// resolves; then reports NotServing, ends streams and returns.
pub async fn serve(
    listener: Listener,
    store: Store,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_with(listener, store, ServeOptions::default(), shutdown).await
}

/// [`serve`] with explicit options.
pub async fn serve_with(
    listener: Listener,
    store: Store,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(pb::SERVICE_NAME, ServingStatus::NotServing)
        .await;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let readiness = {
        let health = health.clone();
        let store = store.clone();
        tokio::spawn(async move {
            store.wait_ready().await;
            health
                .set_service_status(pb::SERVICE_NAME, ServingStatus::Serving)
                .await;
            health.set_service_status("", ServingStatus::Serving).await;
            tracing::info!("health: serving");
        })
    };
    let (stop_streams, stopping) = tokio::sync::watch::channel(false);
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let tls = options.tls.clone();
    let routes = tonic::service::Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service({
            let service =
                MapSyncService::with_limits(store, stopping, options.limits, options.stats)
                    .with_authz(options.authz);
            let service = match options.status {
                Some(source) => service.with_status(source),
                None => service,
            };
            match options.writes {
                Some((commands, policy)) => service.with_writes(commands, policy),
                None => service,
            }
            .into_server()
        })
        .prepare();
    let shutdown = async {
        shutdown.await;
        let _ = stop_streams.send(true);
        readiness.abort();
        health
            .set_service_status(pb::SERVICE_NAME, ServingStatus::NotServing)
            .await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        tracing::info!("health: not serving; draining");
    };
    accept_loop(listener, routes, options.connections, tls, shutdown).await;
    Ok(())
}

/// Longest the accept loop waits for evicted connections to close.
const EVICTION_PATIENCE: std::time::Duration = std::time::Duration::from_millis(100);

/// Accepts connections until `shutdown` resolves, each served on its own
/// task under `limits`; then closes the listener, asks every connection to
/// close and waits until they have.
async fn accept_loop(
    listener: Listener,
    routes: tonic::service::Routes,
    limits: ConnectionLimits,
    tls: Option<Arc<ServerTls>>,
    shutdown: impl Future<Output = ()>,
) {
    let builder = Arc::new(connection::http2_builder(&limits));
    let registry = registry::Registry::new(limits.max_connections);
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let mut refused = LogLimiter::default();
    let mut evicted = LogLimiter::default();
    let mut starved = LogLimiter::default();
    let mut backoff = limits::MIN_ACCEPT_BACKOFF;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (io, peer) = match accepted {
            Ok(accepted) => {
                backoff = limits::MIN_ACCEPT_BACKOFF;
                accepted
            }
            Err(error) => {
                if listener::out_of_descriptors(&error) {
                    if let Some(suppressed) = starved.check() {
                        tracing::warn!(%error, retry_in = ?backoff, suppressed, "cannot accept connections: out of file descriptors (raise the fd limit, or lower --max-connections)");
                    }
                } else {
                    tracing::debug!(%error, "accept failed");
                }
                // never retry at once: the error would repeat in a spin
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(limits::MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        let full = registry.len() >= limits.max_connections;
        // evicted connections end on their next poll: wait for that, briefly
        let Ok(slot) = registry.admit_within(EVICTION_PATIENCE).await else {
            if let Some(suppressed) = refused.check() {
                tracing::warn!(%peer, max_connections = limits.max_connections, suppressed, "refused a connection: every one of the maximum of connections carries a call or stream (--max-connections)");
            }
            drop(io);
            continue;
        };
        if full && let Some(suppressed) = evicted.check() {
            tracing::warn!(%peer, max_connections = limits.max_connections, suppressed, "at the maximum of connections (--max-connections): closed the oldest one without a call or stream to make room");
        }
        let span = tracing::debug_span!("connection", %peer);
        let (routes, builder, closing) = (routes.clone(), builder.clone(), closing_rx.clone());
        let task = match (io, &tls) {
            (listener::Accepted::Tcp(tcp), Some(tls)) => {
                let acceptor = tls.acceptor();
                let Peer::Tcp { addr } = peer else {
                    unreachable!("a TCP stream has a TCP peer")
                };
                Box::pin(async move {
                    // within the handshake timeout too: a silent client holds no slot for long
                    let handshake =
                        tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            let peer = Peer::of_tls(addr, &stream);
                            tracing::debug!(%peer, "TLS handshake done");
                            connection::serve_connection(
                                stream, routes, builder, limits, closing, slot, peer,
                            )
                            .await;
                        }
                        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
            }
            (io, _) => Box::pin(connection::serve_connection(
                io, routes, builder, limits, closing, slot, peer,
            )),
        };
        tokio::spawn(task.instrument(span));
    }
    // stop accepting first: a client connecting now is refused, not left hanging
    drop(listener);
    let _ = closing.send(true);
    drop(closing_rx);
    closing.closed().await;
}
