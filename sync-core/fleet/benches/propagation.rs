//! Fleet benchmark (prints figures, asserts nothing about speed): three
//! nodes (each a MapSync with its own kernel map and a Follower) follow one
//! etcd prefix.
//!
//! 1. etcd put -> the entry visible in the *kernel* map (a BPF lookup) on
//!    every node: p50/p99/max at 100 and 1,000 writes/s.
//! 2. A node that lost etcd (a proxy cut) while 100,000 changes were made
//!    (1,000 txns of 100 puts/deletes over 50,000 keys): time until it has
//!    applied them all by resuming its watch; then a node restarted after
//!    another 100,000 changes: time of its relist (list + difference).
//!
//! Run: `cargo bench -p mapsync-fleet --bench propagation` (root, etcd
//! installed). Without `--bench` (e.g. `cargo test --benches`) it runs a
//! smoke pass (a tenth of the writes, 1,000 changes).
#![allow(
    clippy::print_stdout,
    reason = "a benchmark's job is to print its figures"
)]

#[path = "../tests/etcd/mod.rs"]
mod etcd;

use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Txn, TxnOp};
use mapsync_fleet::{FollowConfig, FollowStats, Follower};
use mapsync_kernel::{MapSpec, MapSync, SyncConfig, sys};
use mapsync_test_support::{self as support, PinDir};

const PREFIX: &str = "bench/flows";
const MAX_ENTRIES: u32 = 65_536;

struct Node {
    sync: MapSync,
    pins: PinDir,
    follower: tokio::task::JoinHandle<()>,
    stats: Arc<FollowStats>,
}

fn etcd_key(k: u32) -> String {
    format!("{PREFIX}/{}", support::hex(&k.to_le_bytes()))
}

async fn node(name: &str, endpoint: &str) -> Node {
    let pins = PinDir::new(&format!("fleet-bench-{name}"));
    let pin = pins.join("flows");
    support::create_map(&pin, "hash", 4, 8, MAX_ENTRIES, "flows");
    let sync = MapSync::start(SyncConfig {
        maps: vec![MapSpec::pin(None, &pin)],
        pin_dir: pins.join("capture"),
        reconcile_interval: None,
        ..SyncConfig::default()
    })
    .await
    .expect("start MapSync");
    let mut node = Node {
        follower: tokio::spawn(async {}),
        stats: Arc::default(),
        sync,
        pins,
    };
    node.follow(endpoint);
    node
}

impl Node {
    fn follow(&mut self, endpoint: &str) {
        let mut config = FollowConfig::new("flows", vec![endpoint.to_owned()], PREFIX);
        config.reconcile_every = Duration::from_secs(3600);
        config.backoff_min = Duration::from_millis(20);
        config.backoff_max = Duration::from_millis(200);
        let follower = Follower::new(config, self.sync.store().clone(), self.sync.commands());
        self.stats = follower.stats();
        self.follower = tokio::spawn(follower.run());
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1e6
}

/// Puts `count` new keys from `first` at `rate`/s; each node's kernel map
/// is polled (BPF lookups) until it holds each key. Prints the latencies.
async fn propagation(
    client: &etcd_client::Client,
    nodes: &[Node],
    first: u32,
    count: u32,
    rate: u32,
) {
    let base = Instant::now();
    // when each write was sent, ns after base (0: not yet)
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..count).map(|_| AtomicU64::new(0)).collect());
    // when etcd acknowledged it (the put returned)
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..count).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let pollers: Vec<_> = nodes
        .iter()
        .map(|node| {
            let fd = sys::obj_get(&node.pins.join("flows")).expect("open pin");
            let (sent, stop) = (sent.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = vec![0u64; count as usize];
                let mut next = 0usize; // lowest key not yet seen
                let mut value = [0u8; 8];
                while next < count as usize && !stop.load(Ordering::Relaxed) {
                    let mut i = next;
                    while i < count as usize {
                        let at = sent[i].load(Ordering::Acquire);
                        if at == 0 {
                            break;
                        }
                        if seen[i] == 0 {
                            let key = (first + i as u32).to_le_bytes();
                            if sys::lookup(fd.as_fd(), &key, &mut value).expect("lookup") {
                                seen[i] = base.elapsed().as_nanos() as u64;
                            }
                        }
                        i += 1;
                    }
                    while next < count as usize && seen[next] != 0 {
                        next += 1;
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
                seen
            })
        })
        .collect();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut puts = tokio::task::JoinSet::new();
    for i in 0..count {
        tick.tick().await;
        let mut client = client.clone();
        let (sent, acked) = (sent.clone(), acked.clone());
        puts.spawn(async move {
            sent[i as usize].store(base.elapsed().as_nanos().max(1) as u64, Ordering::Release);
            client
                .put(
                    etcd_key(first + i),
                    u64::from(i).to_le_bytes().to_vec(),
                    None,
                )
                .await
                .expect("put");
            acked[i as usize].store(base.elapsed().as_nanos() as u64, Ordering::Release);
        });
    }
    while let Some(done) = puts.join_next().await {
        done.expect("put task");
    }
    let offered = base.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    while pollers.iter().any(|p| !p.is_finished()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut from_send: Vec<u64> = Vec::new();
    let mut from_ack: Vec<u64> = Vec::new();
    let mut missing = 0;
    for poller in pollers {
        for (i, visible) in poller.join().expect("poller").into_iter().enumerate() {
            if visible == 0 {
                missing += 1;
                continue;
            }
            from_send.push(visible.saturating_sub(sent[i].load(Ordering::Acquire)));
            from_ack.push(visible.saturating_sub(acked[i].load(Ordering::Acquire)));
        }
    }
    from_send.sort_unstable();
    from_ack.sort_unstable();
    println!(
        "{rate:>5} writes/s offered x 3 nodes: {count} puts acked in {:.1} s ({:.0}/s); put sent -> in the kernel map of a node: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; put acked -> in the map: p50 {:.2} ms, p99 {:.2} ms ({} samples, {missing} not seen)",
        offered.as_secs_f64(),
        f64::from(count) / offered.as_secs_f64(),
        percentile(&from_send, 0.5),
        percentile(&from_send, 0.99),
        percentile(&from_send, 1.0),
        percentile(&from_ack, 0.5),
        percentile(&from_ack, 0.99),
        from_send.len()
    );
}

/// `txns` x 100 changes: txns of 100 ops (puts, every 4th a delete) over
/// keys 0..50,000; returns etcd's revision after them.
async fn changes(client: &etcd_client::Client, round: u64, txns: u64) -> i64 {
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..8u64 {
        let mut client = client.clone();
        writers.spawn(async move {
            let mut last = 0;
            for t in (0..txns).filter(|t| t % 8 == writer) {
                let ops: Vec<TxnOp> = (0..100u64)
                    .map(|o| {
                        let n = t * 100 + o;
                        let key = etcd_key(((n * 7919 + round) % 50_000) as u32);
                        if n % 4 == 3 {
                            TxnOp::delete(key, None)
                        } else {
                            TxnOp::put(key, (n + round).to_le_bytes().to_vec(), None)
                        }
                    })
                    .collect();
                let done = client.txn(Txn::new().and_then(ops)).await.expect("txn");
                last = done.header().expect("header").revision();
            }
            last
        });
    }
    let mut last = 0;
    while let Some(done) = writers.join_next().await {
        last = last.max(done.expect("txn task"));
    }
    last
}

async fn wait_applied(stats: &FollowStats, revision: i64) -> Duration {
    let started = Instant::now();
    while stats.applied_revision() < revision {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "never converged"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !support::require_kernel() || !etcd::require_etcd() {
        return;
    }
    let full = std::env::args().any(|arg| arg == "--bench");
    let (scale, txns) = if full { (1, 1_000) } else { (10, 10) };
    let changed = txns * 100;
    let etcd = etcd::Etcd::start_with(&["--quota-backend-bytes", "4294967296"]).await;
    let proxy = etcd::proxy::Proxy::start(etcd.endpoint()).await;
    let client = etcd.client().await;
    let mut nodes = vec![
        node("a", &etcd.endpoint()).await,
        node("b", &etcd.endpoint()).await,
        node("c", &proxy.endpoint()).await,
    ];
    // warm up: every follower has listed
    tokio::time::sleep(Duration::from_millis(500)).await;
    propagation(&client, &nodes, 100_000, 500 / scale, 100).await;
    propagation(&client, &nodes, 200_000, 3_000 / scale, 1_000).await;
    let cleared = client
        .clone()
        .delete(
            format!("{PREFIX}/"),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .expect("clear");
    let cleared = cleared.header().expect("header").revision();

    // node c loses etcd for 100,000 changes, then resumes its watch
    let c = &nodes[2];
    wait_applied(&c.stats, cleared).await;
    proxy.cut();
    let started = Instant::now();
    let last = changes(&client, 1, txns).await;
    println!(
        "{changed} changes ({txns} txns of 100) written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    proxy.restore();
    let resumed = wait_applied(&c.stats, last).await;
    let held = c.sync.store().snapshot().map("flows").expect("map").len();
    println!(
        "node down for {changed} changes, resuming its watch: converged in {:.2} s ({held} entries, relists {})",
        resumed.as_secs_f64(),
        c.stats.relists()
    );

    // node c restarted (a new follower: relist and difference)
    nodes[2].follower.abort();
    let last = changes(&client, 2, txns).await;
    let c = &mut nodes[2];
    let started = Instant::now();
    c.follow(&etcd.endpoint());
    wait_applied(&c.stats, last).await;
    let held = c.sync.store().snapshot().map("flows").expect("map").len();
    println!(
        "node restarted after {changed} more changes, relisting: converged in {:.2} s ({held} entries)",
        started.elapsed().as_secs_f64()
    );
    for node in nodes {
        node.follower.abort();
    }
}
