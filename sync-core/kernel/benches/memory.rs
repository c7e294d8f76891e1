//! Memory of the mirror of 1M entries, and allocations per ingested put.
//!
//! Method: a counting `#[global_allocator]` (this binary only) tracks live
//! heap bytes and allocation calls; RSS comes from `/proc/self/statm`. Both
//! are read before the input is built and after it has been consumed and
//! freed (the store frees consumed dumps on its reclaimer thread: the bench
//! waits for the live bytes to settle, then calls `malloc_trim`).
//!
//! - `mirror`: `Publisher::add_map` of 1,000,000 entries (8-byte keys,
//!   16-byte values: 24 MB of raw bytes), no kernel needed;
//! - `reference`: `std::collections::HashMap<[u8; 8], [u8; 16]>` of the same
//!   entries (the bare in-memory map, as `snapshot_read` compares with);
//! - apply figures, one line per workload: heap allocations inside
//!   `Publisher::apply` per change and per publish, and changes per
//!   CPU-second of the writer thread (`CLOCK_THREAD_CPUTIME_ID`), for
//!   500,000 puts of existing keys (random: a stride over all keys;
//!   sequential; 1,000 hot keys) in batches of 64 and of 4,096, 250,000
//!   puts of new keys and 250,000 deletes of them, batches of 64. The
//!   `Change`s are built beforehand from a cached map name and slices of one
//!   shared buffer (what the decoder side can do without allocating);
//! - `after churn`: the mirror after all of that (levels merged into new
//!   bases along the way) with its change log;
//! - `single-change publish`: a fresh store with one map of 100,000
//!   entries, then 50,000 `Publisher::apply` calls of ONE put each (random
//!   existing keys; the change log filled to its bound first, as in a
//!   long-running mirror): microseconds per publish (CPU of the writer
//!   thread, and the wall-time p50 / p99 of one call).
//!
//! Run: `cargo bench -p mapsync-kernel --bench memory` (`-- single`: the
//! single-change publish figure alone; `-- sites`: that figure, and where
//! the allocations of a single-change publish and of a publish of 4,096
//! puts come from, `memory/sites.rs`).
#![allow(
    clippy::print_stdout,
    reason = "a benchmark's job is to print its figures"
)]
#![allow(unsafe_code, reason = "a counting global allocator must be unsafe")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mapsync_core::{Change, EventSource, MapInfo, MapKind, Publisher, Store};

#[path = "memory/sites.rs"]
mod sites;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        sites::on_alloc();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        sites::on_alloc();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MAP: &str = "flows";

/// Publishes whose allocation sites `-- sites` records, per workload.
const SITE_RUNS: usize = 20;
/// How many publishes to record the allocation sites of (`-- sites` only).
static SITES_OF: AtomicUsize = AtomicUsize::new(0);

fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("resident pages");
    pages * 4096
}

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Waits (up to 2 s) for the reclaimer thread to free what it was handed,
/// then returns freed heap pages to the kernel (`malloc_trim`), so that RSS
/// shows what is live rather than what glibc keeps cached.
fn settle() {
    wait_for_frees();
    // SAFETY: malloc_trim only releases free memory of glibc's heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn wait_for_frees() {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut last = live();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = live();
        if now == last {
            return;
        }
        last = now;
    }
}

/// CPU time of the calling thread (the machine is shared: wall time is not
/// this thread's time).
fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write to.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now);
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

fn entry(i: u64, generation: u64) -> ([u8; 8], [u8; 16]) {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&i.to_ne_bytes());
    value[8..].copy_from_slice(&generation.to_ne_bytes());
    (i.to_ne_bytes(), value)
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}

/// A store with the one map [`MAP`] of `n` entries (generation 0), added
/// from a dump built here.
fn store_of(n: u64) -> (Store, Publisher) {
    let (store, mut writer) = Store::new(Default::default());
    let dump: Vec<(Bytes, Bytes, u64)> = (0..n)
        .map(|i| {
            let (k, v) = entry(i, 0);
            (Bytes::copy_from_slice(&k), Bytes::copy_from_slice(&v), 1)
        })
        .collect();
    let info = MapInfo::new(MAP, MapKind::Hash, 8, 16, n as u32).with_id(1);
    writer.add_map(info, dump, 0);
    (store, writer)
}

/// Changes to [`MAP`], one per `(key, generation)` (a put of that
/// generation's value, or a delete for `None`), observed one after the
/// other from `clock` on: keys and values are slices of one shared buffer
/// and the map name one cached `Arc`, what the decoder side can do without
/// allocating.
fn changes(
    name: &Arc<str>,
    keys: impl Iterator<Item = (u64, Option<u64>)>,
    clock: &mut u64,
) -> Vec<Change> {
    let pairs: Vec<(u64, Option<u64>)> = keys.collect();
    let buffer = Bytes::from(
        pairs
            .iter()
            .flat_map(|(i, generation)| {
                let (k, v) = entry(*i, generation.unwrap_or(0));
                k.into_iter().chain(v)
            })
            .collect::<Vec<u8>>(),
    );
    pairs
        .iter()
        .enumerate()
        .map(|(at, (_, generation))| {
            *clock += 1;
            Change {
                map: name.clone(),
                key: buffer.slice(at * 24..at * 24 + 8),
                value: generation.map(|_| buffer.slice(at * 24 + 8..at * 24 + 24)),
                source: EventSource::Trace,
                observed_ns: *clock,
            }
        })
        .collect()
}

fn main() {
    let quick = std::env::args().all(|arg| arg != "--bench");
    let publishes = if quick { 5_000 } else { 50_000 };
    if std::env::args().any(|arg| arg == "single") {
        single_publish_figures(publishes);
        return;
    }
    if std::env::args().any(|arg| arg == "sites") {
        SITES_OF.store(SITE_RUNS, Ordering::Relaxed);
        single_publish_figures(publishes);
        sites::report("single-change publishes", SITE_RUNS);
        batch_sites(if quick { 20_000 } else { 1_000_000 });
        return;
    }
    let n: u64 = if quick { 20_000 } else { 1_000_000 };
    let raw = n as usize * 24;
    println!(
        "{n} entries, 8-byte keys, 16-byte values: {:.1} MB raw",
        mb(raw)
    );

    let (live0, rss0) = (live(), rss());
    let (store, mut writer) = store_of(n);
    settle();
    let (mirror_live, mirror_rss) = (live() - live0, rss().saturating_sub(rss0));
    let base = store.load().map(MAP).expect("added").base_bytes();
    println!(
        "mirror:     {:>7.1} MB allocated ({:.2}x raw; flat base {:.1} MB), RSS delta {:>7.1} MB ({:.2}x raw)",
        mb(mirror_live),
        mirror_live as f64 / raw as f64,
        mb(base),
        mb(mirror_rss),
        mirror_rss as f64 / raw as f64
    );

    let (live1, rss1) = (live(), rss());
    let reference: std::collections::HashMap<[u8; 8], [u8; 16]> =
        (0..n).map(|i| entry(i, 0)).collect();
    let (ref_live, ref_rss) = (live() - live1, rss().saturating_sub(rss1));
    println!(
        "reference:  {:>7.1} MB allocated ({:.2}x raw), RSS delta {:>7.1} MB  (std HashMap<[u8; 8], [u8; 16]>)",
        mb(ref_live),
        ref_live as f64 / raw as f64,
        mb(ref_rss)
    );
    drop(reference);

    // allocations per change and apply throughput: Changes prepared outside
    let name: Arc<str> = MAP.into();
    let puts = (n / 2) as usize;
    let mut clock = 2u64;
    let mut prepare =
        |keys: &mut dyn Iterator<Item = (u64, Option<u64>)>| changes(&name, keys, &mut clock);
    let random = |seed: u64| (0..puts as u64).map(move |i| ((i * 7919 + seed) % n, Some(seed)));
    let hot = |seed: u64| (0..puts as u64).map(move |i| ((i * 7919) % 1000, Some(seed)));
    let scenarios: Vec<(&str, usize, Vec<Change>)> = vec![
        ("puts of existing keys, random", 64, prepare(&mut random(1))),
        (
            "puts of existing keys, random",
            4096,
            prepare(&mut random(2)),
        ),
        (
            "puts of existing keys, sequential",
            64,
            prepare(&mut (0..puts as u64).map(|i| (i, Some(3)))),
        ),
        (
            "puts of existing keys, 1,000 hot keys",
            64,
            prepare(&mut hot(4)),
        ),
        (
            "puts of existing keys, 1,000 hot keys",
            4096,
            prepare(&mut hot(5)),
        ),
        (
            "puts of new keys",
            64,
            prepare(&mut (n..n + puts as u64 / 2).map(|i| (i, Some(6)))),
        ),
        (
            "deletes of existing keys",
            64,
            prepare(&mut (n..n + puts as u64 / 2).map(|i| (i, None))),
        ),
    ];
    for (label, batch, changes) in scenarios {
        apply_figures(&mut writer, label, batch, changes);
    }
    single_publish_figures(publishes);
    settle();
    let churned = live() - live0;
    println!(
        "after churn: {:>7.1} MB allocated (mirror of {} entries + change log of {} events, whose keys and values are slices of the prepared buffers)",
        mb(churned),
        store.load().map(MAP).expect("added").len(),
        store.load().log().len(),
    );
}

/// Applies `changes` in batches of `batch` and prints allocations per
/// change and per publish, and throughput per CPU-second of this thread.
fn apply_figures(writer: &mut Publisher, label: &str, batch: usize, changes: Vec<Change>) {
    let total = changes.len();
    let mut changes = changes.into_iter();
    let mut pending: Vec<Change> = Vec::with_capacity(batch);
    let (mut calls, mut publishes) = (0usize, 0usize);
    let revision0 = writer.store().revision();
    let (started, cpu0) = (Instant::now(), thread_cpu());
    loop {
        pending.extend(changes.by_ref().take(batch));
        if pending.is_empty() {
            break;
        }
        let before = CALLS.load(Ordering::Relaxed);
        writer.apply(pending.drain(..));
        calls += CALLS.load(Ordering::Relaxed) - before;
        publishes += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = thread_cpu().saturating_sub(cpu0).as_secs_f64();
    let events = writer.store().revision() - revision0;
    assert_eq!(events as usize, total, "every change took effect");
    println!(
        "{label}, batches of {batch}: {:.2} allocations per change ({:.1} per publish), {:.2} M changes per CPU-second of the writer thread ({:.2} M/s wall)",
        calls as f64 / total as f64,
        calls as f64 / publishes as f64,
        total as f64 / cpu / 1e6,
        total as f64 / seconds / 1e6,
    );
}

/// `-- sites` for publishes of 4,096 puts of random existing keys to a map
/// of `n` entries: 20 batches, then [`SITE_RUNS`] recorded ones.
fn batch_sites(n: u64) {
    const BATCH: usize = 4096;
    let (_store, mut writer) = store_of(n);
    let name: Arc<str> = MAP.into();
    let total = (20 + SITE_RUNS) * BATCH;
    let keys = (0..total as u64).map(|i| ((i * 7919) % n, Some(1)));
    let mut queued = changes(&name, keys, &mut 1).into_iter();
    for batch in 0..20 + SITE_RUNS {
        let changes: Vec<Change> = queued.by_ref().take(BATCH).collect();
        if batch < 20 {
            writer.apply(changes);
        } else {
            sites::record(|| writer.apply(changes));
        }
    }
    sites::report("publishes of 4,096 puts of random existing keys", SITE_RUNS);
}

/// Publishes `publishes` single puts of random existing keys on a fresh
/// store with one map of 100,000 entries (its change log first filled to
/// its bound by as many single puts) and prints the cost of one publish.
fn single_publish_figures(publishes: usize) {
    const ENTRIES: u64 = 100_000;
    let (store, mut writer) = store_of(ENTRIES);
    let name: Arc<str> = MAP.into();
    let warm = mapsync_core::LogLimits::default().max_events;
    let total = warm + publishes;
    let keys = (0..total as u64).map(|i| ((i * 7919) % ENTRIES, Some(i + 1)));
    let mut queued = changes(&name, keys, &mut 1).into_iter();
    // `-- sites`: the last single-change publishes of the warm-up are
    // recorded (the measured ones below are not)
    let recorded = SITES_OF.load(Ordering::Relaxed);
    for (at, one) in queued.by_ref().take(warm).enumerate() {
        if at + recorded >= warm {
            sites::record(|| writer.apply([one]));
        } else {
            writer.apply([one]);
        }
    }
    let mut walls: Vec<Duration> = Vec::with_capacity(publishes);
    let before = CALLS.load(Ordering::Relaxed);
    let cpu0 = thread_cpu();
    for one in queued {
        let started = Instant::now();
        writer.apply([one]);
        walls.push(started.elapsed());
    }
    let cpu = thread_cpu().saturating_sub(cpu0).as_secs_f64();
    let calls = CALLS.load(Ordering::Relaxed) - before;
    assert_eq!(store.revision() as usize, ENTRIES as usize + total);
    walls.sort_unstable();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "single-change publish, 100,000-entry map, log of {warm} events: {:.2} us per publish (CPU of the writer thread), wall p50 {:.2} us, p99 {:.2} us, {:.1} allocations per publish",
        cpu * 1e6 / publishes as f64,
        micros(walls[publishes / 2]),
        micros(walls[publishes * 99 / 100]),
        calls as f64 / publishes as f64,
    );
}
