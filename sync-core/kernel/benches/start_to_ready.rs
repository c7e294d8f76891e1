//! Start to ready and resync of a 1M-entry kernel map, end to end.
//!
//! Creates a pinned kernel HASH map of 1,000,000 entries (8-byte keys,
//! 16-byte values), fills it with batch updates, then measures, in one run:
//!
//! - `dump`: the kernel dump alone (`mapsync_kernel::dump::dump`, batched
//!   lookups, what a resync takes), the reference the rates are given
//!   against;
//! - `walk dump`: the dump start takes for a hash map
//!   (`dump::walk::dump_walking`: one `bpf_for_each_map_elem` into an
//!   mmapable array), the floor under start;
//! - `store build`: `Publisher::add_dump` of that dump on a bare store, and
//!   on its own the sort it starts with (`DumpEntries::sorted`);
//! - `diff (unchanged)`: `Publisher::apply_dump` of a second dump on that
//!   store (the resync's walk, without its dump, settle and drain);
//! - `start to ready`: `MapSync::start` (trace attach + dump + store build +
//!   publish) until the mirror holds every entry, with its phases
//!   (`MapSync::start_phases`) for the best run;
//! - `resync (unchanged)`: `MapSync::resync` of the map when nothing changed
//!   (dump + one sorted diff walk, no events);
//! - `resync (10% changed)`: the same after 100,000 values were rewritten
//!   without a capture source seeing it (a batch update before start of a
//!   second map is not possible, so the rewrite goes through `bpf()` and is
//!   traced: the resync then mostly confirms what ingest already applied).
//!
//! Each figure is printed as entries/s beside the dump's own rate.
//! Run (root, bpffs mounted): `cargo bench -p mapsync-kernel --bench start_to_ready`.
#![allow(
    clippy::print_stdout,
    reason = "a benchmark's job is to print its figures"
)]

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use mapsync_core::{EventSource, Store};
use mapsync_kernel::{MapSpec, MapSync, SyncConfig, dump, open, sys};
use mapsync_test_support::{self as support, PinDir};

const MAP: &str = "flows";
/// Entries per batch update while filling.
const FILL_BATCH: u64 = 50_000;
/// Runs of each figure (the best is printed, and the median).
const RUNS: usize = 3;

fn key(i: u64) -> [u8; 8] {
    i.to_ne_bytes()
}

fn value(i: u64, generation: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&i.to_ne_bytes());
    v[8..].copy_from_slice(&generation.to_ne_bytes());
    v
}

fn fill(pin: &std::path::Path, entries: u64, step: u64, generation: u64) {
    let map = open::open(&MapSpec::pin(None, pin)).expect("open the map");
    let mut first = 0;
    while first < entries {
        let last = (first + FILL_BATCH * step).min(entries);
        let ids: Vec<u64> = (first..last).step_by(step as usize).collect();
        let keys: Vec<u8> = ids.iter().copied().flat_map(key).collect();
        let values: Vec<u8> = ids.iter().flat_map(|i| value(*i, generation)).collect();
        let (done, result) = sys::update_batch(map.fd.as_fd(), &keys, &values, ids.len() as u32);
        result.expect("batch update");
        assert_eq!(done as usize, ids.len());
        first = last;
    }
}

/// CPU time of the whole process, every thread (the batch dump and a start
/// use several): on a shared machine, wall time is also the
/// other tenants' time. Nothing else of this process runs while the
/// figures that use it are taken (no sync is started yet).
fn process_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write to.
    unsafe {
        libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now);
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

fn report(what: &str, entries: u64, times: &mut [Duration], dump_rate: f64) {
    times.sort();
    let best = times[0].as_secs_f64();
    let median = times[times.len() / 2].as_secs_f64();
    let rate = entries as f64 / best;
    println!(
        "{what:<28} best {:>8.1} ms  median {:>8.1} ms  {:>6.2} M entries/s  ({:.2}x the dump's rate)",
        best * 1e3,
        median * 1e3,
        rate / 1e6,
        rate / dump_rate
    );
}

fn main() {
    if !support::require_kernel() {
        return;
    }
    // `cargo test --benches`: a small map, one run, to check the bench works
    let quick = std::env::args().all(|arg| arg != "--bench");
    let entries: u64 = if quick { 10_000 } else { 1_000_000 };
    let runs = if quick { 1 } else { RUNS };
    let pins = PinDir::new("bench-start-to-ready");
    let pin = pins.join(MAP);
    support::create_map(&pin, "hash", 8, 16, entries as u32, MAP);
    fill(&pin, entries, 1, 0);
    let map = open::open(&MapSpec::pin(None, &pin)).expect("open");
    println!("{entries} entries, 8-byte keys, 16-byte values; best of {runs} runs");

    let mut dumps = Vec::new();
    let (mut sorts, mut builds, mut diffs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut dump_cpu, mut sort_cpu, mut build_cpu, mut diff_cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let (started, cpu) = (Instant::now(), process_cpu());
        let dumped = dump::dump(map.fd.as_fd(), &map.info).expect("dump");
        dumps.push(started.elapsed());
        dump_cpu.push(process_cpu() - cpu);
        // two threads read a large map, each half of its buckets, and
        // where they meet a key may be read twice
        assert!(dumped.entries.len() as u64 >= entries);
        let (started, cpu) = (Instant::now(), process_cpu());
        let distinct = dumped.entries.sorted().len() as u64;
        sorts.push(started.elapsed());
        sort_cpu.push(process_cpu() - cpu);
        assert_eq!(distinct, entries);
        let (store, mut writer) = Store::new(Default::default());
        let (started, cpu) = (Instant::now(), process_cpu());
        writer.add_dump(map.info.clone(), dumped.entries, dumped.started_ns);
        builds.push(started.elapsed());
        build_cpu.push(process_cpu() - cpu);
        assert_eq!(store.load().map(MAP).expect("added").len() as u64, entries);
        let again = dump::dump(map.fd.as_fd(), &map.info).expect("dump");
        let (before, started, cpu) = (store.revision(), Instant::now(), process_cpu());
        let after = writer.apply_dump(MAP, again, EventSource::Resync);
        diffs.push(started.elapsed());
        diff_cpu.push(process_cpu() - cpu);
        assert_eq!(after, before, "nothing changed, no event");
    }
    dumps.sort();
    let dump_rate = entries as f64 / dumps[0].as_secs_f64();
    report("dump (kernel, reference)", entries, &mut dumps, dump_rate);
    let (mut walks, mut walk_cpu) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (started, cpu) = (Instant::now(), process_cpu());
        let walked =
            dump::walk::dump_walking(map.fd.as_fd(), &map.info, pins.path()).expect("walk dump");
        walks.push(started.elapsed());
        walk_cpu.push(process_cpu() - cpu);
        assert_eq!(walked.len() as u64, entries, "each entry once");
    }
    report("walk dump (start's)", entries, &mut walks, dump_rate);
    report("store build (add_dump)", entries, &mut builds, dump_rate);
    report("  of which the sort", entries, &mut sorts, dump_rate);
    report("diff (apply_dump, same)", entries, &mut diffs, dump_rate);
    let best = |times: &mut Vec<Duration>| {
        times.sort();
        times[0].as_secs_f64()
    };
    let (dump_cpu, build_cpu) = (best(&mut dump_cpu), best(&mut build_cpu));
    let walk_cpu = best(&mut walk_cpu);
    let (sort_cpu, diff_cpu) = (best(&mut sort_cpu), best(&mut diff_cpu));
    let rate = |seconds: f64| entries as f64 / seconds / 1e6;
    println!(
        "  CPU time (all threads), best: batch dump {:.1} ms ({:.2} M entries/s), walk dump {:.1} ms ({:.2} M/s), store build {:.1} ms ({:.2} M/s; sort {:.1} ms), walk + build {:.2} M entries/s; diff {:.1} ms ({:.2} M/s)",
        dump_cpu * 1e3,
        rate(dump_cpu),
        walk_cpu * 1e3,
        rate(walk_cpu),
        build_cpu * 1e3,
        rate(build_cpu),
        sort_cpu * 1e3,
        rate(walk_cpu + build_cpu),
        diff_cpu * 1e3,
        rate(diff_cpu),
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut starts = Vec::new();
    let mut start_cpu = Vec::new();
    let mut phases = Vec::new();
    let mut last = None;
    for run in 0..runs {
        // the previous run's sync is idle meanwhile (nothing writes)
        let (started, cpu) = (Instant::now(), process_cpu());
        let sync = runtime
            .block_on(MapSync::start(SyncConfig {
                maps: vec![MapSpec::pin(None, &pin)],
                pin_dir: pins.join(&format!("capture-{run}")),
                reconcile_interval: None,
                ..SyncConfig::default()
            }))
            .expect("start the sync");
        runtime.block_on(sync.store().wait_ready());
        starts.push(started.elapsed());
        start_cpu.push(process_cpu() - cpu);
        phases.push((started.elapsed(), sync.start_phases()));
        let held = sync.store().load().map(MAP).expect("mirrored").len() as u64;
        assert_eq!(held, entries, "ready with every entry");
        if let Some(previous) = last.replace(sync) {
            runtime
                .block_on(MapSync::shutdown(previous))
                .expect("shutdown");
        }
    }
    report("start to ready (MapSync)", entries, &mut starts, dump_rate);
    let start_cpu = best(&mut start_cpu);
    println!(
        "  CPU time of a start (all threads), best: {:.1} ms ({:.2} M entries per CPU-second)",
        start_cpu * 1e3,
        rate(start_cpu)
    );
    phases.sort_by_key(|(took, _)| *took);
    let (_, phases) = phases[0];
    let ms = |phase: Duration| phase.as_secs_f64() * 1e3;
    println!(
        "  phases of the best: open {:.1} ms, capture (load + attach + watch) {:.1} ms, dump {:.1} ms ({} map(s) walked), build {:.1} ms, catch-up {:.1} ms",
        ms(phases.open),
        ms(phases.capture),
        ms(phases.dump),
        phases.walks,
        ms(phases.build),
        ms(phases.catch_up)
    );
    println!(
        "  target: >= 2 M entries/s end to end, i.e. start to ready in <= {:.0} ms",
        entries as f64 / 2e6 * 1e3
    );

    let sync = last.expect("a running sync");
    let mut resyncs = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        runtime.block_on(sync.resync(Some(MAP))).expect("resync");
        resyncs.push(started.elapsed());
    }
    report("resync (unchanged)", entries, &mut resyncs, dump_rate);

    let mut changed = Vec::new();
    for generation in 1..=runs as u64 {
        fill(&pin, entries, 10, generation);
        let started = Instant::now();
        runtime.block_on(sync.resync(Some(MAP))).expect("resync");
        changed.push(started.elapsed());
    }
    report("resync (10% rewritten)", entries, &mut changed, dump_rate);
    let stats = sync.stats();
    println!(
        "  (resyncs {}, records {}, drops {})",
        stats.resyncs, stats.records, stats.drops
    );
    // on a loaded machine the ingest thread may still be in a resync (the
    // rewrites overflowed the ring) past the shutdown's wait: say so, the
    // figures above stand
    if let Err(error) = runtime.block_on(sync.shutdown()) {
        println!("  (shutdown: {error})");
    }
}
