//! Who may connect to the Unix socket: its mode and group are exactly those
//! asked for even with the process umask at 000, the directory mapsync
//! creates is 0750 with the socket's group, and a real unprivileged user
//! (created by the test) cannot connect without the group but can with it.
//! Needs root; under `CI=true` a failure to create the user fails the test.

mod common;
#[path = "write_support/identity.rs"]
mod identity;
mod write_support;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use mapsync_grpc::pb;
use mapsync_grpc::server::{Listener, ServeOptions, SocketOptions, serve_with};
use tokio::sync::oneshot;

const PROBE_SOCKET: &str = "MAPSYNC_PROBE_SOCKET";

/// Not a test: the client side of the tests below, run in a child process
/// as another user. Connects to `PROBE_SOCKET` and prints the outcome.
#[test]
#[ignore = "the child process of the socket permission tests"]
fn child_connect() {
    let Some(socket) = std::env::var_os(PROBE_SOCKET) else {
        return;
    };
    let outcome = match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(_) => "connected".to_owned(),
        Err(error) => format!("{:?}", error.kind()),
    };
    writeln!(std::io::stdout(), "OUTCOME {outcome}").expect("stdout");
}

/// Runs `child_connect` as `uid`/`gid` (no other groups): `connected`, or
/// the error kind of its connect.
fn connect_as(socket: &Path, uid: u32, gid: u32) -> String {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([
            "--exact",
            "child_connect",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE_SOCKET, socket);
    let stdout = tokio::task::block_in_place(|| identity::run_as(command, uid, gid, &[]));
    stdout
        .lines()
        .find_map(|line| line.split_once("OUTCOME ").map(|(_, outcome)| outcome))
        .unwrap_or_else(|| panic!("no OUTCOME line in {stdout}"))
        .to_owned()
}

fn mode_and_gid(path: &Path) -> (u32, u32) {
    let meta = std::fs::symlink_metadata(path).expect("metadata");
    (meta.permissions().mode() & 0o7777, meta.gid())
}

/// A server on `listener` over a ready store with the map `flows`: its
/// stopper and task.
fn serve(
    listener: Listener,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), mapsync_grpc::ServeError>>,
) {
    let (store, _writer) = common::ready_store();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_with(
        listener,
        store,
        ServeOptions::default(),
        async {
            let _ = stopped.await;
        },
    ));
    (stop, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_admits_only_its_owner_and_group_whatever_the_umask() {
    let Some(who) = identity::TestIdentity::create() else {
        return;
    };
    // SAFETY: umask only sets the process's file creation mask; this test
    // binary's other tests create no files that depend on it
    unsafe { libc::umask(0) };
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");

    // defaults in a directory that exists: 0660 root:root, the user is refused
    let plain = dir.path().join("plain.sock");
    let listener = Listener::bind(&format!("unix:{}", plain.display()))
        .await
        .expect("bind");
    assert_eq!(mode_and_gid(&plain), (0o660, 0));
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("ls").count(),
        1,
        "no staging directory is left behind"
    );
    let (stop, server) = serve(listener);
    assert_eq!(connect_as(&plain, who.uid, who.gid), "PermissionDenied");
    // root (the owner) still talks gRPC over it
    let mut client =
        pb::map_sync_client::MapSyncClient::new(write_support::unix_channel(&plain).await);
    let maps = client
        .list_maps(pb::ListMapsRequest::default())
        .await
        .expect("list maps as root")
        .into_inner();
    assert_eq!(maps.maps.len(), 1);
    drop(client);
    let _ = stop.send(());
    server.await.expect("task").expect("clean shutdown");

    // a group, in directories mapsync creates: 0750 with the group, the user
    // is refused without the group and admitted with it
    let nested = dir.path().join("run/mapsync/mapsync.sock");
    let options = SocketOptions {
        mode: 0o660,
        group: Some(who.extra_gid),
    };
    let listener = Listener::bind_with(&format!("unix:{}", nested.display()), options)
        .await
        .expect("bind with a group");
    assert_eq!(mode_and_gid(&nested), (0o660, who.extra_gid));
    for created in [dir.path().join("run"), dir.path().join("run/mapsync")] {
        assert_eq!(
            mode_and_gid(&created),
            (0o750, who.extra_gid),
            "{}",
            created.display()
        );
    }
    let (stop, server) = serve(listener);
    assert_eq!(connect_as(&nested, who.uid, who.gid), "PermissionDenied");
    assert_eq!(connect_as(&nested, who.uid, who.extra_gid), "connected");
    let _ = stop.send(());
    server.await.expect("task").expect("clean shutdown");

    // an explicit open mode is honoured as given
    let open = dir.path().join("open.sock");
    let listener = Listener::bind_with(
        &format!("unix:{}", open.display()),
        SocketOptions {
            mode: 0o666,
            group: None,
        },
    )
    .await
    .expect("bind 0666");
    assert_eq!(mode_and_gid(&open), (0o666, 0));
    assert_eq!(connect_as(&open, who.uid, who.gid), "connected");
    drop(listener);
    assert!(!open.exists(), "the socket is removed with its listener");
}
