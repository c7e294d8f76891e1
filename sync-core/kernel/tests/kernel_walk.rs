//! The walk dump (`dump::walk`: one `bpf_for_each_map_elem` over a real
//! kernel hash map into an mmapable array) against bpftool's view of the
//! map, the maps it leaves to the batch lookups, and `MapSync::start` with
//! it: quiet (no second dump) and beside writers (dumped again, exactly,
//! and the mirror converges on the kernel's map).

use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mapsync_kernel::dump::walk::{self, WalkError};
use mapsync_kernel::{MapSpec, MapSync, SyncConfig, dump, open, sys};
mod dump_support;
use dump_support::{Entries, fill, read};

use mapsync_test_support::{self as support, PinDir, mirror, wait_until};

/// How long a test waits for the mirror to show what it expects.
const WAIT: Duration = Duration::from_secs(10);

/// `n` entries of `key_size`-byte keys (a counter, zero-padded) and
/// `value_size`-byte values derived from it.
fn entries(n: u32, key_size: usize, value_size: usize) -> Entries {
    (0..n)
        .map(|i| {
            let mut key = vec![0u8; key_size];
            let counter = i.to_ne_bytes();
            let len = key_size.min(4);
            key[..len].copy_from_slice(&counter[..len]);
            let value = (0..value_size)
                .map(|at| (i as usize * 31 + at) as u8)
                .collect();
            (key, value)
        })
        .collect()
}

#[test]
fn a_walk_dump_holds_every_entry_bpftool_reads_once() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("walk-shapes");
    // word-sized and odd sizes, the largest the walk takes, an LRU map
    for (kind, key_size, value_size, n) in [
        ("hash", 8usize, 16usize, 5_000u32),
        ("hash", 4, 13, 3_000),
        ("hash", 12, 16, 3_000),
        ("hash", 64, 1024, 300),
        ("lru_hash", 8, 16, 2_000),
    ] {
        let pin = pins.join(&format!("{kind}-{key_size}-{value_size}"));
        support::create_map(
            &pin,
            kind,
            key_size as u32,
            value_size as u32,
            n * 2,
            "walked",
        );
        let want = entries(n, key_size, value_size);
        fill(&pin, &want);
        let map = open::open(&MapSpec::pin(None, &pin)).expect("open");
        assert!(walk::walkable(&map.info), "{kind} {key_size}/{value_size}");
        let before = sys::monotonic_ns();
        let walked = walk::dump_walking(map.fd.as_fd(), &map.info, pins.path()).expect("walk dump");
        let after = sys::monotonic_ns();
        assert_eq!(walked.len(), n as usize, "each entry once");
        for (_, _, observed_ns) in walked.iter() {
            assert!((before..=after).contains(&observed_ns));
        }
        let got = read(&walked);
        assert_eq!(got, want, "{kind} {key_size}/{value_size}");
        assert_eq!(got, support::dump(&pin));
        // the batch lookups read the same
        let batch = dump::dump(map.fd.as_fd(), &map.info).expect("batch dump");
        assert_eq!(read(&batch.entries), got);
        // the pins of the load are gone
        let left: Vec<_> = std::fs::read_dir(pins.path())
            .expect("pin dir")
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().contains("mapsync_dump"))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

#[test]
fn maps_the_walk_does_not_take_are_dumped_by_batch_lookups() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("walk-others");
    let cases = [
        ("array", 4u32, 8u32, 64u32),
        ("percpu_hash", 4, 8, 64),
        ("hash", 4, 2048, 64),
    ];
    for (kind, key_size, value_size, capacity) in cases {
        let pin = pins.join(kind);
        support::create_map(&pin, kind, key_size, value_size, capacity, "other");
        let map = open::open(&MapSpec::pin(None, &pin)).expect("open");
        let key = 3u32.to_ne_bytes();
        let value = vec![5u8; map.info.value_bytes as usize];
        sys::update(map.fd.as_fd(), &key, &value, 0).expect("write");
        assert!(!walk::walkable(&map.info), "{kind}");
        assert!(matches!(
            walk::dump_walking(map.fd.as_fd(), &map.info, pins.path()),
            Err(WalkError::NotWalkable)
        ));
        assert!(matches!(
            walk::prepare(map.fd.as_fd(), &map.info, pins.path()),
            Err(WalkError::NotWalkable)
        ));
        let (dumped, walked) = dump::dump_at_start(map.fd.as_fd(), &map.info, None).expect("dump");
        assert!(!walked, "{kind}");
        assert_eq!(read(&dumped.entries), support::dump(&pin), "{kind}");
    }
}

fn config(pins: &PinDir, pin: &std::path::Path) -> SyncConfig {
    SyncConfig {
        maps: vec![MapSpec::pin(None, pin)],
        pin_dir: pins.join("capture"),
        reconcile_interval: None,
        ..SyncConfig::default()
    }
}

#[tokio::test]
async fn a_quiet_start_walks_once_and_mirrors_the_map() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("walk-quiet");
    let pin = pins.join("flows");
    support::create_map(&pin, "hash", 8, 16, 60_000, "flows");
    let want = entries(50_000, 8, 16);
    fill(&pin, &want);
    // what a start killed during a walk's load leaves: a pin of the map
    let capture = pins.join("capture");
    std::fs::create_dir_all(&capture).expect("pin dir");
    let left = capture.join("mapsync_dump_1_0_map");
    let map = open::open(&MapSpec::pin(None, &pin)).expect("open");
    sys::obj_pin(map.fd.as_fd(), &left).expect("pin");
    let sync = MapSync::start(config(&pins, &pin)).await.expect("start");
    assert!(!left.exists(), "the leftover pin is removed");
    assert_eq!(sync.start_phases().walks, 1, "dumped by a walk");
    assert_eq!(mirror(sync.store(), "flows"), want);
    assert_eq!(sync.stats().resyncs, 0, "nothing written: no second dump");
    sync.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn maps_with_writers_no_hook_sees_are_not_walked_at_start() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("walk-unseen");
    let want = entries(2_000, 8, 16);
    // an LRU map (elements recycled by inserts of its programs), and a hash
    // map configured with a poll interval (changed where no hook sees)
    let lru = pins.join("lru");
    support::create_map(&lru, "lru_hash", 8, 16, 4_000, "lru");
    let polled = pins.join("polled");
    support::create_map(&polled, "hash", 8, 16, 4_000, "polled");
    for pin in [&lru, &polled] {
        fill(pin, &want);
    }
    let mut config = config(&pins, &lru);
    config
        .maps
        .push(MapSpec::pin(None, &polled).polled(Duration::from_secs(3600)));
    let sync = MapSync::start(config).await.expect("start");
    assert_eq!(sync.start_phases().walks, 0, "both dumped by batch lookups");
    assert_eq!(mirror(sync.store(), "lru"), want);
    assert_eq!(mirror(sync.store(), "polled"), want);
    sync.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_start_beside_writers_dumps_again_and_converges() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("walk-churn");
    let pin = pins.join("busy");
    const KEYS: u32 = 100_000;
    support::create_map(&pin, "hash", 4, 8, KEYS + 1_000, "busy");
    let seed: Entries = (0..KEYS)
        .map(|key| {
            (
                key.to_ne_bytes().to_vec(),
                u64::from(key).to_ne_bytes().to_vec(),
            )
        })
        .collect();
    fill(&pin, &seed);
    // a writer replacing and deleting elements all over the buckets: the
    // kernel reuses their memory at once, which a lock-free walk can trip on
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let map = open::open(&MapSpec::pin(None, &pin)).expect("open");
        std::thread::spawn(move || {
            let (mut round, mut state) = (0u64, 7u64);
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..1_000 {
                    let key = (support::next_random(&mut state) % u64::from(KEYS)) as u32;
                    if key.is_multiple_of(5) {
                        let _ = sys::delete(map.fd.as_fd(), &key.to_ne_bytes());
                    } else {
                        let value = (round << 32 | u64::from(key)).to_ne_bytes();
                        sys::update(map.fd.as_fd(), &key.to_ne_bytes(), &value, 0).expect("update");
                    }
                }
                round += 1;
            }
            round
        })
    };
    std::thread::sleep(Duration::from_millis(30));
    let sync = MapSync::start(config(&pins, &pin))
        .await
        .expect("start beside writers");
    let store = sync.store().clone();
    let resyncs = sync.stats().resyncs;
    assert_eq!(sync.start_phases().walks, 1, "dumped by a walk");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let rounds = writer.join().expect("writer");
    assert!(rounds > 1, "the writer ran during the start");
    assert!(
        resyncs >= 1,
        "written during its walk: dumped again before ready"
    );
    let kernel = support::dump(&pin);
    wait_until("mirror converged", WAIT, || {
        mirror(&store, "busy") == kernel
    })
    .await;
    sync.shutdown().await.expect("shutdown");
}
