//! What no hook sees, on a real kernel: LRU evictions (reconcile), values
//! changed in place through lookup pointers (poll), per-CPU values.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::time::Duration;

use futures::StreamExt;
use mapsync_core::{EventSource, Store, SubscribeFilter, WatchBatch};
use mapsync_kernel::{DemoWriter, open, sys};
use mapsync_kernel::{MapSpec, MapSync, SyncConfig};
use mapsync_test_support::{self as support, PinDir, mirror, wait_until};

/// How long a test waits for the mirror to show what it expects.
const WAIT: Duration = Duration::from_secs(6);

#[tokio::test]
async fn lru_evictions_are_repaired_by_the_reconcile() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("lru");
    let lru = pins.join("recent");
    support::create_map(&lru, "lru_hash", 4, 4, 64, "recent");
    let sync = MapSync::start(SyncConfig {
        maps: vec![MapSpec::pin(None, &lru)],
        pin_dir: pins.join("capture"),
        reconcile_interval: Some(Duration::from_millis(200)),
        ..SyncConfig::default()
    })
    .await
    .expect("start");
    let store = sync.store().clone();
    let map = open::open(&MapSpec::pin(None, &lru)).expect("open");
    for key in 0..500u32 {
        sys::update(map.fd.as_fd(), &key.to_ne_bytes(), &key.to_ne_bytes(), 0).expect("insert");
    }
    let kernel = support::dump(&lru);
    assert!(kernel.len() < 500, "the kernel evicted entries");
    // the repair is counted just after it is published
    wait_until(
        "mirror equals the LRU map, the repair counted",
        WAIT,
        || mirror(&store, "recent") == kernel && sync.stats().reconcile_repairs > 0,
    )
    .await;
    let stats = sync.stats();
    assert!(
        stats.reconcile_repairs > 0,
        "evictions were found by the reconcile: {stats:?}"
    );
    sync.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_healthy_run_needs_no_reconcile_repair() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("healthy");
    let hash = pins.join("steady");
    support::create_map(&hash, "hash", 4, 4, 1024, "steady");
    let sync = MapSync::start(SyncConfig {
        maps: vec![MapSpec::pin(None, &hash)],
        pin_dir: pins.join("capture"),
        reconcile_interval: Some(Duration::from_millis(100)),
        ..SyncConfig::default()
    })
    .await
    .expect("start");
    let map = open::open(&MapSpec::pin(None, &hash)).expect("open");
    for round in 0..5u32 {
        for key in 0..200u32 {
            sys::update(
                map.fd.as_fd(),
                &key.to_ne_bytes(),
                &(key + round).to_ne_bytes(),
                0,
            )
            .expect("update");
        }
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = sync.stats();
    assert!(stats.reconciles >= 3, "reconciles ran: {stats:?}");
    assert_eq!(
        stats.reconcile_repairs, 0,
        "every write was captured: {stats:?}"
    );
    assert_eq!(mirror(sync.store(), "steady"), support::dump(&hash));
    sync.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn values_changed_in_place_are_followed_by_the_poll_source_and_per_cpu_slots_stay_apart() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("poll");
    let capture = pins.join("capture");
    let mut demo = DemoWriter::load(&capture).expect("load demo");
    let source = Ipv4Addr::new(192, 0, 2, 9);
    demo.count(source, 100, 1).expect("create the entry");
    let sync = MapSync::start(SyncConfig {
        maps: vec![
            MapSpec::id(Some("pkts"), demo.map_id()).polled(Duration::from_millis(100)),
            MapSpec::id(Some("hits"), demo.cpu_hits_id()).polled(Duration::from_millis(100)),
        ],
        pin_dir: capture,
        reconcile_interval: None,
        ..SyncConfig::default()
    })
    .await
    .expect("start");
    let store = sync.store().clone();
    let mut sub = store
        .subscribe(store.revision() + 1, SubscribeFilter::maps(["pkts"]))
        .expect("subscribe");

    demo.bump(source, 41).expect("in-place increments");
    let packets = |store: &Store| {
        let snapshot = store.snapshot();
        let value = snapshot
            .map("pkts")
            .expect("map")
            .get(&source.octets())
            .map(bytes::Bytes::copy_from_slice)
            .expect("entry");
        u64::from_ne_bytes(value[..8].try_into().expect("8 bytes"))
    };
    wait_until("the poll saw the in-place count", WAIT, || {
        packets(&store) == 42
    })
    .await;
    match tokio::time::timeout(Duration::from_secs(2), sub.next())
        .await
        .expect("an event")
    {
        Some(Ok(WatchBatch::Events(events))) => assert_eq!(events[0].source, EventSource::Poll),
        other => panic!("unexpected {other:?}"),
    }

    let cpus = open::possible_cpus().expect("cpus");
    assert!(cpus >= 2, "this test needs two CPUs");
    for _ in 0..3 {
        demo.cpu_hit(0).expect("hit on cpu 0");
    }
    for _ in 0..5 {
        demo.cpu_hit(1).expect("hit on cpu 1");
    }
    let slots = |store: &Store| -> Vec<u64> {
        let snapshot = store.snapshot();
        let value = snapshot
            .map("hits")
            .expect("map")
            .get(&0u32.to_ne_bytes())
            .map(bytes::Bytes::copy_from_slice)
            .expect("slot 0");
        value
            .chunks(8)
            .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
            .collect()
    };
    wait_until("per-CPU values", WAIT, || {
        slots(&store).get(..2) == Some(&[3, 5][..])
    })
    .await;
    assert_eq!(slots(&store).len(), cpus, "one slot per possible CPU");
    assert_eq!(slots(&store).iter().sum::<u64>(), 8);
    sync.shutdown().await.expect("clean shutdown");
}

/// A poll interval shorter than the ingest tick (100 ms) is kept: a value
/// changing all the time is read back about every 25 ms, not once a tick.
#[tokio::test]
async fn a_poll_interval_shorter_than_the_tick_is_kept() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("poll-fast");
    let capture = pins.join("capture");
    let mut demo = DemoWriter::load(&capture).expect("load demo");
    let source = Ipv4Addr::new(192, 0, 2, 10);
    demo.count(source, 100, 1).expect("create the entry");
    let sync = MapSync::start(SyncConfig {
        maps: vec![MapSpec::id(Some("pkts"), demo.map_id()).polled(Duration::from_millis(25))],
        pin_dir: capture,
        reconcile_interval: None,
        ..SyncConfig::default()
    })
    .await
    .expect("start");
    let store = sync.store().clone();
    let mut sub = store
        .subscribe(store.revision() + 1, SubscribeFilter::maps(["pkts"]))
        .expect("subscribe");
    // the value changes every ~2 ms for one second
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        demo.bump(source, 1).expect("in-place increment");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut polled = 0;
    while let Ok(Some(batch)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        if let Ok(WatchBatch::Events(events)) = batch {
            polled += events
                .iter()
                .filter(|e| e.source == EventSource::Poll)
                .count();
        }
    }
    // 40 polls at 25 ms; once per 100 ms tick would give about 10
    assert!(
        polled >= 20,
        "only {polled} polled changes in 1 s at a 25 ms poll interval"
    );
}
