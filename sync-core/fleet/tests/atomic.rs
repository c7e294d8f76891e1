//! One etcd transaction is one atomic change on the node: a 1,000-key etcd
//! txn into a plain map is exactly one mapsync revision (past the 128-op
//! limit of a gRPC Txn), and 10,000-key etcd txns into a switchable map are
//! one atomic switch each, checked by a BPF program that walks the whole
//! set while they land (0 runs see a mix, and each switch's version is the
//! txn's tag: one Apply per etcd txn).

mod etcd;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcd::{Etcd, require_etcd};
use etcd_client::{Txn, TxnOp};
use mapsync_fleet::{FollowConfig, Follower};
use mapsync_kernel::switch::{self, SwitchShape};
use mapsync_kernel::switchtest::{CheckedSet, SwitchChecker};
use mapsync_kernel::{MapSpec, MapSync, SyncConfig};
use mapsync_test_support::{self as support, PinDir, mirror, wait_until};

const WAIT: Duration = Duration::from_secs(60);
/// Keys the checker walks (every one must be present, all of one tag).
const KEYS: u32 = mapsync_ebpf::SWITCHTEST_KEYS;
/// etcd's default `--max-txn-ops` is 128; these tests write bigger txns.
const ETCD_FLAGS: &[&str] = &["--max-txn-ops", "20000"];

async fn start(pins: &PinDir, map: MapSpec) -> MapSync {
    MapSync::start(SyncConfig {
        maps: vec![map],
        pin_dir: pins.join("capture"),
        reconcile_interval: None,
        ..SyncConfig::default()
    })
    .await
    .expect("start MapSync")
}

fn follow(etcd: &Etcd, sync: &MapSync, map: &str, prefix: &str) -> tokio::task::JoinHandle<()> {
    let mut config = FollowConfig::new(map, vec![etcd.endpoint()], prefix);
    config.reconcile_every = Duration::from_secs(3600);
    tokio::spawn(Follower::new(config, sync.store().clone(), sync.commands()).run())
}

fn switch_value(tag: u64, payload: u64) -> Vec<u8> {
    [tag.to_ne_bytes(), payload.to_ne_bytes()].concat()
}

/// One etcd txn putting keys 0..KEYS, every value tagged `tag`.
fn tagged_txn(prefix: &str, tag: u64) -> Txn {
    Txn::new().and_then(
        (0..KEYS)
            .map(|k| {
                TxnOp::put(
                    format!("{prefix}/{}", support::hex(&k.to_ne_bytes())),
                    switch_value(tag, u64::from(k)),
                    None,
                )
            })
            .collect::<Vec<_>>(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_key_etcd_txn_is_one_revision_of_a_plain_map() {
    if !support::require_kernel() || !require_etcd() {
        return;
    }
    let etcd = Etcd::start_with(ETCD_FLAGS).await;
    let mut client = etcd.client().await;
    let pins = PinDir::new("fleet-batch");
    let pin = pins.join("flows");
    support::create_map(&pin, "hash", 4, 8, 2048, "flows");
    let sync = start(&pins, MapSpec::pin(None, &pin)).await;
    let store = sync.store().clone();
    let task = follow(&etcd, &sync, "flows", "fleet/flows");
    // the follower's first (empty) list is written before the txn lands
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = store.revision();
    let ops: Vec<TxnOp> = (0..1000u32)
        .map(|k| {
            TxnOp::put(
                format!("fleet/flows/{}", support::hex(&k.to_le_bytes())),
                u64::from(k).to_le_bytes().to_vec(),
                None,
            )
        })
        .collect();
    client
        .txn(Txn::new().and_then(ops))
        .await
        .expect("1,000-op txn");
    wait_until("the map holds the txn", WAIT, || {
        mirror(&store, "flows").len() == 1000
    })
    .await;
    assert_eq!(
        store.revision(),
        before + 1,
        "the 1,000 puts of one etcd txn are one mapsync revision"
    );
    let dump = support::dump(&pin);
    assert_eq!(dump.len(), 1000, "the kernel map itself");
    assert_eq!(dump, mirror(&store, "flows"));
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_etcd_txns_reach_a_switchable_map_as_one_atomic_switch_each() {
    if !support::require_kernel() || !require_etcd() {
        return;
    }
    let etcd = Etcd::start_with(ETCD_FLAGS).await;
    let mut client = etcd.client().await;
    let pins = PinDir::new("fleet-switch");
    let outer = pins.join(mapsync_ebpf::SWITCHTEST_SET_MAP);
    let shape = SwitchShape {
        kind: mapsync_core::MapKind::Hash,
        key_size: 4,
        value_size: 16,
        max_entries: KEYS,
    };
    switch::create(&outer, shape).expect("create the switchable map");
    let checker = SwitchChecker::load(pins.path()).expect("load the checker");
    // the first full set, tagged with the version its switch makes live (2)
    client
        .txn(tagged_txn("fleet/set", 2))
        .await
        .expect("first txn");
    let sync = start(&pins, MapSpec::switch(Some("set"), &outer)).await;
    let store = sync.store().clone();
    let task = follow(&etcd, &sync, "set", "fleet/set");
    let version = || store.load().map("set").map_or(0, |view| view.version());
    wait_until("the first list is live", WAIT, || version() == 2).await;

    let stop = Arc::new(AtomicBool::new(false));
    let running = {
        let stop = stop.clone();
        let mut checker = checker;
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                checker.run(CheckedSet::Switchable, 1).expect("checker run");
            }
            checker
        })
    };
    let last = 7u64;
    for tag in 3..=last {
        client
            .txn(tagged_txn("fleet/set", tag))
            .await
            .expect("10,000-op txn");
        // each txn is live before the next: every switch is checked
        wait_until("the txn is live", WAIT, || version() >= tag).await;
    }
    stop.store(true, Ordering::Relaxed);
    let counts = running
        .join()
        .expect("checker thread")
        .counts()
        .expect("counts");
    eprintln!("checker over {} switches: {counts:?}", last - 2);
    assert_eq!(version(), last, "one switch per etcd txn, no more");
    assert!(counts.runs >= 5, "the checker ran throughout: {counts:?}");
    assert_eq!(counts.mixed, 0, "a run saw two txns' entries: {counts:?}");
    assert_eq!(
        counts.version_mismatch, 0,
        "a run read a version that is not its entries' txn: {counts:?}"
    );
    assert_eq!(counts.missing, 0, "a run missed keys: {counts:?}");
    let set = mirror(&store, "set");
    assert_eq!(set.len(), KEYS as usize);
    assert!(
        set.values().all(|v| v[..8] == last.to_ne_bytes()),
        "the mirror holds the last txn"
    );
    task.abort();
}
