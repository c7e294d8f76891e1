//! Tests of the store and its writer.

use super::*;
use crate::event::Op;
use crate::map_info::MapKind;

pub(crate) fn info(name: &str) -> MapInfo {
    MapInfo::new(name, MapKind::Hash, 1, 1, 64).with_id(1)
}

#[test]
fn initial_entries_take_revisions_in_key_order_and_are_not_history() {
    let (store, mut writer) = Store::new(LogLimits::default());
    writer.add_map(
        info("m"),
        vec![
            (Bytes::from_static(b"b"), Bytes::from_static(b"2"), 10),
            (Bytes::from_static(b"a"), Bytes::from_static(b"1"), 10),
        ],
        5,
    );
    let snapshot = store.snapshot();
    assert_eq!(snapshot.revision(), 2);
    let view = snapshot.map("m").expect("map added");
    assert_eq!(view.entry(b"a").expect("a").mod_revision, 1);
    assert_eq!(view.entry(b"b").expect("b").mod_revision, 2);
    assert_eq!(snapshot.log().oldest(), 3);
}

#[test]
fn a_change_older_than_the_mirror_never_moves_a_key_back() {
    let (store, mut writer) = Store::new(LogLimits::default());
    writer.add_map(
        info("m"),
        vec![(Bytes::from_static(b"k"), Bytes::from_static(b"new"), 100)],
        50,
    );
    // observed before the dump read the key: stale
    writer.apply([Change::put(
        "m",
        &b"k"[..],
        &b"old"[..],
        EventSource::Trace,
        99,
    )]);
    // an absent key whose write predates the dump start: already reflected
    writer.apply([Change::put(
        "m",
        &b"x"[..],
        &b"gone"[..],
        EventSource::Trace,
        49,
    )]);
    let snapshot = store.snapshot();
    assert_eq!(
        snapshot.map("m").expect("map").get(b"k").expect("k"),
        &b"new"[..]
    );
    assert!(snapshot.map("m").expect("map").get(b"x").is_none());
    assert_eq!(snapshot.revision(), 1, "skipped changes take no revision");
    // a newer change applies
    writer.apply([Change::put(
        "m",
        &b"k"[..],
        &b"newer"[..],
        EventSource::Trace,
        101,
    )]);
    assert_eq!(
        store.load().map("m").expect("map").get(b"k").expect("k"),
        &b"newer"[..]
    );
    assert_eq!(store.revision(), 2);
}

#[test]
fn deletes_of_absent_keys_and_unchanged_resync_values_are_not_events() {
    let (store, mut writer) = Store::new(LogLimits::default());
    writer.add_map(
        info("m"),
        vec![(Bytes::from_static(b"k"), Bytes::from_static(b"v"), 1)],
        0,
    );
    writer.apply([
        Change::delete("m", &b"nope"[..], EventSource::Trace, 5),
        Change::put("m", &b"k"[..], &b"v"[..], EventSource::Resync, 5),
        Change::put("other", &b"k"[..], &b"v"[..], EventSource::Trace, 5),
    ]);
    assert_eq!(store.revision(), 1);
    writer.apply([Change::put(
        "m",
        &b"k"[..],
        &b"v"[..],
        EventSource::Trace,
        6,
    )]);
    assert_eq!(
        store.revision(),
        2,
        "a real write of the same value is a change"
    );
    writer.apply([Change::delete("m", &b"k"[..], EventSource::Trace, 7)]);
    let snapshot = store.snapshot();
    assert!(snapshot.map("m").expect("map").is_empty());
    let log = snapshot.log().read_from(2, 10).expect("in log");
    assert_eq!(
        log.iter().map(|e| e.op).collect::<Vec<_>>(),
        vec![Op::Put, Op::Delete]
    );
    assert_eq!(log[1].value, None);
}

#[test]
fn old_snapshots_stay_unchanged_after_publishing() {
    let (store, mut writer) = Store::new(LogLimits::default());
    writer.add_map(info("m"), vec![], 0);
    let before = store.snapshot();
    writer.apply([Change::put("m", &b"k"[..], &b"v"[..], EventSource::Emit, 1)]);
    assert!(before.map("m").expect("map").is_empty());
    assert_eq!(store.snapshot().map("m").expect("map").len(), 1);
}

#[test]
fn a_switch_is_one_revision_with_exactly_the_difference_and_the_new_version() {
    let (store, mut writer) = Store::new(LogLimits::default());
    let old = info("s").switchable();
    writer.add_map(
        old.clone(),
        vec![
            (Bytes::from_static(b"a"), Bytes::from_static(b"1"), 1),
            (Bytes::from_static(b"b"), Bytes::from_static(b"2"), 1),
            (Bytes::from_static(b"c"), Bytes::from_static(b"3"), 1),
        ],
        0,
    );
    // only the version and the description: no revision
    let (revision, changed) = writer.apply_switch(old.clone(), store_set(&store), 2, 1);
    assert_eq!((revision, changed), (3, 0));
    assert_eq!(store.load().map("s").expect("s").version(), 1);
    let new = old.clone().with_id(99);
    let (revision, changed) = writer.apply_switch(
        new,
        [
            (Bytes::from_static(b"a"), Bytes::from_static(b"1")),
            (Bytes::from_static(b"b"), Bytes::from_static(b"9")),
            (Bytes::from_static(b"d"), Bytes::from_static(b"4")),
        ],
        5,
        2,
    );
    assert_eq!((revision, changed), (4, 3), "b changed, d new, c gone");
    let snapshot = store.snapshot();
    let view = snapshot.map("s").expect("s");
    assert_eq!((view.version(), view.info().id), (2, 99));
    assert_eq!(view.len(), 3);
    assert_eq!(view.entry(b"a").expect("a").mod_revision, 1, "unchanged");
    let events = snapshot.log().read_from(4, 100).expect("in the log");
    assert!(
        events
            .iter()
            .all(|e| e.revision == 4 && e.source == EventSource::Api)
    );
    let mut ops: Vec<_> = events.iter().map(|e| (e.key.clone(), e.op)).collect();
    ops.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        ops,
        vec![
            (Bytes::from_static(b"b"), Op::Put),
            (Bytes::from_static(b"c"), Op::Delete),
            (Bytes::from_static(b"d"), Op::Put),
        ]
    );
}

#[test]
fn tidy_merges_the_overlay_of_a_quiet_map_only() {
    let (store, mut writer) = Store::new(LogLimits::default());
    writer.add_map(
        info("m"),
        vec![(Bytes::from_static(b"a"), Bytes::from_static(b"1"), 1)],
        0,
    );
    writer.apply([Change::put(
        "m",
        &b"a"[..],
        &b"2"[..],
        EventSource::Trace,
        2,
    )]);
    assert!(!writer.tidy(), "something was published since: not quiet");
    assert!(store.load().map("m").expect("m").entries.has_overlay());
    let before = store.snapshot();
    assert!(writer.tidy(), "quiet since the last call");
    let after = store.snapshot();
    assert!(!after.map("m").expect("m").entries.has_overlay());
    assert_eq!(after.revision(), before.revision());
    let entry = after.map("m").expect("m").entry(b"a").expect("a");
    assert_eq!((entry.value, entry.mod_revision), (&b"2"[..], 2));
    assert!(!writer.tidy(), "nothing left to merge");
}

fn store_set(store: &Store) -> Vec<(Bytes, Bytes)> {
    store
        .load()
        .map("s")
        .expect("s")
        .iter()
        .map(|(k, e)| (Bytes::copy_from_slice(k), e.value_bytes()))
        .collect()
}

#[test]
fn a_write_request_is_one_revision_for_all_its_events() {
    let (store, mut writer) = Store::new(LogLimits::default());
    writer.add_map(info("m"), vec![], 0);
    writer.add_map(info("n"), vec![], 0);
    writer.apply([Change::put(
        "m",
        &b"a"[..],
        &b"1"[..],
        EventSource::Trace,
        1,
    )]);
    let revision = writer.apply_as_one([
        Change::put("m", &b"a"[..], &b"2"[..], EventSource::Api, 2),
        Change::put("n", &b"b"[..], &b"3"[..], EventSource::Api, 2),
        // skipped: nothing to delete
        Change::delete("m", &b"zz"[..], EventSource::Api, 2),
    ]);
    assert_eq!(revision, 2, "one revision after the captured put");
    let snapshot = store.snapshot();
    let events = snapshot.log().read_from(2, 1).expect("in the log");
    assert_eq!(events.len(), 2, "both events, even with max 1");
    assert!(
        events
            .iter()
            .all(|e| e.revision == 2 && e.source == EventSource::Api)
    );
    assert_eq!(events[0].prev_value.as_deref(), Some(&b"1"[..]));
    assert_eq!(
        snapshot
            .map("n")
            .expect("n")
            .entry(b"b")
            .expect("b")
            .mod_revision,
        2
    );
    // nothing took effect: no revision
    assert_eq!(
        writer.apply_as_one([Change::delete("m", &b"zz"[..], EventSource::Api, 3)]),
        2
    );
    // and the next captured change takes the next revision
    assert_eq!(
        writer.apply([Change::put(
            "m",
            &b"c"[..],
            &b"4"[..],
            EventSource::Trace,
            4
        )]),
        3
    );
}
