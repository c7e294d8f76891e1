//! Immutable, consistent views of every mirrored map at one revision.
//!
//! A [`Snapshot`] is what readers load from the store's `ArcSwap`: no lock,
//! no syscall. Each map's entries are levels (`entries.rs`): a flat top
//! table of the newest changes (at most 512 keys, each snapshot its own
//! copy), immutable sorted runs shared between snapshots, and a flat,
//! hash-indexed base (`flat.rs`) shared by every snapshot since it was
//! built. A one-change publish brings the snapshot its last publish
//! replaced up to date when no reader holds it (`snapshot/catch_up.rs`);
//! the occasional merge of the runs into a new base costs O(map size).

use std::sync::Arc;

use bytes::Bytes;

use crate::changelog::ChangeLog;
use crate::entries::Entries;
pub use crate::entries::Entry;
use crate::error::SyncError;
use crate::event::{Epoch, Revision};
use crate::map_info::MapInfo;

mod catch_up;
mod maps;
pub(crate) use catch_up::{Delta, Garbage};
pub(crate) use maps::Maps;
pub use maps::{HandleError, MapHandle};

/// The mirror of one map at the snapshot's revision.
#[derive(Debug, Clone)]
pub struct MapView {
    pub(crate) info: Arc<MapInfo>,
    pub(crate) entries: Entries,
    /// Changes observed before this time are reflected in the map's base
    /// state (its last full dump): applying them again would go backwards.
    pub(crate) floor_ns: u64,
    /// When recently deleted keys were deleted: a put observed before that
    /// (a record overtaken by the delete's) must not bring the key back.
    /// Bounded by [`MAX_TOMBSTONES`]; what the floor covers is dropped.
    pub(crate) tombstones: imbl::OrdMap<Bytes, u64>,
    /// A switchable map's live version (0 for other maps).
    pub(crate) version: u64,
}

/// Most tombstones kept per map. Past it, the older half is dropped and the
/// floor raised to cover them: a change older than that is then treated as
/// already reflected, which holds unless records are overtaken by more than
/// that many later deletes.
pub const MAX_TOMBSTONES: usize = 65_536;

impl MapView {
    /// A switchable map's live version (0 for other maps).
    pub fn version(&self) -> u64 {
        self.version
    }

    pub(crate) fn remember_delete(&mut self, key: Bytes, observed_ns: u64) {
        let known = self.tombstones.get(&key).copied().unwrap_or(0);
        self.tombstones.insert(key, known.max(observed_ns));
        if self.tombstones.len() > MAX_TOMBSTONES {
            let mut times: Vec<u64> = self.tombstones.values().copied().collect();
            let middle = times.len() / 2;
            let (_, cut, _) = times.select_nth_unstable(middle);
            let cut = *cut;
            self.raise_floor(cut);
        }
    }

    /// Raises the floor to `floor_ns` and forgets the tombstones it covers.
    pub(crate) fn raise_floor(&mut self, floor_ns: u64) {
        self.floor_ns = self.floor_ns.max(floor_ns);
        let floor = self.floor_ns;
        if self.tombstones.values().any(|deleted| *deleted <= floor) {
            self.tombstones = self
                .tombstones
                .iter()
                .filter(|(_, deleted)| **deleted > floor)
                .map(|(key, deleted)| (key.clone(), *deleted))
                .collect();
        }
    }

    /// The map's identity and shape.
    pub fn info(&self) -> &MapInfo {
        &self.info
    }

    /// The value of `key`, if present.
    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.entries.get(key).map(|entry| entry.value)
    }

    /// The value of `key` with its revision, if present.
    #[inline]
    pub fn entry(&self, key: &[u8]) -> Option<Entry<'_>> {
        self.entries.get(key)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }

    /// Heap bytes of the map's flat base (records and hash index), without
    /// the overlay of recent changes: what a mirror of settled data costs.
    pub fn base_bytes(&self) -> usize {
        self.entries.base_bytes()
    }

    /// Entries in key order (bytewise).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Entry<'_>)> {
        self.entries.iter_after(None)
    }

    /// Entries with keys strictly after `after` (or all), in key order: the
    /// way to page through a large map.
    pub fn iter_after<'a>(
        &'a self,
        after: Option<&[u8]>,
    ) -> impl Iterator<Item = (&'a [u8], Entry<'a>)> + 'a {
        self.entries.iter_after(after)
    }
}

/// Every mirrored map, consistent at one revision.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub(crate) epoch: Epoch,
    pub(crate) revision: Revision,
    pub(crate) maps: Maps,
    pub(crate) log: ChangeLog,
}

impl Snapshot {
    pub(crate) fn empty(epoch: Epoch, log: ChangeLog) -> Self {
        Self {
            epoch,
            revision: 0,
            maps: Maps::new(),
            log,
        }
    }

    /// The instance's epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The revision this snapshot is consistent at.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// One map's mirror.
    #[inline]
    pub fn map(&self, name: &str) -> Option<&MapView> {
        self.maps.get(name)
    }

    /// A handle on the map called `name`, for reads that skip the lookup
    /// by name ([`Self::view`]); `None` if no such map is mirrored. The
    /// handle stays valid in later snapshots of the same store.
    pub fn map_handle(&self, name: &str) -> Option<MapHandle> {
        self.maps.handle(name)
    }

    /// The map `handle` reads: what [`Self::map`] finds, without the lookup
    /// by name. Errors: the map is no longer mirrored
    /// ([`HandleError::Removed`]) or the handle is another store's.
    #[inline]
    pub fn view(&self, handle: &MapHandle) -> Result<&MapView, HandleError> {
        self.maps.view(handle)
    }

    /// All maps, in name order.
    pub fn maps(&self) -> impl Iterator<Item = (&Arc<str>, &MapView)> {
        self.maps.iter()
    }

    /// The change log as of this snapshot.
    pub fn log(&self) -> &ChangeLog {
        &self.log
    }

    /// The oldest revision a past read can ask for: the state just before
    /// the change log's oldest change.
    pub fn oldest_readable(&self) -> Revision {
        self.log.oldest() - 1
    }

    /// One map as it was at `revision`: the current entries with every
    /// change after `revision` undone from the change log (each change
    /// carries the value it replaced). Costs O(changes since `revision` x log
    /// n); the result shares structure with this snapshot. Errors: an unknown
    /// map, a revision newer than this snapshot ([`SyncError::FutureRevision`]),
    /// or older than [`Self::oldest_readable`] ([`SyncError::Compacted`]).
    pub fn map_at(&self, name: &str, revision: Revision) -> Result<MapView, SyncError> {
        let view = self.map(name).ok_or_else(|| SyncError::UnknownMap {
            name: name.to_owned(),
        })?;
        if revision > self.revision {
            return Err(SyncError::FutureRevision {
                requested: revision,
                current: self.revision,
            });
        }
        if revision < self.oldest_readable() {
            return Err(SyncError::Compacted {
                requested: revision,
                oldest: self.oldest_readable(),
            });
        }
        let mut past = view.clone();
        if revision == self.revision {
            return Ok(past);
        }
        let after = self.log.read_from(revision + 1, usize::MAX)?;
        // newest first, so that each key ends at the value before its first
        // change after `revision`
        for event in after.iter().rev().filter(|e| &*e.map == name) {
            match &event.prev_value {
                Some(value) => {
                    let observed_ns = past
                        .entries
                        .get(&event.key[..])
                        .map_or(0, |e| e.observed_ns);
                    past.entries
                        .insert(&event.key, value, event.prev_mod_revision, observed_ns);
                }
                None => {
                    past.entries.remove(&event.key[..]);
                }
            }
        }
        Ok(past)
    }
}

#[cfg(test)]
mod tests {
    use crate::SyncError;
    use crate::changelog::LogLimits;
    use crate::event::EventSource;
    use crate::map_info::{MapInfo, MapKind};
    use crate::store::{Change, Store};
    use bytes::Bytes;

    fn info() -> MapInfo {
        MapInfo::new("m", MapKind::Hash, 1, 1, 64).with_id(1)
    }

    fn value(view: &super::MapView, key: u8) -> Option<(Vec<u8>, u64)> {
        view.entry(&[key])
            .map(|e| (e.value.to_vec(), e.mod_revision))
    }

    #[test]
    fn changes_carry_the_value_they_replaced_and_maps_rewind_through_them() {
        let (store, mut writer) = Store::new(LogLimits::default());
        writer.add_map(
            info(),
            vec![(Bytes::from_static(&[1]), Bytes::from_static(b"a"), 1)],
            0,
        );
        writer.apply([
            Change::put("m", &[1][..], &b"b"[..], EventSource::Trace, 2), // 2
            Change::put("m", &[2][..], &b"x"[..], EventSource::Trace, 2), // 3
            Change::delete("m", &[1][..], EventSource::Trace, 3),         // 4
        ]);
        let snapshot = store.snapshot();
        let log = snapshot.log().read_from(2, 10).expect("in the log");
        let prev: Vec<_> = log
            .iter()
            .map(|e| {
                (
                    e.prev_value.as_deref().map(<[u8]>::to_vec),
                    e.prev_mod_revision,
                )
            })
            .collect();
        assert_eq!(
            prev,
            vec![
                (Some(b"a".to_vec()), 1),
                (None, 0),
                (Some(b"b".to_vec()), 2)
            ]
        );

        let at = |revision| snapshot.map_at("m", revision).expect("readable");
        assert_eq!(value(&at(1), 1), Some((b"a".to_vec(), 1)));
        assert_eq!(value(&at(1), 2), None);
        assert_eq!(value(&at(3), 1), Some((b"b".to_vec(), 2)));
        assert_eq!(value(&at(3), 2), Some((b"x".to_vec(), 3)));
        assert_eq!(value(&at(4), 1), None);
        assert!(matches!(
            snapshot.map_at("m", 0),
            Err(SyncError::Compacted {
                requested: 0,
                oldest: 1
            })
        ));
        assert!(matches!(
            snapshot.map_at("m", 5),
            Err(SyncError::FutureRevision {
                requested: 5,
                current: 4
            })
        ));
        assert!(matches!(
            snapshot.map_at("x", 4),
            Err(SyncError::UnknownMap { .. })
        ));
    }
}
