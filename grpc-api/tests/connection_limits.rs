//! Transport bounds in process: concurrent streams per connection, and the
//! Unix socket file that is only ever removed by the server that made it.

mod common;

use std::time::Duration;

use common::{key, ready_store, serve_with_options};
use mapsync_grpc::ServeError;
use mapsync_grpc::pb;
use mapsync_grpc::server::{ConnectionLimits, Listener, ServeOptions};
use tokio::sync::mpsc;

fn get(map: &str) -> pb::GetRequest {
    pb::GetRequest {
        map: map.into(),
        key: key(1),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_connection_carries_at_most_max_concurrent_streams() {
    let options = ServeOptions {
        connections: ConnectionLimits {
            max_concurrent_streams: 2,
            ..ConnectionLimits::default()
        },
        ..ServeOptions::default()
    };
    let (store, writer) = ready_store();
    let mut running = serve_with_options(store, writer, options).await;
    let client = &mut running.client;
    // two Watch streams stay open on the one connection
    let mut held = Vec::new();
    for _ in 0..2 {
        let (requests, rx) = mpsc::channel::<pb::WatchRequest>(1);
        let responses = client
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("a watch stream");
        held.push((requests, responses));
    }
    // a third call waits for room, and gets it when a stream ends
    let third = tokio::time::timeout(Duration::from_millis(500), client.get(get("flows"))).await;
    assert!(
        third.is_err(),
        "a third stream while two are open: {third:?}"
    );
    held.pop();
    let reply = tokio::time::timeout(Duration::from_secs(5), client.get(get("flows")))
        .await
        .expect("room once a stream ended")
        .expect("get");
    assert_eq!(&reply.into_inner().value[..], b"v1");
    drop(held);
    running.shutdown().await;
}

#[tokio::test]
async fn a_socket_file_is_removed_only_while_it_is_still_this_servers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("mapsync.sock");
    let addr = format!("unix:{}", path.display());
    let first = Listener::bind(&addr).await.expect("bind");
    // a live socket is not taken over
    let error = Listener::bind(&addr).await.unwrap_err();
    assert!(matches!(error, ServeError::SocketInUse { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("another server is listening on unix:"),
        "{error}"
    );
    // someone replaced the file: dropping the first listener leaves theirs
    std::fs::remove_file(&path).expect("remove");
    let second = Listener::bind(&addr).await.expect("bind the free path");
    drop(first);
    assert!(
        path.exists(),
        "the first listener did not remove the second's socket"
    );
    drop(second);
    assert!(!path.exists(), "the second removed its own socket");
    // a regular file is not a socket to replace
    std::fs::write(&path, b"data").expect("write");
    let error = Listener::bind(&addr).await.unwrap_err();
    assert!(matches!(error, ServeError::NotASocket { .. }), "{error}");
    assert_eq!(std::fs::read(&path).expect("still there"), b"data");
}

#[tokio::test]
async fn a_client_whose_idle_connection_was_closed_reconnects_on_its_next_call() {
    let options = ServeOptions {
        connections: ConnectionLimits {
            idle_timeout: Some(Duration::from_millis(300)),
            handshake_timeout: Duration::from_secs(1),
            ..ConnectionLimits::default()
        },
        ..ServeOptions::default()
    };
    let (store, writer) = ready_store();
    let mut running = serve_with_options(store, writer, options).await;
    for round in 0..3 {
        let reply = running.client.get(get("flows")).await;
        assert!(reply.is_ok(), "call {round}: {reply:?}");
        // the server closes the idle connection meanwhile
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    running.shutdown().await;
}
