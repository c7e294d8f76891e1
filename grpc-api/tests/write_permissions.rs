//! Who may write, with real identities: a user and a group created by the
//! test, a client process running as that user (this test binary again, as
//! the `child_writer` helper), the server's policy deciding from the
//! socket's peer credentials. Needs root (to create users and switch to
//! them); under `CI=true` a failure to create them fails the test.

#[path = "write_support/identity.rs"]
mod identity;
mod write_support;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use mapsync_grpc::pb;
use mapsync_grpc::peer::WritePolicy;
use tonic::Code;
use write_support::{WriteServer, key};

const CHILD_SOCKET: &str = "MAPSYNC_WRITE_CHILD_SOCKET";
const CHILD_KEY: &str = "MAPSYNC_WRITE_CHILD_KEY";

/// Not a test: the client side of the tests below, run in a child process
/// as another user. Puts `CHILD_KEY` into `flows`, reads it back, and
/// prints the two status codes.
#[test]
#[ignore = "the child process of who_may_write_is_decided_by_the_peer_s_uid_and_groups"]
fn child_writer() {
    let (Some(socket), Some(which)) = (std::env::var_os(CHILD_SOCKET), std::env::var_os(CHILD_KEY))
    else {
        return;
    };
    let which: u32 = which
        .to_str()
        .and_then(|k| k.parse().ok())
        .expect("a key number");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (put, get) = runtime.block_on(async {
        let channel = write_support::unix_channel(Path::new(&socket)).await;
        let mut client = pb::map_sync_client::MapSyncClient::new(channel);
        let put = client
            .put(pb::PutRequest {
                map: "flows".into(),
                key: key(which),
                value: Bytes::from_static(b"ch"),
                ..Default::default()
            })
            .await
            .map_or_else(|status| status.code(), |_| Code::Ok);
        let get = client
            .get(pb::GetRequest {
                map: "flows".into(),
                key: key(which),
                ..Default::default()
            })
            .await
            .map_or_else(|status| status.code(), |_| Code::Ok);
        (put, get)
    });
    writeln!(std::io::stdout(), "CODES {} {}", put as i32, get as i32).expect("stdout");
}

/// Runs `child_writer` as `uid`/`gid` with supplementary `groups`: the
/// codes of its put and its get.
fn run_child(socket: &Path, which: u32, uid: u32, gid: u32, groups: &[u32]) -> (Code, Code) {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([
            "--exact",
            "child_writer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_SOCKET, socket)
        .env(CHILD_KEY, which.to_string());
    let stdout = tokio::task::block_in_place(|| identity::run_as(command, uid, gid, groups));
    let codes: Vec<i32> = stdout
        .lines()
        .find_map(|line| line.split_once("CODES ").map(|(_, codes)| codes))
        .unwrap_or_else(|| panic!("no CODES line in {stdout}"))
        .split(' ')
        .map(|code| code.parse().expect("a code"))
        .collect();
    (Code::from(codes[0]), Code::from(codes[1]))
}

fn value_of(server: &WriteServer, which: u32) -> Option<Bytes> {
    server
        .store
        .snapshot()
        .map("flows")
        .expect("flows")
        .get(&key(which))
        .map(Bytes::copy_from_slice)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_write_is_decided_by_the_peer_s_uid_and_groups() {
    let Some(who) = identity::TestIdentity::create() else {
        return;
    };
    assert_ne!(who.uid, 0);

    // the default policy: only root
    let server = WriteServer::start(Some(WritePolicy::default())).await;
    let revision = server.store.revision();
    let (put, get) = run_child(&server.socket, 5, who.uid, who.gid, &[]);
    assert_eq!(put, Code::PermissionDenied, "an unlisted user's put");
    assert_eq!(get, Code::Ok, "reads stay open to everyone who can connect");
    assert_eq!(server.store.revision(), revision, "nothing was written");
    assert_eq!(value_of(&server, 5), None);
    assert_eq!(server.fake.received(), 0, "no command was sent");
    assert_eq!(server.stats.refused_writes(), 1, "the refusal is counted");
    server.shutdown().await;

    // its uid listed
    let policy = WritePolicy {
        uids: [who.uid].into(),
        ..WritePolicy::default()
    };
    let server = WriteServer::start(Some(policy)).await;
    let (put, _) = run_child(&server.socket, 5, who.uid, who.gid, &[]);
    assert_eq!(put, Code::Ok, "a listed uid may write");
    assert_eq!(value_of(&server, 5).as_deref(), Some(&b"ch"[..]));
    assert_eq!(server.stats.refused_writes(), 0);
    server.shutdown().await;

    // a group listed: as its primary group or as a supplementary one
    let policy = WritePolicy {
        gids: [who.extra_gid].into(),
        ..WritePolicy::default()
    };
    let server = WriteServer::start(Some(policy)).await;
    let (put, _) = run_child(&server.socket, 6, who.uid, who.gid, &[]);
    assert_eq!(put, Code::PermissionDenied, "not in the group");
    let (put, _) = run_child(&server.socket, 7, who.uid, who.gid, &[who.extra_gid]);
    assert_eq!(put, Code::Ok, "in the group as a supplementary group");
    let (put, _) = run_child(&server.socket, 8, who.uid, who.extra_gid, &[]);
    assert_eq!(put, Code::Ok, "in the group as the primary group");
    assert_eq!(value_of(&server, 6), None);
    assert!(value_of(&server, 7).is_some() && value_of(&server, 8).is_some());
    assert_eq!(server.stats.refused_writes(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn over_tcp_even_root_may_not_write() {
    let server = WriteServer::start(Some(WritePolicy::default())).await;
    let everyone = WritePolicy {
        uids: [0, 1000].into(),
        gids: [0].into(),
    };
    let (mut tcp, stop) = server.tcp_twin(everyone).await;
    let revision = server.store.revision();
    let status = tcp
        .put(pb::PutRequest {
            map: "flows".into(),
            key: key(5),
            value: Bytes::from_static(b"tt"),
            ..Default::default()
        })
        .await
        .expect_err("refused over TCP");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("TCP"), "{status:?}");
    let status = tcp
        .apply(tokio_stream::iter(vec![pb::ApplyRequest {
            map: "rules".into(),
            ..Default::default()
        }]))
        .await
        .expect_err("refused over TCP");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(server.store.revision(), revision);
    assert_eq!(server.fake.received(), 0);
    // the same root over the Unix socket may
    let mut unix = server.client.clone();
    unix.put(pb::PutRequest {
        map: "flows".into(),
        key: key(5),
        value: Bytes::from_static(b"uu"),
        ..Default::default()
    })
    .await
    .expect("root over the Unix socket");
    let _ = stop.send(());
    server.shutdown().await;
}
