//! The sync core against a real kernel: maps written by bpftool (a writer
//! that is not ours), by raw batch syscalls, and during the initial dump.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::time::Duration;

use futures::StreamExt;
use mapsync_core::{EventSource, Op, SubscribeFilter, WatchBatch};
use mapsync_kernel::{MapSpec, MapSync, SyncConfig};
use mapsync_kernel::{open, sys};
use mapsync_test_support::{self as support, PinDir, mirror, wait_until};

/// How long a test waits for the mirror to show what it expects.
const WAIT: Duration = Duration::from_secs(5);

fn config(pins: &PinDir, maps: Vec<MapSpec>) -> SyncConfig {
    SyncConfig {
        maps,
        pin_dir: pins.join("capture"),
        ..SyncConfig::default()
    }
}

#[tokio::test]
async fn bpftool_writes_to_hash_and_array_reach_mirror_and_subscription_in_order() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("bpftool");
    let hash = pins.join("flows");
    let array = pins.join("config");
    support::create_map(&hash, "hash", 4, 8, 64, "flows");
    support::create_map(&array, "array", 4, 4, 8, "config");
    support::update(&hash, &[1, 0, 0, 0], &[10, 0, 0, 0, 0, 0, 0, 0]).expect("seed");

    let sync = MapSync::start(config(
        &pins,
        vec![MapSpec::pin(None, &hash), MapSpec::pin(None, &array)],
    ))
    .await
    .expect("start");
    let store = sync.store().clone();
    assert!(store.is_ready());
    assert_eq!(
        mirror(&store, "flows"),
        support::dump(&hash),
        "initial dump"
    );
    assert_eq!(
        mirror(&store, "config"),
        support::dump(&array),
        "arrays list every index"
    );

    let mut sub = store
        .subscribe(store.revision() + 1, SubscribeFilter::default())
        .expect("subscribe");
    support::update(&hash, &[2, 0, 0, 0], &[20, 0, 0, 0, 0, 0, 0, 0]).expect("put 2");
    support::update(&hash, &[1, 0, 0, 0], &[11, 0, 0, 0, 0, 0, 0, 0]).expect("replace 1");
    support::delete(&hash, &[2, 0, 0, 0]).expect("delete 2");
    support::update(&array, &[3, 0, 0, 0], &[7, 7, 7, 7]).expect("array put");
    // failed writes produce nothing
    assert!(support::delete(&hash, &[9, 0, 0, 0]).is_err());
    assert!(support::update(&array, &[99, 0, 0, 0], &[1, 1, 1, 1]).is_err());

    let mut seen = Vec::new();
    while seen.len() < 4 {
        let item = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("events in time");
        match item.expect("stream open").expect("no error") {
            WatchBatch::Events(events) => seen.extend(events),
            other => panic!("unexpected {other:?}"),
        }
    }
    let summary: Vec<_> = seen
        .iter()
        .map(|e| (e.map.to_string(), e.op, e.key[0]))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("flows".into(), Op::Put, 2),
            ("flows".into(), Op::Put, 1),
            ("flows".into(), Op::Delete, 2),
            ("config".into(), Op::Put, 3),
        ]
    );
    assert!(
        seen.windows(2).all(|w| w[1].revision == w[0].revision + 1),
        "consecutive revisions"
    );
    assert!(seen.iter().all(|e| e.source == EventSource::Trace));
    assert_eq!(
        seen[1].value.as_deref(),
        Some(&[11, 0, 0, 0, 0, 0, 0, 0][..])
    );
    assert_eq!(mirror(&store, "flows"), support::dump(&hash));
    assert_eq!(mirror(&store, "config"), support::dump(&array));
    // nothing more arrives: the failed writes made no event
    let extra = tokio::time::timeout(Duration::from_millis(300), sub.next()).await;
    assert!(extra.is_err(), "unexpected extra event: {extra:?}");
    sync.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn batch_updates_and_deletes_through_the_syscall_are_captured() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("batch");
    let hash = pins.join("batched");
    support::create_map(&hash, "hash", 4, 4, 1024, "batched");
    let sync = MapSync::start(config(&pins, vec![MapSpec::pin(None, &hash)]))
        .await
        .expect("start");
    let store = sync.store().clone();
    let map = open::open(&MapSpec::pin(None, &hash)).expect("open");

    let keys: Vec<u8> = (0..300u32).flat_map(u32::to_ne_bytes).collect();
    let values: Vec<u8> = (0..300u32).flat_map(|i| (i * 3).to_ne_bytes()).collect();
    let (done, result) = sys::update_batch(map.fd.as_fd(), &keys, &values, 300);
    result.expect("update batch");
    assert_eq!(done, 300);
    let (done, result) = sys::delete_batch(map.fd.as_fd(), &keys[..100 * 4], 100);
    result.expect("delete batch");
    assert_eq!(done, 100);
    wait_until("batch applied", WAIT, || store.revision() >= 400).await;
    assert_eq!(store.revision(), 400, "one revision per processed element");
    assert_eq!(mirror(&store, "batched"), support::dump(&hash));
    assert_eq!(mirror(&store, "batched").len(), 200);
    sync.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_watch_from_zero_started_while_a_writer_runs_converges_without_gap_or_duplicate() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("race");
    let hash = pins.join("busy");
    support::create_map(&hash, "hash", 4, 8, 4096, "busy");
    let writer_map = open::open(&MapSpec::pin(None, &hash)).expect("open");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut round = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for key in 0..2000u32 {
                    let value = (round * 10_000 + u64::from(key)).to_ne_bytes();
                    if (key + round as u32).is_multiple_of(7) {
                        let _ = sys::delete(writer_map.fd.as_fd(), &key.to_ne_bytes());
                    } else {
                        sys::update(writer_map.fd.as_fd(), &key.to_ne_bytes(), &value, 0)
                            .expect("update");
                    }
                }
                round += 1;
            }
            round
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let sync = MapSync::start(config(&pins, vec![MapSpec::pin(None, &hash)]))
        .await
        .expect("start under load");
    let store = sync.store().clone();
    let mut sub = store
        .subscribe(0, SubscribeFilter::maps(["busy"]))
        .expect("subscribe");
    let (target_tx, mut target) = tokio::sync::watch::channel(u64::MAX);
    let collector = tokio::spawn(async move {
        let mut state = BTreeMap::new();
        let mut last_revision = 0;
        let mut initial_done = false;
        while last_revision < *target.borrow_and_update() {
            let item = tokio::select! {
                item = sub.next() => item.expect("stream open"),
                _ = target.changed() => continue,
            };
            match item.expect("no compaction at this rate") {
                WatchBatch::InitialStateDone { revision } => {
                    initial_done = true;
                    last_revision = revision;
                }
                WatchBatch::Events(events) => {
                    for event in events.iter() {
                        if initial_done {
                            assert_eq!(event.revision, last_revision + 1, "no gap, no duplicate");
                            last_revision = event.revision;
                        }
                        match event.op {
                            Op::Put => state.insert(
                                event.key.to_vec(),
                                event.value.clone().expect("put value").to_vec(),
                            ),
                            Op::Delete => state.remove(&event.key.to_vec()),
                        };
                    }
                }
            }
        }
        state
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = writer.join().expect("writer");
    assert!(rounds > 1, "the writer ran during the sync");
    let kernel = support::dump(&hash);
    wait_until("mirror converged", WAIT, || {
        mirror(&store, "busy") == kernel
    })
    .await;
    target_tx.send_replace(store.revision());
    let watched = tokio::time::timeout(Duration::from_secs(10), collector)
        .await
        .expect("watcher caught up")
        .expect("watcher task");
    assert_eq!(
        watched, kernel,
        "the state a watcher builds equals the kernel's"
    );
    sync.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn maps_of_maps_mirror_inner_map_ids() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("outer");
    let inner_a = pins.join("inner_a");
    let inner_b = pins.join("inner_b");
    let outer = pins.join("outer");
    support::create_map(&inner_a, "hash", 4, 4, 8, "inner_a");
    support::create_map(&inner_b, "hash", 4, 4, 8, "inner_b");
    let pin = |p: &std::path::Path| p.to_str().expect("utf-8").to_owned();
    support::bpftool(&[
        "map",
        "create",
        &pin(&outer),
        "type",
        "hash_of_maps",
        "key",
        "4",
        "value",
        "4",
        "entries",
        "8",
        "name",
        "outer",
        "inner_map",
        "pinned",
        &pin(&inner_a),
    ])
    .expect("create outer");
    let sync = MapSync::start(config(&pins, vec![MapSpec::pin(None, &outer)]))
        .await
        .expect("start");
    let store = sync.store().clone();
    for (key, inner) in [("01", &inner_a), ("02", &inner_b)] {
        support::bpftool(&[
            "map",
            "update",
            "pinned",
            &pin(&outer),
            "key",
            "hex",
            key,
            "00",
            "00",
            "00",
            "value",
            "pinned",
            &pin(inner),
        ])
        .expect("set slot");
    }
    let id_of = |p: &std::path::Path| {
        open::open(&MapSpec::pin(None, p))
            .expect("open inner")
            .info
            .id
    };
    let expected: BTreeMap<Vec<u8>, Vec<u8>> = [
        (vec![1, 0, 0, 0], id_of(&inner_a).to_ne_bytes().to_vec()),
        (vec![2, 0, 0, 0], id_of(&inner_b).to_ne_bytes().to_vec()),
    ]
    .into();
    wait_until("inner ids mirrored", WAIT, || {
        mirror(&store, "outer") == expected
    })
    .await;
    assert_eq!(
        support::dump(&outer),
        expected,
        "the mirror shows what bpftool shows"
    );
    let snapshot = store.snapshot();
    let entry = snapshot
        .map("outer")
        .expect("map")
        .entry(&[1, 0, 0, 0])
        .expect("slot 1");
    let event = snapshot
        .log()
        .read_from(entry.mod_revision, 1)
        .expect("in log");
    assert_eq!(
        event[0].source,
        EventSource::Trace,
        "seen by the trace, value read back as an id"
    );
    sync.shutdown().await.expect("clean shutdown");
}
