//! The gRPC service in-process, over a store fed by its writer (no kernel):
//! every call, every request error with its precise status, health.

use std::time::Duration;

use bytes::Bytes;
use mapsync_core::{Change, EventSource, LogLimits, MapInfo, MapKind, Store, StoreWriter};
use mapsync_grpc::pb::map_sync_client::MapSyncClient;
use mapsync_grpc::pb::{self, watch_response::Kind};
use mapsync_grpc::server::{Listener, serve};
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::Channel;

fn info(name: &str) -> MapInfo {
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
    }
}

fn key(i: u32) -> Bytes {
    Bytes::from(i.to_be_bytes().to_vec())
}

struct Running {
    client: MapSyncClient<Channel>,
    health: tonic_health::pb::health_client::HealthClient<Channel>,
    store: Store,
    writer: StoreWriter,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), mapsync_grpc::ServeError>>,
}

async fn start(limits: LogLimits, entries: u32, ready: bool) -> Running {
    let (store, mut writer) = Store::new(limits);
    let initial = (0..entries)
        .map(|i| (key(i), Bytes::from_static(b"v0"), 1))
        .collect();
    writer.add_map(info("flows"), initial, 0);
    if ready {
        writer.set_ready();
    }
    let listener = Listener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.endpoint());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, store.clone(), async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(endpoint)
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    Running {
        client: MapSyncClient::new(channel.clone()),
        health: tonic_health::pb::health_client::HealthClient::new(channel),
        store,
        writer,
        stop: Some(stop),
        server,
    }
}

impl Running {
    async fn shutdown(mut self) {
        let _ = self.stop.take().expect("running").send(());
        self.server
            .await
            .expect("server task")
            .expect("clean shutdown");
    }
}

async fn next_message(stream: &mut tonic::Streaming<pb::WatchResponse>) -> pb::WatchResponse {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a message in time")
        .expect("no error")
        .expect("stream open")
}

fn events(message: pb::WatchResponse) -> Vec<pb::Event> {
    match message.kind {
        Some(Kind::Events(batch)) => batch.events,
        other => panic!("expected events, got {other:?}"),
    }
}

#[tokio::test]
async fn list_maps_get_and_paged_list_read_one_revision() {
    let mut running = start(LogLimits::default(), 2500, true).await;
    let maps = running
        .client
        .list_maps(pb::ListMapsRequest {})
        .await
        .expect("list maps")
        .into_inner();
    assert_eq!(maps.maps.len(), 1);
    assert_eq!(maps.maps[0].name, "flows");
    assert_eq!(maps.maps[0].kind, "hash");
    assert_eq!(maps.maps[0].entries, 2500);
    assert_eq!(maps.header.expect("header").epoch, running.store.epoch().0);

    let found = running
        .client
        .get(pb::GetRequest {
            map: "flows".into(),
            key: key(3),
            decode: false,
        })
        .await
        .expect("get")
        .into_inner();
    assert!(found.found);
    assert_eq!(&found.value[..], b"v0");
    let missing = running
        .client
        .get(pb::GetRequest {
            map: "flows".into(),
            key: key(99_999),
            decode: false,
        })
        .await
        .expect("get");
    assert!(!missing.into_inner().found);

    let mut pages = running
        .client
        .list(pb::ListRequest {
            map: "flows".into(),
            page_size: 1000,
            decode: false,
        })
        .await
        .expect("list")
        .into_inner();
    // a change made while the pages stream is not in them
    running.writer.apply([Change::put(
        "flows",
        key(5000),
        &b"new"[..],
        EventSource::Trace,
        2,
    )]);
    let mut entries = Vec::new();
    let mut revisions = Vec::new();
    while let Some(page) = pages.message().await.expect("page") {
        revisions.push(page.header.expect("header").revision);
        entries.extend(page.entries);
        if page.last {
            break;
        }
    }
    assert_eq!(
        revisions,
        vec![2500; 3],
        "every page states the same revision"
    );
    assert_eq!(entries.len(), 2500);
    assert!(
        entries.windows(2).all(|w| w[0].key < w[1].key),
        "key order, no duplicate"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn watch_from_zero_then_live_then_resume() {
    let mut running = start(LogLimits::default(), 3, true).await;
    let mut stream = running
        .client
        .watch(pb::WatchRequest {
            maps: vec!["flows".into()],
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let initial = events(next_message(&mut stream).await);
    assert_eq!(initial.len(), 3);
    assert!(
        initial
            .iter()
            .all(|e| e.source == pb::Source::Initial as i32 && e.op == pb::Op::Put as i32)
    );
    match next_message(&mut stream).await.kind {
        Some(Kind::InitialStateDone(done)) => assert_eq!(done.revision, 3),
        other => panic!("expected the end of the initial state, got {other:?}"),
    }
    running.writer.apply([
        Change::put("flows", key(10), &b"a"[..], EventSource::Trace, 2),
        Change::delete("flows", key(0), EventSource::Emit, 3),
    ]);
    let live = events(next_message(&mut stream).await);
    assert_eq!(
        live.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![4, 5]
    );
    assert_eq!(live[1].op, pb::Op::Delete as i32);
    assert!(live[1].value.is_empty());

    let epoch = running.store.epoch().0;
    let mut resumed = running
        .client
        .watch(pb::WatchRequest {
            maps: vec![],
            start_revision: 5,
            epoch,
            key_prefix: Bytes::new(),
            decode: false,
        })
        .await
        .expect("resume")
        .into_inner();
    let again = events(next_message(&mut resumed).await);
    assert_eq!(
        again.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![5]
    );
    // graceful shutdown ends open watches with UNAVAILABLE (reconnect and resume)
    running.shutdown().await;
    let status = stream
        .message()
        .await
        .expect_err("the watch ends on shutdown");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn every_request_error_has_its_status_and_the_server_keeps_serving() {
    let mut running = start(
        LogLimits {
            max_events: 2,
            max_bytes: usize::MAX,
        },
        1,
        true,
    )
    .await;
    for i in 0..5 {
        running.writer.apply([Change::put(
            "flows",
            key(100 + i),
            &b"x"[..],
            EventSource::Trace,
            2,
        )]);
    }
    let client = &mut running.client;

    let status = client
        .get(pb::GetRequest {
            map: "nope".into(),
            key: key(1),
            decode: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, "unknown map `nope`")
    );

    let status = client
        .get(pb::GetRequest {
            map: "flows".into(),
            key: Bytes::from_static(&[1, 2]),
            decode: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::InvalidArgument,
            "map `flows` has 4-byte keys, got 2 bytes"
        )
    );

    let status = client
        .list(pb::ListRequest {
            map: "nope".into(),
            page_size: 0,
            decode: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .list(pb::ListRequest {
            map: "flows".into(),
            page_size: 1_000_000,
            decode: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let status = client
        .watch(pb::WatchRequest {
            maps: vec!["nope".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let status = client
        .watch(pb::WatchRequest {
            start_revision: 2,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);
    assert_eq!(
        status.message(),
        "revision 2 is compacted; the oldest available revision is 5"
    );

    let wrong_epoch = running.store.epoch().0 ^ 0x10;
    let status = client
        .watch(pb::WatchRequest {
            start_revision: 5,
            epoch: wrong_epoch,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().starts_with("epoch changed"),
        "{}",
        status.message()
    );

    // still serving
    let maps = client
        .list_maps(pb::ListMapsRequest {})
        .await
        .expect("still serving");
    assert_eq!(maps.into_inner().maps.len(), 1);
    running.shutdown().await;
}

#[tokio::test]
async fn not_ready_is_unavailable_and_health_turns_serving_when_ready() {
    let mut running = start(LogLimits::default(), 1, false).await;
    let status = running
        .client
        .list_maps(pb::ListMapsRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let request = || tonic_health::pb::HealthCheckRequest {
        service: pb::SERVICE_NAME.into(),
    };
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let status = running
        .health
        .check(request())
        .await
        .expect("health")
        .into_inner()
        .status;
    assert_ne!(status, serving, "not serving before the initial dumps");
    running.writer.set_ready();
    let mut serving_now = false;
    for _ in 0..100 {
        if running
            .health
            .check(request())
            .await
            .expect("health")
            .into_inner()
            .status
            == serving
        {
            serving_now = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(serving_now, "health reports Serving once ready");
    assert!(
        running
            .client
            .list_maps(pb::ListMapsRequest {})
            .await
            .is_ok()
    );
    running.shutdown().await;
}

#[tokio::test]
async fn unix_socket_listener_serves_and_removes_its_socket() {
    let (store, mut writer) = Store::new(LogLimits::default());
    writer.add_map(
        info("flows"),
        vec![(key(1), Bytes::from_static(b"v1"), 1)],
        0,
    );
    writer.set_ready();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sub/mapsync.sock");
    let listener = Listener::bind(&format!("unix:{}", path.display()))
        .await
        .expect("bind unix");
    assert_eq!(listener.endpoint(), format!("unix:{}", path.display()));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, store, async {
        let _ = stopped.await;
    }));
    let socket = path.clone();
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
    let reply = MapSyncClient::new(channel)
        .get(pb::GetRequest {
            map: "flows".into(),
            key: key(1),
            decode: false,
        })
        .await
        .expect("get over unix socket");
    assert_eq!(&reply.into_inner().value[..], b"v1");
    let _ = stop.send(());
    server.await.expect("task").expect("clean shutdown");
    assert!(!path.exists(), "socket file removed on shutdown");
}

#[tokio::test]
async fn bad_listen_addresses_are_refused() {
    assert!(matches!(
        Listener::bind("nonsense").await,
        Err(mapsync_grpc::ServeError::InvalidAddress { .. })
    ));
    assert!(matches!(
        Listener::bind("unix:").await,
        Err(mapsync_grpc::ServeError::InvalidAddress { .. })
    ));
    let taken = Listener::bind("127.0.0.1:0").await.expect("bind");
    let error = Listener::bind(&taken.endpoint()).await.unwrap_err();
    assert!(
        error.to_string().starts_with("cannot listen on 127.0.0.1:"),
        "{error}"
    );
}
