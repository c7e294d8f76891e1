//! Pin identity: a map given by pin is mirrored as the map *object* the pin
//! named when it was opened (its fd, its id). If someone removes the pin and
//! pins another map under the same path, the object mapsync holds keeps
//! existing (the fd keeps it alive) but nobody writes to it any more. So on
//! every reconcile tick the ingest task re-resolves each pin
//! (`BPF_OBJ_GET`, then compares the map id):
//!
//! - **same id**: nothing to do;
//! - **another map of the same shape** (kind, key size, value size in the
//!   syscall layout): one WARN line, capture is moved to the new id, the
//!   store's description of the map is replaced (id, capacity, BTF), and the
//!   name is resynced from the new map as a full diff against the mirror,
//!   delivered to watchers as ordinary `resync` events;
//! - **another map of another shape**, a kind mapsync cannot mirror, or a map
//!   that is already mirrored under another name: refused, one WARN line
//!   (per new map id), and the mirror keeps following the old object. Keys
//!   and values of another size under the same name would break every
//!   client that decodes them mid-stream; restarting mapsync mirrors the new
//!   map cleanly (with a new epoch, so clients resync);
//! - **no map at the path** (removed, or now a program): one WARN line, and the
//!   mirror keeps following the object it has open, which is what the maps'
//!   users still see if their programs hold it.
//!
//! A state change is logged once, not every tick; going back to the mirrored
//! map is logged at INFO.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::error::KernelError;
use crate::ingest::{Ingest, Repair};
use crate::{MapSource, OpenMap, open};
use mapsync_core::map_info::MapInfo;

/// What the last pin check found for a mirrored map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum PinState {
    /// The pin names the mirrored map (or the map was given by id).
    #[default]
    Current,
    /// The pin opens no map; said once.
    Lost,
    /// The pin names this other map, which cannot replace the mirrored one;
    /// said once.
    Refused(u32),
}

impl Ingest {
    /// Re-resolves every map given by pin and follows a pin that now names
    /// another map (see the module doc). Runs on the reconcile tick.
    pub(crate) fn check_pins(&mut self) -> Result<(), KernelError> {
        let pinned: Vec<(u32, PathBuf)> = self
            .maps
            .iter()
            .filter_map(|(id, map)| match &map.source {
                MapSource::Pin(path) => Some((*id, path.clone())),
                // a switchable map follows its outer map object (switch.rs)
                MapSource::Id(_) | MapSource::Switch(_) => None,
            })
            .collect();
        for (map_id, path) in pinned {
            self.check_pin(map_id, &path)?;
        }
        Ok(())
    }

    fn check_pin(&mut self, map_id: u32, path: &Path) -> Result<(), KernelError> {
        let found = open::open_pin(path).and_then(|fd| Ok((open::map_id(fd.as_fd())?, fd)));
        let Some(map) = self.maps.get_mut(&map_id) else {
            return Ok(());
        };
        match found {
            Err(error) => {
                if map.pin != PinState::Lost {
                    tracing::warn!(
                        map = %map.name, id = map_id, pin = %path.display(), %error,
                        "the pin no longer names a map: still following the map object mapsync has open"
                    );
                    map.pin = PinState::Lost;
                }
                Ok(())
            }
            Ok((id, _)) if id == map_id => {
                if map.pin != PinState::Current {
                    tracing::info!(
                        map = %map.name, id = map_id, pin = %path.display(),
                        "the pin names the mirrored map again"
                    );
                    map.pin = PinState::Current;
                }
                Ok(())
            }
            Ok((id, _)) if map.pin == PinState::Refused(id) => Ok(()),
            Ok((id, fd)) => {
                let name = map.name.to_string();
                let replacement = match self.maps.get(&id) {
                    Some(other) => Err(format!("map {id} is already mirrored as `{}`", other.name)),
                    None => open::describe(&name, fd).map_err(|error| error.to_string()),
                };
                match replacement.and_then(|new| self.compatible(map_id, new)) {
                    Ok(new) => self.switch(map_id, new, path),
                    Err(why) => {
                        tracing::warn!(
                            map = %name, id = map_id, pin = %path.display(), new_id = id, why,
                            "the pin names another map that cannot replace the mirrored one: still following the old map object; restart mapsync to mirror the new map"
                        );
                        if let Some(map) = self.maps.get_mut(&map_id) {
                            map.pin = PinState::Refused(id);
                        }
                        Ok(())
                    }
                }
            }
        }
    }

    /// The new map, if its shape is the mirrored map's.
    fn compatible(&self, map_id: u32, new: OpenMap) -> Result<OpenMap, String> {
        let old = &self.maps.get(&map_id).expect("checked by the caller").info;
        if same_shape(old, &new.info) {
            return Ok(new);
        }
        Err(format!(
            "it is a {} map with {}-byte keys and {}-byte values, the mirrored one a {} map with {}-byte keys and {}-byte values",
            new.info.kind,
            new.info.key_size,
            new.info.value_bytes,
            old.kind,
            old.key_size,
            old.value_bytes
        ))
    }

    /// Moves capture and the map table to `new`, then resyncs the name from
    /// it as a full diff against the mirror.
    fn switch(&mut self, old_id: u32, new: OpenMap, path: &Path) -> Result<(), KernelError> {
        let new_id = new.info.id;
        tracing::warn!(
            map = %new.info.name, pin = %path.display(), old_id, new_id,
            "the pin names another map now: following it, resyncing the name from it"
        );
        // watch before the dump below, as at start: a write racing the
        // dump is in the dump, in the ring, or both. The old id's records
        // still queued are then foreign (counted, not applied): the name
        // follows the new map from here on.
        self.capture.unwatch(old_id);
        self.capture.watch(&new.info)?;
        let Some(mut map) = self.maps.remove(&old_id) else {
            return Ok(());
        };
        map.info = new.info.clone();
        map.fd = new.fd;
        map.pin = PinState::Current;
        self.maps.insert(new_id, map);
        self.writer.set_map_info(new.info);
        self.resync(new_id, Repair::Resync("the pin names another map"))?;
        Ok(())
    }
}

/// Whether entries of `new` can stand in the mirror of `old` unchanged in
/// layout: same kind, key size and value size (syscall layout). Capacity and
/// BTF may differ; the store's description takes the new ones.
fn same_shape(old: &MapInfo, new: &MapInfo) -> bool {
    old.kind == new.kind && old.key_size == new.key_size && old.value_bytes == new.value_bytes
}
