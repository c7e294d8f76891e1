//! Shared helpers of the write tests: a fake kernel task that carries out
//! the write commands on a `Store` (as the real one does: one revision per
//! request, `SOURCE_API`), and a real server over a Unix socket (and TCP)
//! that sends it commands. No BPF, no kernel.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mapsync_core::control::CommandHandle;
use mapsync_core::{LogLimits, MapInfo, MapKind, Store};
use mapsync_grpc::pb::map_sync_client::MapSyncClient;
use mapsync_grpc::pb::{self, watch_response::Kind};
use mapsync_grpc::peer::WritePolicy;
use mapsync_grpc::server::{Listener, ServeOptions, serve_with};
use mapsync_grpc::service::{Limits, WatchStats};
use tokio::sync::oneshot;
use tonic::transport::Channel;

mod fake;
pub use fake::{Fake, fake_kernel};

/// A map and its initial entries (key, value, observed time).
pub type MapSetup = (MapInfo, Vec<(Bytes, Bytes, u64)>);

/// A hash map `name` with 4-byte keys, 2-byte values and room for
/// `max_entries`.
pub fn hash_map(name: &str, max_entries: u32) -> MapInfo {
    MapInfo::new(name, MapKind::Hash, 4, 2, max_entries).with_id(7)
}

pub fn key(i: u32) -> Bytes {
    Bytes::from(i.to_be_bytes().to_vec())
}

/// A server with writes over a Unix socket (in a directory anyone may
/// enter, the socket anyone may connect to: the permission under test is
/// the server's own), with the fake kernel behind it.
pub struct WriteServer {
    pub client: MapSyncClient<Channel>,
    pub store: Store,
    pub fake: Fake,
    pub stats: Arc<WatchStats>,
    pub socket: PathBuf,
    pub commands: CommandHandle,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), mapsync_grpc::ServeError>>,
}

/// Maps for most tests: `flows` (hash, 16 entries, keys 0 and 1 present),
/// `cfg` (hash, 4 entries, empty) and `rules` (switchable, 8 entries).
pub fn default_maps() -> Vec<MapSetup> {
    vec![
        (
            hash_map("flows", 16),
            vec![
                (key(0), Bytes::from_static(b"v0"), 1),
                (key(1), Bytes::from_static(b"v1"), 1),
            ],
        ),
        (hash_map("cfg", 4), Vec::new()),
        (
            hash_map("rules", 8).switchable(),
            vec![(key(9), Bytes::from_static(b"r9"), 1)],
        ),
    ]
}

impl WriteServer {
    pub async fn start(policy: Option<WritePolicy>) -> WriteServer {
        WriteServer::start_with(policy, Limits::default(), default_maps()).await
    }

    pub async fn start_with(
        policy: Option<WritePolicy>,
        limits: Limits,
        maps: Vec<MapSetup>,
    ) -> WriteServer {
        let (store, mut publisher) = Store::new(LogLimits::default());
        for (info, entries) in maps {
            publisher.add_map(info, entries, 0);
        }
        publisher.set_ready();
        let (commands, fake) = fake_kernel(publisher);
        let dir = tempfile::tempdir().expect("temp dir");
        set_mode(dir.path(), 0o755);
        let socket = dir.path().join("mapsync.sock");
        let listener = Listener::bind(&format!("unix:{}", socket.display()))
            .await
            .expect("bind unix");
        set_mode(&socket, 0o666);
        let (server, stop, stats) = serve(listener, &store, &commands, policy, limits);
        let client = MapSyncClient::new(unix_channel(&socket).await);
        WriteServer {
            client,
            store,
            fake,
            stats,
            socket,
            commands,
            _dir: dir,
            stop: Some(stop),
            server,
        }
    }

    /// Another server over TCP on the same store and command handle, with
    /// `policy`: its client and its stopper.
    pub async fn tcp_twin(
        &self,
        policy: WritePolicy,
    ) -> (MapSyncClient<Channel>, oneshot::Sender<()>) {
        let listener = Listener::bind("127.0.0.1:0").await.expect("bind tcp");
        let endpoint = format!("http://{}", listener.endpoint());
        let (_server, stop, _stats) = serve(
            listener,
            &self.store,
            &self.commands,
            Some(policy),
            Limits::default(),
        );
        let channel = Channel::from_shared(endpoint)
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        (MapSyncClient::new(channel), stop)
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.take().expect("running").send(());
        self.server
            .await
            .expect("server task")
            .expect("clean shutdown");
    }
}

fn serve(
    listener: Listener,
    store: &Store,
    commands: &CommandHandle,
    policy: Option<WritePolicy>,
    limits: Limits,
) -> (
    tokio::task::JoinHandle<Result<(), mapsync_grpc::ServeError>>,
    oneshot::Sender<()>,
    Arc<WatchStats>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let stats = Arc::new(WatchStats::default());
    let options = ServeOptions {
        limits,
        stats: stats.clone(),
        writes: policy.map(|policy| (commands.clone(), policy)),
        ..ServeOptions::default()
    };
    let server = tokio::spawn(serve_with(listener, store.clone(), options, async {
        let _ = stopped.await;
    }));
    (server, stop, stats)
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A channel over the Unix socket at `path`.
pub async fn unix_channel(path: &Path) -> Channel {
    let socket = path.to_owned();
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connect over the socket")
}

pub fn put(map: &str, i: u32, value: &'static [u8]) -> pb::PutRequest {
    pb::PutRequest {
        map: map.into(),
        key: key(i),
        value: Bytes::from_static(value),
        ..Default::default()
    }
}

pub fn txn_put(map: &str, i: u32, value: &'static [u8]) -> pb::TxnOp {
    pb::TxnOp {
        op: Some(pb::txn_op::Op::Put(pb::TxnPut {
            map: map.into(),
            key: key(i),
            value: Bytes::from_static(value),
            mode: 0,
        })),
    }
}

/// A watch on every map from `start` (live): its stream.
pub async fn watch_from(
    server: &mut WriteServer,
    start: u64,
    epoch: u64,
) -> (
    tokio::sync::mpsc::Sender<pb::WatchRequest>,
    tonic::Streaming<pb::WatchResponse>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::WatchRequest {
        request: Some(pb::watch_request::Request::Create(pb::WatchCreateRequest {
            start_revision: start,
            epoch,
            ..Default::default()
        })),
    })
    .await
    .expect("send create");
    let mut stream = server
        .client
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    let created = next(&mut stream).await;
    assert!(
        matches!(created.kind, Some(Kind::Created(_))),
        "{created:?}"
    );
    (tx, stream)
}

pub async fn next(stream: &mut tonic::Streaming<pb::WatchResponse>) -> pb::WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a watch message in time")
        .expect("no error")
        .expect("stream open")
}

pub fn batch(message: pb::WatchResponse) -> pb::EventBatch {
    match message.kind {
        Some(Kind::Events(batch)) => batch,
        other => panic!("expected events, got {other:?}"),
    }
}
