//! The walk dump of a hash map (`ebpf/src/bpf/dump.bpf.c`): one
//! `bpf_for_each_map_elem` over the map, run once with `BPF_PROG_TEST_RUN`,
//! copies every entry into an mmapable array that user space then reads.
//!
//! Against `BPF_MAP_LOOKUP_BATCH` it saves the bucket lock, the second walk
//! of each bucket and two `copy_to_user` per bucket: about twice as fast per
//! entry, in one syscall. What it gives up: the walk holds no bucket lock,
//! and a hash map reuses a deleted or replaced element at once, so an entry
//! written *during* the walk can make it miss others of its bucket. The
//! caller ([`crate::MapSync::start`]) therefore re-dumps with the batch
//! lookups a walked map that the capture saw written during its walk.
//!
//! It runs with preemption off (the test run of a raw tracepoint) for about
//! 0.2 us per entry, so maps above [`WALK_ENTRIES_MAX`] are never walked.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use aya::EbpfLoader;
use aya::programs::{RawTracePoint, RawTracePointRunOptions, TestRun};

use super::sys;
use mapsync_core::map_info::{MapInfo, MapKind};
use mapsync_core::store::DumpEntries;

/// The largest key and value the walk's copy handles (`dump.bpf.c`).
const KEY_MAX: u32 = 64;
const VALUE_MAX: u32 = 1024;
/// Maps of a larger capacity are dumped with batch lookups: the walk runs
/// with preemption off, and at this size takes about 3-4 s.
pub const WALK_ENTRIES_MAX: u32 = 1 << 24;

/// The largest array a walk creates (the map's capacity times a record,
/// in kernel memory for the length of the dump, whatever the map holds):
/// larger maps are dumped with batch lookups, whose buffers grow with what
/// they read.
pub const WALK_BYTES_MAX: u64 = 256 << 20;

const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_F_MMAPABLE: u32 = 1 << 10;
const PROGRAM: &str = "mapsync_dump";

/// Whether [`dump_walking`] can dump this map: a hash or LRU hash (one
/// value per entry) of small keys and values, at most [`WALK_ENTRIES_MAX`]
/// entries and at most [`WALK_BYTES_MAX`] of records at full capacity.
pub fn walkable(info: &MapInfo) -> bool {
    let stride = record_stride(info.key_size as usize, info.value_size as usize) as u64;
    matches!(info.kind, MapKind::Hash | MapKind::LruHash)
        && (1..=KEY_MAX).contains(&info.key_size)
        && (1..=VALUE_MAX).contains(&info.value_size)
        && info.value_bytes == info.value_size
        && (1..=WALK_ENTRIES_MAX).contains(&info.max_entries)
        && stride * u64::from(info.max_entries) <= WALK_BYTES_MAX
}

/// Why a walk was not used (the caller falls back on batch lookups).
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// The map is not [`walkable`].
    #[error("not a map the walk dumps")]
    NotWalkable,
    /// A syscall failed (array create, pin, mmap).
    #[error("{op}: {source}")]
    Syscall {
        /// The call.
        op: &'static str,
        /// Its error.
        #[source]
        source: std::io::Error,
    },
    /// The walk program did not load or run.
    #[error("the walk program: {0}")]
    Program(String),
    /// The map held more entries than the array (it changed during the walk).
    #[error("the walk found more entries than the map's capacity")]
    Overflow,
}

fn syscall(op: &'static str) -> impl FnOnce(std::io::Error) -> WalkError {
    move |source| WalkError::Syscall { op, source }
}

/// Pins that are removed when dropped.
struct Pins(Vec<PathBuf>);

impl Drop for Pins {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A read-only shared mapping of the records array.
struct Mapped {
    at: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    fn new(fd: BorrowedFd<'_>, len: usize) -> Result<Self, WalkError> {
        // SAFETY: a new mapping at an address the kernel picks, of an fd
        // that stays open while it is used; checked for failure.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if at == libc::MAP_FAILED {
            return Err(syscall("mmap of the walk's array")(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Self { at, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` readable bytes mapped at `at` until dropped; the
        // program that writes them has finished.
        unsafe { std::slice::from_raw_parts(self.at.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe {
            libc::munmap(self.at, self.len);
        }
    }
}

/// Dumps a [`walkable`] map by one walk of the kernel's buckets
/// ([`prepare`], then [`PreparedWalk::run`]). `scratch` is a bpffs
/// directory where the map and the array are pinned for the moment of the
/// program's load (aya takes maps by pin path). Every entry gets the time
/// just before the walk as its observed time.
pub fn dump_walking(
    fd: BorrowedFd<'_>,
    info: &MapInfo,
    scratch: &Path,
) -> Result<DumpEntries, WalkError> {
    prepare(fd, info, scratch)?.run()
}

/// A walk ready to run: its array created and its program loaded for one
/// map (some 10-40 ms, most of it aya parsing the kernel's BTF, which
/// start does beside the capture's load).
pub struct PreparedWalk {
    ebpf: aya::Ebpf,
    out: OwnedFd,
    key_size: usize,
    value_size: usize,
    capacity: u32,
}

impl std::fmt::Debug for PreparedWalk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedWalk")
            .field("key_size", &self.key_size)
            .field("value_size", &self.value_size)
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// Creates the array and loads the walk program for a [`walkable`] map
/// (see [`dump_walking`]); the walk itself is [`PreparedWalk::run`].
pub fn prepare(
    fd: BorrowedFd<'_>,
    info: &MapInfo,
    scratch: &Path,
) -> Result<PreparedWalk, WalkError> {
    if !walkable(info) {
        return Err(WalkError::NotWalkable);
    }
    let stride = record_stride(info.key_size as usize, info.value_size as usize);
    let out = sys::map_create(&sys::MapCreate {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: stride as u32,
        max_entries: info.max_entries,
        map_flags: BPF_F_MMAPABLE,
        inner_map_fd: None,
        name: "mapsync_dump".into(),
        btf: None,
    })
    .map_err(syscall("BPF_MAP_CREATE of the walk's array"))?;
    let ebpf = load(fd, out.as_fd(), info, scratch)?;
    Ok(PreparedWalk {
        ebpf,
        out,
        key_size: info.key_size as usize,
        value_size: info.value_size as usize,
        capacity: info.max_entries,
    })
}

/// Bytes of one record in the walk's array: the key and the value, each
/// rounded up to 8 (`dump.bpf.c`).
fn record_stride(key_size: usize, value_size: usize) -> usize {
    key_size.next_multiple_of(8) + value_size.next_multiple_of(8)
}

impl PreparedWalk {
    /// Walks the map once and returns its entries, all with the time just
    /// before the walk. [`WalkError::Overflow`] if the map held more
    /// entries than its capacity meanwhile.
    pub fn run(self) -> Result<DumpEntries, WalkError> {
        let program: &RawTracePoint = self
            .ebpf
            .program(PROGRAM)
            .ok_or_else(|| WalkError::Program("missing from the object".into()))?
            .try_into()
            .map_err(|error: aya::programs::ProgramError| WalkError::Program(error.to_string()))?;
        let (key_size, value_size) = (self.key_size, self.value_size);
        let value_at = key_size.next_multiple_of(8);
        let stride = record_stride(key_size, value_size);
        let page = 4096;
        let len = (stride * self.capacity as usize).next_multiple_of(page);
        let mapped = Mapped::new(self.out.as_fd(), len)?;
        let observed_ns = sys::monotonic_ns();
        let ran = program
            .test_run(RawTracePointRunOptions::new())
            .map_err(|error| WalkError::Program(error.to_string()))?;
        let count = ran.return_value as usize;
        if count > self.capacity as usize {
            return Err(WalkError::Overflow);
        }
        let mut entries = DumpEntries::with_shape(key_size, value_size);
        let records = &mapped.bytes()[..count * stride];
        let _ = entries.read_into(count, observed_ns, |keys, values| {
            let records = records.chunks_exact(stride);
            let keys = keys.chunks_exact_mut(key_size);
            let values = values.chunks_exact_mut(value_size);
            for ((record, key), value) in records.zip(keys).zip(values) {
                key.copy_from_slice(&record[..key_size]);
                value.copy_from_slice(&record[value_at..value_at + value_size]);
            }
            Ok::<_, std::convert::Infallible>(count)
        });
        Ok(entries)
    }
}

/// Removes the pins a walk's load left in `scratch` when its process was
/// killed between pinning and unpinning (a pin of a user's map would keep
/// that map alive); the caller holds the pin directory's lock, so no walk
/// is loading there. Gives how many were removed.
pub fn remove_leftover_pins(scratch: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(scratch) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("mapsync_dump_")
        })
        .filter(|entry| std::fs::remove_file(entry.path()).is_ok())
        .count()
}

/// Loads the walk program for this map and array: both pinned in
/// `scratch` just for the load (removed before it returns).
fn load(
    map: BorrowedFd<'_>,
    out: BorrowedFd<'_>,
    info: &MapInfo,
    scratch: &Path,
) -> Result<aya::Ebpf, WalkError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // (bpffs refuses names with a dot)
    let stem = format!("mapsync_dump_{}_{n}", std::process::id());
    let (map_pin, out_pin) = (
        scratch.join(format!("{stem}_map")),
        scratch.join(format!("{stem}_out")),
    );
    let pins = Pins(vec![map_pin.clone(), out_pin.clone()]);
    sys::obj_pin(map, &map_pin).map_err(syscall("BPF_OBJ_PIN of the map to walk"))?;
    sys::obj_pin(out, &out_pin).map_err(syscall("BPF_OBJ_PIN of the walk's array"))?;
    let mut ebpf = EbpfLoader::new()
        // no CO-RE in this object: the kernel's BTF is not needed
        .btf(None)
        .override_global("dump_key_size", &info.key_size, true)
        .override_global("dump_value_size", &info.value_size, true)
        .map_pin_path("dump_src", map_pin.as_path())
        .map_pin_path("dump_out", out_pin.as_path())
        .load(mapsync_ebpf::DUMP_OBJECT)
        .map_err(|error| WalkError::Program(error.to_string()))?;
    drop(pins);
    let program: &mut RawTracePoint = ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| WalkError::Program("missing from the object".into()))?
        .try_into()
        .map_err(|error: aya::programs::ProgramError| WalkError::Program(error.to_string()))?;
    program
        .load()
        .map_err(|error| WalkError::Program(error.to_string()))?;
    Ok(ebpf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(kind: MapKind, key_size: u32, value_size: u32, max_entries: u32) -> MapInfo {
        MapInfo::new("m", kind, key_size, value_size, max_entries).with_id(1)
    }

    #[test]
    fn only_hash_maps_of_bounded_size_are_walked() {
        assert!(walkable(&info(MapKind::Hash, 8, 16, 1 << 20)));
        assert!(walkable(&info(MapKind::LruHash, 64, 1024, 1000)));
        assert!(!walkable(&info(MapKind::Array, 4, 8, 1000)));
        assert!(!walkable(&info(MapKind::PercpuHash, 4, 8, 1000)));
        assert!(!walkable(&info(MapKind::Hash, 65, 8, 1000)), "key too long");
        assert!(
            !walkable(&info(MapKind::Hash, 8, 1025, 1000)),
            "value too long"
        );
        assert!(!walkable(&info(MapKind::Hash, 4, 4, WALK_ENTRIES_MAX + 1)));
        // 1 Mi records of 1,032 bytes: a 1 GiB array whatever the map holds
        assert!(!walkable(&info(MapKind::Hash, 8, 1024, 1 << 20)));
        assert!(walkable(&info(MapKind::Hash, 8, 1024, 200_000)));
    }
}
