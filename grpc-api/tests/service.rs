//! The gRPC service in-process, over a store fed by its writer (no kernel):
//! the unary calls, their request errors with precise statuses, health, and
//! listeners. Watch tests are in the `watch_*` files.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{key, ready_store, short_log, start};
use mapsync_core::{Change, EventSource, LogLimits};
use mapsync_grpc::pb;
use mapsync_grpc::pb::map_sync_client::MapSyncClient;
use mapsync_grpc::server::{Listener, serve};
use tokio::sync::oneshot;
use tonic::Code;

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
            ..Default::default()
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
            ..Default::default()
        })
        .await
        .expect("get");
    assert!(!missing.into_inner().found);

    let mut pages = running
        .client
        .list(pb::ListRequest {
            map: "flows".into(),
            page_size: 1000,
            ..Default::default()
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
async fn every_request_error_has_its_status_and_the_server_keeps_serving() {
    let mut running = start(short_log(2), 1, true).await;
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
            ..Default::default()
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
            ..Default::default()
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
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .list(pb::ListRequest {
            map: "flows".into(),
            page_size: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

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
    let (store, _writer) = ready_store();
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
            ..Default::default()
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

/// Lists the services through server reflection of one protocol version
/// (`v1` or `v1alpha`: the modules have the same shapes) and fetches the
/// file that defines `mapsync.v1.MapSync`.
macro_rules! reflect {
    ($version:ident, $endpoint:expr) => {{
        use tonic_reflection::pb::$version::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let channel = tonic::transport::Endpoint::from_shared($endpoint.clone())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut client = ServerReflectionClient::new(channel);
        let requests = [
            MessageRequest::ListServices(String::new()),
            MessageRequest::FileContainingSymbol("mapsync.v1.MapSync".into()),
        ]
        .map(|request| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        });
        let mut replies = client
            .server_reflection_info(futures::stream::iter(requests))
            .await
            .expect("reflection stream")
            .into_inner();
        let mut services = Vec::new();
        let mut files = 0;
        while let Some(reply) = replies.message().await.expect("reflection reply") {
            match reply.message_response.expect("a response") {
                MessageResponse::ListServicesResponse(list) => {
                    services.extend(list.service.into_iter().map(|s| s.name));
                }
                MessageResponse::FileDescriptorResponse(file) => {
                    files += file.file_descriptor_proto.len();
                }
                other => panic!("unexpected reflection reply {other:?}"),
            }
        }
        (services, files)
    }};
}

#[tokio::test]
async fn reflection_answers_in_v1_and_v1alpha() {
    let running = start(LogLimits::default(), 1, true).await;
    for (services, files) in [
        reflect!(v1, running.endpoint),
        reflect!(v1alpha, running.endpoint),
    ] {
        for expected in ["mapsync.v1.MapSync", "grpc.health.v1.Health"] {
            assert!(
                services.iter().any(|s| s == expected),
                "{expected} in {services:?}"
            );
        }
        assert!(files >= 1, "the file defining mapsync.v1.MapSync");
    }
    running.shutdown().await;
}
