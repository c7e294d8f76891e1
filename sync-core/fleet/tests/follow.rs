//! The follower against a real etcd, a real kernel map and a real MapSync:
//! the initial list, live puts and deletes, undecodable keys skipped and
//! counted, a local bpftool write reverted at the next reconcile, and
//! convergence (deletions included) after losing etcd (a proxy cut at a
//! moment the test picks) across a compaction or not, and after etcd
//! itself was down: every wait is on observable state, no fixed sleep.

mod etcd;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd::proxy::Proxy;
use etcd::{Etcd, require_etcd};
use etcd_client::CompactionOptions;
use mapsync_core::Store;
use mapsync_fleet::{FollowConfig, FollowStats, Follower};
use mapsync_kernel::{MapSpec, MapSync, SyncConfig};
use mapsync_test_support::{self as support, PinDir, mirror, wait_until};

const WAIT: Duration = Duration::from_secs(20);

fn key(n: u32) -> String {
    format!("fleet/flows/{}", support::hex(&n.to_le_bytes()))
}

fn entries(pairs: &[(u32, u64)]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_le_bytes().to_vec(), v.to_le_bytes().to_vec()))
        .collect()
}

/// A fresh etcd, a connected client, and a `flows` hash map (4-byte keys,
/// 8-byte values) pinned in a new pin directory named after the test.
struct Setup {
    etcd: Etcd,
    client: etcd_client::Client,
    pins: PinDir,
    pin: PathBuf,
}

/// [`Setup`] with `pairs` put under the prefix before anything follows.
async fn setup(test: &str, pairs: &[(u32, u64)]) -> Setup {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    let pins = PinDir::new(test);
    let pin = pins.join("flows");
    support::create_map(&pin, "hash", 4, 8, 64, "flows");
    for (k, v) in pairs {
        client
            .put(key(*k), v.to_le_bytes().to_vec(), None)
            .await
            .expect("put");
    }
    Setup {
        etcd,
        client,
        pins,
        pin,
    }
}

async fn start(pins: &PinDir, pin: &Path) -> MapSync {
    MapSync::start(SyncConfig {
        maps: vec![MapSpec::pin(None, pin)],
        pin_dir: pins.join("capture"),
        reconcile_interval: None,
        ..SyncConfig::default()
    })
    .await
    .expect("start MapSync")
}

fn follow(
    etcd: &Etcd,
    sync: &MapSync,
    config: impl FnOnce(&mut FollowConfig),
) -> (tokio::task::JoinHandle<()>, std::sync::Arc<FollowStats>) {
    let mut cfg = FollowConfig::new("flows", vec![etcd.endpoint()], "fleet/flows");
    config(&mut cfg);
    let follower = Follower::new(cfg, sync.store().clone(), sync.commands());
    let stats = follower.stats();
    (tokio::spawn(follower.run()), stats)
}

async fn converged(store: &Store, pin: &Path, want: &BTreeMap<Vec<u8>, Vec<u8>>) {
    converged_within(WAIT, store, pin, want).await
}

async fn converged_within(
    wait: Duration,
    store: &Store,
    pin: &Path,
    want: &BTreeMap<Vec<u8>, Vec<u8>>,
) {
    wait_until("the map equals etcd's prefix", wait, || {
        &mirror(store, "flows") == want
    })
    .await;
    assert_eq!(&support::dump(pin), want, "the kernel map itself");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_list_then_watch_skips_bad_keys_and_reverts_local_writes() {
    if !support::require_kernel() || !require_etcd() {
        return;
    }
    let Setup {
        etcd,
        mut client,
        pins,
        pin,
    } = setup("fleet-follow", &[(1, 1), (2, 2)]).await;
    // a key the map holds and etcd does not: the initial list deletes it
    support::update(&pin, &9u32.to_le_bytes(), &9u64.to_le_bytes()).expect("seed");
    client
        .put("fleet/flows/nothex", vec![0u8; 8], None)
        .await
        .expect("put bad");
    client
        .put(key(3), vec![0u8; 3], None)
        .await
        .expect("put short value");
    let sync = start(&pins, &pin).await;
    let store = sync.store().clone();
    let (task, stats) = follow(&etcd, &sync, |c| c.reconcile_every = Duration::from_secs(1));

    converged(&store, &pin, &entries(&[(1, 1), (2, 2)])).await;
    assert_eq!(
        stats.undecodable(),
        2,
        "bad hex and a short value, counted once each"
    );

    // live: one etcd txn of a put and a delete
    client
        .txn(etcd_client::Txn::new().and_then(vec![
            etcd_client::TxnOp::put(key(4), 4u64.to_le_bytes().to_vec(), None),
            etcd_client::TxnOp::delete(key(1), None),
        ]))
        .await
        .expect("txn");
    client
        .put(key(2), 22u64.to_le_bytes().to_vec(), None)
        .await
        .expect("put");
    converged(&store, &pin, &entries(&[(2, 22), (4, 4)])).await;
    let revision = client
        .get("x", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();
    wait_until("the applied revision is etcd's", WAIT, || {
        stats.applied_revision() == revision
    })
    .await;

    // someone else writes the followed map: reverted at the next reconcile
    support::update(&pin, &2u32.to_le_bytes(), &7u64.to_le_bytes()).expect("local write");
    support::update(&pin, &5u32.to_le_bytes(), &5u64.to_le_bytes()).expect("local write");
    wait_until("the local writes are reverted", WAIT, || {
        stats.reverted() >= 2
    })
    .await;
    converged(&store, &pin, &entries(&[(2, 22), (4, 4)])).await;
    assert_eq!(
        stats.undecodable(),
        2,
        "reconciles do not recount known bad keys"
    );
    task.abort();
}

/// A follower of `pin`'s map through `proxy`, with a short backoff.
fn follow_through(
    proxy: &Proxy,
    sync: &MapSync,
) -> (tokio::task::JoinHandle<()>, std::sync::Arc<FollowStats>) {
    let mut cfg = FollowConfig::new("flows", vec![proxy.endpoint()], "fleet/flows");
    cfg.backoff_min = Duration::from_millis(50);
    cfg.backoff_max = Duration::from_millis(500);
    let follower = Follower::new(cfg, sync.store().clone(), sync.commands());
    let stats = follower.stats();
    (tokio::spawn(follower.run()), stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_losing_etcd_across_a_compaction_the_follower_relists_and_misses_no_deletion() {
    if !support::require_kernel() || !require_etcd() {
        return;
    }
    let Setup {
        etcd,
        mut client,
        pins,
        pin,
    } = setup("fleet-compact", &[(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]).await;
    let proxy = Proxy::start(etcd.endpoint()).await;
    let sync = start(&pins, &pin).await;
    let store = sync.store().clone();
    let (task, stats) = follow_through(&proxy, &sync);
    converged(
        &store,
        &pin,
        &entries(&[(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]),
    )
    .await;
    assert_eq!(stats.relists(), 1);

    // the node loses etcd; meanwhile keys are deleted and the history
    // that held the deletions is compacted away
    proxy.cut();
    wait_until("the follower noticed", WAIT, || stats.errors() >= 1).await;
    client.delete(key(2), None).await.expect("delete");
    client.delete(key(4), None).await.expect("delete");
    let put = client
        .put(key(6), 6u64.to_le_bytes().to_vec(), None)
        .await
        .expect("put");
    let revision = put.header().expect("header").revision();
    client
        .compact(revision, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    proxy.restore();

    converged(&store, &pin, &entries(&[(1, 1), (3, 3), (5, 5), (6, 6)])).await;
    wait_until("the applied revision is etcd's", WAIT, || {
        stats.applied_revision() == revision
    })
    .await;
    assert_eq!(
        stats.relists(),
        2,
        "the compacted watch was answered by a relist"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_losing_etcd_the_follower_resumes_its_watch_and_misses_no_deletion() {
    if !support::require_kernel() || !require_etcd() {
        return;
    }
    let Setup {
        etcd,
        mut client,
        pins,
        pin,
    } = setup("fleet-resume", &[(1, 1), (2, 2), (3, 3)]).await;
    let proxy = Proxy::start(etcd.endpoint()).await;
    let sync = start(&pins, &pin).await;
    let store = sync.store().clone();
    let (task, stats) = follow_through(&proxy, &sync);
    converged(&store, &pin, &entries(&[(1, 1), (2, 2), (3, 3)])).await;

    proxy.cut();
    wait_until("the follower noticed", WAIT, || stats.errors() >= 1).await;
    let deleted = client.delete(key(2), None).await.expect("delete");
    let revision = deleted.header().expect("header").revision();
    proxy.restore();
    converged(&store, &pin, &entries(&[(1, 1), (3, 3)])).await;
    wait_until("the applied revision is etcd's", WAIT, || {
        stats.applied_revision() == revision
    })
    .await;
    assert_eq!(
        stats.relists(),
        1,
        "resumed from the applied revision, no relist"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_etcd_itself_was_down_the_follower_converges() {
    if !support::require_kernel() || !require_etcd() {
        return;
    }
    let Setup {
        mut etcd,
        pins,
        pin,
        ..
    } = setup("fleet-etcd-down", &[(1, 1)]).await;
    let sync = start(&pins, &pin).await;
    let store = sync.store().clone();
    let (task, stats) = follow(&etcd, &sync, |c| {
        c.backoff_min = Duration::from_millis(50);
        c.backoff_max = Duration::from_millis(500);
    });
    converged(&store, &pin, &entries(&[(1, 1)])).await;
    etcd.stop();
    wait_until("the follower noticed", WAIT, || stats.errors() >= 1).await;
    etcd.resume().await;
    let mut client = etcd.client().await;
    client.delete(key(1), None).await.expect("delete");
    client
        .put(key(2), 2u64.to_le_bytes().to_vec(), None)
        .await
        .expect("put");
    converged(&store, &pin, &entries(&[(2, 2)])).await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_wins_map_keeps_local_writes_and_still_applies_etcd() {
    if !support::require_kernel() || !require_etcd() {
        return;
    }
    let Setup {
        etcd,
        mut client,
        pins,
        pin,
    } = setup("fleet-local-wins", &[(1, 1)]).await;
    let sync = start(&pins, &pin).await;
    let store = sync.store().clone();
    let (task, stats) = follow(&etcd, &sync, |c| {
        c.reconcile_every = Duration::from_millis(300);
        c.local_wins = true;
    });
    converged(&store, &pin, &entries(&[(1, 1)])).await;
    support::update(&pin, &1u32.to_le_bytes(), &7u64.to_le_bytes()).expect("local write");
    support::update(&pin, &5u32.to_le_bytes(), &5u64.to_le_bytes()).expect("local write");
    client
        .put(key(2), 2u64.to_le_bytes().to_vec(), None)
        .await
        .expect("put");
    converged(&store, &pin, &entries(&[(1, 7), (2, 2), (5, 5)])).await;
    // several reconcile periods: nothing is reverted
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stats.reverted(), 0);
    assert_eq!(
        support::dump(&pin),
        entries(&[(1, 7), (2, 2), (5, 5)]),
        "the local writes stayed"
    );
    task.abort();
}
