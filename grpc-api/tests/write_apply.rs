//! `Apply` over a real server (Unix socket, fake kernel task): one revision
//! for the whole new set, the version check, and the bounds of the client
//! stream (entries, map, sizes, message size), none of which sends anything
//! to the kernel task.

mod write_support;

use bytes::Bytes;
use mapsync_grpc::pb;
use mapsync_grpc::peer::WritePolicy;
use mapsync_grpc::service::write_status::{LIVE_VERSION, metadata_u64};
use tonic::Code;
use write_support::{WriteServer, batch, key, next, watch_from};

fn entry(i: u32, value: &'static [u8]) -> pb::ApplyEntry {
    pb::ApplyEntry {
        key: key(i),
        value: Bytes::from_static(value),
        delete: false,
    }
}

async fn apply(
    server: &mut WriteServer,
    messages: Vec<pb::ApplyRequest>,
) -> Result<pb::ApplyResponse, tonic::Status> {
    server
        .client
        .apply(tokio_stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn an_apply_stream_switches_the_set_in_one_revision() {
    let mut server = WriteServer::start(Some(WritePolicy::default())).await;
    let epoch = server.store.epoch().0;
    let start = server.store.revision() + 1;
    let (_tx, mut stream) = watch_from(&mut server, start, epoch).await;
    let reply = apply(
        &mut server,
        vec![
            pb::ApplyRequest {
                map: "rules".into(),
                expect_version: Some(1),
                entries: vec![entry(1, b"r1"), entry(2, b"r2")],
                ..Default::default()
            },
            pb::ApplyRequest {
                entries: vec![entry(3, b"r3")],
                ..Default::default()
            },
        ],
    )
    .await
    .expect("apply");
    assert_eq!(reply.version, 2);
    assert_eq!(reply.entries, 3);
    assert_eq!(reply.changed, 4, "three puts and the delete of key 9");
    let revision = reply.header.expect("header").revision;
    let message = batch(next(&mut stream).await);
    assert_eq!(message.events.len(), 4);
    assert!(
        message
            .events
            .iter()
            .all(|e| e.revision == revision && e.source == pb::Source::Api as i32)
    );
    // the same expected version again: the live one is named
    let status = apply(
        &mut server,
        vec![pb::ApplyRequest {
            map: "rules".into(),
            expect_version: Some(1),
            ..Default::default()
        }],
    )
    .await
    .expect_err("stale version");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(metadata_u64(&status, LIVE_VERSION), Some(2));
    server.shutdown().await;
}

#[tokio::test]
async fn apply_streams_out_of_bounds_are_refused_and_send_nothing() {
    let mut server = WriteServer::start(Some(WritePolicy::default())).await;
    let first = |entries| pb::ApplyRequest {
        map: "rules".into(),
        entries,
        ..Default::default()
    };
    // more entries than the map holds (8), over several messages
    let status = apply(
        &mut server,
        vec![
            first((0..5).map(|i| entry(i, b"xx")).collect()),
            pb::ApplyRequest {
                entries: (5..9).map(|i| entry(i, b"xx")).collect(),
                ..Default::default()
            },
        ],
    )
    .await
    .expect_err("too many");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // another map named mid-stream
    let status = apply(
        &mut server,
        vec![
            first(vec![entry(1, b"xx")]),
            pb::ApplyRequest {
                map: "flows".into(),
                ..Default::default()
            },
        ],
    )
    .await
    .expect_err("map switch");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("`flows`"), "{status:?}");
    // a delete in replace mode; a wrong value size; a key twice
    let delete = pb::ApplyEntry {
        delete: true,
        ..entry(1, b"")
    };
    for entries in [
        vec![delete],
        vec![entry(1, b"xyz")],
        vec![entry(1, b"aa"), entry(1, b"bb")],
    ] {
        let status = apply(&mut server, vec![first(entries)])
            .await
            .expect_err("bad entry");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    // no map in the first message; a map that is not switchable; nothing
    let status = apply(&mut server, vec![pb::ApplyRequest::default()])
        .await
        .expect_err("no map");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = apply(
        &mut server,
        vec![pb::ApplyRequest {
            map: "flows".into(),
            ..Default::default()
        }],
    )
    .await
    .expect_err("not switchable");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = apply(&mut server, vec![]).await.expect_err("empty stream");
    assert_eq!(status.code(), Code::InvalidArgument);
    // a message over the 64 KiB request cap
    let big = pb::ApplyRequest {
        map: "rules".into(),
        entries: vec![pb::ApplyEntry {
            key: key(1),
            value: Bytes::from(vec![0; 70 << 10]),
            delete: false,
        }],
        ..Default::default()
    };
    let status = apply(&mut server, vec![big]).await.expect_err("oversize");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        server.fake.received(),
        0,
        "no command reached the kernel task"
    );
    server.shutdown().await;
}
