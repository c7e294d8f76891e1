//! Several watches on one Watch stream: they share its queue and budget, so
//! these check that a flooded watch does not starve a quiet one and that
//! one watch's cancel leaves the others streaming.

mod common;

use std::collections::HashMap;

use common::{events, key, start_with, watch_map};
use mapsync_core::{Change, EventSource, LogLimits};
use mapsync_grpc::pb::{self, watch_response::Kind};
use mapsync_grpc::service::Limits;

const VALUE_BYTES: usize = 1024;

fn big_log() -> LogLimits {
    LogLimits {
        max_events: 200_000,
        max_bytes: 256 << 20,
    }
}

/// `count` revisions of `per` puts each to keys 1..=per (never the quiet key 0).
fn flood(writer: &mut mapsync_core::Publisher, count: u32, per: u32) -> u64 {
    let mut last = 0;
    for round in 0..count {
        let changes: Vec<_> = (1..=per)
            .map(|k| {
                Change::put(
                    "flows",
                    key(k),
                    vec![round as u8; VALUE_BYTES],
                    EventSource::Trace,
                    2,
                )
            })
            .collect();
        last = writer.apply(changes);
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_watch_does_not_starve_a_quiet_one_on_the_same_stream() {
    let mut running = start_with(big_log(), 0, true, Limits::default()).await;
    let mut session = running.session().await;
    let start = running.store.revision() + 1;
    let flooded = session.created(watch_map(start)).await;
    let quiet = session
        .created(pb::WatchCreateRequest {
            key: key(0),
            ..watch_map(start)
        })
        .await;
    // a backlog of ~40 MB for the flooded watch (about 620 messages of
    // 64 KiB), then one write the quiet watch selects
    let backlog = flood(&mut running.writer, 4000, 10);
    let quiet_revision = running.put(0, b"q");
    let mut flooded_last = start - 1;
    let mut flooded_messages = 0u32;
    let mut quiet_seen_after = None;
    while flooded_last < quiet_revision {
        let message = session.next().await;
        let kind = message.kind.expect("a kind");
        if message.watch_id == quiet {
            let got: Vec<_> = events(kind).iter().map(|e| e.revision).collect();
            assert_eq!(got, vec![quiet_revision], "the quiet watch's one event");
            quiet_seen_after = Some(flooded_messages);
            continue;
        }
        assert_eq!(message.watch_id, flooded);
        for event in events(kind) {
            assert!(
                event.revision == flooded_last || event.revision == flooded_last + 1,
                "no gap: {} after {flooded_last}",
                event.revision
            );
            flooded_last = event.revision;
        }
        flooded_messages += 1;
    }
    if quiet_seen_after.is_none() {
        // the quiet watch's event may come just after the flooded watch's last
        match session.next().await {
            message if message.watch_id == quiet => quiet_seen_after = Some(flooded_messages),
            other => panic!("expected the quiet watch's event, got {other:?}"),
        }
    }
    assert!(backlog < quiet_revision);
    let after = quiet_seen_after.expect("the quiet watch got its event");
    // it waited for what was queued and in the transport ahead of it (tens
    // of messages), not for the flooded watch's whole backlog
    assert!(
        after < flooded_messages / 2,
        "the quiet watch's event came after {after} of the flooded watch's {flooded_messages} messages"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceling_one_watch_mid_stream_leaves_the_others_streaming() {
    let mut running = start_with(big_log(), 0, true, Limits::default()).await;
    let mut session = running.session().await;
    let start = running.store.revision() + 1;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(session.created(watch_map(start)).await);
    }
    let canceled_id = ids[1];
    let first = flood(&mut running.writer, 1000, 10);
    // per watch: the last revision received
    let mut last_seen: HashMap<u64, u64> = ids.iter().map(|id| (*id, start - 1)).collect();
    let seen = |last_seen: &mut HashMap<u64, u64>, id: u64, kind: Kind| {
        for event in events(kind) {
            let last = last_seen.get_mut(&id).expect("one of ours");
            assert!(
                event.revision == *last || event.revision == *last + 1,
                "watch {id}: no gap: revision {} after {}",
                event.revision,
                *last
            );
            *last = event.revision;
        }
    };
    // read a little, then cancel the middle watch while it has a backlog
    for _ in 0..20 {
        let message = session.next().await;
        seen(
            &mut last_seen,
            message.watch_id,
            message.kind.expect("kind"),
        );
    }
    session.cancel(canceled_id).await;
    let last = flood(&mut running.writer, 200, 10);
    assert!(last > first);
    let mut canceled_at = None;
    while ids
        .iter()
        .filter(|id| **id != canceled_id)
        .any(|id| last_seen[id] < last)
    {
        let message = session.next().await;
        let kind = message.kind.expect("kind");
        if let Kind::Canceled(canceled) = &kind {
            assert_eq!(message.watch_id, canceled_id);
            assert_eq!(
                canceled.reason,
                pb::CancelReason::ClientRequested as i32,
                "{canceled:?}"
            );
            assert_eq!(
                canceled.revision, last_seen[&canceled_id],
                "complete up to what it sent"
            );
            canceled_at = Some(canceled.revision);
            continue;
        }
        assert!(
            message.watch_id != canceled_id || canceled_at.is_none(),
            "nothing after the watch's Canceled"
        );
        seen(&mut last_seen, message.watch_id, kind);
    }
    let canceled_at = canceled_at.expect("the cancel was answered");
    assert!(canceled_at < last, "it stopped before the end");
    assert_eq!(running.stats.watches(), 2);
    // the others go on with new writes
    let more = running.put(0, b"z");
    let mut got = Vec::new();
    while got.len() < 2 {
        let message = session.next().await;
        assert_ne!(message.watch_id, canceled_id);
        let revisions: Vec<_> = events(message.kind.expect("kind"))
            .iter()
            .map(|e| e.revision)
            .collect();
        assert_eq!(revisions, vec![more]);
        got.push(message.watch_id);
    }
    running.shutdown().await;
}
