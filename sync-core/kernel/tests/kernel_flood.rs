//! Floods on a real kernel: writers faster than ingest (the ring overflows
//! for as long as they run), and a fully captured flood under a frequent
//! reconcile.
//!
//! Values are the writer's CLOCK_MONOTONIC time at the write, and each key
//! has one writer, so a key's value only grows: "the mirror holds a value
//! at least as new as the kernel's at time T" is a per-key comparison.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mapsync_core::{EventSource, Op, Store, SubscribeFilter, WatchBatch};
use mapsync_kernel::{MapSpec, MapSync, SyncConfig};
use mapsync_kernel::{dump, open, sys};
use mapsync_test_support::{self as support, PinDir};

const KEYS: u32 = 4096;

fn value_of(bytes: &[u8]) -> u64 {
    u64::from_ne_bytes(bytes.try_into().expect("8-byte values"))
}

/// Each writer owns the keys `k % writers == index` and writes the time.
fn spawn_writers(
    pin: &std::path::Path,
    writers: u32,
    pace: Option<Duration>,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<u64>> {
    (0..writers)
        .map(|index| {
            let map = open::open(&MapSpec::pin(None, pin)).expect("open for writing");
            let stop = stop.clone();
            std::thread::spawn(move || {
                // the writers outrun ingest through the ring, not by taking
                // its CPU: on a 2-core test machine they would otherwise
                // starve the ingest thread itself
                // SAFETY: setpriority on the calling thread (tid 0 = self)
                unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
                let mut writes = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for key in (index..KEYS).step_by(writers as usize) {
                        let now = sys::monotonic_ns();
                        sys::update(map.fd.as_fd(), &key.to_ne_bytes(), &now.to_ne_bytes(), 0)
                            .expect("update");
                        writes += 1;
                        if let Some(pace) = pace {
                            std::thread::sleep(pace);
                        }
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                }
                writes
            })
        })
        .collect()
}

fn mirror(store: &Store, map: &str) -> HashMap<Vec<u8>, u64> {
    store
        .load()
        .map(map)
        .expect("mirrored")
        .iter()
        .map(|(key, entry)| (key.to_vec(), value_of(entry.value)))
        .collect()
}

/// Keys whose mirrored value is older than the kernel's in `kernel`.
fn behind(kernel: &BTreeMap<Vec<u8>, u64>, mirror: &HashMap<Vec<u8>, u64>) -> usize {
    kernel
        .iter()
        .filter(|(key, value)| mirror.get(*key).is_none_or(|held| held < value))
        .count()
}

/// `RUST_LOG=mapsync_core=info` shows the ingest task's resync lines.
fn log_to_test_output() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_an_endless_overflow_losses_are_found_within_a_tick_and_the_mirror_stays_close() {
    if !support::require_kernel() {
        return;
    }
    log_to_test_output();
    let pins = PinDir::new("overload");
    let hash = pins.join("flood");
    support::create_map(&hash, "hash", 4, 8, KEYS, "flood");
    let capture = pins.join("capture");
    let sync = MapSync::start(SyncConfig {
        maps: vec![MapSpec::pin(None, &hash)],
        pin_dir: capture.clone(),
        ring_bytes: 16 * 1024,
        reconcile_interval: None,
        ..SyncConfig::default()
    })
    .await
    .expect("start");
    let store = sync.store().clone();
    let stats = sync.stats_handle();
    let kernel_map = open::open(&MapSpec::pin(None, &hash)).expect("open");
    let drops_fd = sys::obj_get(&capture.join("mapsync_drops")).expect("pinned drop counters");
    let cpus = support::possible_cpus();

    // first kernel drop -> first resync, watched every millisecond
    let stop = Arc::new(AtomicBool::new(false));
    let first_drop_to_resync = Arc::new(AtomicU64::new(u64::MAX));
    let timer = {
        let stop = stop.clone();
        let stats = stats.clone();
        let out = first_drop_to_resync.clone();
        std::thread::spawn(move || {
            let mut first_drop = None;
            let mut counters = vec![0u8; cpus * 8];
            while !stop.load(Ordering::Relaxed) {
                sys::lookup(drops_fd.as_fd(), &0u32.to_ne_bytes(), &mut counters)
                    .expect("drop counters");
                let drops: u64 = counters.chunks_exact(8).map(value_of).sum();
                if first_drop.is_none() && drops > 0 {
                    first_drop = Some(Instant::now());
                }
                if let Some(at) = first_drop
                    && stats.snapshot().resyncs > 0
                {
                    out.store(at.elapsed().as_micros() as u64, Ordering::Relaxed);
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };

    // a watcher from the first revision: it follows every resync as events,
    // or is told COMPACTED; never silence
    let mut watch = store
        .subscribe(store.revision() + 1, SubscribeFilter::default())
        .expect("subscribe");
    let mut watched: HashMap<Vec<u8>, u64> = mirror(&store, "flood");
    let watcher = tokio::spawn(async move {
        let mut events = 0u64;
        while let Ok(Some(batch)) = tokio::time::timeout(Duration::from_secs(2), watch.next()).await
        {
            match batch {
                Ok(WatchBatch::Events(batch)) => {
                    for event in batch {
                        events += 1;
                        match &event.value {
                            Some(value) => watched.insert(event.key.to_vec(), value_of(value)),
                            None => watched.remove(&event.key[..]),
                        };
                    }
                }
                Ok(WatchBatch::InitialStateDone { .. }) => {}
                Err(mapsync_core::SyncError::Compacted { .. }) => return (events, None),
                Err(error) => panic!("watch failed: {error}"),
            }
        }
        (events, Some(watched))
    });
    let writers = spawn_writers(&hash, 2, None, stop.clone());
    let flood = Duration::from_secs(10);
    let started = Instant::now();
    // sample: the kernel's content at T, then how long until the mirror holds
    // every key at least as new as that
    let mut catch_up = Vec::new();
    while started.elapsed() < flood {
        let at = Instant::now();
        let kernel: BTreeMap<Vec<u8>, u64> = dump::dump(kernel_map.fd.as_fd(), &kernel_map.info)
            .expect("dump")
            .entries
            .iter()
            .map(|(key, value, _)| (key.to_vec(), value_of(value)))
            .collect();
        loop {
            let late = behind(&kernel, &mirror(&store, "flood"));
            if late == 0 {
                catch_up.push(at.elapsed());
                break;
            }
            assert!(
                at.elapsed() < Duration::from_secs(5),
                "the mirror stayed {late} keys behind a dump for 5 s: {:?}",
                stats.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let writes: u64 = writers.into_iter().map(|w| w.join().expect("writer")).sum();
    timer.join().expect("timer");
    let seen = stats.snapshot();

    catch_up.sort();
    let detect = first_drop_to_resync.load(Ordering::Relaxed);
    eprintln!(
        "flood: {writes} writes in {flood:?} ({:.0} k/s); records read {}, dropped {}, holes {}, resyncs {}",
        writes as f64 / flood.as_secs_f64() / 1e3,
        seen.records,
        seen.drops,
        seen.seq_gaps,
        seen.resyncs
    );
    eprintln!(
        "first drop -> first resync: {:.1} ms; mirror behind a kernel dump, over {} samples: p50 {:?}, p99 {:?}, max {:?} (tick 100 ms)",
        detect as f64 / 1e3,
        catch_up.len(),
        percentile(&catch_up, 0.5),
        percentile(&catch_up, 0.99),
        catch_up.last().expect("samples"),
    );
    assert!(
        seen.drops > 0,
        "the writers must outrun ingest for this test to mean anything: {seen:?}"
    );
    assert_ne!(detect, u64::MAX, "a resync followed the first drop");
    assert!(
        detect < 300_000,
        "first drop -> first resync took {detect} us (bound: 300 ms)"
    );
    assert!(
        seen.resyncs >= 10,
        "resyncs went on for as long as the losses did: {seen:?}"
    );
    // one tick plus one dump, with room for a loaded 2-core machine
    let worst = *catch_up.last().expect("samples");
    assert!(
        worst < Duration::from_millis(1500),
        "the mirror fell {worst:?} behind the kernel"
    );

    // after the flood: converged, byte for byte
    let kernel = support::dump(&hash);
    let mut converged = false;
    for _ in 0..100 {
        let held: BTreeMap<Vec<u8>, Vec<u8>> = store
            .load()
            .map("flood")
            .expect("mirrored")
            .iter()
            .map(|(key, entry)| (key.to_vec(), entry.value.to_vec()))
            .collect();
        if held == kernel {
            converged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(converged, "the mirror converged after the flood");
    let (events, watched) = watcher.await.expect("watcher");
    match watched {
        Some(watched) => {
            let kernel: HashMap<Vec<u8>, u64> = kernel
                .iter()
                .map(|(k, v)| (k.clone(), value_of(v)))
                .collect();
            assert_eq!(watched, kernel, "the watcher's state equals the kernel's");
            eprintln!("watcher: {events} events, state equals the kernel");
        }
        None => eprintln!("watcher: {events} events, then COMPACTED (told to resync)"),
    }
    let before = sync.stats().resyncs;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sync.stats().resyncs,
        before,
        "no resync after the losses stopped (a loss is resynced once)"
    );
    sync.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fully_captured_flood_under_a_frequent_reconcile_repairs_nothing_and_delivers_once() {
    if !support::require_kernel() {
        return;
    }
    log_to_test_output();
    let pins = PinDir::new("reconcile-flood");
    let hash = pins.join("steady");
    support::create_map(&hash, "hash", 4, 8, KEYS, "steady");
    let sync = MapSync::start(SyncConfig {
        maps: vec![MapSpec::pin(None, &hash)],
        pin_dir: pins.join("capture"),
        ring_bytes: 16 * 1024 * 1024,
        reconcile_interval: Some(Duration::from_millis(200)),
        ..SyncConfig::default()
    })
    .await
    .expect("start");
    let store = sync.store().clone();
    let mut watch = store
        .subscribe(store.revision() + 1, SubscribeFilter::default())
        .expect("subscribe");
    let stop = Arc::new(AtomicBool::new(false));
    // well within what ingest keeps up with: nothing may be lost
    let writers = spawn_writers(&hash, 1, Some(Duration::from_micros(20)), stop.clone());
    let watcher = tokio::spawn(async move {
        let mut last: HashMap<Vec<u8>, u64> = HashMap::new();
        let (mut events, mut repeats, mut backwards, mut resync_events) = (0u64, 0u64, 0u64, 0u64);
        // the subscription lives as long as the store: stop once quiet
        while let Ok(Some(batch)) = tokio::time::timeout(Duration::from_secs(1), watch.next()).await
        {
            let WatchBatch::Events(batch) = batch.expect("no error") else {
                continue;
            };
            for event in batch {
                events += 1;
                if event.source == EventSource::Resync {
                    resync_events += 1;
                }
                if event.op != Op::Put {
                    continue;
                }
                let value = value_of(event.value.as_ref().expect("a put has a value"));
                match last.insert(event.key.to_vec(), value) {
                    Some(previous) if previous == value => repeats += 1,
                    Some(previous) if previous > value => backwards += 1,
                    _ => {}
                }
            }
        }
        (events, repeats, backwards, resync_events)
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let writes: u64 = writers.into_iter().map(|w| w.join().expect("writer")).sum();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = sync.stats();
    let kernel = support::dump(&hash);
    let held: BTreeMap<Vec<u8>, Vec<u8>> = store
        .load()
        .map("steady")
        .expect("mirrored")
        .iter()
        .map(|(key, entry)| (key.to_vec(), entry.value.to_vec()))
        .collect();
    sync.shutdown().await.expect("clean shutdown");
    drop(store);
    let (events, repeats, backwards, resync_events) =
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .expect("the subscription ends with the sync")
            .expect("watcher");
    eprintln!(
        "captured flood: {writes} writes, {events} events, {} reconciles, {} repairs, {resync_events} resync events, {repeats} repeated deliveries",
        seen.reconciles, seen.reconcile_repairs
    );
    assert_eq!(
        (seen.drops, seen.seq_gaps),
        (0, 0),
        "the flood must be fully captured for this test to mean anything: {seen:?}"
    );
    assert!(
        seen.reconciles >= 10,
        "reconciles ran during the flood: {seen:?}"
    );
    assert_eq!(seen.reconcile_repairs, 0, "nothing to repair: {seen:?}");
    assert_eq!(resync_events, 0, "no resync events");
    assert_eq!(repeats, 0, "no write delivered twice");
    assert_eq!(backwards, 0, "no key moved back");
    assert_eq!(events, writes, "every write delivered once");
    assert_eq!(held, kernel, "the mirror equals the kernel");
}
