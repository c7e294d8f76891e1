//! The ingest path's batch buffers on a real kernel (issue 13): the ingest
//! task copies a batch's keys and values into shared arena chunks and reuses
//! its record and change buffers from batch to batch. What users rely on:
//!
//! - every event carries its own write's key, value and previous value,
//!   across many batches (more records than one batch holds, several arena
//!   chunks, buffers reused) and after later writes overwrote the same keys;
//! - records that straddle the end of a small ring (a record size that does
//!   not divide the ring) decode intact, many times round;
//! - the mirror then equals the kernel map, with no loss and no resync.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mapsync_core::event::Op;
use mapsync_core::{EventSource, SubscribeFilter, Subscription, WatchBatch};
use mapsync_kernel::{MapSpec, MapSync, SyncConfig, open, sys};
use mapsync_test_support::{self as support, PinDir, mirror};

/// Generous: a 2-core machine shared with compilers.
const DEADLINE: Duration = Duration::from_secs(60);
/// 20-byte values: a 32-byte header, an 8-byte key and the value make a
/// 60-byte record, 72 bytes in the ring with its 8-byte length header, and
/// 72 does not divide a power-of-two ring: records straddle its end.
const VALUE: usize = 20;

fn value(round: u64, key: u64) -> [u8; VALUE] {
    let mut v = [0u8; VALUE];
    v[..8].copy_from_slice(&key.to_ne_bytes());
    v[8..16].copy_from_slice(&round.to_ne_bytes());
    v[16..].copy_from_slice(&((key as u32) ^ (round as u32).rotate_left(16)).to_ne_bytes());
    v
}

async fn start(pins: &PinDir, map: &Path, ring_bytes: u32) -> MapSync {
    MapSync::start(SyncConfig {
        maps: vec![MapSpec::pin(Some("flows"), map)],
        pin_dir: pins.join("capture"),
        ring_bytes,
        reconcile_interval: None,
        ..SyncConfig::default()
    })
    .await
    .expect("start the sync")
}

/// The next `n` events of the subscription, or panics after the deadline.
async fn next_events(sub: &mut Subscription, n: usize) -> Vec<mapsync_core::SharedEvent> {
    let deadline = Instant::now() + DEADLINE;
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let batch = tokio::time::timeout(left, sub.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {n} events before the deadline", events.len()))
            .expect("the subscription goes on")
            .expect("the subscription keeps up");
        if let WatchBatch::Events(batch) = batch {
            events.extend(batch);
        }
    }
    events
}

/// Checks an event is the put of `key` in `round` over `previous`'s value.
fn assert_put(event: &mapsync_core::ChangeEvent, round: u64, key: u64, previous: Option<u64>) {
    assert_eq!(event.op, Op::Put, "round {round} key {key}");
    assert_eq!(event.source, EventSource::Trace);
    assert_eq!(&event.key[..], &key.to_ne_bytes(), "round {round}");
    assert_eq!(
        event.value.as_deref(),
        Some(&value(round, key)[..]),
        "round {round} key {key}"
    );
    assert_eq!(
        event.prev_value.as_deref(),
        previous.map(|p| value(p, key)).as_ref().map(|v| &v[..]),
        "round {round} key {key}: previous value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_keeps_its_own_bytes_across_many_batches() {
    if !support::require_kernel() {
        return;
    }
    const KEYS: u64 = 12_000;
    const PER_CALL: u64 = 3_000;
    let pins = PinDir::new("ingest-batches");
    let pin = pins.join("flows");
    support::create_map(&pin, "hash", 8, VALUE as u32, KEYS as u32, "flows");
    let map = open::open(&MapSpec::pin(None, &pin)).expect("open the map");
    let sync = start(&pins, &pin, 4 << 20).await;
    let store = sync.store().clone();
    let mut sub = store
        .subscribe(store.revision() + 1, SubscribeFilter::maps(["flows"]))
        .expect("subscribe");
    // three rounds over the same keys: 36,000 records, several batches of
    // at most 8,192 and many 16 KiB arena chunks; the events of the first
    // rounds are still held (change log, subscription) while later ones
    // are copied
    for round in 1..=3u64 {
        for call in 0..KEYS / PER_CALL {
            let ids = call * PER_CALL..(call + 1) * PER_CALL;
            let keys: Vec<u8> = ids.clone().flat_map(u64::to_ne_bytes).collect();
            let values: Vec<u8> = ids.flat_map(|k| value(round, k)).collect();
            let (done, result) = sys::update_batch(map.fd.as_fd(), &keys, &values, PER_CALL as u32);
            result.expect("update batch");
            assert_eq!(u64::from(done), PER_CALL);
        }
    }
    let events = next_events(&mut sub, (3 * KEYS) as usize).await;
    for (i, event) in events.iter().enumerate() {
        let round = i as u64 / KEYS + 1;
        let key = i as u64 % KEYS;
        assert_put(event, round, key, (round > 1).then(|| round - 1));
    }
    // the first round's events, read again from the log after the others
    let mut again = store
        .subscribe(events[0].revision, SubscribeFilter::maps(["flows"]))
        .expect("resume from the first event");
    let first = next_events(&mut again, 10).await;
    for (key, event) in first.iter().enumerate() {
        assert_put(event, 1, key as u64, None);
    }
    let expected: BTreeMap<Vec<u8>, Vec<u8>> = (0..KEYS)
        .map(|k| (k.to_ne_bytes().to_vec(), value(3, k).to_vec()))
        .collect();
    assert_eq!(mirror(&store, "flows"), expected);
    assert_eq!(support::dump(&pin), expected);
    let stats = sync.stats();
    assert_eq!(
        (stats.drops, stats.seq_gaps, stats.resyncs),
        (0, 0, 0),
        "{stats:?}"
    );
    sync.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_straddling_the_end_of_the_ring_decode_intact() {
    if !support::require_kernel() {
        return;
    }
    // a 16 KiB ring holds ~227 records of 72 bytes; 2,000 writes go round
    // it ~9 times, and 72 does not divide 16,384: most turns end inside a
    // record. Writes go in bursts of 50 (well under the ring), each waited
    // for, so nothing is dropped
    const KEYS: u64 = 500;
    const WRITES: u64 = 2_000;
    const BURST: u64 = 50;
    let pins = PinDir::new("ingest-wrap");
    let pin = pins.join("flows");
    support::create_map(&pin, "hash", 8, VALUE as u32, KEYS as u32, "flows");
    let map = open::open(&MapSpec::pin(None, &pin)).expect("open the map");
    let sync = start(&pins, &pin, 16 << 10).await;
    let store = sync.store().clone();
    let mut sub = store
        .subscribe(store.revision() + 1, SubscribeFilter::maps(["flows"]))
        .expect("subscribe");
    let mut last_round: BTreeMap<u64, u64> = BTreeMap::new();
    for burst in 0..WRITES / BURST {
        let mut expected = Vec::new();
        for i in burst * BURST..(burst + 1) * BURST {
            let key = i * 7 % KEYS;
            let round = i;
            sys::update(map.fd.as_fd(), &key.to_ne_bytes(), &value(round, key), 0).expect("update");
            expected.push((key, round, last_round.insert(key, round)));
        }
        let events = next_events(&mut sub, BURST as usize).await;
        for (event, (key, round, previous)) in events.iter().zip(expected) {
            assert_put(event, round, key, previous);
        }
    }
    let expected: BTreeMap<Vec<u8>, Vec<u8>> = last_round
        .iter()
        .map(|(k, round)| (k.to_ne_bytes().to_vec(), value(*round, *k).to_vec()))
        .collect();
    assert_eq!(mirror(&store, "flows"), expected);
    let stats = sync.stats();
    assert_eq!(
        (
            stats.drops,
            stats.seq_gaps,
            stats.resyncs,
            stats.ring_resets
        ),
        (0, 0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.records, WRITES, "{stats:?}");
    sync.shutdown().await.expect("clean shutdown");
}
