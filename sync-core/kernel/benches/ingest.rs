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
//! - **ingest phases** (the ingest task's `SyncStats::phases` over the run):
//!   the ring side (ring read, decode, key/value copies, sequence check,
//!   routing) per record apart from the mirror's (apply, publish,
//!   accounting), beside the bare consumer's own reading time per record;
//! - **write -> visible latency** (p50/p90/p99/max): from just before one
//!   write until the store's revision moves (the measuring thread spins on
//!   it; for the bare consumer, on its count of records read), for the same
//!   writes as below, with the ingest phases of each run;
//! - **write-to-watch latency** (p50/p90/p99/max): from just before one write
//!   to the moment the subscription task receives its event (timestamped in
//!   that task, before the hand-off to the measuring thread):
//!   - one `BPF_MAP_UPDATE_ELEM` syscall (trace source), back to back and
//!     paced 200 us / 1 ms apart;
//!   - one demo program run (emit source), back to back.
//!
//! Every figure is printed beside the same figure for a **bare ring
//! consumer** (`ingest/bare.rs`: reads and counts records, nothing else) fed
//! by the same producer in the same run, and the ratio of the two; the
//! throughput runs also count the process's allocations per event (a
//! counting global allocator, `ingest/alloc.rs`).
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
use mapsync_ebpf::abi;
use mapsync_kernel::{Capture, DemoWriter, IngestPhases, open, sys};
use mapsync_kernel::{MapSpec, MapSync, SyncConfig};
use mapsync_test_support::{self as support, PinDir};
use tokio::runtime::Runtime;

#[path = "ingest/alloc.rs"]
mod alloc;
#[path = "ingest/bare.rs"]
mod bare;
#[path = "ingest/visible.rs"]
mod visible;

use bare::BareConsumer;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

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
}

/// Where a latency run waits for each write to arrive.
trait Arrivals {
    /// Turns timestamps on or off (dropping stale ones).
    fn stamp(&self, on: bool);
    /// The arrival time of the next event.
    fn next_arrival(&self) -> Instant;
}

impl Arrivals for Watcher {
    fn stamp(&self, on: bool) {
        self.timestamps.store(on, Ordering::Relaxed);
        // anything timestamped before this sample is not its event
        while self.arrivals.try_recv().is_ok() {}
    }

    fn next_arrival(&self) -> Instant {
        self.arrivals
            .recv_timeout(Duration::from_secs(5))
            .expect("the write's event arrives")
    }
}

impl Arrivals for BareConsumer {
    fn stamp(&self, on: bool) {
        BareConsumer::stamp(self, on);
    }

    fn next_arrival(&self) -> Instant {
        BareConsumer::next_arrival(self)
    }
}

/// Runs `produce` (which makes exactly `CHUNK` events per call) until
/// `delivered()` (events that reached the point measured) has grown by
/// `total`, never letting the producer run more than `WINDOW` ahead.
/// Returns events/s and allocations per event (whole process).
fn throughput(
    total: u64,
    what: &str,
    delivered: impl Fn() -> u64,
    mut produce: impl FnMut(u64),
) -> Rate {
    let base = delivered();
    let allocations = alloc::allocations();
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
    Rate {
        per_second: produced as f64 / started.elapsed().as_secs_f64(),
        allocations_per_event: (alloc::allocations() - allocations) as f64 / produced as f64,
    }
}

/// What a throughput run measured.
#[derive(Clone, Copy)]
struct Rate {
    per_second: f64,
    allocations_per_event: f64,
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.3} M events/s, {:.2} allocs/event",
            self.per_second / 1e6,
            self.allocations_per_event
        )
    }
}

/// One row of the table: mapsync's figure, the bare consumer's, and how
/// the first compares with the second.
struct Row {
    what: String,
    mapsync: String,
    bare: String,
    ratio: String,
}

impl Row {
    fn rate(what: String, mapsync: Rate, bare: Rate, note: String) -> Self {
        Self {
            what,
            mapsync: format!("{mapsync} ({note})"),
            bare: bare.to_string(),
            ratio: format!(
                "{:.0}% of bare",
                100.0 * mapsync.per_second / bare.per_second
            ),
        }
    }

    fn latency(what: String, mapsync: Vec<Duration>, bare: Vec<Duration>) -> Self {
        let p99 = |samples: &[Duration]| percentile(samples, 0.99);
        let mut mapsync = mapsync;
        let mut bare = bare;
        mapsync.sort_unstable();
        bare.sort_unstable();
        Self {
            what,
            ratio: format!(
                "p99 {:.2}x bare",
                p99(&mapsync).as_secs_f64() / p99(&bare).as_secs_f64()
            ),
            mapsync: percentiles(&mapsync),
            bare: percentiles(&bare),
        }
    }
}

/// Latency of `samples` single writes, each followed by waiting for its
/// event; `pause` between samples.
fn latency(
    watcher: &impl Arrivals,
    samples: usize,
    pause: Duration,
    mut write: impl FnMut(u64),
) -> Vec<Duration> {
    watcher.stamp(true);
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples as u64 {
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        let before = Instant::now();
        write(i);
        let arrived = watcher.next_arrival();
        latencies.push(arrived.saturating_duration_since(before));
    }
    watcher.stamp(false);
    latencies
}

/// The `p` quantile of sorted `samples`.
fn percentile(samples: &[Duration], p: f64) -> Duration {
    let index = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[index]
}

/// p50/p90/p99/max of sorted `samples`.
fn percentiles(samples: &[Duration]) -> String {
    let at = |p: f64| percentile(samples, p).as_secs_f64() * 1e6;
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

/// Where the ingest task's time went during a run (its phase counters,
/// `SyncStats::phases`): the ring side (ring read, decode, routing) apart
/// from the mirror's (apply, publish, accounting).
fn phases_row(
    what: String,
    sync: &MapSync,
    before: IngestPhases,
    bare_ns_per_record: Option<f64>,
) -> Row {
    let phases = sync.stats_handle().phases().since(&before);
    let per = |ns: u64| ns as f64 / phases.records.max(1) as f64;
    let ring_side = phases.ring_side_ns_per_record();
    Row {
        what,
        mapsync: format!(
            "ring side {ring_side:.0} ns/record (ring {:.0} + route {:.0}; {:.2} M records/s \
             of one CPU), mirror {:.0} ns/record (apply {:.0} + account {:.0}); {} records in \
             {} batches, {} of them with an apply over 1 ms; ticks' own work {:.1} ms, {} ticks over \
             1 ms",
            per(phases.ring_ns),
            per(phases.route_ns),
            1e3 / ring_side.max(1e-3),
            phases.mirror_ns_per_record(),
            per(phases.apply_ns),
            per(phases.account_ns),
            phases.records,
            phases.batches,
            phases.slow_applies,
            phases.tick_ns as f64 / 1e6,
            phases.slow_ticks,
        ),
        bare: bare_ns_per_record
            .map(|ns| format!("reading {ns:.0} ns/record"))
            .unwrap_or_default(),
        ratio: bare_ns_per_record
            .map(|ns| format!("ring side {:.1}x bare", ring_side / ns.max(1e-3)))
            .unwrap_or_default(),
    }
}

fn loss_note(sync: &MapSync) -> String {
    let stats = sync.stats();
    format!(
        "drops {}, seq gaps {}, resyncs {}",
        stats.drops, stats.seq_gaps, stats.resyncs
    )
}

/// The bare reference's ring: a capture object of its own (its own pin
/// directory, so its ring is not the mirror's) and its consumer.
fn bare_capture(pins: &PinDir) -> (std::path::PathBuf, Capture, BareConsumer) {
    let capture_dir = pins.join("bare-capture");
    let (capture, ring) =
        Capture::load(&capture_dir, abi::RINGBUF_BYTES).expect("load the bare capture");
    (capture_dir, capture, BareConsumer::start(ring))
}

/// The emit path: the demo XDP program through `mapsync_update()`.
fn emit_rows(runtime: &Runtime, sizes: &Sizes, rows: &mut Vec<Row>) {
    let pins = PinDir::new("bench-ingest-emit");
    let packets = |demo: &mut DemoWriter, call: u64| {
        let source = Ipv4Addr::new(10, 1, (call / 256 % 256) as u8, (call % 256) as u8);
        demo.count(source, 64, CHUNK).expect("demo test run");
    };
    let one_packet = |demo: &mut DemoWriter, i: u64| {
        demo.count(Ipv4Addr::from(0x0a02_0000 + i as u32), 64, 1)
            .expect("demo test run");
    };
    let (bare_rate, bare_latency) = {
        let (capture_dir, _capture, bare) = bare_capture(&pins);
        let mut demo = DemoWriter::load(&capture_dir).expect("load the demo program");
        let (busy, read) = (bare.busy_ns(), bare.received());
        let rate = throughput(
            sizes.emit_events,
            "bare emit",
            || bare.received(),
            |call| packets(&mut demo, call),
        );
        let bare_ns = (bare.busy_ns() - busy) as f64 / (bare.received() - read).max(1) as f64;
        let samples = latency(&bare, sizes.latency_samples, Duration::ZERO, |i| {
            one_packet(&mut demo, i)
        });
        let visible = visible::latency(
            sizes.latency_samples,
            Duration::ZERO,
            || bare.received(),
            |i| one_packet(&mut demo, i),
        );
        (rate, (samples, visible, bare_ns))
    };
    let (bare_latency, bare_visible, bare_ns) = bare_latency;

    let capture = pins.join("capture");
    let mut demo = DemoWriter::load(&capture).expect("load the demo program");
    let sync = start_sync(runtime, &capture, MapSpec::id(Some("pkts"), demo.map_id()));
    let store = sync.store().clone();
    let phases = sync.stats_handle().phases();
    let rate = throughput(
        sizes.emit_events,
        "emit",
        || store.revision(),
        |call| packets(&mut demo, call),
    );
    rows.push(Row::rate(
        format!("throughput, emit (demo XDP test run x{CHUNK}) -> store, no subscriber"),
        rate,
        bare_rate,
        loss_note(&sync),
    ));
    rows.push(phases_row(
        "ingest phases, emit -> store".into(),
        &sync,
        phases,
        Some(bare_ns),
    ));
    let samples = visible::latency(
        sizes.latency_samples,
        Duration::ZERO,
        || store.load().revision(),
        |i| one_packet(&mut demo, i),
    );
    rows.push(Row::latency(
        "write -> visible in the mirror, emit (1 demo test run), back to back".into(),
        samples,
        bare_visible,
    ));
    let watcher = Watcher::start(runtime, &store, "pkts");
    let rate = throughput(
        sizes.emit_events,
        "emit",
        || watcher.received(),
        |call| packets(&mut demo, call),
    );
    rows.push(Row::rate(
        format!("throughput, emit (demo XDP test run x{CHUNK}) -> subscription"),
        rate,
        bare_rate,
        loss_note(&sync),
    ));
    let samples = latency(&watcher, sizes.latency_samples, Duration::ZERO, |i| {
        one_packet(&mut demo, i)
    });
    rows.push(Row::latency(
        "write-to-watch, emit (1 demo test run), back to back".into(),
        samples,
        bare_latency,
    ));
    runtime
        .block_on(sync.shutdown())
        .expect("the sync shuts down cleanly");
}

/// The syscall-trace path: update syscalls on an 8/16 hash.
fn trace_rows(runtime: &Runtime, sizes: &Sizes, rows: &mut Vec<Row>) {
    let pins = PinDir::new("bench-ingest-trace");
    let pin = pins.join("flows");
    support::create_map(&pin, "hash", 8, 16, 100_000, "flows");
    let map = open::open(&MapSpec::pin(None, &pin)).expect("open the new map");
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
    let update = |i: u64| {
        sys::update(map.fd.as_fd(), &key(i % LATENCY_KEYS), &value(i), 0).expect("update syscall");
    };
    let latency_runs = [
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
    ];

    let (bare_rate, bare_latencies) = {
        let (_dir, mut capture, bare) = bare_capture(&pins);
        capture.watch(&map.info).expect("trace the map");
        let (busy, read) = (bare.busy_ns(), bare.received());
        let rate = throughput(
            sizes.trace_events,
            "bare trace",
            || bare.received(),
            update_batch,
        );
        let bare_ns = (bare.busy_ns() - busy) as f64 / (bare.received() - read).max(1) as f64;
        let samples: Vec<Vec<Duration>> = latency_runs
            .iter()
            .map(|&(_, samples, pause)| latency(&bare, samples, pause, update))
            .collect();
        let visible: Vec<Vec<Duration>> = latency_runs
            .iter()
            .map(|&(_, samples, pause)| {
                visible::latency(samples, pause, || bare.received(), update)
            })
            .collect();
        (rate, (samples, visible, bare_ns))
    };
    let (bare_latencies, bare_visible, bare_ns) = bare_latencies;

    let capture = pins.join("capture");
    let sync = start_sync(runtime, &capture, MapSpec::pin(None, &pin));
    let store = sync.store().clone();
    let phases = sync.stats_handle().phases();
    let rate = throughput(
        sizes.trace_events,
        "trace",
        || store.revision(),
        update_batch,
    );
    rows.push(Row::rate(
        format!("throughput, trace (BPF_MAP_UPDATE_BATCH x{CHUNK}) -> store, no subscriber"),
        rate,
        bare_rate,
        loss_note(&sync),
    ));
    rows.push(phases_row(
        "ingest phases, trace -> store".into(),
        &sync,
        phases,
        Some(bare_ns),
    ));
    for ((label, samples, pause), bare) in latency_runs.iter().zip(bare_visible) {
        let phases = sync.stats_handle().phases();
        let wakeups = visible::reclaimer_wakeups();
        let samples = visible::latency(*samples, *pause, || store.load().revision(), update);
        let wakeups = visible::reclaimer_wakeups() - wakeups;
        rows.push(Row::latency(
            format!("write -> visible in the mirror, trace (1 update syscall), {label}"),
            samples,
            bare,
        ));
        rows.push(phases_row(
            format!("ingest phases of the run above (one record per batch; the reclaimer thread woke {wakeups} times)"),
            &sync,
            phases,
            None,
        ));
    }
    let watcher = Watcher::start(runtime, &store, "flows");
    let rate = throughput(
        sizes.trace_events,
        "trace",
        || watcher.received(),
        update_batch,
    );
    rows.push(Row::rate(
        format!("throughput, trace (BPF_MAP_UPDATE_BATCH x{CHUNK}) -> subscription"),
        rate,
        bare_rate,
        loss_note(&sync),
    ));
    for ((label, samples, pause), bare) in latency_runs.into_iter().zip(bare_latencies) {
        let samples = latency(&watcher, samples, pause, update);
        rows.push(Row::latency(
            format!("write-to-watch, trace (1 update syscall), {label}"),
            samples,
            bare,
        ));
    }
    rows.push(Row {
        what: "losses, trace run".into(),
        mapsync: loss_note(&sync),
        bare: String::new(),
        ratio: String::new(),
    });
    runtime
        .block_on(sync.shutdown())
        .expect("the sync shuts down cleanly");
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
    let mut rows = Vec::new();
    emit_rows(&runtime, &sizes, &mut rows);
    trace_rows(&runtime, &sizes, &mut rows);

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after: {}", load.trim());
    println!("\n| what | mapsync | bare ring consumer, same producer | ratio |\n|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} |",
            row.what, row.mapsync, row.bare, row.ratio
        );
    }
}
