//! The command channel into the kernel task, on a real kernel: a requested
//! resync makes the mirror see a write no capture source reported.

use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use mapsync_core::{CommandError, EventSource, Store, SubscribeFilter, WatchBatch};
use mapsync_kernel::{DemoWriter, MapSpec, MapSync, SyncConfig};
use mapsync_test_support::{self as support, PinDir};

fn packets(store: &Store, source: Ipv4Addr) -> u64 {
    let snapshot = store.snapshot();
    let value = snapshot
        .map("pkts")
        .expect("map")
        .get(&source.octets())
        .map(bytes::Bytes::copy_from_slice)
        .expect("entry");
    u64::from_ne_bytes(value[..8].try_into().expect("8 bytes"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_no_record_reports_is_seen_after_a_requested_resync_and_not_before() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("commands");
    let capture = pins.join("capture");
    let mut demo = DemoWriter::load(&capture).expect("load demo");
    let source = Ipv4Addr::new(192, 0, 2, 77);
    demo.count(source, 100, 1).expect("create the entry");
    // neither polled nor reconciled: only a resync re-reads the map
    let sync = MapSync::start(SyncConfig {
        maps: vec![MapSpec::id(Some("pkts"), demo.map_id())],
        pin_dir: capture,
        reconcile_interval: None,
        ..SyncConfig::default()
    })
    .await
    .expect("start");
    let store = sync.store().clone();
    assert_eq!(packets(&store, source), 1);
    let mut sub = store
        .subscribe(store.revision() + 1, SubscribeFilter::maps(["pkts"]))
        .expect("subscribe");

    // in-place increments: no change record, no syscall the trace sees
    demo.bump(source, 41).expect("in-place increments");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        packets(&store, source),
        1,
        "nothing reported the in-place write"
    );

    let revision = sync.resync(Some("pkts")).await.expect("resync");
    assert!(store.revision() >= revision, "published when answered");
    assert_eq!(packets(&store, source), 42, "the resync read the kernel");
    let resyncs = sync.stats().resyncs;
    assert!(resyncs >= 1, "counted as a resync: {:?}", sync.stats());
    match tokio::time::timeout(Duration::from_secs(2), sub.next())
        .await
        .expect("an event")
    {
        Some(Ok(WatchBatch::Events(events))) => {
            assert_eq!(events[0].source, EventSource::Resync);
            assert_eq!(events[0].revision, revision);
        }
        other => panic!("unexpected {other:?}"),
    }

    // every map, and an unknown one
    demo.bump(source, 8).expect("more in-place increments");
    let all = sync.resync(None).await.expect("resync every map");
    assert!(all > revision);
    assert_eq!(packets(&store, source), 50);
    assert_eq!(
        sync.resync(Some("nope")).await,
        Err(CommandError::UnknownMap {
            name: "nope".into()
        })
    );

    // once the task has ended, the handle answers Stopped
    let handle = sync.commands();
    sync.shutdown().await.expect("clean shutdown");
    assert_eq!(handle.resync(None).await, Err(CommandError::Stopped));
}
