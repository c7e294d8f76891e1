//! The write RPCs end to end over a real server on a Unix socket, with a
//! fake kernel task behind the command channel: read-your-writes, one
//! revision per request in one watch message, and every status a client can
//! get, with its metadata. Run as root (the socket's peer is uid 0, who may
//! write).

mod write_support;

use std::time::Duration;

use bytes::Bytes;
use mapsync_core::control::{CommandError, Refusal};
use mapsync_grpc::pb::{self, watch_response::Kind};
use mapsync_grpc::peer::WritePolicy;
use mapsync_grpc::service::Limits;
use mapsync_grpc::service::write_status::{
    CURRENT_MOD_REVISION, ERRNO, FAILED_OP, LIVE_VERSION, metadata_u64,
};
use tokio_stream::StreamExt;
use tonic::Code;
use write_support::{WriteServer, default_maps, key};

fn put(map: &str, i: u32, value: &'static [u8]) -> pb::PutRequest {
    pb::PutRequest {
        map: map.into(),
        key: key(i),
        value: Bytes::from_static(value),
        ..Default::default()
    }
}

fn txn_put(map: &str, i: u32, value: &'static [u8]) -> pb::TxnOp {
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
async fn watch_from(
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

async fn next(stream: &mut tonic::Streaming<pb::WatchResponse>) -> pb::WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a watch message in time")
        .expect("stream open")
        .expect("no error")
}

fn batch(message: pb::WatchResponse) -> pb::EventBatch {
    match message.kind {
        Some(Kind::Events(batch)) => batch,
        other => panic!("expected events, got {other:?}"),
    }
}

#[tokio::test]
async fn a_put_is_read_at_its_revision_and_watched_from_it_as_api() {
    let mut server = WriteServer::start(Some(WritePolicy::default())).await;
    let reply = server
        .client
        .put(pb::PutRequest {
            prev_value: true,
            ..put("flows", 1, b"w1")
        })
        .await
        .expect("put")
        .into_inner();
    let header = reply.header.expect("header");
    let revision = header.revision;
    assert_eq!(header.epoch, server.store.epoch().0);
    let prev = reply.prev.expect("prev asked for");
    assert!(prev.found);
    assert_eq!(&prev.value[..], b"v1");
    let got = server
        .client
        .get(pb::GetRequest {
            map: "flows".into(),
            key: key(1),
            min_revision: revision,
            epoch: header.epoch,
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(&got.value[..], b"w1");
    assert_eq!(got.mod_revision, revision);
    let (_tx, mut stream) = watch_from(&mut server, revision, header.epoch).await;
    let events = batch(next(&mut stream).await).events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].revision, revision);
    assert_eq!(events[0].source, pb::Source::Api as i32);
    assert_eq!(&events[0].value[..], b"w1");

    // a delete, with the value it removed
    let reply = server
        .client
        .delete(pb::DeleteRequest {
            map: "flows".into(),
            key: key(1),
            prev_value: true,
            ..Default::default()
        })
        .await
        .expect("delete")
        .into_inner();
    let deleted_at = reply.header.expect("header").revision;
    assert_eq!(deleted_at, revision + 1);
    assert_eq!(&reply.prev.expect("prev").value[..], b"w1");
    let events = batch(next(&mut stream).await).events;
    assert_eq!(events[0].op, pb::Op::Delete as i32);
    assert_eq!(events[0].revision, deleted_at);
    assert!(
        server
            .store
            .snapshot()
            .map("flows")
            .expect("flows")
            .get(&key(1))
            .is_none()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_txn_s_events_arrive_in_one_message_at_one_revision() {
    let mut server = WriteServer::start(Some(WritePolicy::default())).await;
    let epoch = server.store.epoch().0;
    let start = server.store.revision() + 1;
    let (_tx, mut stream) = watch_from(&mut server, start, epoch).await;
    let reply = server
        .client
        .txn(pb::TxnRequest {
            compare: vec![pb::Compare {
                map: "flows".into(),
                key: key(0),
                result: pb::compare::Result::Equal as i32,
                target: Some(pb::compare::Target::Value(Bytes::from_static(b"v0"))),
            }],
            success: vec![
                txn_put("flows", 2, b"a2"),
                txn_put("flows", 3, b"a3"),
                txn_put("cfg", 1, b"c1"),
                pb::TxnOp {
                    op: Some(pb::txn_op::Op::Delete(pb::TxnDelete {
                        map: "flows".into(),
                        key: key(0),
                    })),
                },
            ],
            failure: vec![txn_put("flows", 9, b"no")],
            prev_value: true,
            ..Default::default()
        })
        .await
        .expect("txn")
        .into_inner();
    assert!(reply.succeeded);
    assert_eq!(reply.prev.len(), 4);
    assert!(!reply.prev[0].found);
    assert!(reply.prev[3].found);
    let revision = reply.header.expect("header").revision;
    let message = batch(next(&mut stream).await);
    assert_eq!(message.events.len(), 4, "{message:?}");
    assert!(!message.revision_continues);
    assert!(message.events.iter().all(|e| e.revision == revision));
    let maps: Vec<&str> = message.events.iter().map(|e| e.map.as_str()).collect();
    assert!(maps.contains(&"cfg") && maps.contains(&"flows"), "{maps:?}");

    // a failed compare runs the failure branch: not an error
    let reply = server
        .client
        .txn(pb::TxnRequest {
            compare: vec![pb::Compare {
                map: "flows".into(),
                key: key(0),
                result: 0,
                target: Some(pb::compare::Target::Exists(true)),
            }],
            success: vec![txn_put("flows", 8, b"no")],
            ..Default::default()
        })
        .await
        .expect("txn")
        .into_inner();
    assert!(!reply.succeeded);
    assert_eq!(
        reply.header.expect("header").revision,
        revision,
        "nothing written"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_revision_larger_than_the_message_cap_is_split_and_marked() {
    let limits = Limits {
        max_message_bytes: 64,
        ..Limits::default()
    };
    let mut server =
        WriteServer::start_with(Some(WritePolicy::default()), limits, default_maps()).await;
    let epoch = server.store.epoch().0;
    let start = server.store.revision() + 1;
    let (_tx, mut stream) = watch_from(&mut server, start, epoch).await;
    let reply = server
        .client
        .txn(pb::TxnRequest {
            success: (10..15).map(|i| txn_put("flows", i, b"zz")).collect(),
            ..Default::default()
        })
        .await
        .expect("txn")
        .into_inner();
    let revision = reply.header.expect("header").revision;
    let put_after = server
        .client
        .put(put("flows", 1, b"x1"))
        .await
        .expect("put");
    let after = put_after.into_inner().header.expect("header").revision;
    let mut seen = Vec::new();
    let mut messages = 0;
    loop {
        let message = batch(next(&mut stream).await);
        messages += 1;
        let continues = message.revision_continues;
        seen.extend(message.events.iter().map(|e| e.revision));
        assert!(
            message.events.iter().all(|e| e.revision == revision),
            "{message:?}"
        );
        if !continues {
            break;
        }
    }
    assert_eq!(
        seen.len(),
        5,
        "every event of the revision, across messages"
    );
    assert!(
        messages >= 3,
        "a 64-byte cap splits five events: {messages} messages"
    );
    let message = batch(next(&mut stream).await);
    assert!(!message.revision_continues);
    assert_eq!(message.events[0].revision, after);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_requests_are_refused_before_any_command_is_sent() {
    let mut server = WriteServer::start(Some(WritePolicy::default())).await;
    let epoch = server.store.epoch().0;
    let cases: Vec<(pb::PutRequest, Code, &str)> = vec![
        (put("nope", 1, b"xx"), Code::NotFound, "unknown map `nope`"),
        (
            pb::PutRequest {
                key: Bytes::from_static(&[1, 2]),
                ..put("flows", 1, b"xx")
            },
            Code::InvalidArgument,
            "key: map `flows` takes 4 bytes, got 2",
        ),
        (
            put("flows", 1, b"xyz"),
            Code::InvalidArgument,
            "value: map `flows` takes 2 bytes, got 3",
        ),
        (
            pb::PutRequest {
                mode: 7,
                ..put("flows", 1, b"xx")
            },
            Code::InvalidArgument,
            "mode: unknown value 7",
        ),
        (
            pb::PutRequest {
                expect_mod_revision: Some(1),
                epoch: epoch ^ 1,
                ..put("flows", 1, b"xx")
            },
            Code::FailedPrecondition,
            "is not this server's",
        ),
    ];
    for (request, code, message) in cases {
        let status = server.client.put(request).await.expect_err("refused");
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(message), "{status:?}");
    }
    let status = server
        .client
        .delete(pb::DeleteRequest {
            map: "flows".into(),
            key: Bytes::from_static(&[1]),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = server
        .client
        .txn(pb::TxnRequest::default())
        .await
        .expect_err("empty");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = server
        .client
        .txn(pb::TxnRequest {
            success: (0..129).map(|i| txn_put("flows", i, b"zz")).collect(),
            ..Default::default()
        })
        .await
        .expect_err("too many");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("at most 128"), "{status:?}");
    assert_eq!(
        server.fake.received(),
        0,
        "no command reached the kernel task"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_kernel_side_s_refusals_reach_the_client_with_codes_and_metadata() {
    let mut server = WriteServer::start(Some(WritePolicy::default())).await;
    // compare-and-swap against the key's real mod revision
    let current = server
        .store
        .snapshot()
        .map("flows")
        .expect("flows")
        .entry(&key(1))
        .expect("key 1")
        .mod_revision;
    let status = server
        .client
        .put(pb::PutRequest {
            expect_mod_revision: Some(current + 5),
            ..put("flows", 1, b"xx")
        })
        .await
        .expect_err("mismatch");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(metadata_u64(&status, CURRENT_MOD_REVISION), Some(current));
    assert!(
        status.message().contains(&format!("is {current}")),
        "{status:?}"
    );
    let status = server
        .client
        .put(pb::PutRequest {
            mode: pb::PutMode::NoExist as i32,
            ..put("flows", 1, b"xx")
        })
        .await
        .expect_err("exists");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(metadata_u64(&status, ERRNO), Some(libc::EEXIST as u64));
    let status = server
        .client
        .put(pb::PutRequest {
            mode: pb::PutMode::Exist as i32,
            ..put("flows", 5, b"xx")
        })
        .await
        .expect_err("absent");
    assert_eq!(status.code(), Code::NotFound);
    // a Txn refused at its op 2: nothing written, the op named
    let before = server.store.revision();
    let status = server
        .client
        .txn(pb::TxnRequest {
            success: vec![
                txn_put("cfg", 1, b"c1"),
                txn_put("cfg", 2, b"c2"),
                pb::TxnOp {
                    op: Some(pb::txn_op::Op::Delete(pb::TxnDelete {
                        map: "cfg".into(),
                        key: key(3),
                    })),
                },
            ],
            ..Default::default()
        })
        .await
        .expect_err("refused op");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(metadata_u64(&status, FAILED_OP), Some(2));
    assert_eq!(server.store.revision(), before);
    // a full map
    for i in 0..4 {
        server.client.put(put("cfg", i, b"ff")).await.expect("fill");
    }
    let status = server
        .client
        .put(put("cfg", 9, b"ff"))
        .await
        .expect_err("full");
    assert_eq!(status.code(), Code::ResourceExhausted);

    // every other kernel-side error, forced
    let forced = [
        (CommandError::Stopped, Code::Unavailable),
        (
            CommandError::Kernel {
                reason: "EBADF".into(),
            },
            Code::Unavailable,
        ),
        (
            CommandError::InvalidArgument {
                reason: "per-CPU".into(),
            },
            Code::InvalidArgument,
        ),
        (
            CommandError::UnknownMap {
                name: "flows".into(),
            },
            Code::NotFound,
        ),
        (
            CommandError::Refused {
                map: "flows".into(),
                op: None,
                what: "put".into(),
                refusal: Refusal::IndexOutOfRange,
                errno: libc::E2BIG,
            },
            Code::InvalidArgument,
        ),
        (
            CommandError::Refused {
                map: "flows".into(),
                op: None,
                what: "put".into(),
                refusal: Refusal::Other,
                errno: libc::EPERM,
            },
            Code::Internal,
        ),
        (
            CommandError::Unsupported {
                command: "Put".into(),
            },
            Code::Unimplemented,
        ),
    ];
    for (error, code) in forced {
        let text = error.to_string();
        server.fake.fail_next(error);
        let status = server
            .client
            .put(put("flows", 1, b"ok"))
            .await
            .expect_err("forced");
        assert_eq!(status.code(), code, "{text}");
        assert_eq!(status.message(), text);
    }
    server.shutdown().await;
}

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

#[tokio::test]
async fn a_server_without_a_command_handle_accepts_no_writes() {
    let mut server = WriteServer::start(None).await;
    let status = server
        .client
        .put(put("flows", 1, b"xx"))
        .await
        .expect_err("read-only");
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(status.message().contains("does not accept writes"));
    let status = apply(&mut server, vec![]).await.expect_err("read-only");
    assert_eq!(status.code(), Code::Unimplemented);
    server.shutdown().await;
}
