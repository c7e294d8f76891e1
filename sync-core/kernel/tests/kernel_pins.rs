//! The pin directory and map identity against a real kernel: one instance
//! per pin directory (the lock), a pin directory off bpffs, one map under two
//! names, and a pin replaced or removed under a running sync.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mapsync_core::{EventSource, Op, SharedEvent, SubscribeFilter, Subscription, WatchBatch};
use mapsync_kernel::pin_dir::LockHolder;
use mapsync_kernel::{KernelError, MapSpec, MapSync, SyncConfig};
use mapsync_kernel::{open, sys};
use mapsync_test_support::{self as support, PinDir, mirror, wait_until};

/// The reconcile tick (and so the pin check) of the pin tests.
const TICK: Duration = Duration::from_millis(500);

fn config(pins: &PinDir, maps: Vec<MapSpec>) -> SyncConfig {
    SyncConfig {
        maps,
        pin_dir: pins.join("capture"),
        reconcile_interval: Some(TICK),
        ..SyncConfig::default()
    }
}

/// Every log line of this test binary (one global subscriber; tests tell
/// their lines apart by their unique map names).
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogSink(sink.clone()))
            .init();
        buffer
    })
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().write_all(bytes)?;
        self.0.lock().expect("log lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Log lines about map `name` that contain `text`.
fn lines_about(name: &str, text: &str) -> Vec<String> {
    let field = format!("map={name} ");
    String::from_utf8_lossy(&logs().lock().expect("log lock"))
        .lines()
        .filter(|line| line.contains(&field) && line.contains(text))
        .map(str::to_owned)
        .collect()
}

fn k(n: u8) -> [u8; 4] {
    [n, 0, 0, 0]
}

fn v8(n: u8) -> [u8; 8] {
    [n, 0, 0, 0, 0, 0, 0, 0]
}

fn map_id(pin: &Path) -> u32 {
    let fd = sys::obj_get(pin).expect("open pin");
    sys::map_info(fd.as_fd()).expect("map info").id
}

/// Events of the subscription until `done` says the collected ones suffice.
async fn events_until(
    sub: &mut Subscription,
    mut done: impl FnMut(&[SharedEvent]) -> bool,
) -> Vec<SharedEvent> {
    let mut seen = Vec::new();
    while !done(&seen) {
        let item = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("events in time");
        match item.expect("stream open").expect("no error") {
            WatchBatch::Events(events) => seen.extend(events),
            other => panic!("unexpected {other:?}"),
        }
    }
    seen
}

#[tokio::test]
async fn a_second_sync_on_one_pin_dir_is_refused_naming_the_holder_until_the_first_stops() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("lock");
    let pin = pins.join("locked");
    support::create_map(&pin, "hash", 4, 8, 16, "locked");
    let first = MapSync::start(config(&pins, vec![MapSpec::pin(None, &pin)]))
        .await
        .expect("first start");

    let error = MapSync::start(config(&pins, vec![MapSpec::pin(None, &pin)]))
        .await
        .expect_err("a second sync on the same pin dir");
    let KernelError::PinDirLocked { pin_dir, holder } = &error else {
        panic!("expected PinDirLocked, got {error}");
    };
    assert_eq!(pin_dir, &pins.join("capture"));
    assert_eq!(*holder, LockHolder::Pid(std::process::id()));
    let message = error.to_string();
    assert!(
        message.contains(&format!("pid {}", std::process::id()))
            && message.contains(&pins.join("capture").display().to_string()),
        "the message names the holder and the directory: {message}"
    );
    assert!(first.is_running(), "the refused start left the first alone");

    first.shutdown().await.expect("first shutdown");
    let again = MapSync::start(config(&pins, vec![MapSpec::pin(None, &pin)]))
        .await
        .expect("a new sync once the first has stopped");
    again.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn one_map_under_two_names_is_refused_by_pin_and_pin_or_pin_and_id() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("identity");
    let pin = pins.join("twice");
    support::create_map(&pin, "hash", 4, 8, 16, "twice");
    let id = map_id(&pin);

    let both_pins = vec![MapSpec::pin(Some("a"), &pin), MapSpec::pin(Some("b"), &pin)];
    let pin_and_id = vec![MapSpec::pin(Some("a"), &pin), MapSpec::id(Some("b"), id)];
    for maps in [both_pins, pin_and_id] {
        let error = MapSync::start(config(&pins, maps))
            .await
            .expect_err("one map under two names");
        match &error {
            KernelError::SameMapTwice {
                id: got,
                first,
                second,
            } => {
                assert_eq!((*got, first.as_str(), second.as_str()), (id, "a", "b"));
            }
            other => panic!("expected SameMapTwice, got {other}"),
        }
        let message = error.to_string();
        assert!(
            message.contains(&format!("map id {id}"))
                && message.contains("`a`")
                && message.contains("`b`"),
            "{message}"
        );
    }
    // the refusals released the lock
    let sync = MapSync::start(config(&pins, vec![MapSpec::pin(Some("a"), &pin)]))
        .await
        .expect("one name is fine");
    sync.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_pin_dir_on_tmpfs_is_refused_with_the_bpffs_message_and_nothing_created() {
    if !support::require_kernel() {
        return;
    }
    let on_tmpfs = PathBuf::from(format!("/dev/shm/mapsync-pins-test-{}", std::process::id()));
    std::fs::create_dir_all(&on_tmpfs).expect("a directory on tmpfs (/dev/shm)");
    let pins = PinDir::new("tmpfs");
    let pin = pins.join("elsewhere");
    support::create_map(&pin, "hash", 4, 8, 16, "elsewhere");

    let pin_dir = on_tmpfs.join("capture");
    let error = MapSync::start(SyncConfig {
        maps: vec![MapSpec::pin(None, &pin)],
        pin_dir: pin_dir.clone(),
        ..SyncConfig::default()
    })
    .await
    .expect_err("a pin dir on tmpfs");
    let message = error.to_string();
    std::fs::remove_dir_all(&on_tmpfs).expect("clean up");
    match &error {
        KernelError::NotBpffs {
            pin_dir: got,
            checked,
            fs,
        } => {
            assert_eq!(got, &pin_dir);
            assert_eq!(checked, &on_tmpfs, "the nearest existing parent");
            assert_eq!(fs, "tmpfs");
        }
        other => panic!("expected NotBpffs, got {other}"),
    }
    assert!(
        message.contains("not on bpffs") && message.contains("mount -t bpf bpf /sys/fs/bpf"),
        "{message}"
    );
    assert!(!pin_dir.exists(), "nothing was created off bpffs");
}

#[tokio::test]
async fn a_replaced_pin_is_followed_within_a_tick_as_a_full_diff_then_captured_live() {
    if !support::require_kernel() {
        return;
    }
    let name = "pins_replaced";
    logs();
    let pins = PinDir::new("replaced");
    let pin = pins.join(name);
    support::create_map(&pin, "hash", 4, 8, 64, name);
    for (key, value) in [(1, 1), (2, 2), (4, 4)] {
        support::update(&pin, &k(key), &v8(value)).expect("seed A");
    }
    let old = open::open(&MapSpec::pin(None, &pin)).expect("hold map A");
    let sync = MapSync::start(config(&pins, vec![MapSpec::pin(None, &pin)]))
        .await
        .expect("start");
    let store = sync.store().clone();
    assert_eq!(mirror(&store, name), support::dump(&pin));
    let mut sub = store
        .subscribe(store.revision() + 1, SubscribeFilter::maps([name]))
        .expect("subscribe");

    // B, filled before it appears at the pin path: what B holds then is
    // only seen through the switch's resync, not through capture
    std::fs::remove_file(&pin).expect("rm the pin");
    let staging = pins.join("staging");
    support::create_map(&staging, "hash", 4, 8, 128, name);
    for (key, value) in [(2, 22), (3, 3), (4, 4)] {
        support::update(&staging, &k(key), &v8(value)).expect("fill B");
    }
    let replaced_at = Instant::now();
    support::bpftool(&[
        "map",
        "pin",
        "pinned",
        staging.to_str().expect("utf-8"),
        pin.to_str().expect("utf-8"),
    ])
    .expect("pin B where A was");
    std::fs::remove_file(&staging).expect("rm the staging pin");
    let new_id = map_id(&pin);
    assert_ne!(new_id, old.info.id);

    let expected = support::dump(&pin);
    wait_until("the mirror holds B", 10 * TICK, || {
        mirror(&store, name) == expected
    })
    .await;
    let followed_after = replaced_at.elapsed();
    eprintln!("replaced pin followed after {followed_after:?} (tick {TICK:?})");
    // one tick, plus a dump of a small map on a loaded machine
    assert!(
        followed_after < TICK + Duration::from_secs(1),
        "followed after {followed_after:?}, more than one tick"
    );
    let info = store.snapshot().map(name).expect("mirrored").info().clone();
    assert_eq!(info.id, new_id, "the store describes the new map");
    assert_eq!(info.max_entries, 128);

    // the full diff: 1 deleted, 2 changed, 3 added, 4 unchanged (no event)
    let diff = events_until(&mut sub, |seen| seen.len() >= 3).await;
    let mut summary: Vec<_> = diff
        .iter()
        .map(|e| (e.op, e.key[0], e.value.as_ref().map(|v| v[0]), e.source))
        .collect();
    summary.sort_by_key(|(_, key, _, _)| *key);
    assert_eq!(
        summary,
        vec![
            (Op::Delete, 1, None, EventSource::Resync),
            (Op::Put, 2, Some(22), EventSource::Resync),
            (Op::Put, 3, Some(3), EventSource::Resync),
        ]
    );

    // A is no longer followed; B's writes are captured live
    sys::update(old.fd.as_fd(), &k(9), &v8(9), 0).expect("write the old map");
    support::update(&pin, &k(5), &v8(5)).expect("write B");
    let live = events_until(&mut sub, |seen| !seen.is_empty()).await;
    assert_eq!(live.len(), 1, "only B's write: {live:?}");
    assert_eq!((live[0].op, live[0].key[0]), (Op::Put, 5));
    assert_eq!(live[0].source, EventSource::Trace);
    assert_eq!(mirror(&store, name), support::dump(&pin));
    assert_eq!(
        lines_about(name, "the pin names another map now").len(),
        1,
        "one line for the switch"
    );
    sync.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_removed_pin_keeps_the_object_followed_and_says_so_once() {
    if !support::require_kernel() {
        return;
    }
    let name = "pins_removed";
    logs();
    let pins = PinDir::new("removed");
    let pin = pins.join(name);
    support::create_map(&pin, "hash", 4, 8, 64, name);
    support::update(&pin, &k(1), &v8(1)).expect("seed");
    let held = open::open(&MapSpec::pin(None, &pin)).expect("hold the map");
    let sync = MapSync::start(config(&pins, vec![MapSpec::pin(None, &pin)]))
        .await
        .expect("start");
    let store = sync.store().clone();

    std::fs::remove_file(&pin).expect("rm the pin");
    wait_until("the removal noticed", 10 * TICK, || {
        !lines_about(name, "the pin no longer names a map").is_empty()
    })
    .await;
    // several more ticks: still one line
    tokio::time::sleep(4 * TICK).await;
    assert_eq!(
        lines_about(name, "the pin no longer names a map").len(),
        1,
        "said once"
    );
    sys::update(held.fd.as_fd(), &k(2), &v8(2), 0).expect("write the unpinned map");
    wait_until("the write to the object mirrored", 10 * TICK, || {
        mirror(&store, name).get(&k(2)[..]) == Some(&v8(2).to_vec())
    })
    .await;
    assert_eq!(mirror(&store, name).len(), 2);
    assert!(sync.is_running());
    sync.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_pin_replaced_by_a_map_of_another_shape_is_refused_once_and_the_old_object_followed() {
    if !support::require_kernel() {
        return;
    }
    let name = "pins_reshaped";
    logs();
    let pins = PinDir::new("reshaped");
    let pin = pins.join(name);
    support::create_map(&pin, "hash", 4, 8, 64, name);
    let old = open::open(&MapSpec::pin(None, &pin)).expect("hold map A");
    let sync = MapSync::start(config(&pins, vec![MapSpec::pin(None, &pin)]))
        .await
        .expect("start");
    let store = sync.store().clone();

    std::fs::remove_file(&pin).expect("rm the pin");
    support::create_map(&pin, "hash", 4, 16, 64, name);
    support::update(&pin, &k(7), &[7; 16]).expect("write B");
    wait_until("the refusal logged", 10 * TICK, || {
        !lines_about(name, "cannot replace the mirrored one").is_empty()
    })
    .await;
    tokio::time::sleep(4 * TICK).await;
    let refused = lines_about(name, "cannot replace the mirrored one");
    assert_eq!(refused.len(), 1, "said once: {refused:?}");
    assert!(
        refused[0].contains("16-byte values"),
        "names the shapes: {}",
        refused[0]
    );
    sys::update(old.fd.as_fd(), &k(1), &v8(1), 0).expect("write A");
    wait_until("A's write mirrored", 10 * TICK, || {
        mirror(&store, name).get(&k(1)[..]) == Some(&v8(1).to_vec())
    })
    .await;
    assert!(
        !mirror(&store, name).contains_key(&k(7)[..]),
        "B is not mirrored"
    );
    let info = store.snapshot().map(name).expect("mirrored").info().clone();
    assert_eq!(info.id, old.info.id);
    sync.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_pin_replaced_by_a_map_mirrored_under_another_name_is_refused_once() {
    if !support::require_kernel() {
        return;
    }
    let (first, second) = ("pins_first", "pins_second");
    logs();
    let pins = PinDir::new("taken");
    let (pin_a, pin_b) = (pins.join(first), pins.join(second));
    support::create_map(&pin_a, "hash", 4, 8, 64, first);
    support::create_map(&pin_b, "hash", 4, 8, 64, second);
    let old = open::open(&MapSpec::pin(None, &pin_a)).expect("hold map A");
    let sync = MapSync::start(config(
        &pins,
        vec![MapSpec::pin(None, &pin_a), MapSpec::pin(None, &pin_b)],
    ))
    .await
    .expect("start");
    let store = sync.store().clone();

    // the first name's pin now names the map mirrored as the second
    std::fs::remove_file(&pin_a).expect("rm the first pin");
    support::bpftool(&["map", "pin", "pinned", path(&pin_b), path(&pin_a)]).expect("re-pin");
    wait_until("the refusal logged", 10 * TICK, || {
        !lines_about(first, "cannot replace the mirrored one").is_empty()
    })
    .await;
    tokio::time::sleep(3 * TICK).await;
    let refused = lines_about(first, "cannot replace the mirrored one");
    assert_eq!(refused.len(), 1, "said once: {refused:?}");
    assert!(
        refused[0].contains(&format!("mirrored as `{second}`")),
        "{}",
        refused[0]
    );
    // both names keep following their own map
    sys::update(old.fd.as_fd(), &k(1), &v8(1), 0).expect("write A");
    support::update(&pin_b, &k(2), &v8(2)).expect("write B");
    wait_until("both writes mirrored", 10 * TICK, || {
        mirror(&store, first).keys().collect::<Vec<_>>() == vec![&k(1).to_vec()]
            && mirror(&store, second).keys().collect::<Vec<_>>() == vec![&k(2).to_vec()]
    })
    .await;
    sync.shutdown().await.expect("shutdown");
}

fn path(pin: &Path) -> &str {
    pin.to_str().expect("utf-8 path")
}
