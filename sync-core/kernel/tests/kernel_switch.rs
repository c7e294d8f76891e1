//! Switchable maps and the atomic apply, on a real kernel: a BPF checker
//! program run with `BPF_PROG_TEST_RUN` never sees a mix of two sets while
//! applies switch them (and does see one on a plain map written with a batch
//! update), concurrent applies with one expected version, the mirror's one
//! revision per switch with capture of writes into the active inner map, and
//! array sets. Adoption, restart and the XDP blocklist: `kernel_switch_restart.rs`.

mod switch_common;

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use mapsync_core::control::{ApplyMode, CommandError, Refusal};
use mapsync_core::{EventSource, MapKind, Op, SubscribeFilter, WatchBatch};
use mapsync_kernel::switch::{self, SwitchShape};
use mapsync_kernel::switchtest::{CheckedSet, SwitchChecker};
use mapsync_kernel::{MapSpec, sys};
use mapsync_test_support::{self as support, PinDir};
use switch_common::*;

/// Runs the checker over `set` on its own thread until `stop`; `mixed`,
/// if given, follows the count of runs that saw a mix.
fn spawn_checker(
    mut checker: SwitchChecker,
    set: CheckedSet,
    stop: Arc<AtomicBool>,
    mixed: Option<Arc<AtomicU64>>,
) -> std::thread::JoinHandle<SwitchChecker> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            checker.run(set, 1).expect("checker run");
            if let Some(mixed) = &mixed {
                mixed.store(checker.counts().expect("counts").mixed, Ordering::Relaxed);
            }
        }
        checker
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_program_never_sees_a_mix_while_applies_switch_but_does_on_a_batch_updated_map() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("switch-atomic");
    let outer = pins.join(mapsync_ebpf::SWITCHTEST_SET_MAP);
    switch::create(&outer, shape()).expect("create the switchable map");
    let checker = SwitchChecker::load(pins.path()).expect("load the checker");
    let plain = checker.plain_map().expect("plain map");
    let sync = start(&pins, vec![MapSpec::switch(Some("set"), &outer)]).await;
    let handle = sync.commands();
    // the first full set, before the checker runs (an empty set misses keys)
    let first = handle
        .apply(apply("set", ApplyMode::Replace, tagged(2, KEYS), Some(1)))
        .await
        .expect("first apply");
    assert_eq!(first.applied.expect("applied").version, 2);

    let stop = Arc::new(AtomicBool::new(false));
    let running = spawn_checker(checker, CheckedSet::Switchable, stop.clone(), None);
    let started = Instant::now();
    let mut switch_ns = Vec::new();
    for version in 2..102u64 {
        // each apply's entries all carry the version it makes live
        let outcome = handle
            .apply(apply(
                "set",
                ApplyMode::Replace,
                tagged(version + 1, KEYS),
                Some(version),
            ))
            .await
            .expect("apply");
        let applied = outcome.applied.expect("applied");
        assert_eq!(
            (applied.version, applied.entries, applied.changed),
            (version + 1, u64::from(KEYS), u64::from(KEYS))
        );
        switch_ns.push(applied.switch_ns);
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let checker = running.join().expect("checker thread");
    let counts = checker.counts().expect("counts");
    switch_ns.sort_unstable();
    eprintln!(
        "100 applies of {KEYS} entries in {took:?}; switch p50 {} us; checker {counts:?}",
        switch_ns[50] / 1000
    );
    assert!(counts.runs >= 20, "the checker ran throughout: {counts:?}");
    assert_eq!(counts.mixed, 0, "a run saw two sets: {counts:?}");
    assert_eq!(
        counts.version_mismatch, 0,
        "a run read another set's version: {counts:?}"
    );
    assert_eq!(counts.missing, 0, "a run missed keys: {counts:?}");
    // the same check from a tc program: the version read works there too
    let mut checker = checker;
    let before = checker.counts().expect("counts");
    checker
        .run(CheckedSet::SwitchableFromTc, 3)
        .expect("tc checker run");
    let after = checker.counts().expect("counts");
    assert_eq!(after.runs, before.runs + 3, "the tc check ran");
    assert_eq!(
        (after.mixed, after.version_mismatch, after.missing),
        (0, 0, 0),
        "tc: {after:?}"
    );
    let (set, _, version) = kernel_set(&outer);
    assert_eq!(version, Some(102));
    assert!(set.values().all(|value| tag_of(value) == 102));
    assert_eq!(
        mirror(sync.store(), "set"),
        set,
        "the mirror is the active set"
    );
    assert_eq!(sync.store().load().map("set").expect("set").version(), 102);
    sync.shutdown().await.expect("shutdown");

    // the control: the same checker over a plain map that a batch update
    // rewrites in place sees a mix (the test can fail)
    let write = |tag: u64| {
        let keys: Vec<u8> = (0..KEYS).flat_map(u32::to_ne_bytes).collect();
        let values: Vec<u8> = (0..KEYS)
            .flat_map(|key| value(tag, u64::from(key)))
            .collect();
        let (count, result) = sys::update_batch(plain.as_fd(), &keys, &values, KEYS);
        result.expect("batch update");
        assert_eq!(count, KEYS);
    };
    write(0);
    let stop = Arc::new(AtomicBool::new(false));
    let mixed = Arc::new(AtomicU64::new(0));
    let running = spawn_checker(
        checker,
        CheckedSet::Plain,
        stop.clone(),
        Some(mixed.clone()),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tag = 1;
    while Instant::now() < deadline && mixed.load(Ordering::Relaxed) == 0 {
        write(tag);
        tag += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let counts = running
        .join()
        .expect("checker thread")
        .counts()
        .expect("counts");
    eprintln!("plain map: {} batch updates; checker {counts:?}", tag - 1);
    assert!(
        counts.mixed > 0,
        "the checker never saw a half-applied batch update: {counts:?}"
    );
}

fn small_shape(max_entries: u32) -> SwitchShape {
    SwitchShape {
        kind: MapKind::Hash,
        key_size: 4,
        value_size: 16,
        max_entries,
    }
}

fn key(k: u32) -> Bytes {
    Bytes::copy_from_slice(&k.to_ne_bytes())
}

fn put(k: u32, tag: u64) -> (Bytes, Option<Bytes>) {
    (key(k), Some(Bytes::from(value(tag, u64::from(k)))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_applies_with_one_expected_version_exactly_one_wins() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("switch-race");
    let outer = pins.join("set");
    switch::create(&outer, small_shape(64)).expect("create");
    let sync = start(&pins, vec![MapSpec::switch(None, &outer)]).await;
    let live = sync.store().load().map("set").expect("set").version();
    assert_eq!(live, switch::FIRST_VERSION);
    let racers: Vec<_> = (0..8u64)
        .map(|racer| {
            let handle = sync.commands();
            tokio::spawn(async move {
                let entries = (0..16).map(|k| put(k, 100 + racer)).collect();
                (
                    racer,
                    handle
                        .apply(apply("set", ApplyMode::Replace, entries, Some(live)))
                        .await,
                )
            })
        })
        .collect();
    let mut winners = Vec::new();
    for racer in racers {
        let (racer, result) = racer.await.expect("racer");
        match result {
            Ok(outcome) => winners.push((racer, outcome)),
            Err(CommandError::VersionMismatch {
                map,
                expected,
                live: now,
            }) => {
                assert_eq!((map.as_str(), expected, now), ("set", live, live + 1));
            }
            Err(other) => panic!("racer {racer}: unexpected {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one apply wins: {winners:?}");
    let (winner, outcome) = &winners[0];
    assert_eq!(outcome.applied.expect("applied").version, live + 1);
    let (set, _, version) = kernel_set(&outer);
    assert_eq!(version, Some(live + 1));
    assert_eq!(set.len(), 16);
    assert!(
        set.values().all(|v| tag_of(v) == 100 + winner),
        "the winner's set is live"
    );
    assert_eq!(mirror(sync.store(), "set"), set);
    sync.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_is_one_revision_of_exactly_the_difference_and_writes_into_the_active_map_are_captured()
 {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("switch-mirror");
    let outer = pins.join("set");
    switch::create(&outer, small_shape(8)).expect("create");
    let plain = pins.join("plain");
    support::create_map(&plain, "hash", 4, 8, 4, "plain");
    let sync = start(
        &pins,
        vec![
            MapSpec::switch(Some("set"), &outer),
            MapSpec::pin(Some("plain"), &plain),
        ],
    )
    .await;
    let store = sync.store().clone();
    let handle = sync.commands();
    let info = store.load().map("set").expect("set").info().clone();
    assert!(info.switchable && store.load().map("set").expect("set").is_empty());

    let first = handle
        .apply(apply(
            "set",
            ApplyMode::Replace,
            (0..4).map(|k| put(k, 1)).collect(),
            Some(1),
        ))
        .await
        .expect("first apply");
    let mut sub = store
        .subscribe(store.revision() + 1, SubscribeFilter::maps(["set"]))
        .expect("subscribe");
    // keys 0 and 1 unchanged, 2 changed, 3 gone, 4 new
    let entries = vec![put(0, 1), put(1, 1), put(2, 7), put(4, 7)];
    let outcome = handle
        .apply(apply("set", ApplyMode::Replace, entries, Some(2)))
        .await
        .expect("second apply");
    let applied = outcome.applied.expect("applied");
    assert_eq!(
        (applied.version, applied.entries, applied.changed),
        (3, 4, 3)
    );
    assert_eq!(outcome.revision, first.revision + 1, "one revision");
    let view = store.load().map("set").expect("set").clone();
    assert_eq!(view.version(), 3);
    let (set, active_id, version) = kernel_set(&outer);
    assert_eq!(
        (view.info().id, version),
        (active_id, Some(3)),
        "the active inner map's id"
    );
    assert_eq!(mirror(&store, "set"), set);
    match tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a batch")
    {
        Some(Ok(WatchBatch::Events(events))) => {
            let mut seen: Vec<_> = events
                .iter()
                .map(|e| {
                    assert_eq!((e.revision, e.source), (outcome.revision, EventSource::Api));
                    (u32::from_ne_bytes(e.key[..4].try_into().expect("4")), e.op)
                })
                .collect();
            seen.sort_by_key(|(k, _)| *k);
            assert_eq!(seen, vec![(2, Op::Put), (3, Op::Delete), (4, Op::Put)]);
        }
        other => panic!("unexpected {other:?}"),
    }

    // someone writes into the active inner map by id: captured as a trace event
    let id = active_id.to_string();
    let mut args = vec![
        "map", "update", "id", &id, "key", "hex", "05", "00", "00", "00", "value", "hex",
    ];
    let byte = "2a".to_string();
    let bytes = vec![byte; 16];
    args.extend(bytes.iter().map(String::as_str));
    support::bpftool(&args).expect("bpftool update");
    match tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a batch")
    {
        Some(Ok(WatchBatch::Events(events))) => {
            assert_eq!(events.len(), 1);
            assert_eq!(
                (events[0].source, &events[0].key[..]),
                (EventSource::Trace, &[5u8, 0, 0, 0][..])
            );
        }
        other => panic!("unexpected {other:?}"),
    }

    // merge: the live set (with bpftool's key) plus puts, minus deletes
    let outcome = handle
        .apply(apply(
            "set",
            ApplyMode::Merge,
            vec![put(6, 9), (key(0), None), (key(4), None)],
            Some(3),
        ))
        .await
        .expect("merge");
    assert_eq!(outcome.applied.expect("applied").changed, 3);
    let (set, _, version) = kernel_set(&outer);
    assert_eq!(version, Some(4));
    let keys: Vec<u32> = set
        .keys()
        .map(|k| u32::from_ne_bytes(k[..4].try_into().expect("4")))
        .collect();
    assert_eq!(keys.len(), 4);
    for k in [1, 2, 5, 6] {
        assert!(keys.contains(&k), "key {k} in {keys:?}");
    }
    assert_eq!(mirror(&store, "set"), set);

    // refusals change nothing
    let before = (store.revision(), kernel_set(&outer));
    let refused = [
        (
            apply("set", ApplyMode::Replace, vec![put(1, 1)], Some(3)),
            "stale version",
        ),
        (
            apply("set", ApplyMode::Replace, vec![(key(1), None)], None),
            "delete in replace mode",
        ),
        (
            apply(
                "set",
                ApplyMode::Replace,
                vec![(Bytes::from_static(b"ab"), Some(Bytes::from(value(1, 1))))],
                None,
            ),
            "key size",
        ),
        (
            apply(
                "set",
                ApplyMode::Replace,
                vec![(key(1), Some(Bytes::from_static(b"short")))],
                None,
            ),
            "value size",
        ),
        (
            apply("set", ApplyMode::Replace, vec![put(1, 1), put(1, 2)], None),
            "duplicate key",
        ),
        (
            apply(
                "set",
                ApplyMode::Replace,
                (0..9).map(|k| put(k, 1)).collect(),
                None,
            ),
            "more than max entries",
        ),
        (
            apply("plain", ApplyMode::Replace, vec![], None),
            "not switchable",
        ),
        (
            apply("nope", ApplyMode::Replace, vec![], None),
            "unknown map",
        ),
    ];
    for (request, why) in refused {
        let error = handle.apply(request).await.expect_err(why);
        match (why, &error) {
            (
                "stale version",
                CommandError::VersionMismatch {
                    live: 4,
                    expected: 3,
                    ..
                },
            )
            | ("not switchable", CommandError::NotSwitchable { .. })
            | ("unknown map", CommandError::UnknownMap { .. })
            | (
                "more than max entries",
                CommandError::Refused {
                    refusal: Refusal::MapFull,
                    errno: libc::E2BIG,
                    ..
                },
            ) => {}
            (_, CommandError::InvalidArgument { reason }) if !why.contains("version") => {
                eprintln!("{why}: {reason}");
            }
            _ => panic!("{why}: unexpected {error:?}"),
        }
    }
    assert_eq!(
        (store.revision(), kernel_set(&outer)),
        before,
        "nothing changed"
    );
    sync.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_array_set_holds_every_index_and_refuses_indices_past_its_end() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("switch-array");
    let outer = pins.join("slots");
    let shape = SwitchShape {
        kind: MapKind::Array,
        key_size: 4,
        value_size: 8,
        max_entries: 4,
    };
    switch::create(&outer, shape).expect("create an array set");
    // created again with the same shape: kept; with another: refused
    switch::create(&outer, shape).expect("same shape: kept");
    let error = switch::create(
        &outer,
        SwitchShape {
            max_entries: 5,
            ..shape
        },
    )
    .expect_err("other shape");
    assert!(error.to_string().contains("array:4:8:4"), "{error}");
    let sync = start(&pins, vec![MapSpec::switch(None, &outer)]).await;
    let store = sync.store().clone();
    assert_eq!(
        store.load().map("slots").expect("slots").len(),
        4,
        "an array holds every index"
    );
    let handle = sync.commands();
    let nine = Bytes::copy_from_slice(&9u64.to_ne_bytes());
    handle
        .apply(apply(
            "slots",
            ApplyMode::Replace,
            vec![(key(1), Some(nine.clone()))],
            Some(1),
        ))
        .await
        .expect("replace");
    let zero = vec![0u8; 8];
    let expected: BTreeMap<Vec<u8>, Vec<u8>> = (0..4u32)
        .map(|k| {
            (
                k.to_ne_bytes().to_vec(),
                if k == 1 { nine.to_vec() } else { zero.clone() },
            )
        })
        .collect();
    assert_eq!(
        mirror(&store, "slots"),
        expected,
        "indices not given are zero"
    );
    let error = handle
        .apply(apply(
            "slots",
            ApplyMode::Replace,
            vec![(key(4), Some(nine.clone()))],
            None,
        ))
        .await
        .expect_err("index 4 of 4");
    assert!(
        matches!(
            error,
            CommandError::Refused {
                refusal: Refusal::IndexOutOfRange,
                ..
            }
        ),
        "{error:?}"
    );
    let error = handle
        .apply(apply("slots", ApplyMode::Merge, vec![(key(1), None)], None))
        .await
        .expect_err("array entries cannot be deleted");
    assert!(
        matches!(error, CommandError::InvalidArgument { .. }),
        "{error:?}"
    );
    assert_eq!(mirror(&store, "slots"), expected, "refusals change nothing");
    assert_eq!(store.load().map("slots").expect("slots").version(), 2);
    sync.shutdown().await.expect("shutdown");
}
