//! The capture ring as it is (issue 8), on a real kernel:
//!
//! - a ring already pinned with another size than the one asked for (both
//!   directions) is read with its real size: the records queued in it while
//!   no instance ran and the writes made afterwards all decode, and the
//!   mirror equals the kernel map;
//! - a consumer position made impossible on purpose through the ring's mmap
//!   (ahead of the producer, misaligned, further behind than the ring holds,
//!   inside a record) is reset: `ring_resets` rises, the mirror converges
//!   after further writes, and the ingest task does not spin;
//! - an instance started on a ring whose consumer position was left
//!   impossible resets it once and mirrors;
//! - a pin in the ring's place that is not a ring buffer is refused at start
//!   with an error that names it.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use mapsync_ebpf::abi::RecordHeader;
use mapsync_kernel::ring::BUSY_STALL;
use mapsync_kernel::{MapSpec, MapSync, SyncConfig};
use mapsync_kernel::{OpenMap, open, sys};
use mapsync_test_support::ring::RingPages;
use mapsync_test_support::{self as support, PinDir, mirror};

/// Generous: a 2-core machine shared with compilers.
const DEADLINE: Duration = Duration::from_secs(60);
const MIB4: u32 = 4 << 20;

async fn start(pins: &PinDir, map: &Path, ring_bytes: u32) -> MapSync {
    MapSync::start(SyncConfig {
        maps: vec![MapSpec::pin(Some("flows"), map)],
        pin_dir: pins.join("capture"),
        ring_bytes,
        ..SyncConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("start with a {ring_bytes}-byte ring: {e}"))
}

/// Waits until the mirror equals `bpftool map dump`, or panics.
async fn converge(sync: &MapSync, map: &Path, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let kernel = support::dump(map);
        if mirror(sync.store(), "flows") == kernel {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the mirror did not converge to the kernel's {} entries: {:?}",
            kernel.len(),
            sync.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Single updates and deletes, then a batch update: every kind of record
/// the trace makes, `round` making the values new.
fn write(map: &OpenMap, round: u64) {
    let fd = map.fd.as_fd();
    for k in 0..300u32 {
        let value = (round << 32 | u64::from(k)).to_ne_bytes();
        sys::update(fd, &k.to_ne_bytes(), &value, 0).expect("update");
    }
    for k in (0..300u32).step_by(7) {
        sys::delete(fd, &k.to_ne_bytes()).expect("delete");
    }
    let keys: Vec<u8> = (1000..2000u32).flat_map(u32::to_ne_bytes).collect();
    let values: Vec<u8> = (0..1000u64)
        .flat_map(|i| (round << 32 | i).to_ne_bytes())
        .collect();
    let (done, result) = sys::update_batch(fd, &keys, &values, 1000);
    result.expect("update batch");
    assert_eq!(done, 1000);
}

fn pinned_size(pins: &PinDir) -> u32 {
    let fd = sys::obj_get(&pins.join("capture/mapsync_events")).expect("open the ring's pin");
    sys::map_info(fd.as_fd()).expect("ring info").max_entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_ring_of_another_size_is_read_with_its_real_size() {
    if !support::require_kernel() {
        return;
    }
    let pairs = [
        (MIB4, 4096),
        (MIB4, 8192),
        (MIB4, 16384),
        (4096, MIB4),
        (8192, MIB4),
        (16384, 4096),
    ];
    for (pinned, requested) in pairs {
        let what = format!("ring pinned at {pinned} bytes, {requested} requested");
        let pins = PinDir::new("ring-size");
        let hash = pins.join("flows");
        support::create_map(&hash, "hash", 4, 8, 4096, "flows");
        let map = open::open(&MapSpec::pin(None, &hash)).expect("open");

        let first = start(&pins, &hash, pinned).await;
        write(&map, 1);
        converge(&first, &hash, &what).await;
        first.shutdown().await.expect("first shutdown");
        // queued in the pinned ring while no instance runs (what fits)
        write(&map, 2);

        let second = start(&pins, &hash, requested).await;
        assert_eq!(pinned_size(&pins), pinned, "{what}: the pin keeps its size");
        converge(&second, &hash, &what).await;
        write(&map, 3);
        converge(&second, &hash, &what).await;
        // a last write that the ring certainly holds, seen as a record
        let records = second.stats().records;
        sys::update(map.fd.as_fd(), &7u32.to_ne_bytes(), &[0xee; 8], 0).expect("update");
        converge(&second, &hash, &what).await;
        let stats = second.stats();
        assert!(
            stats.records > records,
            "{what}: the write came as a record: {stats:?}"
        );
        assert_eq!(
            stats.bad_records, 0,
            "{what}: every record decodes: {stats:?}"
        );
        assert_eq!(stats.ring_resets, 0, "{what}: nothing to reset: {stats:?}");
        second.shutdown().await.expect("second shutdown");
    }
}

/// Name of the runtime threads of the reset test, whose CPU time it reads
/// (the other test runs beside it in this process).
const RESET_THREADS: &str = "ring-reset-rt";

/// CPU time used so far by this process's threads named `name`, in clock
/// ticks (user + system, from /proc/self/task/*/stat).
fn thread_cpu_ticks(name: &str) -> u64 {
    let mut ticks = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let dir = task.expect("task entry").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        // fields after the parenthesised name: state is field 3, utime 14, stime 15
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .expect("stat")
            .1
            .split_whitespace()
            .collect();
        ticks +=
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    }
    ticks
}

/// A key whose bytes, read as a ring record's length word, have the busy
/// bit set (native byte order: the top bit of the u32).
const BUSY_KEY: u32 = 0x8000_0001;

/// An impossible consumer position from (producer position, record size).
type Corrupt = fn(u64, u64) -> u64;

async fn wait_caught_up(ring: &RingPages) {
    let deadline = Instant::now() + DEADLINE;
    while ring.consumer() != ring.producer() {
        assert!(Instant::now() < deadline, "the consumer never caught up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn an_impossible_consumer_position_is_reset_and_the_mirror_converges() {
    if !support::require_kernel() {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(RESET_THREADS)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(reset_and_converge());
}

async fn reset_and_converge() {
    const RING: u64 = 16384;
    let pins = PinDir::new("ring-reset");
    let hash = pins.join("flows");
    support::create_map(&hash, "hash", 4, 8, 4096, "flows");
    let map = open::open(&MapSpec::pin(None, &hash)).expect("open");
    let sync = start(&pins, &hash, RING as u32).await;
    let ring = RingPages::open(&pins.join("capture/mapsync_events"));
    write(&map, 1);
    converge(&sync, &hash, "before any corruption").await;

    // the size of one record: the producer's move for one single update
    wait_caught_up(&ring).await;
    let before = ring.producer();
    sys::update(map.fd.as_fd(), &1u32.to_ne_bytes(), &[1; 8], 0).expect("update");
    wait_caught_up(&ring).await;
    let record = ring.producer() - before;
    assert!(
        record >= 16 && record.is_multiple_of(8),
        "one record is {record} bytes"
    );
    // single updates (the consumer keeps up with these) until the
    // positions have wrapped around the ring a few times
    let mut k = 0u32;
    while ring.producer() <= 3 * RING {
        sys::update(map.fd.as_fd(), &(k % 300).to_ne_bytes(), &[2; 8], 0).expect("update");
        k += 1;
        assert!(k < 1_000_000, "the producer does not move");
    }

    let corruptions: [(&str, Corrupt); 5] = [
        ("ahead of the producer", |producer, _| producer + 4096),
        ("misaligned", |producer, _| producer - 4),
        ("further behind than the ring holds", |producer, _| {
            producer - 2 * RING
        }),
        // the header read there is the record's sequence number, a length
        // far past the producer
        ("inside the last record", |producer, record| {
            producer - record + 8
        }),
        // at its key, whose bytes read as a length word with the busy bit:
        // a record that never commits
        (
            "inside the last record, at a word that looks reserved",
            |producer, record| producer - record + 8 + RecordHeader::SIZE as u64,
        ),
    ];
    for (round, (what, corrupt)) in corruptions.into_iter().enumerate() {
        // the last record before the corruption is a write of BUSY_KEY
        sys::update(map.fd.as_fd(), &BUSY_KEY.to_ne_bytes(), &[3; 8], 0).expect("update");
        wait_caught_up(&ring).await;
        let resets = sync.stats().ring_resets;
        let position = corrupt(ring.producer(), record);
        ring.set_consumer(position);
        let corrupted = Instant::now();
        write(&map, 10 + round as u64);
        let deadline = corrupted + DEADLINE;
        while sync.stats().ring_resets == resets {
            assert!(
                Instant::now() < deadline,
                "{what}: no reset after the consumer was set to {position}: {:?}",
                sync.stats()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = corrupted.elapsed();
        eprintln!("{what}: reset {took:?} after the corruption");
        if round == 4 {
            assert!(
                took >= BUSY_STALL,
                "{what}: reset as a stalled record, not sooner: {took:?}"
            );
        }
        write(&map, 20 + round as u64);
        converge(&sync, &hash, what).await;
        assert!(sync.is_running(), "{what}: ingest still runs");
    }
    let stats = sync.stats();
    assert!(stats.ring_resets >= 5, "{stats:?}");
    assert!(stats.resyncs >= 5, "every reset resyncs: {stats:?}");

    // nothing spins: idle, the process barely uses the CPU
    wait_caught_up(&ring).await;
    let (cpu, wall) = (thread_cpu_ticks(RESET_THREADS), Instant::now());
    tokio::time::sleep(Duration::from_secs(1)).await;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    let used = Duration::from_millis((thread_cpu_ticks(RESET_THREADS) - cpu) * 1000 / per_second);
    assert!(
        used < wall.elapsed() / 4,
        "the idle ingest used {used:?} of CPU in {:?}",
        wall.elapsed()
    );
    drop(ring);
    sync.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_pin_in_the_rings_place_that_is_not_a_ring_is_refused_by_name() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("ring-not-a-ring");
    let hash = pins.join("flows");
    support::create_map(&hash, "hash", 4, 8, 64, "flows");
    std::fs::create_dir_all(pins.join("capture")).expect("capture dir");
    let impostor = pins.join("capture/mapsync_events");
    support::create_map(&impostor, "hash", 4, 4, 16, "impostor");
    let error = MapSync::start(SyncConfig {
        maps: vec![MapSpec::pin(None, &hash)],
        pin_dir: pins.join("capture"),
        ..SyncConfig::default()
    })
    .await
    .expect_err("a hash map is no ring");
    let text = error.to_string();
    assert!(
        matches!(error, mapsync_kernel::KernelError::BadRing { .. }),
        "{text}"
    );
    assert!(
        text.contains("mapsync_events") && text.contains("hash map"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_started_on_a_ring_left_impossible_resets_it_and_mirrors() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("ring-left-bad");
    let hash = pins.join("flows");
    support::create_map(&hash, "hash", 4, 8, 4096, "flows");
    let map = open::open(&MapSpec::pin(None, &hash)).expect("open");
    let first = start(&pins, &hash, 16384).await;
    write(&map, 1);
    converge(&first, &hash, "first instance").await;
    first.shutdown().await.expect("first shutdown");
    // what a consumer with the wrong mask leaves behind: a position past the
    // producer, not a multiple of 8
    {
        let ring = RingPages::open(&pins.join("capture/mapsync_events"));
        ring.set_consumer(ring.producer() + 12);
    }
    write(&map, 2);
    let second = start(&pins, &hash, 16384).await;
    converge(&second, &hash, "second instance").await;
    let stats = second.stats();
    assert_eq!(stats.ring_resets, 1, "reset once, at start: {stats:?}");
    write(&map, 3);
    converge(&second, &hash, "second instance, later writes").await;
    let records = second.stats().records;
    sys::update(map.fd.as_fd(), &7u32.to_ne_bytes(), &[0xee; 8], 0).expect("update");
    converge(&second, &hash, "second instance, one more write").await;
    let stats = second.stats();
    assert!(stats.records > records, "records flow again: {stats:?}");
    assert_eq!(stats.ring_resets, 1, "{stats:?}");
    assert_eq!(stats.bad_records, 0, "{stats:?}");
    second.shutdown().await.expect("second shutdown");
}
