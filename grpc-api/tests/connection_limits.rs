//! Transport bounds in process: concurrent streams per connection, and the
//! Unix socket file that is only ever removed by the server that made it.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{info, key};
use mapsync_core::{LogLimits, Publisher, Store};
use mapsync_grpc::ServeError;
use mapsync_grpc::pb;
use mapsync_grpc::pb::map_sync_client::MapSyncClient;
use mapsync_grpc::server::{ConnectionLimits, Listener, ServeOptions, serve_with};
use tokio::sync::{mpsc, oneshot};

fn ready_store() -> (Store, Publisher) {
    let (store, mut writer) = Store::new(LogLimits::default());
    writer.add_map(
        info("flows"),
        vec![(key(1), Bytes::from_static(b"v1"), 1)],
        0,
    );
    writer.set_ready();
    (store, writer)
}

fn get(map: &str) -> pb::GetRequest {
    pb::GetRequest {
        map: map.into(),
        key: key(1),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_connection_carries_at_most_max_concurrent_streams() {
    let listener = Listener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.endpoint());
    let options = ServeOptions {
        connections: ConnectionLimits {
            max_concurrent_streams: 2,
            ..ConnectionLimits::default()
        },
        ..ServeOptions::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let (store, _writer) = ready_store();
    let server = tokio::spawn(serve_with(listener, store, options, async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = MapSyncClient::new(channel);
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
    let _ = stop.send(());
    server.await.expect("task").expect("clean shutdown");
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
    let listener = Listener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.endpoint());
    let options = ServeOptions {
        connections: ConnectionLimits {
            idle_timeout: Some(Duration::from_millis(300)),
            handshake_timeout: Duration::from_secs(1),
            ..ConnectionLimits::default()
        },
        ..ServeOptions::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let (store, _writer) = ready_store();
    let server = tokio::spawn(serve_with(listener, store, options, async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = MapSyncClient::new(channel);
    for round in 0..3 {
        let reply = client.get(get("flows")).await;
        assert!(reply.is_ok(), "call {round}: {reply:?}");
        // the server closes the idle connection meanwhile
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let _ = stop.send(());
    server.await.expect("task").expect("clean shutdown");
}
