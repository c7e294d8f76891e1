//! The version store of a switchable map: a pinned `HASH` from inner map
//! id (`__u32`) to version (`__u64`), beside the outer map.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use super::{HASH, SwitchError, VERSION_STORE_ENTRIES, version_pin};
use crate::sys;

pub(super) fn create_version_store() -> std::io::Result<OwnedFd> {
    sys::map_create(&sys::MapCreate {
        map_type: HASH,
        key_size: 4,
        value_size: 8,
        max_entries: VERSION_STORE_ENTRIES,
        map_flags: 0,
        inner_map_fd: None,
        name: "mapsync_version".into(),
        btf: None,
    })
}

/// Opens the version store beside `outer_pin`, creating and pinning it if
/// missing.
pub(super) fn open_version_store(outer_pin: &Path) -> Result<OwnedFd, SwitchError> {
    let path = version_pin(outer_pin);
    let kernel = |what: &'static str| {
        move |source| SwitchError::Kernel {
            path: outer_pin.to_owned(),
            what,
            source,
        }
    };
    if !path.exists() {
        let versions = create_version_store().map_err(kernel("creating the version store"))?;
        sys::obj_pin(versions.as_fd(), &path).map_err(kernel("pinning the version store"))?;
        return Ok(versions);
    }
    let versions = sys::obj_get(&path).map_err(kernel("opening the version store"))?;
    let raw = sys::map_info(versions.as_fd())
        .map_err(|_| SwitchError::BadVersionStore { path: path.clone() })?;
    if raw.map_type != HASH || raw.key_size != 4 || raw.value_size != 8 {
        return Err(SwitchError::BadVersionStore { path });
    }
    Ok(versions)
}

pub(super) fn version_ids(versions: BorrowedFd<'_>) -> std::io::Result<Vec<u32>> {
    let mut ids = Vec::new();
    let mut key = [0u8; 4];
    let mut next = [0u8; 4];
    let mut first = true;
    while ids.len() <= VERSION_STORE_ENTRIES as usize * 64
        && sys::next_key(versions, (!first).then_some(&key[..]), &mut next)?
    {
        first = false;
        key = next;
        ids.push(u32::from_ne_bytes(key));
    }
    Ok(ids)
}

pub(super) fn read_version(
    versions: BorrowedFd<'_>,
    inner_id: u32,
) -> std::io::Result<Option<u64>> {
    let mut value = [0u8; 8];
    Ok(sys::lookup(versions, &inner_id.to_ne_bytes(), &mut value)?
        .then(|| u64::from_ne_bytes(value)))
}

pub(super) fn write_version(
    versions: BorrowedFd<'_>,
    inner_id: u32,
    version: u64,
) -> std::io::Result<()> {
    sys::update(versions, &inner_id.to_ne_bytes(), &version.to_ne_bytes(), 0)
}
