//! Writes over gRPC end to end on a real kernel: a real `mapsync serve` on
//! maps made with bpftool, a raw `mapsync.v1` client on its Unix socket
//! (root: allowed to write), and the kernel's own content read back with
//! bpftool. Who may write is tested here with a real user too: a client
//! process running as a user the test creates.

mod common;
#[path = "../grpc-api/tests/write_support/identity.rs"]
mod identity;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::{Server, map_arg, pin};
use mapsync_grpc::pb::{self, map_sync_client::MapSyncClient, watch_response::Kind};
use mapsync_grpc::service::write_status::{CURRENT_MOD_REVISION, metadata_u64};
use mapsync_test_support::{self as support, PinDir};
use tonic::Code;
use tonic::transport::Channel;

/// The next watch message, within 10 s.
async fn next_message(stream: &mut tonic::Streaming<pb::WatchResponse>) -> pb::WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a watch message in time")
        .expect("no error")
        .expect("stream open")
}

async fn connect(server: &Server) -> MapSyncClient<Channel> {
    let socket = server
        .endpoint
        .strip_prefix("unix:")
        .expect("a unix endpoint");
    connect_path(Path::new(socket)).await
}

async fn connect_path(socket: &Path) -> MapSyncClient<Channel> {
    let socket = socket.to_owned();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connect over the socket");
    MapSyncClient::new(channel)
}

/// A live watch on every map from `start`.
async fn watch_from(
    client: &mut MapSyncClient<Channel>,
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
    .expect("create");
    let mut stream = client
        .watch(request_stream(rx))
        .await
        .expect("watch")
        .into_inner();
    let created = next_message(&mut stream).await;
    assert!(
        matches!(created.kind, Some(Kind::Created(_))),
        "{created:?}"
    );
    (tx, stream)
}

/// An mpsc receiver as the request stream tonic takes.
fn request_stream(
    mut rx: tokio::sync::mpsc::Receiver<pb::WatchRequest>,
) -> impl futures::Stream<Item = pb::WatchRequest> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn events(message: pb::WatchResponse) -> Vec<pb::Event> {
    match message.kind {
        Some(Kind::Events(batch)) => batch.events,
        other => panic!("expected events, got {other:?}"),
    }
}

fn put(i: u8, value: [u8; 8]) -> pb::PutRequest {
    pb::PutRequest {
        map: "flows".into(),
        key: Bytes::copy_from_slice(&[i, 0, 0, 0]),
        value: Bytes::copy_from_slice(&value),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_delete_over_grpc_change_the_kernel_and_read_your_writes() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("e2e-write");
    let hash = pin(&pins, "flows");
    support::create_map(&hash, "hash", 4, 8, 4, "flows");
    support::update(&hash, &[1, 0, 0, 0], &[1; 8]).expect("seed");
    let server = tokio::task::block_in_place(|| Server::start(&pins, &[map_arg("flows", &hash)]));
    let mut client = connect(&server).await;

    let reply = client
        .put(pb::PutRequest {
            prev_value: true,
            ..put(1, [2; 8])
        })
        .await
        .expect("put")
        .into_inner();
    let header = reply.header.expect("header");
    let revision = header.revision;
    assert_eq!(&reply.prev.expect("prev").value[..], &[1; 8]);
    assert_eq!(
        support::dump(&hash).get(&vec![1, 0, 0, 0]),
        Some(&vec![2; 8]),
        "in the kernel"
    );
    let got = client
        .get(pb::GetRequest {
            map: "flows".into(),
            key: Bytes::copy_from_slice(&[1, 0, 0, 0]),
            min_revision: revision,
            epoch: header.epoch,
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(&got.value[..], &[2; 8]);
    assert_eq!(got.mod_revision, revision);

    // a watch from the write's revision sees it once, as api
    let (_tx, mut stream) = watch_from(&mut client, revision, header.epoch).await;
    let seen = events(next_message(&mut stream).await);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].revision, revision);
    assert_eq!(seen[0].source, pb::Source::Api as i32);

    // the kernel's refusals, with nothing changed
    let status = client
        .put(pb::PutRequest {
            mode: pb::PutMode::NoExist as i32,
            ..put(1, [3; 8])
        })
        .await
        .expect_err("exists");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    let status = client
        .put(pb::PutRequest {
            expect_mod_revision: Some(revision + 100),
            epoch: header.epoch,
            ..put(1, [3; 8])
        })
        .await
        .expect_err("stale revision");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(metadata_u64(&status, CURRENT_MOD_REVISION), Some(revision));
    let status = client
        .put(pb::PutRequest {
            key: Bytes::from_static(&[1, 0]),
            ..put(1, [3; 8])
        })
        .await
        .expect_err("short key");
    assert_eq!(status.code(), Code::InvalidArgument);
    for i in 2..5 {
        client.put(put(i, [i; 8])).await.expect("fill");
    }
    let status = client.put(put(9, [9; 8])).await.expect_err("full");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        support::dump(&hash).get(&vec![1, 0, 0, 0]),
        Some(&vec![2; 8])
    );
    assert_eq!(support::dump(&hash).len(), 4);

    // a delete, then the same delete again
    let delete = pb::DeleteRequest {
        map: "flows".into(),
        key: Bytes::copy_from_slice(&[1, 0, 0, 0]),
        ..Default::default()
    };
    let deleted = client
        .delete(delete.clone())
        .await
        .expect("delete")
        .into_inner();
    assert!(deleted.header.expect("header").revision > revision);
    assert!(!support::dump(&hash).contains_key(&vec![1, 0, 0, 0]));
    let status = client.delete(delete).await.expect_err("absent");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_txn_reaches_a_watcher_as_one_message_at_one_revision() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("e2e-txn");
    let hash = pin(&pins, "flows");
    support::create_map(&hash, "hash", 4, 8, 64, "flows");
    let server = tokio::task::block_in_place(|| Server::start(&pins, &[map_arg("flows", &hash)]));
    let mut client = connect(&server).await;
    let maps = client
        .list_maps(pb::ListMapsRequest::default())
        .await
        .expect("maps")
        .into_inner();
    let header = maps.header.expect("header");
    let (_tx, mut stream) = watch_from(&mut client, header.revision + 1, header.epoch).await;
    let ops = (0..20u8)
        .map(|i| pb::TxnOp {
            op: Some(pb::txn_op::Op::Put(pb::TxnPut {
                map: "flows".into(),
                key: Bytes::copy_from_slice(&[i, 0, 0, 0]),
                value: Bytes::copy_from_slice(&[i; 8]),
                mode: 0,
            })),
        })
        .collect();
    let reply = client
        .txn(pb::TxnRequest {
            success: ops,
            ..Default::default()
        })
        .await
        .expect("txn")
        .into_inner();
    assert!(reply.succeeded);
    let revision = reply.header.expect("header").revision;
    let message = next_message(&mut stream).await;
    let seen = events(message);
    assert_eq!(seen.len(), 20, "all twenty events in one message");
    assert!(
        seen.iter()
            .all(|e| e.revision == revision && e.source == pb::Source::Api as i32)
    );
    assert_eq!(support::dump(&hash).len(), 20, "in the kernel");
    // nothing else follows: the syscall trace does not echo mapsync's own writes
    let echo = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
    assert!(echo.is_err(), "unexpected message after the txn: {echo:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_the_real_server_refuses_every_write() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("e2e-write-tcp");
    let hash = pin(&pins, "flows");
    support::create_map(&hash, "hash", 4, 8, 4, "flows");
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let server = tokio::task::block_in_place(|| {
        Server::start_on(
            &pins,
            &[map_arg("flows", &hash)],
            Some(&listen),
            &[
                "--write-uid",
                "0",
                "--metrics-listen",
                &metrics,
                "--insecure-listen",
            ],
            None,
        )
    });
    let channel = Channel::from_shared(format!("http://{listen}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let status = MapSyncClient::new(channel)
        .put(put(1, [1; 8]))
        .await
        .expect_err("refused over TCP");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(support::dump(&hash).is_empty(), "nothing written");
    let scraped =
        tokio::task::block_in_place(|| common::scrape_metrics(&metrics)).expect("metrics");
    assert_eq!(common::metric(&scraped, "mapsync_refused_writes"), 1.0);
    assert!(
        server
            .log()
            .iter()
            .any(|line| line.contains("refused a write")),
        "logged"
    );
}

const CHILD_SOCKET: &str = "MAPSYNC_E2E_CHILD_SOCKET";

/// Not a test: the client side of `only_permitted_users_write_through_the_real_server`,
/// run in a child process as another user. Puts key 7 into `flows` and
/// prints the status code.
#[test]
#[ignore = "the child process of only_permitted_users_write_through_the_real_server"]
fn child_put() {
    let Some(socket) = std::env::var_os(CHILD_SOCKET) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let code = runtime.block_on(async {
        let mut client = connect_path(Path::new(&socket)).await;
        client
            .put(put(7, [7; 8]))
            .await
            .map_or_else(|status| status.code(), |_| Code::Ok)
    });
    use std::io::Write;
    writeln!(std::io::stdout(), "CODE {}", code as i32).expect("stdout");
}

fn child_put_as(socket: &Path, uid: u32, gid: u32) -> Code {
    let mut command = std::process::Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([
            "--exact",
            "child_put",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_SOCKET, socket);
    let stdout = identity::run_as(command, uid, gid, &[]);
    let code = stdout
        .lines()
        .find_map(|line| line.split_once("CODE ").map(|(_, code)| code))
        .unwrap_or_else(|| panic!("no CODE line in {stdout}"));
    Code::from(code.trim().parse::<i32>().expect("a code"))
}

/// Lets anyone reach the server's socket (its permissions are issue 12's;
/// the check under test is the server's own).
fn open_socket(server: &Server) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let socket = Path::new(server.endpoint.strip_prefix("unix:").expect("unix")).to_owned();
    let dir = socket.parent().expect("socket dir");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))
        .expect("chmod socket");
    socket
}

#[test]
fn only_permitted_users_write_through_the_real_server() {
    if !support::require_kernel() {
        return;
    }
    let Some(who) = identity::TestIdentity::create() else {
        return;
    };
    let pins = PinDir::new("e2e-write-uid");
    let hash = pin(&pins, "flows");
    support::create_map(&hash, "hash", 4, 8, 16, "flows");

    let server = Server::start(&pins, &[map_arg("flows", &hash)]);
    let socket = open_socket(&server);
    assert_eq!(
        child_put_as(&socket, who.uid, who.gid),
        Code::PermissionDenied
    );
    assert!(support::dump(&hash).is_empty(), "nothing written");
    drop(server);

    let uid = who.uid.to_string();
    let server = Server::start_with(&pins, &[map_arg("flows", &hash)], &["--write-uid", &uid]);
    let socket = open_socket(&server);
    assert_eq!(child_put_as(&socket, who.uid, who.gid), Code::Ok);
    assert_eq!(
        support::dump(&hash).get(&vec![7, 0, 0, 0]),
        Some(&vec![7; 8])
    );
    drop(server);

    let gid = who.extra_gid.to_string();
    let server = Server::start_with(&pins, &[map_arg("flows", &hash)], &["--write-gid", &gid]);
    let socket = open_socket(&server);
    assert_eq!(
        child_put_as(&socket, who.uid, who.gid),
        Code::PermissionDenied,
        "not in the group"
    );
    assert_eq!(
        child_put_as(&socket, who.uid, who.extra_gid),
        Code::Ok,
        "in the group"
    );
}

/// Figures, not a speed target: Put over gRPC on the Unix socket, request
/// to reply (the reply is sent once the write is visible in the mirror),
/// p50 / p99 over 2,000 puts. Run with `--nocapture` to see them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_round_trip_figures() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("e2e-write-figures");
    let hash = pin(&pins, "flows");
    support::create_map(&hash, "hash", 4, 8, 1024, "flows");
    let server = tokio::task::block_in_place(|| Server::start(&pins, &[map_arg("flows", &hash)]));
    let mut client = connect(&server).await;
    let mut took = Vec::with_capacity(2000);
    let mut last = 0;
    for n in 0..2000u32 {
        let i = (n % 256) as u8;
        let started = std::time::Instant::now();
        let reply = client
            .put(put(i, [n as u8; 8]))
            .await
            .expect("put")
            .into_inner();
        took.push(started.elapsed());
        let revision = reply.header.expect("header").revision;
        assert!(revision > last, "revisions grow: {revision} after {last}");
        last = revision;
    }
    // the same round trip for a Get, for scale
    let mut reads = Vec::with_capacity(2000);
    for n in 0..2000u32 {
        let started = std::time::Instant::now();
        client
            .get(pb::GetRequest {
                map: "flows".into(),
                key: Bytes::copy_from_slice(&[(n % 256) as u8, 0, 0, 0]),
                ..Default::default()
            })
            .await
            .expect("get");
        reads.push(started.elapsed());
    }
    for (what, times) in [("Put", &mut took), ("Get", &mut reads)] {
        times.sort();
        let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
        eprintln!(
            "{what} over gRPC (Unix socket), request -> reply (a Put's: visible in the mirror): p50 {:?}, p99 {:?}, max {:?}",
            at(0.50),
            at(0.99),
            times[times.len() - 1]
        );
    }
    assert_eq!(support::dump(&hash).len(), 256);
}
