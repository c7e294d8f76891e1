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
//! - `after churn`: the mirror after 500,000 puts of existing keys through
//!   `Publisher::apply` (overlay merged into new bases along the way);
//! - `allocations per put`: heap allocations inside `Publisher::apply` per
//!   put of an existing key, batches of 64, the `Change`s built beforehand
//!   from a cached map name and slices of one shared buffer (what the
//!   decoder side can do without allocating).
//!
//! Run: `cargo bench -p mapsync-kernel --bench memory`.
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
use mapsync_core::{Change, EventSource, MapInfo, MapKind, Store};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
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
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MAP: &str = "flows";
const BATCH: usize = 64;

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

fn main() {
    let quick = std::env::args().all(|arg| arg != "--bench");
    let n: u64 = if quick { 20_000 } else { 1_000_000 };
    let raw = n as usize * 24;
    println!(
        "{n} entries, 8-byte keys, 16-byte values: {:.1} MB raw",
        mb(raw)
    );

    let (live0, rss0) = (live(), rss());
    let (store, mut writer) = Store::new(Default::default());
    let dump: Vec<(Bytes, Bytes, u64)> = (0..n)
        .map(|i| {
            let (k, v) = entry(i, 0);
            (Bytes::copy_from_slice(&k), Bytes::copy_from_slice(&v), 1)
        })
        .collect();
    let info = MapInfo::new(MAP, MapKind::Hash, 8, 16, n as u32).with_id(1);
    writer.add_map(info, dump, 0);
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

    // allocations per put of an existing key: Changes prepared outside
    let name: Arc<str> = MAP.into();
    let puts = (n / 2) as usize;
    let buffer = Bytes::from(
        (0..puts as u64)
            .flat_map(|i| {
                let (k, v) = entry((i * 7919) % n, 1);
                k.into_iter().chain(v)
            })
            .collect::<Vec<u8>>(),
    );
    let changes: Vec<Change> = (0..puts)
        .map(|i| Change {
            map: name.clone(),
            key: buffer.slice(i * 24..i * 24 + 8),
            value: Some(buffer.slice(i * 24 + 8..i * 24 + 24)),
            source: EventSource::Trace,
            observed_ns: 2 + i as u64,
        })
        .collect();
    let mut changes = changes.into_iter();
    let (mut calls, mut applied) = (0usize, 0usize);
    let (started, cpu0) = (Instant::now(), thread_cpu());
    loop {
        let batch: Vec<Change> = changes.by_ref().take(BATCH).collect();
        if batch.is_empty() {
            break;
        }
        applied += batch.len();
        let before = CALLS.load(Ordering::Relaxed);
        writer.apply(batch);
        calls += CALLS.load(Ordering::Relaxed) - before;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = thread_cpu().saturating_sub(cpu0).as_secs_f64();
    println!(
        "allocations per put of an existing key (Publisher::apply, batches of {BATCH}): {:.2} ({applied} puts, {:.2} M puts/s wall, {:.2} M puts per CPU-second of the writer thread)",
        calls as f64 / applied as f64,
        applied as f64 / seconds / 1e6,
        applied as f64 / cpu / 1e6
    );
    settle();
    let churned = live() - live0;
    println!(
        "after churn: {:>7.1} MB allocated (mirror + change log of {} events + the prepared changes' buffer {:.1} MB)",
        mb(churned),
        store.load().log().len(),
        mb(buffer.len())
    );
}
