//! The *emit* source on a real kernel: a BPF program writing through
//! `mapsync_update()` / `mapsync_delete()`, triggered with BPF_PROG_TEST_RUN.

use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use mapsync_core::{EventSource, Op, SubscribeFilter, WatchBatch};
use mapsync_kernel::DemoWriter;
use mapsync_kernel::{MapSpec, MapSync, SyncConfig};
use mapsync_test_support::{self as support, PinDir};

fn counts(value: &[u8]) -> (u64, u64) {
    (
        u64::from_ne_bytes(value[..8].try_into().expect("8 bytes")),
        u64::from_ne_bytes(value[8..16].try_into().expect("8 bytes")),
    )
}

#[tokio::test]
async fn program_writes_through_mapsync_update_reach_mirror_and_subscription() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("emit");
    let capture_dir = pins.join("capture");
    let mut demo = DemoWriter::load(&capture_dir).expect("load demo program");
    demo.count(Ipv4Addr::new(192, 0, 2, 1), 100, 1)
        .expect("seed before start");

    let config = SyncConfig {
        maps: vec![MapSpec::id(Some("pkts"), demo.map_id())],
        pin_dir: capture_dir.clone(),
        ..SyncConfig::default()
    };
    let sync = MapSync::start(config).await.expect("start");
    let store = sync.store().clone();
    let a = Ipv4Addr::new(192, 0, 2, 1).octets();
    let b = Ipv4Addr::new(198, 51, 100, 7).octets();
    assert_eq!(
        counts(
            store
                .load()
                .map("pkts")
                .expect("map")
                .get(&a)
                .expect("seeded")
        ),
        (1, 100)
    );

    let mut sub = store
        .subscribe(store.revision() + 1, SubscribeFilter::default())
        .expect("subscribe");
    demo.count(Ipv4Addr::from(b), 60, 3).expect("three packets");
    demo.count(Ipv4Addr::from(a), 100, 1).expect("one more");
    demo.forget(Ipv4Addr::from(b)).expect("forget");

    let mut events = Vec::new();
    while events.len() < 5 {
        match tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("in time")
        {
            Some(Ok(WatchBatch::Events(batch))) => events.extend(batch),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(events.iter().all(|e| e.source == EventSource::Emit));
    let ops: Vec<_> = events.iter().map(|e| (e.op, e.key.to_vec())).collect();
    assert_eq!(
        ops,
        vec![
            (Op::Put, b.to_vec()),
            (Op::Put, b.to_vec()),
            (Op::Put, b.to_vec()),
            (Op::Put, a.to_vec()),
            (Op::Delete, b.to_vec()),
        ]
    );
    assert_eq!(counts(events[2].value.as_ref().expect("value")), (3, 180));
    let snapshot = store.snapshot();
    let map = snapshot.map("pkts").expect("map");
    assert_eq!(counts(map.get(&a).expect("a")), (2, 200));
    assert!(map.get(&b).is_none());
    sync.shutdown().await.expect("clean shutdown");
}
