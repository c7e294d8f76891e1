//! Helpers shared by the dump tests (`kernel_dump`, `kernel_walk`).
// each test crate uses a part of them
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::fd::AsFd;

use mapsync_kernel::{MapSpec, dump, open, sys};

/// A map's content: key to value, in key order.
pub type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

/// Writes `entries` into the map pinned at `pin`, in one batch update.
pub fn fill(pin: &std::path::Path, entries: &Entries) {
    let map = open::open(&MapSpec::pin(None, pin)).expect("open the map");
    let keys: Vec<u8> = entries.keys().flatten().copied().collect();
    let values: Vec<u8> = entries.values().flatten().copied().collect();
    let (done, result) = sys::update_batch(map.fd.as_fd(), &keys, &values, entries.len() as u32);
    result.expect("batch update");
    assert_eq!(done as usize, entries.len());
}

/// The entries of a dump, by key (a key read twice: its last read).
pub fn read(entries: &dump::DumpEntries) -> Entries {
    entries
        .iter()
        .map(|(key, value, _)| (key.to_vec(), value.to_vec()))
        .collect()
}
