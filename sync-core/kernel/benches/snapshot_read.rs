//! Reading one key of a mirrored kernel map: mapsync snapshot vs `bpf()`.
//!
//! Creates a pinned kernel HASH map of 100,000 entries (8-byte keys, 16-byte
//! values), fills it with one batch update, starts `MapSync` on it, then
//! measures with criterion, on the same random keys:
//!
//! - `snapshot_get`: `store.load().map("flows").and_then(|m| m.get(&key))`,
//!   copying the value out (no lock, no syscall);
//! - `snapshot_get_handle`: the same read through a `MapHandle` resolved
//!   once (`store.load().view(&handle)`: a `Vec` index, no lookup by name);
//! - `aya_hashmap_get`: aya 0.14's `HashMap::get` on the same kernel map
//!   (one `BPF_MAP_LOOKUP_ELEM` syscall per lookup);
//! - `snapshot_get_same_key`: the snapshot read of one key over and over
//!   (everything in cache: the floor under `snapshot_get`);
//! - `reference/*`: the same entries in bare in-memory maps, no store:
//!   `imbl::OrdMap<Bytes, Bytes>` (the old mirror's structure),
//!   `imbl::OrdMap<[u8; 8], [u8; 16]>` (keys inline), `std::HashMap`, and
//!   `ArcSwap<std::HashMap>` (load + get: the target's reference), to show
//!   how much of `snapshot_get` is the data structure;
//! - `snapshot_get_during_writes`: the snapshot read while another thread
//!   replaces random values through `bpf()` (traced, ingested and published
//!   by the running sync), aiming at ~200k writes/s; the achieved write rate
//!   is printed.
//!
//! At the end a summary times each path with a plain loop over the same
//! keys, in the same run, and prints the ratios the targets name (snapshot
//! vs `bpf()` quiet and under writes, snapshot vs `ArcSwap<HashMap>`).
//!
//! Run (root, bpffs mounted): `cargo bench -p mapsync-kernel --bench snapshot_read`.
//! Under `cargo test --benches` criterion runs each benchmark once.
//! That reads make no syscall at all is checked by
//! `tests/snapshot_no_syscall.rs`.
#![allow(
    clippy::print_stdout,
    reason = "a benchmark's job is to print its figures"
)]

use std::hint::black_box;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::Criterion;
use mapsync_core::{MapHandle, Store};
use mapsync_kernel::{MapSpec, MapSync, SyncConfig};
use mapsync_kernel::{open, sys};
use mapsync_test_support::{self as support, PinDir};

const ENTRIES: u64 = 100_000;
const MAP: &str = "flows";
/// Random keys cycled through by every benchmark (fits in L2 as a list; the
/// map itself does not).
const KEYS: usize = 4096;
/// Writer of `snapshot_get_during_writes`: keys per batch update, and the
/// pause between batches (about 200,000 writes/s when the CPU allows).
const WRITE_BATCH: u64 = 200;
const WRITE_PAUSE: Duration = Duration::from_millis(1);

fn key(i: u64) -> [u8; 8] {
    i.to_ne_bytes()
}

fn value(i: u64, generation: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&i.to_ne_bytes());
    v[8..].copy_from_slice(&generation.to_ne_bytes());
    v
}

/// The first 8 bytes of `key`'s value in the current snapshot.
fn snapshot_read(store: &Store, key: &[u8; 8]) -> Option<u64> {
    store
        .load()
        .map(MAP)
        .and_then(|m| m.get(key))
        .map(|v| u64::from_ne_bytes(v[..8].try_into().expect("16-byte values")))
}

/// The first 8 bytes of `key`'s value, reading the map through a handle.
fn handle_read(store: &Store, handle: &MapHandle, key: &[u8; 8]) -> Option<u64> {
    store
        .load()
        .view(handle)
        .ok()
        .and_then(|m| m.get(key))
        .map(|v| u64::from_ne_bytes(v[..8].try_into().expect("16-byte values")))
}

struct Fixture {
    _pins: PinDir,
    pin: std::path::PathBuf,
    runtime: tokio::runtime::Runtime,
    sync: MapSync,
    keys: Vec<[u8; 8]>,
}

impl Fixture {
    fn new() -> Self {
        let pins = PinDir::new("bench-snapshot-read");
        let pin = pins.join(MAP);
        support::create_map(&pin, "hash", 8, 16, ENTRIES as u32, MAP);
        let map = open::open(&MapSpec::pin(None, &pin)).expect("open the new map");
        let keys: Vec<u8> = (0..ENTRIES).flat_map(key).collect();
        let values: Vec<u8> = (0..ENTRIES).flat_map(|i| value(i, 0)).collect();
        let (done, result) = sys::update_batch(map.fd.as_fd(), &keys, &values, ENTRIES as u32);
        result.expect("fill the map with one batch update");
        assert_eq!(done, ENTRIES as u32, "every entry written");

        // one worker for the ingest task; the benchmark thread is the other CPU
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let started = Instant::now();
        let sync = runtime
            .block_on(MapSync::start(SyncConfig {
                maps: vec![MapSpec::pin(None, &pin)],
                pin_dir: pins.join("capture"),
                ..SyncConfig::default()
            }))
            .expect("start the sync");
        let mirrored = sync.store().load().map(MAP).expect("mirrored").len();
        assert_eq!(mirrored, ENTRIES as usize, "initial dump");
        println!(
            "MapSync::start on {ENTRIES} entries (trace attach + dump + publish): {:.1} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        let mut state = 42;
        let keys = (0..KEYS)
            .map(|_| key(support::next_random(&mut state) % ENTRIES))
            .collect();
        Self {
            _pins: pins,
            pin,
            runtime,
            sync,
            keys,
        }
    }
}

fn bench_snapshot(c: &mut Criterion, fixture: &Fixture) {
    let store = fixture.sync.store().clone();
    let mut next = 0;
    c.bench_function("snapshot_get", |b| {
        b.iter(|| {
            next = (next + 1) % KEYS;
            black_box(snapshot_read(&store, &fixture.keys[next]).expect("key present"))
        })
    });
}

fn bench_handle(c: &mut Criterion, fixture: &Fixture) {
    let store = fixture.sync.store().clone();
    let handle = store.handle(MAP).expect("mirrored");
    let mut next = 0;
    c.bench_function("snapshot_get_handle", |b| {
        b.iter(|| {
            next = (next + 1) % KEYS;
            black_box(handle_read(&store, &handle, &fixture.keys[next]).expect("key present"))
        })
    });
}

fn bench_snapshot_same_key(c: &mut Criterion, fixture: &Fixture) {
    let store = fixture.sync.store().clone();
    let key = fixture.keys[0];
    c.bench_function("snapshot_get_same_key", |b| {
        b.iter(|| black_box(snapshot_read(&store, black_box(&key)).expect("key present")))
    });
}

/// The same 100,000 entries in plain in-memory maps, no store around them:
/// how much of `snapshot_get` is the data structure itself.
fn bench_references(c: &mut Criterion, fixture: &Fixture) {
    let bytes_keys: imbl::OrdMap<bytes::Bytes, bytes::Bytes> = (0..ENTRIES)
        .map(|i| {
            (
                bytes::Bytes::copy_from_slice(&key(i)),
                bytes::Bytes::copy_from_slice(&value(i, 0)),
            )
        })
        .collect();
    let inline_keys: imbl::OrdMap<[u8; 8], [u8; 16]> =
        (0..ENTRIES).map(|i| (key(i), value(i, 0))).collect();
    let std_hash: std::collections::HashMap<[u8; 8], [u8; 16]> =
        (0..ENTRIES).map(|i| (key(i), value(i, 0))).collect();
    let mut group = c.benchmark_group("reference");
    let mut next = 0;
    group.bench_function("imbl_ordmap_bytes_keys", |b| {
        b.iter(|| {
            next = (next + 1) % KEYS;
            black_box(
                bytes_keys
                    .get(&fixture.keys[next][..])
                    .expect("key present")[0],
            )
        })
    });
    group.bench_function("imbl_ordmap_inline_keys", |b| {
        b.iter(|| {
            next = (next + 1) % KEYS;
            black_box(inline_keys.get(&fixture.keys[next]).expect("key present")[0])
        })
    });
    group.bench_function("std_hashmap", |b| {
        b.iter(|| {
            next = (next + 1) % KEYS;
            black_box(std_hash.get(&fixture.keys[next]).expect("key present")[0])
        })
    });
    let swapped = arc_swap_reference();
    group.bench_function("arcswap_std_hashmap", |b| {
        b.iter(|| {
            next = (next + 1) % KEYS;
            black_box(arc_swap_read(&swapped, &fixture.keys[next]).expect("key present"))
        })
    });
    group.finish();
}

/// The target's reference: the same entries in an `ArcSwap<std HashMap>`.
fn arc_swap_reference() -> arc_swap::ArcSwap<std::collections::HashMap<[u8; 8], [u8; 16]>> {
    arc_swap::ArcSwap::from_pointee((0..ENTRIES).map(|i| (key(i), value(i, 0))).collect())
}

fn arc_swap_read(
    map: &arc_swap::ArcSwap<std::collections::HashMap<[u8; 8], [u8; 16]>>,
    key: &[u8; 8],
) -> Option<u64> {
    map.load()
        .get(key)
        .map(|v| u64::from_ne_bytes(v[..8].try_into().expect("16-byte values")))
}

/// Per call of `read` over the fixture's keys (plain loop): wall and
/// thread-CPU nanoseconds.
fn time_reads_cpu(
    fixture: &Fixture,
    rounds: usize,
    mut read: impl FnMut(&[u8; 8]) -> u64,
) -> (f64, f64) {
    let (started, cpu) = (Instant::now(), support::thread_cpu());
    let mut sum = 0u64;
    for round in 0..rounds {
        for i in 0..KEYS {
            sum = sum.wrapping_add(read(&fixture.keys[(i + round) % KEYS]));
        }
    }
    black_box(sum);
    let calls = (rounds * KEYS) as f64;
    (
        started.elapsed().as_nanos() as f64 / calls,
        (support::thread_cpu() - cpu).as_nanos() as f64 / calls,
    )
}

/// Wall nanoseconds per call of `read` over the fixture's keys.
fn time_reads(fixture: &Fixture, rounds: usize, read: impl FnMut(&[u8; 8]) -> u64) -> f64 {
    time_reads_cpu(fixture, rounds, read).0
}

/// The ratios of the targets, from plain timed loops in this run.
fn summary(fixture: &Fixture, rounds: usize) {
    let store = fixture.sync.store().clone();
    let handle = store.handle(MAP).expect("mirrored");
    let swapped = arc_swap_reference();
    let data = aya::maps::MapData::from_pin(&fixture.pin).expect("aya opens the pinned map");
    let map: aya::maps::HashMap<_, [u8; 8], [u8; 16]> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data)).expect("a hash of 8/16 bytes");
    // quiet: the backlog of the previous benchmark's writes applied, and
    // folded into the flat base (the ingest task's `Publisher::tidy`, two
    // ticks after the last new revision)
    loop {
        let revision = store.revision();
        std::thread::sleep(Duration::from_millis(300));
        if store.revision() == revision {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    // interleaved, best of five: the machine is shared and noisy
    let (mut snapshot, mut reference, mut through_handle) = (f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..5 {
        snapshot = snapshot.min(time_reads(fixture, rounds, |k| {
            snapshot_read(&store, k).expect("present")
        }));
        reference = reference.min(time_reads(fixture, rounds, |k| {
            arc_swap_read(&swapped, k).expect("present")
        }));
        through_handle = through_handle.min(time_reads(fixture, rounds, |k| {
            handle_read(&store, &handle, k).expect("present")
        }));
    }
    let syscall = time_reads(fixture, rounds.div_ceil(20), |k| {
        u64::from(map.get(k, 0).expect("present")[0])
    });
    let (under_load, rate, syscall_loaded) = with_writes(fixture, || {
        (
            time_reads_cpu(fixture, rounds, |k| {
                handle_read(&store, &handle, k).expect("present")
            }),
            time_reads_cpu(fixture, rounds.div_ceil(20), |k| {
                u64::from(map.get(k, 0).expect("present")[0])
            }),
        )
    });
    println!(
        "summary (plain loops, same run, random keys of {ENTRIES} entries; quiet reads best of 5 interleaved):"
    );
    println!(
        "  snapshot read through a MapHandle {through_handle:.1} ns, ArcSwap<HashMap> {reference:.1} ns: {:.2}x the reference (target <= 1.5x)",
        through_handle / reference
    );
    println!(
        "  snapshot read by name {snapshot:.1} ns: {:.2}x the reference",
        snapshot / reference
    );
    println!(
        "  bpf() lookup {syscall:.1} ns: snapshot (handle) {:.1}x faster quiet, by name {:.1}x (target >= 20x)",
        syscall / through_handle,
        syscall / snapshot
    );
    println!(
        "  under {rate:.0} writes/s: snapshot (handle) {:.1} ns, bpf() {:.1} ns: {:.1}x faster (target >= 10x)",
        under_load.0,
        syscall_loaded.0,
        syscall_loaded.0 / under_load.0
    );
    println!(
        "    the same in thread CPU time: snapshot {:.1} ns, bpf() {:.1} ns: {:.1}x",
        under_load.1,
        syscall_loaded.1,
        syscall_loaded.1 / under_load.1
    );
}

/// Runs `measure` while a thread rewrites random values through `bpf()`;
/// returns its results and the achieved write rate.
fn with_writes<T>(fixture: &Fixture, measure: impl FnOnce() -> (T, T)) -> (T, f64, T) {
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = spawn_writer(fixture, stop.clone(), writes.clone());
    // let ingest reach its steady state (overlay filled, merges running)
    std::thread::sleep(Duration::from_millis(300));
    let (writes0, started) = (writes.load(Ordering::Relaxed), Instant::now());
    let (reads, syscall) = measure();
    let rate = (writes.load(Ordering::Relaxed) - writes0) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer thread did not panic");
    (reads, rate, syscall)
}

fn spawn_writer(
    fixture: &Fixture,
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    let map = open::open(&MapSpec::pin(None, &fixture.pin)).expect("open for writing");
    std::thread::spawn(move || {
        let mut state = 9;
        let mut generation = 1;
        while !stop.load(Ordering::Relaxed) {
            let (mut keys, mut values) = (Vec::new(), Vec::new());
            for _ in 0..WRITE_BATCH {
                let i = support::next_random(&mut state) % ENTRIES;
                keys.extend(key(i));
                values.extend(value(i, generation));
            }
            generation += 1;
            let (done, result) =
                sys::update_batch(map.fd.as_fd(), &keys, &values, WRITE_BATCH as u32);
            result.expect("batch update of existing keys");
            writes.fetch_add(u64::from(done), Ordering::Relaxed);
            std::thread::sleep(WRITE_PAUSE);
        }
    })
}

fn bench_aya(c: &mut Criterion, fixture: &Fixture) {
    let data = aya::maps::MapData::from_pin(&fixture.pin).expect("aya opens the pinned map");
    let map: aya::maps::HashMap<_, [u8; 8], [u8; 16]> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data)).expect("a hash of 8/16 bytes");
    let mut next = 0;
    c.bench_function("aya_hashmap_get", |b| {
        b.iter(|| {
            next = (next + 1) % KEYS;
            black_box(map.get(&fixture.keys[next], 0).expect("key present"))
        })
    });
}

fn bench_snapshot_during_writes(c: &mut Criterion, fixture: &Fixture) {
    let store = fixture.sync.store().clone();
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = spawn_writer(fixture, stop.clone(), writes.clone());
    let (revision0, writes0, started) = (
        store.revision(),
        writes.load(Ordering::Relaxed),
        Instant::now(),
    );
    let mut next = 0;
    c.bench_function("snapshot_get_during_writes", |b| {
        b.iter(|| {
            next = (next + 1) % KEYS;
            black_box(snapshot_read(&store, &fixture.keys[next]).expect("key present"))
        })
    });
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer thread did not panic");
    let written = writes.load(Ordering::Relaxed) - writes0;
    let applied = store.revision() - revision0;
    // (a test-mode run, `cargo test --benches`, is too short to say anything)
    if seconds < 1.0 {
        return;
    }
    println!(
        "  meanwhile: {:.0} writes/s through bpf(), {:.0} revisions/s published by the sync",
        written as f64 / seconds,
        applied as f64 / seconds
    );
}

fn main() {
    if !support::require_kernel() {
        return;
    }
    let fixture = Fixture::new();
    let mut c = Criterion::default().configure_from_args();
    bench_snapshot(&mut c, &fixture);
    bench_handle(&mut c, &fixture);
    bench_snapshot_same_key(&mut c, &fixture);
    bench_references(&mut c, &fixture);
    bench_aya(&mut c, &fixture);
    bench_snapshot_during_writes(&mut c, &fixture);
    c.final_summary();
    // `cargo test --benches` runs each benchmark once: a short summary too
    let quick = std::env::args().all(|arg| arg != "--bench");
    summary(&fixture, if quick { 2 } else { 400 });
    let Fixture { runtime, sync, .. } = fixture;
    runtime
        .block_on(sync.shutdown())
        .expect("the sync shuts down cleanly");
}
