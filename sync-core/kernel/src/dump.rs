//! Full dumps of a map: `BPF_MAP_LOOKUP_BATCH`, with next-key iteration as
//! the fallback where batch lookups are not supported; at start, hash maps
//! are first tried with one walk of the kernel's buckets ([`walk`]).

use std::os::fd::BorrowedFd;

use bytes::Bytes;

use super::sys;
use crate::error::KernelError;
use mapsync_core::map_info::{MapInfo, MapKind};
pub use mapsync_core::store::{Dump, DumpEntries};

pub mod walk;

/// The initial dump of a map: its [`walk`] if one was prepared and runs
/// (`true` with the dump: exact only if nothing wrote the map meanwhile,
/// see [`walk`]), else [`dump`].
pub fn dump_at_start(
    fd: BorrowedFd<'_>,
    info: &MapInfo,
    walk: Option<walk::PreparedWalk>,
) -> Result<(Dump, bool), KernelError> {
    if let Some(walk) = walk {
        let started_ns = sys::monotonic_ns();
        match walk.run() {
            Ok(entries) => {
                let dump = Dump {
                    entries,
                    started_ns,
                    ended_ns: sys::monotonic_ns(),
                };
                return Ok((dump, true));
            }
            Err(error) => {
                tracing::debug!(map = %info.name, %error, "walk dump failed, batch lookups instead");
            }
        }
    }
    Ok((dump(fd, info)?, false))
}

/// Most entries per batch call. Large: each call costs a syscall, a bigger
/// one only more room in the dump's buffers, which the whole map fills
/// anyway.
const BATCH: u32 = 64 * 1024;

/// Most bytes of keys and values one batch call makes room for: the buffers
/// are sized (and zeroed) for a whole batch before the call, so for large
/// per-CPU values (a 64-byte value on 128 CPUs is 8 KiB an entry) the entry
/// count alone would make a nearly empty map cost hundreds of MiB per dump.
const BATCH_BYTES: u64 = 8 << 20;

/// The most a batch grows to on ENOSPC (a hash bucket longer than the
/// batch), in bytes of keys and values.
const BATCH_BYTES_MAX: u64 = 256 << 20;

/// Entries of the first batch call for `info`'s map: at most [`BATCH`], the
/// map's capacity and [`BATCH_BYTES`] of entries, at least one.
fn first_batch(info: &MapInfo) -> u32 {
    let entry = u64::from(info.key_size) + u64::from(info.value_bytes);
    let by_bytes = (BATCH_BYTES / entry.max(1)).clamp(1, u64::from(BATCH)) as u32;
    by_bytes.min(info.max_entries.max(1))
}

/// Whether a batch of `batch` entries may double on ENOSPC.
fn may_grow(info: &MapInfo, batch: u32) -> bool {
    let entry = u64::from(info.key_size) + u64::from(info.value_bytes);
    batch < (1 << 20) && u64::from(batch) * 2 * entry <= BATCH_BYTES_MAX
}

/// Reads every entry of the map, into one flat buffer of keys and one of
/// values (no allocation per entry).
pub fn dump(fd: BorrowedFd<'_>, info: &MapInfo) -> Result<Dump, KernelError> {
    let started_ns = sys::monotonic_ns();
    let entries = match dump_batched(fd, info) {
        Ok(entries) => entries,
        Err(error)
            if matches!(
                error.raw_os_error(),
                Some(libc::EINVAL) | Some(libc::ENOTSUP) | Some(524 /* ENOTSUPP */)
            ) =>
        {
            tracing::debug!(map = %info.name, %error, "batch lookup unsupported, iterating");
            dump_iterating(fd, info).map_err(|source| KernelError::Syscall {
                op: "BPF_MAP_GET_NEXT_KEY",
                source,
            })?
        }
        Err(source) => {
            return Err(KernelError::Syscall {
                op: "BPF_MAP_LOOKUP_BATCH",
                source,
            });
        }
    };
    Ok(Dump {
        entries,
        started_ns,
        ended_ns: sys::monotonic_ns(),
    })
}

/// Hash maps of at least this capacity are dumped by two threads, each
/// reading half of the buckets: the kernel's walk of the buckets (a cache
/// miss per element) is most of a dump's time.
const SPLIT_FROM: u32 = 1 << 17;

fn dump_batched(fd: BorrowedFd<'_>, info: &MapInfo) -> std::io::Result<DumpEntries> {
    let hashed = matches!(
        info.kind,
        MapKind::Hash | MapKind::LruHash | MapKind::PercpuHash | MapKind::LruPercpuHash
    );
    if !hashed || info.max_entries < SPLIT_FROM {
        return read_buckets(fd, info, None, None);
    }
    // a hash map's batch position is the next bucket's index (a u32), of
    // `max_entries` rounded up to a power of two buckets
    let split = info.max_entries.next_power_of_two() / 2;
    let (low, high) = std::thread::scope(|scope| {
        let high = std::thread::Builder::new()
            .name("mapsync-dump".into())
            .spawn_scoped(scope, || read_buckets(fd, info, Some(split), None));
        let low = read_buckets(fd, info, None, Some(split));
        let high = high.map(|thread| thread.join());
        (low, high)
    });
    match (low?, high) {
        (low, Ok(Ok(Ok(high)))) => Ok(low.merge_by_time(high)),
        // the upper half could not be read apart: read it all here
        (_, _) => {
            tracing::debug!(map = %info.name, "split dump failed, reading it whole");
            read_buckets(fd, info, None, None)
        }
    }
}

/// Reads the map with batch lookups from bucket `from` (`None`: the start)
/// to the end, or until the position reaches bucket `until`, where another
/// reader started (the last batch may read past it: those keys are read
/// twice, and the later read wins). A position that does not look like a
/// bucket index (not increasing, past the last bucket) reads to the end.
fn read_buckets(
    fd: BorrowedFd<'_>,
    info: &MapInfo,
    from: Option<u32>,
    mut until: Option<u32>,
) -> std::io::Result<DumpEntries> {
    let mut entries = DumpEntries::with_shape(info.key_size as usize, info.value_bytes as usize);
    let buckets = info.max_entries.max(1).next_power_of_two();
    // each call makes room for a whole batch; the batch is bounded in bytes
    let mut batch = first_batch(info);
    let mut position: Option<[u8; 8]> = from.map(|bucket| {
        let mut token = [0u8; 8];
        token[..4].copy_from_slice(&bucket.to_ne_bytes());
        token
    });
    let mut last_bucket = from.unwrap_or(0);
    loop {
        let mut out = [0u8; 8];
        let mut done = false;
        let read = entries.read_into(batch as usize, sys::monotonic_ns(), |keys, values| {
            let read = sys::lookup_batch(fd, position.as_ref(), &mut out, keys, values, batch)?;
            done = read.done;
            Ok::<_, std::io::Error>(read.count as usize)
        });
        match read {
            Ok(_) if done => return Ok(entries),
            Ok(_) => {
                position = Some(out);
                if let Some(stop) = until {
                    let bucket = u32::from_ne_bytes(out[..4].try_into().expect("4 bytes"));
                    if bucket <= last_bucket || bucket > buckets || out[4..] != [0; 4] {
                        until = None;
                    } else if bucket >= stop {
                        return Ok(entries);
                    }
                    last_bucket = bucket;
                }
            }
            Err(error) if error.raw_os_error() == Some(libc::ENOSPC) && may_grow(info, batch) => {
                batch *= 2;
            }
            Err(error) => return Err(error),
        }
    }
}

fn dump_iterating(fd: BorrowedFd<'_>, info: &MapInfo) -> std::io::Result<DumpEntries> {
    let mut entries = DumpEntries::with_shape(info.key_size as usize, info.value_bytes as usize);
    let mut key = vec![0u8; info.key_size as usize];
    let mut next = vec![0u8; info.key_size as usize];
    let mut value = vec![0u8; info.value_bytes as usize];
    let mut first = true;
    let mut seen = std::collections::HashSet::new();
    // next-key restarts from the first key when the current one was deleted:
    // bound the walk so a churning map cannot keep it going forever
    let mut budget = u64::from(info.max_entries) * 4 + 16;
    while budget > 0 && sys::next_key(fd, (!first).then_some(&key[..]), &mut next)? {
        budget -= 1;
        first = false;
        if !seen.insert(next.clone()) {
            std::mem::swap(&mut key, &mut next);
            continue;
        }
        std::mem::swap(&mut key, &mut next);
        let observed_ns = sys::monotonic_ns();
        // a key deleted between next-key and lookup is simply absent
        if sys::lookup(fd, &key, &mut value)? {
            entries.push(&key, &value, observed_ns);
        }
    }
    Ok(entries)
}

/// Reads one key: `Some(value)` or `None` if absent, with the time before the read.
pub fn read_key(
    fd: BorrowedFd<'_>,
    info: &MapInfo,
    key: &[u8],
) -> Result<(Option<Bytes>, u64), KernelError> {
    let mut value = vec![0u8; info.value_bytes as usize];
    let observed_ns = sys::monotonic_ns();
    let found = sys::lookup(fd, key, &mut value).map_err(|source| KernelError::Syscall {
        op: "BPF_MAP_LOOKUP_ELEM",
        source,
    })?;
    Ok((found.then(|| Bytes::from(value)), observed_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_bounded_in_bytes_as_well_as_entries() {
        // 24-byte entries: the entry bound
        let small = MapInfo::new("m", MapKind::Hash, 8, 16, 1 << 20);
        assert_eq!(first_batch(&small), BATCH);
        // a small map: its capacity
        assert_eq!(
            first_batch(&MapInfo::new("m", MapKind::Hash, 8, 16, 100)),
            100
        );
        // a 64-byte per-CPU value on 128 CPUs: 8 KiB an entry, 8 MiB a batch
        let per_cpu = MapInfo::new("m", MapKind::PercpuHash, 8, 64, 1 << 20).with_value_bytes(8192);
        let batch = first_batch(&per_cpu);
        assert_eq!(batch, 1023);
        assert!(u64::from(batch) * (8 + 8192) <= BATCH_BYTES);
        // growing on ENOSPC stops at the byte bound
        let mut grown = batch;
        while may_grow(&per_cpu, grown) {
            grown *= 2;
        }
        assert!(u64::from(grown) * (8 + 8192) <= BATCH_BYTES_MAX);
        assert!(u64::from(grown) * 2 * (8 + 8192) > BATCH_BYTES_MAX);
        // an entry larger than the whole bound still gets a batch of one
        let huge = MapInfo::new("m", MapKind::Hash, 8, 1 << 20, 64).with_value_bytes(64 << 20);
        assert_eq!(first_batch(&huge), 1);
    }
}
