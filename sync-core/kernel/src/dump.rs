//! Full dumps of a map: `BPF_MAP_LOOKUP_BATCH`, with next-key iteration as
//! the fallback where batch lookups are not supported.

use std::os::fd::BorrowedFd;

use bytes::Bytes;

use super::sys;
use crate::error::KernelError;
use mapsync_core::map_info::MapInfo;
pub use mapsync_core::store::{Dump, DumpEntries};

/// Entries per batch call to start with (doubled on ENOSPC: a hash bucket
/// longer than the batch). Large: each call costs a syscall, a bigger one
/// only more room in the dump's buffers, which the whole map fills anyway.
const BATCH: u32 = 64 * 1024;

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

fn dump_batched(fd: BorrowedFd<'_>, info: &MapInfo) -> std::io::Result<DumpEntries> {
    let mut entries = DumpEntries::with_shape(info.key_size as usize, info.value_bytes as usize);
    // the buffers grow with what is read, not with the map's capacity (a
    // large, mostly empty map costs what it holds)
    let mut batch = BATCH.min(info.max_entries.max(1));
    let mut position: Option<[u8; 8]> = None;
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
            Ok(_) => position = Some(out),
            Err(error) if error.raw_os_error() == Some(libc::ENOSPC) && batch < (1 << 20) => {
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
