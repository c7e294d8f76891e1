//! The write RPCs end to end over a real server on a Unix socket, with a
//! fake kernel task behind the command channel: read-your-writes, and one
//! revision per request in one watch message (split and marked only when it
//! alone exceeds the cap). Run as root (the socket's peer is uid 0, who may
//! write).

mod write_support;

use bytes::Bytes;
use mapsync_grpc::pb;
use mapsync_grpc::peer::WritePolicy;
use mapsync_grpc::service::Limits;
use write_support::{WriteServer, batch, default_maps, key, next, put, txn_put, watch_from};

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
