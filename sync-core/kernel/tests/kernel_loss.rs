//! Lost records on a real kernel: a ring too small for the write rate.

use std::os::fd::AsFd;
use std::time::Duration;

use mapsync_kernel::{MapSpec, MapSync, SyncConfig};
use mapsync_kernel::{open, sys};
use mapsync_test_support::{self as support, PinDir, mirror};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_ring_is_detected_and_repaired_by_resync() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("loss");
    let hash = pins.join("flood");
    support::create_map(&hash, "hash", 4, 8, 8192, "flood");
    let sync = MapSync::start(SyncConfig {
        maps: vec![MapSpec::pin(None, &hash)],
        pin_dir: pins.join("capture"),
        ring_bytes: 4096,
        ..SyncConfig::default()
    })
    .await
    .expect("start");
    let store = sync.store().clone();
    let map = open::open(&MapSpec::pin(None, &hash)).expect("open");
    // batch writes: thousands of records per syscall, far more than 4 KiB holds
    let keys: Vec<u8> = (0..5000u32).flat_map(u32::to_ne_bytes).collect();
    for round in 0..4u64 {
        let values: Vec<u8> = (0..5000u64)
            .flat_map(|i| (round * 100_000 + i).to_ne_bytes())
            .collect();
        let (done, result) = sys::update_batch(map.fd.as_fd(), &keys, &values, 5000);
        result.expect("update batch");
        assert_eq!(done, 5000);
    }
    let (_, result) = sys::delete_batch(map.fd.as_fd(), &keys[..1000 * 4], 1000);
    result.expect("delete batch");

    let kernel = support::dump(&hash);
    assert_eq!(kernel.len(), 4000);
    let mut converged = false;
    for _ in 0..300 {
        if mirror(&store, "flood") == kernel {
            converged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = sync.stats();
    assert!(stats.drops > 0, "the kernel counted drops: {stats:?}");
    assert!(stats.resyncs > 0, "a resync ran: {stats:?}");
    assert!(
        converged,
        "mirror equals the kernel after the resync: {stats:?}"
    );
    sync.shutdown().await.expect("clean shutdown");
}
