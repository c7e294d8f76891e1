//! Listeners and the server: the MapSync service, `grpc.health.v1` (Serving
//! once the store is ready) and server reflection.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use mapsync_core::Store;
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::error::ServeError;
use crate::pb;
use crate::service::{Limits, MapSyncService, WatchStats};

/// Where the server accepts connections.
#[derive(Debug)]
pub enum Listener {
    /// A TCP socket.
    Tcp(TcpListener),
    /// A Unix domain socket, removed when the server ends.
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `HOST:PORT` or `unix:PATH`. For a Unix socket, the parent
    /// directory is created and a stale socket file is replaced.
    pub async fn bind(addr: &str) -> Result<Self, ServeError> {
        let bind_error = |source| ServeError::Bind {
            addr: addr.to_owned(),
            source,
        };
        if let Some(path) = addr.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ServeError::InvalidAddress {
                    addr: addr.to_owned(),
                });
            }
            let path = PathBuf::from(path);
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(bind_error)?;
            }
            if std::fs::symlink_metadata(&path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            }) {
                std::fs::remove_file(&path).map_err(bind_error)?;
            }
            let listener = UnixListener::bind(&path).map_err(bind_error)?;
            return Ok(Listener::Unix(listener, path));
        }
        if !addr.contains(':') {
            return Err(ServeError::InvalidAddress {
                addr: addr.to_owned(),
            });
        }
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        Ok(Listener::Tcp(listener))
    }

    /// The address clients connect to: `HOST:PORT` (with the port actually
    /// bound) or `unix:PATH`.
    pub fn endpoint(&self) -> String {
        match self {
            Listener::Tcp(listener) => listener
                .local_addr()
                .map_or_else(|_| "?".into(), |addr| addr.to_string()),
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }
}

/// How the server runs: the service's limits, and where it counts watches.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Bounds of the service.
    pub limits: Limits,
    /// Live counts of streams, watches and queued messages.
    pub stats: Arc<WatchStats>,
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
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            MapSyncService::with_limits(store, stopping, options.limits, options.stats)
                .into_server(),
        );
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
    let result = match listener {
        Listener::Tcp(listener) => {
            // Nagle off: small watch messages must not wait for delayed ACKs
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        Listener::Unix(listener, path) => {
            let result = router
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
                .await;
            let _ = std::fs::remove_file(&path);
            result
        }
    };
    result.map_err(ServeError::from)
}
