//! The whole capture path on a real kernel: kernel write -> ring -> ingest ->
//! store -> an in-process subscription.
//!
//! Prints a table of:
//!
//! - **throughput** (events/s), closed loop: the producer stays at most
//!   `WINDOW` events ahead of what the subscription has received, so the
//!   figure is what the path sustains without filling the ring (drops and
//!   resyncs are printed and should be 0):
//!   - *emit*: the demo XDP program (`mapsync_update()`) run with
//!     `BPF_PROG_TEST_RUN`, `CHUNK` packets per run;
//!   - *trace*: `BPF_MAP_UPDATE_BATCH` syscalls of `CHUNK` elements on an
//!     8-byte-key, 16-byte-value hash, seen by the `sys_exit_bpf` tracepoint;
//! - **write-to-watch latency** (p50/p90/p99/max): from just before one write
//!   to the moment the subscription task receives its event (timestamped in
//!   that task, before the hand-off to the measuring thread):
//!   - one `BPF_MAP_UPDATE_ELEM` syscall (trace source), back to back and
//!     paced 200 us / 1 ms apart;
//!   - one demo program run (emit source), back to back.
//!
//! Criterion does not fit latency distributions, so this is a plain
//! `harness = false` program. Run (root, bpffs mounted):
//! `cargo bench -p mapsync-kernel --bench ingest` (about 20 s). Without
//! `--bench` (e.g. `cargo test --benches`) it runs a few-second smoke pass
//! with small counts.
#![allow(
    clippy::print_stdout,
    reason = "a benchmark's job is to print its figures"
)]

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mapsync_core::{Store, SubscribeFilter, WatchBatch};
use mapsync_kernel::{DemoWriter, open, sys};
use mapsync_kernel::{MapSpec, MapSync, SyncConfig};
use mapsync_test_support::{self as support, PinDir};
use tokio::runtime::Runtime;

/// Events per producer call (packets per test run, elements per batch).
const CHUNK: u32 = 4096;
/// Most events the producer may be ahead of the subscription (the ring
/// holds about 65,000 of these records).
const WINDOW: u64 = 32_768;
/// How often the producing thread checks progress while it waits (it
/// sleeps rather than spins: with 2 CPUs, a spinning producer would take one
/// from the ingest task or the subscription).
const POLL: Duration = Duration::from_micros(100);
/// Keys of the latency map (written round robin).
const LATENCY_KEYS: u64 = 1024;

/// How many of each to run.
struct Sizes {
    emit_events: u64,
    trace_events: u64,
    latency_samples: usize,
    paced_samples: usize,
}

const FULL: Sizes = Sizes {
    emit_events: 2_000_000,
    trace_events: 1_000_000,
    latency_samples: 5_000,
    paced_samples: 2_000,
};

const SMOKE: Sizes = Sizes {
    emit_events: 20_000,
    trace_events: 20_000,
    latency_samples: 50,
    paced_samples: 20,
};

fn key(i: u64) -> [u8; 8] {
    i.to_ne_bytes()
}

fn value(i: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&i.to_ne_bytes());
    v[8..].copy_from_slice(&(!i).to_ne_bytes());
    v
}

/// Counts (and optionally timestamps) every event a subscription yields,
/// from the store's next revision on.
struct Watcher {
    received: Arc<AtomicU64>,
    /// Whether the task timestamps batches (latency runs only).
    timestamps: Arc<AtomicBool>,
    arrivals: mpsc::Receiver<Instant>,
}

impl Watcher {
    fn start(runtime: &Runtime, store: &Store, map: &str) -> Self {
        let mut subscription = store
            .subscribe(store.revision() + 1, SubscribeFilter::maps([map]))
            .expect("subscribe to the mirrored map");
        let received = Arc::new(AtomicU64::new(0));
        let (arrived, arrivals) = mpsc::channel();
        let counter = received.clone();
        let timestamps = Arc::new(AtomicBool::new(false));
        let stamping = timestamps.clone();
        runtime.spawn(async move {
            while let Some(batch) = subscription.next().await {
                match batch.expect("the subscription keeps up") {
                    WatchBatch::Events(events) => {
                        if stamping.load(Ordering::Relaxed) {
                            let now = Instant::now();
                            for _ in &events {
                                // the receiver may be gone at the end of a run
                                let _ = arrived.send(now);
                            }
                        }
                        counter.fetch_add(events.len() as u64, Ordering::Release);
                    }
                    WatchBatch::InitialStateDone { .. } => {}
                }
            }
        });
        Self {
            received,
            timestamps,
            arrivals,
        }
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Acquire)
    }

    fn drain_arrivals(&self) {
        // anything timestamped before this sample is not its event
        while self.arrivals.try_recv().is_ok() {}
    }
}

/// Runs `produce` (which makes exactly `CHUNK` events per call) until
/// `delivered()` (events that reached the point measured) has grown by
/// `total`, never letting the producer run more than `WINDOW` ahead.
/// Returns events/s.
fn throughput(
    total: u64,
    what: &str,
    delivered: impl Fn() -> u64,
    mut produce: impl FnMut(u64),
) -> f64 {
    let base = delivered();
    let started = Instant::now();
    let mut produced = 0;
    let mut call = 0;
    while produced < total {
        while produced - (delivered() - base) > WINDOW {
            std::thread::sleep(POLL);
        }
        produce(call);
        call += 1;
        produced += u64::from(CHUNK);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered() < base + produced {
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {produced} events after 30 s",
            delivered() - base
        );
        std::thread::sleep(POLL);
    }
    produced as f64 / started.elapsed().as_secs_f64()
}

/// Latency of `samples` single writes, each followed by waiting for its
/// event; `pause` between samples.
fn latency(
    watcher: &Watcher,
    samples: usize,
    pause: Duration,
    mut write: impl FnMut(u64),
) -> Vec<Duration> {
    watcher.timestamps.store(true, Ordering::Relaxed);
    watcher.drain_arrivals();
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples as u64 {
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        let before = Instant::now();
        write(i);
        let arrived = watcher
            .arrivals
            .recv_timeout(Duration::from_secs(5))
            .expect("the write's event arrives");
        latencies.push(arrived.saturating_duration_since(before));
    }
    watcher.timestamps.store(false, Ordering::Relaxed);
    latencies
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort_unstable();
    let at = |p: f64| {
        let index = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[index].as_secs_f64() * 1e6
    };
    format!(
        "p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, max {:.0} us (n={})",
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0),
        samples.len()
    )
}

fn start_sync(runtime: &Runtime, capture: &std::path::Path, map: MapSpec) -> MapSync {
    runtime
        .block_on(MapSync::start(SyncConfig {
            maps: vec![map],
            pin_dir: capture.to_path_buf(),
            reconcile_interval: None,
            ..SyncConfig::default()
        }))
        .expect("start the sync")
}

fn loss_note(sync: &MapSync) -> String {
    let stats = sync.stats();
    format!(
        "drops {}, seq gaps {}, resyncs {}",
        stats.drops, stats.seq_gaps, stats.resyncs
    )
}

fn main() {
    if !support::require_kernel() {
        return;
    }
    let full = std::env::args().any(|arg| arg == "--bench");
    let sizes = if full { FULL } else { SMOKE };
    // two workers: the ingest task and the subscription; the producing and
    // measuring thread is this one
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "ingest bench ({}), load average before: {}",
        if full { "full" } else { "smoke" },
        load.trim()
    );
    let mut rows: Vec<(String, String)> = Vec::new();

    // emit: the demo XDP program through mapsync_update()
    {
        let pins = PinDir::new("bench-ingest-emit");
        let capture = pins.join("capture");
        let mut demo = DemoWriter::load(&capture).expect("load the demo program");
        let sync = start_sync(&runtime, &capture, MapSpec::id(Some("pkts"), demo.map_id()));
        let store = sync.store().clone();
        let mut count = |call: u64| {
            let source = Ipv4Addr::new(10, 1, (call / 256 % 256) as u8, (call % 256) as u8);
            demo.count(source, 64, CHUNK).expect("demo test run");
        };
        let rate = throughput(sizes.emit_events, "emit", || store.revision(), &mut count);
        rows.push((
            format!("throughput, emit (demo XDP test run x{CHUNK}) -> store, no subscriber"),
            format!("{:.3} M events/s ({})", rate / 1e6, loss_note(&sync)),
        ));
        let watcher = Watcher::start(&runtime, &store, "pkts");
        let rate = throughput(sizes.emit_events, "emit", || watcher.received(), &mut count);
        rows.push((
            format!("throughput, emit (demo XDP test run x{CHUNK}) -> subscription"),
            format!("{:.3} M events/s ({})", rate / 1e6, loss_note(&sync)),
        ));
        let samples = latency(&watcher, sizes.latency_samples, Duration::ZERO, |i| {
            demo.count(Ipv4Addr::from(0x0a02_0000 + i as u32), 64, 1)
                .expect("demo test run");
        });
        rows.push((
            "write-to-watch, emit (1 demo test run), back to back".into(),
            percentiles(samples),
        ));
        runtime
            .block_on(sync.shutdown())
            .expect("the sync shuts down cleanly");
    }

    // trace: update syscalls on an 8/16 hash
    {
        let pins = PinDir::new("bench-ingest-trace");
        let capture = pins.join("capture");
        let pin = pins.join("flows");
        support::create_map(&pin, "hash", 8, 16, 100_000, "flows");
        let map = open::open(&MapSpec::pin(None, &pin)).expect("open the new map");
        let sync = start_sync(&runtime, &capture, MapSpec::pin(None, &pin));
        let store = sync.store().clone();

        let batches: Vec<(Vec<u8>, Vec<u8>)> = (0..16u64)
            .map(|b| {
                let ids = (0..u64::from(CHUNK)).map(|i| b * u64::from(CHUNK) + i);
                (
                    ids.clone().flat_map(key).collect(),
                    ids.flat_map(value).collect(),
                )
            })
            .collect();
        let update_batch = |call: u64| {
            let (keys, values) = &batches[call as usize % batches.len()];
            let (done, result) = sys::update_batch(map.fd.as_fd(), keys, values, CHUNK);
            result.expect("batch update");
            assert_eq!(done, CHUNK, "whole batch processed");
        };
        let rate = throughput(
            sizes.trace_events,
            "trace",
            || store.revision(),
            update_batch,
        );
        rows.push((
            format!("throughput, trace (BPF_MAP_UPDATE_BATCH x{CHUNK}) -> store, no subscriber"),
            format!("{:.3} M events/s ({})", rate / 1e6, loss_note(&sync)),
        ));
        let watcher = Watcher::start(&runtime, &store, "flows");
        let rate = throughput(
            sizes.trace_events,
            "trace",
            || watcher.received(),
            update_batch,
        );
        rows.push((
            format!("throughput, trace (BPF_MAP_UPDATE_BATCH x{CHUNK}) -> subscription"),
            format!("{:.3} M events/s ({})", rate / 1e6, loss_note(&sync)),
        ));

        let update = |i: u64| {
            sys::update(map.fd.as_fd(), &key(i % LATENCY_KEYS), &value(i), 0)
                .expect("update syscall");
        };
        for (label, samples, pause) in [
            ("back to back", sizes.latency_samples, Duration::ZERO),
            (
                "paced 200 us apart",
                sizes.paced_samples,
                Duration::from_micros(200),
            ),
            (
                "paced 1 ms apart",
                sizes.paced_samples,
                Duration::from_millis(1),
            ),
        ] {
            let samples = latency(&watcher, samples, pause, update);
            rows.push((
                format!("write-to-watch, trace (1 update syscall), {label}"),
                percentiles(samples),
            ));
        }
        rows.push(("losses, trace run".into(), loss_note(&sync)));
        runtime
            .block_on(sync.shutdown())
            .expect("the sync shuts down cleanly");
    }

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after: {}", load.trim());
    println!("\n| what | figure |\n|---|---|");
    for (what, figure) in rows {
        println!("| {what} | {figure} |");
    }
}
