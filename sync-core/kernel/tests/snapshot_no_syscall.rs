//! "A snapshot read never issues a syscall", checked with seccomp on a real
//! kernel map mirrored by a running `MapSync`.
//!
//! Each test reads from its own thread and installs a seccomp filter on that
//! thread only (no `SECCOMP_FILTER_FLAG_TSYNC`, so the test harness, the
//! tokio runtime and the ingest task are not filtered):
//!
//! - `bpf` denied with `EPERM`: a million snapshot reads still succeed while
//!   another thread writes the map through `bpf()` (so the reader walks
//!   snapshots that are being replaced), and aya's `HashMap::get` on the same
//!   map, from the same thread, now fails with `EPERM`: the filter really
//!   bites, and the snapshot path does not go through it.
//! - *every* syscall but `exit` kills the process: a million snapshot reads of
//!   a quiet store, then the thread leaves through a raw `exit`. Any syscall
//!   on the read path (a lock's futex, a `bpf()` lookup, an allocation that
//!   maps memory) would end the whole test binary with `SIGSYS`.
//!
//! The second test needs a quiet store: a reader that drops the last
//! reference to a snapshot the writer has replaced frees it, and `free` may
//! return memory to the kernel (`munmap`, `madvise`). Reads themselves make
//! no syscall; dropping the last reference to an old snapshot may.
//!
//! Run: `cargo test -p mapsync-core --test snapshot_no_syscall` (root, bpffs).

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mapsync_core::Store;
use mapsync_kernel::{MapSpec, MapSync, SyncConfig};
use mapsync_kernel::{open, sys};
use mapsync_test_support::{self as support, PinDir};

const ENTRIES: u64 = 10_000;
const READS: u64 = 1_000_000;
const MAP: &str = "flows";

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

/// `struct sock_filter` (classic BPF instruction).
#[repr(C)]
struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

/// `struct sock_fprog`.
#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

const fn insn(code: u32, jt: u8, jf: u8, k: u32) -> SockFilter {
    SockFilter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// Installs, on the calling thread only, a filter that answers `action` to
/// syscall `nr` and `otherwise` to every other one (and kills the process
/// on a foreign architecture). Returns the OS error if the kernel refused.
fn install_seccomp(nr: libc::c_long, action: u32, otherwise: u32) -> std::io::Result<()> {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    let program = [
        // seccomp_data.arch
        insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, 4),
        insn(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, AUDIT_ARCH),
        insn(BPF_RET | BPF_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        // seccomp_data.nr
        insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, 0),
        insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, nr as u32),
        insn(BPF_RET | BPF_K, 0, 0, action),
        insn(BPF_RET | BPF_K, 0, 0, otherwise),
    ];
    let fprog = SockFprog {
        len: program.len() as u16,
        filter: program.as_ptr(),
    };
    // SAFETY: prctl with these constant arguments has no memory effects.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fprog` points to `program`, which outlives the call; the
    // kernel copies the filter. Flags 0: this thread only.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const SockFprog,
        )
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn key(i: u64) -> [u8; 8] {
    i.to_ne_bytes()
}

/// Value of key `i` written with generation `generation`: the key again,
/// then the generation (so a reader can check it got this key's value).
fn value(i: u64, generation: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&i.to_ne_bytes());
    v[8..].copy_from_slice(&generation.to_ne_bytes());
    v
}

/// Creates a pinned 8-byte-key, 16-byte-value hash with `ENTRIES` entries
/// and starts mirroring it.
async fn mirrored_map(pins: &PinDir) -> (MapSync, std::path::PathBuf) {
    let pin = pins.join(MAP);
    support::create_map(&pin, "hash", 8, 16, ENTRIES as u32, MAP);
    let map = open::open(&MapSpec::pin(None, &pin)).expect("open the new map");
    let keys: Vec<u8> = (0..ENTRIES).flat_map(key).collect();
    let values: Vec<u8> = (0..ENTRIES).flat_map(|i| value(i, 0)).collect();
    let (done, result) = sys::update_batch(map.fd.as_fd(), &keys, &values, ENTRIES as u32);
    result.expect("fill the map with a batch update");
    assert_eq!(done, ENTRIES as u32, "every entry written");
    let sync = MapSync::start(SyncConfig {
        maps: vec![MapSpec::pin(None, &pin)],
        pin_dir: pins.join("capture"),
        reconcile_interval: None,
        ..SyncConfig::default()
    })
    .await
    .expect("start the sync");
    assert_eq!(
        sync.store().load().map(MAP).expect("mirrored").len(),
        ENTRIES as usize,
        "initial dump"
    );
    (sync, pin)
}

/// One snapshot read of key `i`: whether it is there with this key's value.
fn read_ok(store: &Store, i: u64) -> bool {
    store
        .load()
        .map(MAP)
        .and_then(|m| m.get(&key(i)))
        .is_some_and(|v| v[..8] == key(i))
}

fn aya_map(pin: &Path) -> aya::maps::HashMap<aya::maps::MapData, [u8; 8], [u8; 16]> {
    let data = aya::maps::MapData::from_pin(pin).expect("aya opens the pinned map");
    aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data)).expect("a hash of 8/16 bytes")
}

#[derive(Debug)]
struct ReaderReport {
    reads: u64,
    found: u64,
    first_revision: u64,
    last_revision: u64,
    aya_before: Result<[u8; 16], String>,
    aya_after: Option<i32>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_reads_succeed_with_bpf_denied_while_aya_get_fails_with_eperm() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("no-syscall-bpf");
    let (sync, pin) = mirrored_map(&pins).await;
    let store = sync.store().clone();
    let aya = aya_map(&pin);

    // a writer replaces values through bpf() for as long as the reader runs
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let map = open::open(&MapSpec::pin(None, &pin)).expect("open for writing");
        std::thread::spawn(move || {
            let mut state = 7;
            let mut writes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let i = support::next_random(&mut state) % ENTRIES;
                sys::update(map.fd.as_fd(), &key(i), &value(i, writes + 1), 0)
                    .expect("update an existing key");
                writes += 1;
            }
            writes
        })
    };

    let reader_store = store.clone();
    let reader = std::thread::spawn(move || {
        let store = reader_store;
        let aya_before = aya.get(&key(1), 0).map_err(|e| e.to_string());
        install_seccomp(
            libc::SYS_bpf,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
            libc::SECCOMP_RET_ALLOW,
        )
        .expect("install the seccomp filter");
        let aya_after = match aya.get(&key(1), 0) {
            Err(aya::maps::MapError::SyscallError(e)) => e.io_error.raw_os_error(),
            other => panic!("aya get under the filter: expected EPERM, got {other:?}"),
        };
        let first_revision = store.load().revision();
        let started = Instant::now();
        let (mut reads, mut found, mut state) = (0u64, 0u64, 1u64);
        // a million reads, and on until the reader has seen the mirror move
        while reads < READS
            || (store.load().revision() < first_revision + 100
                && started.elapsed() < Duration::from_secs(10))
        {
            found += u64::from(read_ok(&store, support::next_random(&mut state) % ENTRIES));
            reads += 1;
        }
        ReaderReport {
            reads,
            found,
            first_revision,
            last_revision: store.load().revision(),
            aya_before,
            aya_after,
        }
    });
    let report = tokio::task::spawn_blocking(move || reader.join())
        .await
        .expect("join task")
        .expect("reader thread did not panic");
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().expect("writer thread did not panic");

    let before = report
        .aya_before
        .as_ref()
        .expect("aya get works before the filter");
    assert_eq!(before[..8], key(1), "aya read key 1's value");
    assert_eq!(
        report.aya_after,
        Some(libc::EPERM),
        "the filter denies bpf() on this thread"
    );
    assert!(report.reads >= READS, "{report:?}");
    assert_eq!(report.found, report.reads, "every read found its key");
    assert!(
        report.last_revision >= report.first_revision + 100,
        "the mirror kept changing under the reader ({writes} writes): {report:?}"
    );
    sync.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_reads_make_no_syscall_at_all() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("no-syscall-any");
    let (sync, _pin) = mirrored_map(&pins).await;
    let store = sync.store().clone();

    let found = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let filter_error = Arc::new(AtomicU64::new(0));
    {
        let (store, found, finished, filter_error) = (
            store.clone(),
            found.clone(),
            finished.clone(),
            filter_error.clone(),
        );
        // Detached on purpose: it leaves through a raw exit(2), never
        // returning to std, so it cannot be joined. Nothing after the filter
        // may panic (a panic writes to stderr: a syscall, so SIGSYS).
        drop(std::thread::spawn(move || {
            // warm up: the first load registers this thread with arc-swap
            // (an allocation) and the thread-local destructors
            assert!(read_ok(&store, 0), "warm-up read");
            let result = install_seccomp(
                libc::SYS_exit,
                libc::SECCOMP_RET_ALLOW,
                libc::SECCOMP_RET_KILL_PROCESS,
            );
            if let Err(error) = result {
                filter_error.store(error.raw_os_error().unwrap_or(-1) as u64, Ordering::SeqCst);
            } else {
                let (mut hits, mut state) = (0u64, 3u64);
                for _ in 0..READS {
                    hits += u64::from(read_ok(&store, support::next_random(&mut state) % ENTRIES));
                }
                found.store(hits, Ordering::SeqCst);
            }
            finished.store(true, Ordering::SeqCst);
            // SAFETY: exit(2) ends this thread only; it owns nothing another
            // thread waits on (its std packet is never joined).
            unsafe { libc::syscall(libc::SYS_exit, 0) };
            unreachable!("exit(2) returned");
        }));
    }
    let started = Instant::now();
    while !finished.load(Ordering::SeqCst) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "reader did not finish"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        filter_error.load(Ordering::SeqCst),
        0,
        "seccomp filter refused (errno)"
    );
    assert_eq!(
        found.load(Ordering::SeqCst),
        READS,
        "a million reads, every key found, no syscall (else SIGSYS)"
    );
    sync.shutdown().await.expect("clean shutdown");
}
