//! Switchable maps and the atomic apply, on a real kernel: a BPF checker
//! program run with `BPF_PROG_TEST_RUN` never sees a mix of two sets while
//! applies switch them (and does see one on a plain map written with a batch
//! update), concurrent applies with one expected version, the mirror's one
//! revision per switch, capture of writes into the active inner map, an
//! outer map made with bpftool, and a restart after kill -9.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mapsync_core::control::{Apply, ApplyMode};
use mapsync_core::{MapInfo, MapKind, Store};
use mapsync_kernel::switch::{self, SwitchShape};
use mapsync_kernel::switchtest::{CheckedSet, SwitchChecker};
use mapsync_kernel::{MapSpec, MapSync, SyncConfig, dump, sys};
use mapsync_test_support::{self as support, PinDir};

const KEYS: u32 = mapsync_ebpf::SWITCHTEST_KEYS;

fn shape() -> SwitchShape {
    SwitchShape {
        kind: MapKind::Hash,
        key_size: 4,
        value_size: 16,
        max_entries: KEYS,
    }
}

fn value(tag: u64, payload: u64) -> Vec<u8> {
    [tag.to_ne_bytes(), payload.to_ne_bytes()].concat()
}

/// Keys 0..n, every value tagged `tag`.
fn tagged(tag: u64, n: u32) -> Vec<(Bytes, Option<Bytes>)> {
    (0..n)
        .map(|key| {
            (
                Bytes::copy_from_slice(&key.to_ne_bytes()),
                Some(Bytes::from(value(tag, u64::from(key)))),
            )
        })
        .collect()
}

fn apply(
    map: &str,
    mode: ApplyMode,
    entries: Vec<(Bytes, Option<Bytes>)>,
    expect: Option<u64>,
) -> Apply {
    Apply {
        map: map.into(),
        mode,
        entries,
        expect_version: expect,
    }
}

async fn start(pins: &PinDir, maps: Vec<MapSpec>) -> MapSync {
    MapSync::start(SyncConfig {
        maps,
        pin_dir: pins.join("capture"),
        reconcile_interval: None,
        ..SyncConfig::default()
    })
    .await
    .expect("start")
}

fn mirror(store: &Store, name: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    store
        .load()
        .map(name)
        .expect("mirrored")
        .iter()
        .map(|(key, entry)| (key.to_vec(), entry.value.to_vec()))
        .collect()
}

/// The kernel's active set of the switchable map pinned at `outer`, its id
/// and the version its store holds for it.
fn kernel_set(outer: &Path) -> (BTreeMap<Vec<u8>, Vec<u8>>, u32, Option<u64>) {
    let outer_fd = sys::obj_get(outer).expect("open the outer pin");
    let id = sys::outer_slot(outer_fd.as_fd(), 0)
        .expect("read slot 0")
        .expect("slot 0 holds a map");
    let inner = sys::map_fd_by_id(id).expect("open the active inner map");
    let info = MapInfo::new("active", MapKind::Hash, 4, 16, KEYS);
    let set = dump::dump(inner.as_fd(), &info)
        .expect("dump")
        .entries
        .into_iter()
        .map(|(key, value, _)| (key.to_vec(), value.to_vec()))
        .collect();
    let versions = sys::obj_get(&switch::version_pin(outer)).expect("version store");
    let mut version = [0u8; 8];
    let found = sys::lookup(versions.as_fd(), &id.to_ne_bytes(), &mut version).expect("lookup");
    (set, id, found.then(|| u64::from_ne_bytes(version)))
}

fn tag_of(value: &[u8]) -> u64 {
    u64::from_ne_bytes(value[..8].try_into().expect("8 bytes"))
}

/// Runs the checker over `set` on its own thread until `stop`; `mixed`
/// follows the count of runs that saw a mix.
fn spawn_checker(
    mut checker: SwitchChecker,
    set: CheckedSet,
    stop: Arc<AtomicBool>,
    mixed: Arc<AtomicU64>,
) -> std::thread::JoinHandle<SwitchChecker> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            checker.run(set, 1).expect("checker run");
            mixed.store(checker.counts().expect("counts").mixed, Ordering::Relaxed);
        }
        checker
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_program_never_sees_a_mix_while_applies_switch_but_does_on_a_batch_updated_map() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("switch-atomic");
    let outer = pins.join(mapsync_ebpf::SWITCHTEST_SET_MAP);
    switch::create(&outer, shape()).expect("create the switchable map");
    let checker = SwitchChecker::load(pins.path()).expect("load the checker");
    let plain = checker.plain_map().expect("plain map");
    let sync = start(&pins, vec![MapSpec::switch(Some("set"), &outer)]).await;
    let handle = sync.commands();
    // the first full set, before the checker runs (an empty set misses keys)
    let first = handle
        .apply(apply("set", ApplyMode::Replace, tagged(2, KEYS), Some(1)))
        .await
        .expect("first apply");
    assert_eq!(first.applied.expect("applied").version, 2);

    let stop = Arc::new(AtomicBool::new(false));
    let running = spawn_checker(
        checker,
        CheckedSet::Switchable,
        stop.clone(),
        Arc::default(),
    );
    let started = Instant::now();
    let mut switch_ns = Vec::new();
    for version in 2..102u64 {
        // each apply's entries all carry the version it makes live
        let outcome = handle
            .apply(apply(
                "set",
                ApplyMode::Replace,
                tagged(version + 1, KEYS),
                Some(version),
            ))
            .await
            .expect("apply");
        let applied = outcome.applied.expect("applied");
        assert_eq!(
            (applied.version, applied.entries, applied.changed),
            (version + 1, u64::from(KEYS), u64::from(KEYS))
        );
        switch_ns.push(applied.switch_ns);
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let checker = running.join().expect("checker thread");
    let counts = checker.counts().expect("counts");
    switch_ns.sort_unstable();
    eprintln!(
        "100 applies of {KEYS} entries in {took:?}; switch p50 {} us; checker {counts:?}",
        switch_ns[50] / 1000
    );
    assert!(counts.runs >= 20, "the checker ran throughout: {counts:?}");
    assert_eq!(counts.mixed, 0, "a run saw two sets: {counts:?}");
    assert_eq!(
        counts.version_mismatch, 0,
        "a run read another set's version: {counts:?}"
    );
    assert_eq!(counts.missing, 0, "a run missed keys: {counts:?}");
    let (set, _, version) = kernel_set(&outer);
    assert_eq!(version, Some(102));
    assert!(set.values().all(|value| tag_of(value) == 102));
    assert_eq!(
        mirror(sync.store(), "set"),
        set,
        "the mirror is the active set"
    );
    assert_eq!(sync.store().load().map("set").expect("set").version(), 102);
    sync.shutdown().await.expect("shutdown");

    // the control: the same checker over a plain map that a batch update
    // rewrites in place sees a mix (the test can fail)
    let write = |tag: u64| {
        let keys: Vec<u8> = (0..KEYS).flat_map(u32::to_ne_bytes).collect();
        let values: Vec<u8> = (0..KEYS)
            .flat_map(|key| value(tag, u64::from(key)))
            .collect();
        let (count, result) = sys::update_batch(plain.as_fd(), &keys, &values, KEYS);
        result.expect("batch update");
        assert_eq!(count, KEYS);
    };
    write(0);
    let stop = Arc::new(AtomicBool::new(false));
    let mixed = Arc::new(AtomicU64::new(0));
    let running = spawn_checker(checker, CheckedSet::Plain, stop.clone(), mixed.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tag = 1;
    while Instant::now() < deadline && mixed.load(Ordering::Relaxed) == 0 {
        write(tag);
        tag += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let counts = running
        .join()
        .expect("checker thread")
        .counts()
        .expect("counts");
    eprintln!("plain map: {} batch updates; checker {counts:?}", tag - 1);
    assert!(
        counts.mixed > 0,
        "the checker never saw a half-applied batch update: {counts:?}"
    );
}
