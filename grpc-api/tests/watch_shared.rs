//! Live events are encoded once and shared between watches: every watch
//! still receives exactly the events its own options and filter ask for,
//! the same messages the generated `Event` holds for each change.

mod common;

use std::collections::HashMap;

use common::{key, start};
use mapsync_core::{Change, EventSource, LogLimits};
use mapsync_grpc::pb::{self, watch_response::Kind};

/// Reads `id`'s events until it has `count`.
async fn collect(
    session: &mut common::Session,
    ids: &[u64],
    count: usize,
) -> HashMap<u64, Vec<pb::Event>> {
    let mut got: HashMap<u64, Vec<pb::Event>> = ids.iter().map(|id| (*id, Vec::new())).collect();
    while got.values().map(Vec::len).sum::<usize>() < count {
        let message = session.next().await;
        match message.kind {
            Some(Kind::Events(batch)) => got
                .get_mut(&message.watch_id)
                .expect("a watch of this test")
                .extend(batch.events),
            other => panic!("expected events, got {other:?}"),
        }
    }
    got
}

#[tokio::test]
async fn watches_with_other_options_or_filters_each_get_their_own_events() {
    let mut running = start(LogLimits::default(), 4, true).await;
    let from = running.store.revision() + 1;
    let create = |watch_id, prev_value, key: Option<u32>| pb::WatchCreateRequest {
        maps: vec!["flows".into()],
        start_revision: from,
        watch_id,
        prev_value,
        key: key.map(common::key).unwrap_or_default(),
        ..Default::default()
    };
    // the same forms on two streams, so they read the log apart
    let mut first = running.session().await;
    let mut second = running.session().await;
    first.created(create(1, false, None)).await;
    first.created(create(2, true, None)).await;
    first.created(create(3, false, Some(2))).await;
    second.created(create(4, false, None)).await;
    second.created(create(5, true, Some(1))).await;

    // revisions of several changes (replaces and a delete, so prev values
    // differ from none) and of one
    let mut last = 0;
    for round in 0..20u32 {
        let changes = (0..4u32).map(|i| match (round + i) % 5 {
            4 => Change::delete("flows", key(i), EventSource::Trace, 3),
            n => Change::put("flows", key(i), vec![n as u8; 2], EventSource::Trace, 2),
        });
        last = running.writer.apply_as_one(changes);
        last = last.max(running.put(1, b"zz"));
    }
    let log = running.store.snapshot();
    let changes = log.log().read_from(from, 10_000).expect("still in the log");
    assert_eq!(changes.last().map(|e| e.revision), Some(last));
    let expect = |prev: bool, key_filter: Option<u32>| -> Vec<pb::Event> {
        changes
            .iter()
            .filter(|e| key_filter.is_none_or(|k| e.key == common::key(k)))
            .map(|e| mapsync_grpc::convert::event_with_prev(e, prev))
            .collect()
    };
    let all = expect(false, None).len();
    let on_first = 2 * all + expect(false, Some(2)).len();
    let on_second = all + expect(true, Some(1)).len();
    let got_first = collect(&mut first, &[1, 2, 3], on_first).await;
    let got_second = collect(&mut second, &[4, 5], on_second).await;

    assert_eq!(got_first[&1], expect(false, None));
    assert_eq!(got_first[&2], expect(true, None), "prev values asked");
    assert!(
        got_first[&2]
            .iter()
            .any(|e| e.has_prev && !e.prev_value.is_empty())
    );
    assert!(
        got_first[&1]
            .iter()
            .all(|e| !e.has_prev && e.prev_value.is_empty())
    );
    assert_eq!(got_first[&3], expect(false, Some(2)));
    assert_eq!(got_second[&4], expect(false, None));
    assert_eq!(got_second[&5], expect(true, Some(1)));
}
