//! Reusing a replaced snapshot for the next publish (double buffering).
//!
//! The writer keeps the snapshot its last publish replaced. When no reader
//! holds it any more (`Arc::get_mut` succeeds: arc-swap has turned every
//! reader's borrow of it into a counted reference when it was swapped out),
//! the next publish brings it up to date instead of cloning the current
//! snapshot into a new allocation: it copies the keys the last publish
//! changed ([`Delta`]) from the current snapshot into the reused one's
//! tables, and takes whatever else moved (a map's levels after a fold, the
//! change log, the revision) by reference. A one-change publish then costs
//! its change twice over a small table, not a copy of every table and a
//! handful of allocations.

use bytes::Bytes;

use super::{MapView, Snapshot};
use crate::changelog::ChangeLog;
use crate::entries::{CATCH_UP_KEYS, Levels};

/// What the current snapshot changed beyond the one it replaced: the maps
/// (slots) its publish touched and every key it changed in them.
#[derive(Debug, Default)]
pub(crate) struct Delta {
    /// Slots of the maps touched (changed keys or only tombstones).
    slots: Vec<u32>,
    /// Slot and key of every change applied, up to [`CATCH_UP_KEYS`].
    keys: Vec<(u32, Bytes)>,
    /// Whether there were more (the tables are then copied whole).
    overflowed: bool,
}

impl Delta {
    /// Forgets everything recorded (for the next publish).
    pub(crate) fn clear(&mut self) {
        self.slots.clear();
        self.keys.clear();
        self.overflowed = false;
    }

    /// Whether a changed key is still worth recording ([`Self::changed`]).
    pub(crate) fn wants_keys(&self) -> bool {
        !self.overflowed
    }

    /// Records that the map in `slot` was touched.
    pub(crate) fn touch(&mut self, slot: u32) {
        if !self.slots.contains(&slot) {
            self.slots.push(slot);
        }
    }

    /// Records that `key` of the map in `slot` (touched) was changed.
    pub(crate) fn changed(&mut self, slot: u32, key: Bytes) {
        if self.keys.len() < CATCH_UP_KEYS {
            self.keys.push((slot, key));
        } else {
            self.overflowed = true;
            self.keys.clear();
        }
    }
}

/// What a caught-up snapshot let go of, for the writer to drop off its
/// thread.
#[derive(Debug)]
pub(crate) enum Garbage {
    /// A map's levels replaced by a fold or a merge.
    Levels(#[allow(dead_code, reason = "held only to be dropped")] Levels),
    /// A copy of the change log that held events compacted since.
    Log(#[allow(dead_code, reason = "held only to be dropped")] ChangeLog),
}

impl Snapshot {
    /// Brings this snapshot, the one `current` replaced, up to date with
    /// `current`, whose publish made the changes `delta` recorded. Hands
    /// what it lets go of to `retire` (with `true` for a replaced base,
    /// worth freeing soon). Returns `false`, changing nothing, when the two
    /// are not one publish apart in a way `delta` describes (a map added or
    /// removed): the caller then copies `current` instead.
    pub(crate) fn catch_up(
        &mut self,
        current: &Snapshot,
        delta: &mut Delta,
        mut retire: impl FnMut(Garbage, bool),
    ) -> bool {
        let usable = self.epoch == current.epoch
            && self.maps.same_layout(&current.maps)
            && delta
                .slots
                .iter()
                .all(|slot| current.maps.at(*slot).is_some());
        if !usable {
            return false;
        }
        delta.keys.sort_unstable_by_key(|(slot, _)| *slot);
        for slot in &delta.slots {
            let (Some(from), Some(to)) = (current.maps.at(*slot), self.maps.at_mut(*slot)) else {
                unreachable!("same layout: both have every touched slot's map");
            };
            let start = delta.keys.partition_point(|(at, _)| at < slot);
            let end = delta.keys.partition_point(|(at, _)| at <= slot);
            let keys =
                (!delta.overflowed).then(|| delta.keys[start..end].iter().map(|(_, key)| &key[..]));
            if let Some(levels) = to.catch_up(from, keys) {
                let now = levels.held_another_base(&to.entries);
                retire(Garbage::Levels(levels), now);
            }
        }
        self.revision = current.revision;
        let log = std::mem::replace(&mut self.log, current.log.clone());
        // the same oldest revision: the old copy holds nothing the new one
        // does not (dropping it only releases references)
        if log.oldest() != self.log.oldest() {
            retire(Garbage::Log(log), false);
        }
        true
    }
}

impl MapView {
    /// [`Snapshot::catch_up`] of one map: `keys` changed in `from` since
    /// this (older) view of it. Returns the levels it no longer holds.
    fn catch_up<'k>(
        &mut self,
        from: &MapView,
        keys: Option<impl ExactSizeIterator<Item = &'k [u8]>>,
    ) -> Option<Levels> {
        if !std::sync::Arc::ptr_eq(&self.info, &from.info) {
            self.info = from.info.clone();
        }
        self.floor_ns = from.floor_ns;
        self.version = from.version;
        if !self.tombstones.ptr_eq(&from.tombstones) {
            self.tombstones = from.tombstones.clone();
        }
        self.entries.catch_up(&from.entries, keys)
    }
}

#[cfg(test)]
mod tests;
