//! Helpers of the switchable-map tests (`kernel_switch*.rs`).
#![allow(dead_code, reason = "each test file uses a part")]

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::Path;

use bytes::Bytes;
use mapsync_core::control::{Apply, ApplyMode};
use mapsync_core::{MapInfo, MapKind, Store};
use mapsync_kernel::switch::{self, SwitchShape};
use mapsync_kernel::{MapSpec, MapSync, SyncConfig, dump, sys};
use mapsync_test_support::PinDir;

pub const KEYS: u32 = mapsync_ebpf::SWITCHTEST_KEYS;

pub fn shape() -> SwitchShape {
    SwitchShape {
        kind: MapKind::Hash,
        key_size: 4,
        value_size: 16,
        max_entries: KEYS,
    }
}

pub fn value(tag: u64, payload: u64) -> Vec<u8> {
    [tag.to_ne_bytes(), payload.to_ne_bytes()].concat()
}

/// Keys 0..n, every value tagged `tag`.
pub fn tagged(tag: u64, n: u32) -> Vec<(Bytes, Option<Bytes>)> {
    (0..n)
        .map(|key| {
            (
                Bytes::copy_from_slice(&key.to_ne_bytes()),
                Some(Bytes::from(value(tag, u64::from(key)))),
            )
        })
        .collect()
}

pub fn apply(
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

pub async fn start(pins: &PinDir, maps: Vec<MapSpec>) -> MapSync {
    MapSync::start(SyncConfig {
        maps,
        pin_dir: pins.join("capture"),
        reconcile_interval: None,
        ..SyncConfig::default()
    })
    .await
    .expect("start")
}

pub fn mirror(store: &Store, name: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
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
pub fn kernel_set(outer: &Path) -> (BTreeMap<Vec<u8>, Vec<u8>>, u32, Option<u64>) {
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

pub fn tag_of(value: &[u8]) -> u64 {
    u64::from_ne_bytes(value[..8].try_into().expect("8 bytes"))
}

pub fn small_shape(max_entries: u32) -> SwitchShape {
    SwitchShape {
        kind: MapKind::Hash,
        key_size: 4,
        value_size: 16,
        max_entries,
    }
}

pub fn key(k: u32) -> Bytes {
    Bytes::copy_from_slice(&k.to_ne_bytes())
}

pub fn put(k: u32, tag: u64) -> (Bytes, Option<Bytes>) {
    (key(k), Some(Bytes::from(value(tag, u64::from(k)))))
}
