//! Watch selections: one key, a key prefix, a key range, no_put / no_delete,
//! and previous values.

mod common;

use bytes::Bytes;
use common::{events, key, revisions, start, watch_map};
use mapsync_core::LogLimits;
use mapsync_grpc::pb::{self, watch_response::Kind};

/// Puts keys 0..8 then deletes 2 and 5: revisions 1..=8 are puts, 9 and 10
/// deletes.
fn write_pattern(running: &mut common::Running) {
    for i in 0..8 {
        running.put(i, b"p1");
    }
    running.delete(2);
    running.delete(5);
}

/// The events of watch `id` up to revision `until`: asks for its progress
/// until it reports `until` (progress follows the events it covers).
async fn collect(session: &mut common::Session, id: u64, until: u64) -> Vec<pb::Event> {
    let mut got = Vec::new();
    session.request_progress(id).await;
    loop {
        let message = session.next().await;
        match message.kind.expect("kind") {
            Kind::Events(batch) if message.watch_id == id => got.extend(batch.events),
            Kind::Progress(progress) if message.watch_id == id => {
                if progress.revision >= until {
                    return got;
                }
                session.request_progress(id).await;
            }
            Kind::Events(_) | Kind::Progress(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn selected(create: pb::WatchCreateRequest) -> Vec<pb::Event> {
    let mut running = start(LogLimits::default(), 0, true).await;
    let mut session = running.session().await;
    let id = session.created(create).await;
    // the marker: everything, so we know when the filtered watch has seen all
    let marker = session
        .created(pb::WatchCreateRequest {
            watch_id: 999,
            ..watch_map(1)
        })
        .await;
    assert_eq!(marker, 999);
    write_pattern(&mut running);
    let got = collect(&mut session, id, 10).await;
    running.shutdown().await;
    got
}

#[tokio::test]
async fn one_key() {
    let got = selected(pb::WatchCreateRequest {
        key: key(2),
        ..watch_map(1)
    })
    .await;
    assert_eq!(revisions(&got), vec![3, 9]);
}

#[tokio::test]
async fn key_range_is_half_open() {
    let got = selected(pb::WatchCreateRequest {
        key: key(2),
        range_end: key(5),
        ..watch_map(1)
    })
    .await;
    // keys 2, 3, 4 and the delete of 2; 5 is outside
    assert_eq!(revisions(&got), vec![3, 4, 5, 9]);
}

#[tokio::test]
async fn key_prefix() {
    // keys are big-endian u32: every key here starts with 0, 0, 0
    let got = selected(pb::WatchCreateRequest {
        key_prefix: Bytes::from_static(&[0, 0, 0, 7]),
        ..watch_map(1)
    })
    .await;
    assert_eq!(revisions(&got), vec![8]);
}

#[tokio::test]
async fn no_put_and_no_delete() {
    let deletes = selected(pb::WatchCreateRequest {
        no_put: true,
        ..watch_map(1)
    })
    .await;
    assert_eq!(revisions(&deletes), vec![9, 10]);
    assert!(deletes.iter().all(|e| e.op == pb::Op::Delete as i32));
    let puts = selected(pb::WatchCreateRequest {
        no_delete: true,
        ..watch_map(1)
    })
    .await;
    assert_eq!(revisions(&puts), (1..=8).collect::<Vec<u64>>());
}

#[tokio::test]
async fn prev_value_on_replace_and_delete_only_when_asked() {
    let mut running = start(LogLimits::default(), 1, true).await;
    let mut session = running.session().await;
    let with = session
        .created(pb::WatchCreateRequest {
            prev_value: true,
            ..watch_map(2)
        })
        .await;
    let without = session.created(watch_map(2)).await;
    running.put(0, b"p1"); // replaces "v0"
    running.put(9, b"n1"); // a new key: no previous value
    running.delete(0); // deletes "p1"
    let mut by_watch = std::collections::HashMap::<u64, Vec<pb::Event>>::new();
    while by_watch.values().map(Vec::len).sum::<usize>() < 6 {
        let message = session.next().await;
        by_watch
            .entry(message.watch_id)
            .or_default()
            .extend(events(message.kind.expect("kind")));
    }
    let got: Vec<_> = by_watch[&with]
        .iter()
        .map(|e| (e.revision, e.has_prev, e.prev_value.to_vec()))
        .collect();
    assert_eq!(
        got,
        vec![
            (2, true, b"v0".to_vec()),
            (3, false, vec![]),
            (4, true, b"p1".to_vec())
        ]
    );
    assert!(
        by_watch[&without]
            .iter()
            .all(|e| !e.has_prev && e.prev_value.is_empty())
    );
    running.shutdown().await;
}

#[tokio::test]
async fn the_initial_state_honours_the_selection() {
    let mut running = start(LogLimits::default(), 10, true).await;
    let mut session = running.session().await;
    let id = session
        .created(pb::WatchCreateRequest {
            key: key(3),
            range_end: key(6),
            ..watch_map(0)
        })
        .await;
    let initial = events(session.next_for(id).await);
    assert_eq!(
        initial.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
        vec![key(3), key(4), key(5)]
    );
    match session.next_for(id).await {
        Kind::InitialStateDone(done) => assert_eq!(done.revision, 10),
        other => panic!("expected InitialStateDone, got {other:?}"),
    }
    let deletes_only = session
        .created(pb::WatchCreateRequest {
            no_put: true,
            ..watch_map(0)
        })
        .await;
    match session.next_for(deletes_only).await {
        Kind::InitialStateDone(done) => assert_eq!(done.revision, 10),
        other => panic!("no_put skips the initial puts, got {other:?}"),
    }
    running.shutdown().await;
}
