//! Shared helpers of the in-process gRPC tests: a server over a store fed by
//! its writer (no kernel), and a bidirectional Watch session.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mapsync_core::{LogLimits, MapInfo, MapKind, Publisher, Store};
use mapsync_grpc::pb::map_sync_client::MapSyncClient;
use mapsync_grpc::pb::{self, watch_request::Request as Req, watch_response::Kind};
use mapsync_grpc::server::{Listener, ServeOptions, serve_with};
use mapsync_grpc::service::{Limits, WatchStats};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;

pub fn info(name: &str) -> MapInfo {
    MapInfo {
        name: name.into(),
        id: 7,
        kernel_name: name.into(),
        kind: MapKind::Hash,
        key_size: 4,
        value_size: 2,
        max_entries: 10_000,
        value_bytes: 2,
        types: None,
        switchable: false,
    }
}

pub fn key(i: u32) -> Bytes {
    Bytes::from(i.to_be_bytes().to_vec())
}

pub struct Running {
    pub client: MapSyncClient<Channel>,
    pub health: tonic_health::pb::health_client::HealthClient<Channel>,
    pub store: Store,
    pub writer: Publisher,
    pub stats: Arc<WatchStats>,
    pub endpoint: String,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), mapsync_grpc::ServeError>>,
}

/// A server with one map `flows` holding `entries` keys (value "v0").
pub async fn start(limits: LogLimits, entries: u32, ready: bool) -> Running {
    start_with(limits, entries, ready, Limits::default()).await
}

pub async fn start_with(log: LogLimits, entries: u32, ready: bool, limits: Limits) -> Running {
    let (store, mut writer) = Store::new(log);
    let initial = (0..entries)
        .map(|i| (key(i), Bytes::from_static(b"v0"), 1))
        .collect();
    writer.add_map(info("flows"), initial, 0);
    if ready {
        writer.set_ready();
    }
    serve_store(store, writer, limits).await
}

/// Serves an existing store (e.g. again after a shutdown).
pub async fn serve_store(store: Store, writer: Publisher, limits: Limits) -> Running {
    let options = ServeOptions {
        limits,
        stats: Arc::new(WatchStats::default()),
        ..ServeOptions::default()
    };
    serve_with_options(store, writer, options).await
}

/// Serves `store` with `options` (connection limits, ...) on
/// `127.0.0.1:0`, with a client connected.
pub async fn serve_with_options(store: Store, writer: Publisher, options: ServeOptions) -> Running {
    let listener = Listener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.endpoint());
    let (stop, stopped) = oneshot::channel::<()>();
    let stats = options.stats.clone();
    let server = tokio::spawn(serve_with(listener, store.clone(), options, async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(endpoint.clone())
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    Running {
        client: MapSyncClient::new(channel.clone()),
        health: tonic_health::pb::health_client::HealthClient::new(channel),
        store,
        writer,
        stats,
        endpoint,
        stop: Some(stop),
        server,
    }
}

/// A ready store with one map `flows` holding `key(1)` = "v1".
pub fn ready_store() -> (Store, Publisher) {
    let (store, mut writer) = Store::new(LogLimits::default());
    writer.add_map(
        info("flows"),
        vec![(key(1), Bytes::from_static(b"v1"), 1)],
        0,
    );
    writer.set_ready();
    (store, writer)
}

/// A change log that keeps only the last `max_events` changes (bytes
/// unbounded): old revisions are compacted after a few writes.
pub fn short_log(max_events: usize) -> LogLimits {
    LogLimits {
        max_events,
        max_bytes: usize::MAX,
    }
}

impl Running {
    pub async fn shutdown(mut self) -> (Store, Publisher) {
        let _ = self.stop.take().expect("running").send(());
        self.server
            .await
            .expect("server task")
            .expect("clean shutdown");
        (self.store, self.writer)
    }

    pub async fn session(&mut self) -> Session {
        Session::open(&mut self.client).await
    }

    /// Puts `value` at `key(i)` in `flows`, one revision each.
    pub fn put(&mut self, i: u32, value: &'static [u8]) -> u64 {
        self.writer.apply([mapsync_core::Change::put(
            "flows",
            key(i),
            value,
            mapsync_core::EventSource::Trace,
            2,
        )])
    }

    pub fn delete(&mut self, i: u32) -> u64 {
        self.writer.apply([mapsync_core::Change::delete(
            "flows",
            key(i),
            mapsync_core::EventSource::Trace,
            3,
        )])
    }
}

/// One bidirectional Watch stream.
pub struct Session {
    pub requests: mpsc::Sender<pb::WatchRequest>,
    pub responses: tonic::Streaming<pb::WatchResponse>,
    /// The server's epoch (0 if it was not ready when the session opened),
    /// filled into creates that resume (`start_revision > 0`) without one.
    pub epoch: u64,
}

impl Session {
    pub async fn open(client: &mut MapSyncClient<Channel>) -> Session {
        let epoch = client
            .list_maps(pb::ListMapsRequest::default())
            .await
            .map_or(0, |reply| reply.into_inner().header.map_or(0, |h| h.epoch));
        let (requests, rx) = mpsc::channel(64);
        let responses = client
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("open watch stream")
            .into_inner();
        Session {
            requests,
            responses,
            epoch,
        }
    }

    pub async fn send(&self, request: Req) {
        self.requests
            .send(pb::WatchRequest {
                request: Some(request),
            })
            .await
            .expect("stream open");
    }

    /// Sends a create; one that resumes without an epoch gets the server's,
    /// as a real client's would (send `Req::Create` to leave it out).
    pub async fn create(&self, mut create: pb::WatchCreateRequest) {
        if create.start_revision > 0 && create.epoch == 0 {
            create.epoch = self.epoch;
        }
        self.send(Req::Create(create)).await;
    }

    pub async fn cancel(&self, watch_id: u64) {
        self.send(Req::Cancel(pb::WatchCancelRequest { watch_id }))
            .await;
    }

    pub async fn request_progress(&self, watch_id: u64) {
        self.send(Req::Progress(pb::WatchProgressRequest { watch_id }))
            .await;
    }

    /// The next message (5 s at most).
    pub async fn next(&mut self) -> pb::WatchResponse {
        tokio::time::timeout(Duration::from_secs(5), self.responses.message())
            .await
            .expect("a message in time")
            .expect("no error")
            .expect("stream open")
    }

    /// The next message's kind, checking its watch id.
    pub async fn next_for(&mut self, id: u64) -> Kind {
        let message = self.next().await;
        assert_eq!(message.watch_id, id, "{message:?}");
        message.kind.expect("a kind")
    }

    /// Creates a watch and checks it is created with `id`.
    pub async fn created(&mut self, create: pb::WatchCreateRequest) -> u64 {
        self.create(create).await;
        let message = self.next().await;
        match message.kind {
            Some(Kind::Created(_)) => message.watch_id,
            other => panic!("expected Created, got {other:?}"),
        }
    }

    /// Creates a watch and returns the Canceled it gets instead.
    pub async fn refused(&mut self, create: pb::WatchCreateRequest) -> (u64, pb::WatchCanceled) {
        self.create(create).await;
        let message = self.next().await;
        match message.kind {
            Some(Kind::Canceled(canceled)) => (message.watch_id, canceled),
            other => panic!("expected Canceled, got {other:?}"),
        }
    }

    /// Nothing arrives within `wait`.
    pub async fn quiet(&mut self, wait: Duration) {
        if let Ok(message) = tokio::time::timeout(wait, self.responses.message()).await {
            panic!("expected nothing, got {message:?}");
        }
    }
}

pub fn events(kind: Kind) -> Vec<pb::Event> {
    match kind {
        Kind::Events(batch) => batch.events,
        other => panic!("expected events, got {other:?}"),
    }
}

pub fn revisions(events: &[pb::Event]) -> Vec<u64> {
    events.iter().map(|e| e.revision).collect()
}

pub fn watch_map(start_revision: u64) -> pb::WatchCreateRequest {
    pb::WatchCreateRequest {
        maps: vec!["flows".into()],
        start_revision,
        ..Default::default()
    }
}

impl Session {
    /// Sends a WatchRequest with nothing in it.
    pub async fn send_empty(&self) {
        self.requests
            .send(pb::WatchRequest { request: None })
            .await
            .expect("stream open");
    }
}
