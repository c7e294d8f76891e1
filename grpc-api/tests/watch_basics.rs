//! Watch basics: initial state then live without gap or duplicate, resume,
//! several watches multiplexed on one stream, and shutdown.

mod common;

use common::{events, revisions, start, watch_map};
use mapsync_core::LogLimits;
use mapsync_grpc::pb::{self, watch_response::Kind};
use tonic::Code;

#[tokio::test]
async fn from_zero_then_live_then_resume() {
    let mut running = start(LogLimits::default(), 3, true).await;
    let mut session = running.session().await;
    let id = session.created(watch_map(0)).await;
    assert_eq!(id, 1, "the server numbers watches from 1");
    let initial = events(session.next_for(id).await);
    assert_eq!(initial.len(), 3);
    assert!(
        initial
            .iter()
            .all(|e| e.source == pb::Source::Initial as i32 && e.op == pb::Op::Put as i32)
    );
    match session.next_for(id).await {
        Kind::InitialStateDone(done) => assert_eq!(done.revision, 3),
        other => panic!("expected the end of the initial state, got {other:?}"),
    }
    running.put(10, b"a");
    running.delete(0);
    let mut live = Vec::new();
    while live.len() < 2 {
        live.extend(events(session.next_for(id).await));
    }
    assert_eq!(revisions(&live), vec![4, 5]);
    assert_eq!(live[1].op, pb::Op::Delete as i32);
    assert!(live[1].value.is_empty());

    // resume on another stream from revision 5 of this epoch
    let epoch = running.store.epoch().0;
    let mut other = running.session().await;
    let resumed = other
        .created(pb::WatchCreateRequest {
            start_revision: 5,
            epoch,
            ..Default::default()
        })
        .await;
    assert_eq!(revisions(&events(other.next_for(resumed).await)), vec![5]);

    // graceful shutdown ends open streams with UNAVAILABLE (reconnect and resume)
    running.shutdown().await;
    let status = session
        .responses
        .message()
        .await
        .expect_err("the stream ends on shutdown");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn many_watches_share_one_stream_each_with_its_own_events() {
    let mut running = start(LogLimits::default(), 0, true).await;
    let mut session = running.session().await;
    let mut ids = Vec::new();
    for i in 0..5u32 {
        let id = session
            .created(pb::WatchCreateRequest {
                maps: vec!["flows".into()],
                key: common::key(i),
                start_revision: 1,
                watch_id: 100 + u64::from(i),
                ..Default::default()
            })
            .await;
        ids.push(id);
    }
    assert_eq!(ids, vec![100, 101, 102, 103, 104], "client-chosen ids");
    // a server-assigned id next to client-chosen ones
    let all = session.created(watch_map(1)).await;
    assert!(!ids.contains(&all) && all != 0);
    for i in 0..5u32 {
        running.put(i, b"x");
    }
    let mut per_watch = std::collections::HashMap::<u64, Vec<u64>>::new();
    while per_watch.values().map(Vec::len).sum::<usize>() < 10 {
        let message = session.next().await;
        let got = events(message.kind.expect("kind"));
        per_watch
            .entry(message.watch_id)
            .or_default()
            .extend(revisions(&got));
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(per_watch[id], vec![i as u64 + 1], "watch {id}");
    }
    assert_eq!(per_watch[&all], vec![1, 2, 3, 4, 5]);
    assert_eq!(running.stats.watches(), 6);
    assert_eq!(running.stats.streams(), 1);
    drop(session);
    // the server notices the client is gone and ends its watches
    for _ in 0..100 {
        if running.stats.watches() == 0 && running.stats.streams() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(running.stats.watches(), 0);
    assert_eq!(running.stats.streams(), 0);
    assert_eq!(running.store.subscribers(), 0);
    running.shutdown().await;
}

#[tokio::test]
async fn a_batch_larger_than_the_byte_cap_is_split_without_loss() {
    let limits = mapsync_grpc::service::Limits {
        max_message_bytes: 1024,
        ..Default::default()
    };
    let mut running = common::start_with(LogLimits::default(), 0, true, limits).await;
    let mut session = running.session().await;
    let id = session.created(watch_map(1)).await;
    let changes: Vec<_> = (0..200u32)
        .map(|i| {
            mapsync_core::Change::put(
                "flows",
                common::key(i),
                vec![7u8; 64],
                mapsync_core::EventSource::Trace,
                2,
            )
        })
        .collect();
    running.writer.apply(changes);
    let mut got = Vec::new();
    let mut messages = 0;
    while got.len() < 200 {
        let batch = events(session.next_for(id).await);
        assert!(batch.len() > 1, "many events per message");
        let bytes: usize = batch.iter().map(prost::Message::encoded_len).sum();
        assert!(bytes <= 1024, "{bytes} bytes in one message");
        got.extend(revisions(&batch));
        messages += 1;
    }
    assert!(messages > 1, "split across messages");
    assert_eq!(got, (1..=200).collect::<Vec<u64>>());
    running.shutdown().await;
}
