//! The newest level of a map's entries: a small, flat, open-addressing hash
//! table of the latest changes, owned by one snapshot.
//!
//! A new snapshot copies the table whole (three `memcpy`s of at most a few
//! tens of KiB, one allocation each), and every change after that is made in
//! place: no node copies, no allocation per change. Keys and values of any
//! length sit inline in one byte buffer; a value of the same length as the
//! one it replaces is overwritten where it is. When the table holds
//! [`TOP_ENTRIES`] keys or [`TOP_BYTES`] bytes, its owner folds it into an
//! immutable run (`run.rs`) and clears it.

use crate::entries::Entry;
use crate::flat::hash_key;
use crate::flat::key_order;

/// Most keys the table holds before it is folded into a run.
pub(crate) const TOP_ENTRIES: usize = if cfg!(test) { 4 } else { 512 };
/// Buckets of the hash index (a power of two, at least twice [`TOP_ENTRIES`]).
const BUCKETS: usize = 2 * TOP_ENTRIES.next_power_of_two();
/// Key and value bytes the table holds before it is folded into a run.
pub(crate) const TOP_BYTES: usize = if cfg!(test) { 64 } else { 32 << 10 };
/// Fewest records a copy of the table has room for.
const CLONE_ROOM: usize = 16;
/// `value_len` of a key deleted by the table.
const DELETED: u32 = u32::MAX;

/// One key's latest change: where its bytes are, and its metadata.
#[derive(Debug, Clone, Copy)]
struct Slot {
    key_at: u32,
    key_len: u32,
    value_at: u32,
    /// [`DELETED`] for a delete.
    value_len: u32,
    mod_revision: u64,
    observed_ns: u64,
}

/// The table. Empty (no allocation) until its first change.
#[derive(Debug, Default)]
pub(crate) struct Top {
    /// Per bucket 0 (empty) or slot position + 1; empty when `slots` is.
    index: Vec<u16>,
    /// The changes, in the order their keys were first changed.
    slots: Vec<Slot>,
    /// Key and value bytes the slots point into.
    bytes: Vec<u8>,
}

impl Clone for Top {
    /// A copy with room for as many records again (at least
    /// [`CLONE_ROOM`]) of the sizes seen so far, so that filling it rarely
    /// reallocates, yet a small table (a map published a change or a few
    /// at a time) stays a small allocation; an empty table stays
    /// unallocated.
    fn clone(&self) -> Self {
        if self.slots.is_empty() {
            return Self::default();
        }
        let room = (2 * self.slots.len()).clamp(CLONE_ROOM.min(TOP_ENTRIES), TOP_ENTRIES);
        let mut slots = Vec::with_capacity(room.max(self.slots.len()));
        slots.extend_from_slice(&self.slots);
        let per_slot = self.bytes.len().div_ceil(self.slots.len());
        let mut bytes = Vec::with_capacity((per_slot * room).min(TOP_BYTES).max(self.bytes.len()));
        bytes.extend_from_slice(&self.bytes);
        Self {
            index: self.index.clone(),
            slots,
            bytes,
        }
    }

    /// A copy of `source` in this table's buffers (no allocation once they
    /// are large enough): how a reused snapshot's table is brought up to
    /// date when a fold or a merge changed its map's levels.
    fn clone_from(&mut self, source: &Self) {
        if source.slots.is_empty() {
            self.clear();
            return;
        }
        self.index.clone_from(&source.index);
        self.slots.clone_from(&source.slots);
        self.bytes.clone_from(&source.bytes);
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).expect("a top table holds under 4 GiB")
}

impl Top {
    /// Number of keys changed (set or deleted).
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the table holds no change.
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether the table should be folded into a run.
    pub(crate) fn is_full(&self) -> bool {
        self.slots.len() >= TOP_ENTRIES || self.bytes.len() >= TOP_BYTES
    }

    /// Forgets every change, keeping the buffers.
    pub(crate) fn clear(&mut self) {
        self.index.fill(0);
        self.slots.clear();
        self.bytes.clear();
    }

    fn key(&self, slot: &Slot) -> &[u8] {
        &self.bytes[slot.key_at as usize..(slot.key_at + slot.key_len) as usize]
    }

    fn change(&self, slot: &Slot) -> Option<Entry<'_>> {
        (slot.value_len != DELETED).then(|| Entry {
            value: &self.bytes[slot.value_at as usize..(slot.value_at + slot.value_len) as usize],
            mod_revision: slot.mod_revision,
            observed_ns: slot.observed_ns,
        })
    }

    /// The bucket holding `key`, or the empty bucket where it would go.
    fn bucket(&self, key: &[u8]) -> usize {
        let mut bucket = (hash_key(key) >> (64 - BUCKETS.trailing_zeros())) as usize;
        loop {
            match self.index[bucket] {
                0 => return bucket,
                at if self.key(&self.slots[usize::from(at) - 1]) == key => return bucket,
                _ => bucket = (bucket + 1) & (BUCKETS - 1),
            }
        }
    }

    /// The table's change of `key`: `Some(Some(entry))` set, `Some(None)`
    /// deleted, `None` not changed here.
    pub(crate) fn lookup(&self, key: &[u8]) -> Option<Option<Entry<'_>>> {
        if self.slots.is_empty() {
            return None;
        }
        match self.index[self.bucket(key)] {
            0 => None,
            at => Some(self.change(&self.slots[usize::from(at) - 1])),
        }
    }

    /// Records a put (`Some(value)`) or a delete (`None`) of `key`. Returns
    /// whether the key was set in the table before (`Some(true)`), deleted
    /// by it (`Some(false)`), or not in it (`None`). The caller folds a
    /// full table before the next change.
    pub(crate) fn set(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        mod_revision: u64,
        observed_ns: u64,
    ) -> Option<bool> {
        if self.index.is_empty() {
            self.index = vec![0; BUCKETS];
            self.slots.reserve_exact(TOP_ENTRIES);
            let record = key.len() + value.map_or(0, <[u8]>::len);
            self.bytes
                .reserve_exact((record * TOP_ENTRIES).min(TOP_BYTES));
        }
        debug_assert!(self.slots.len() < TOP_ENTRIES, "a full table is folded");
        let bucket = self.bucket(key);
        let (at, was) = match self.index[bucket] {
            0 => {
                let key_at = to_u32(self.bytes.len());
                self.bytes.extend_from_slice(key);
                self.slots.push(Slot {
                    key_at,
                    key_len: to_u32(key.len()),
                    value_at: 0,
                    value_len: DELETED,
                    mod_revision: 0,
                    observed_ns: 0,
                });
                self.index[bucket] = u16::try_from(self.slots.len()).expect("small table");
                (self.slots.len() - 1, None)
            }
            at => {
                let at = usize::from(at) - 1;
                (at, Some(self.slots[at].value_len != DELETED))
            }
        };
        let slot = &mut self.slots[at];
        slot.mod_revision = mod_revision;
        slot.observed_ns = observed_ns;
        match value {
            None => slot.value_len = DELETED,
            Some(value) if slot.value_len == to_u32(value.len()) => {
                let start = slot.value_at as usize;
                self.bytes[start..start + value.len()].copy_from_slice(value);
            }
            Some(value) => {
                slot.value_at = to_u32(self.bytes.len());
                slot.value_len = to_u32(value.len());
                self.bytes.extend_from_slice(value);
            }
        }
        was
    }

    /// Sets `key` here as `source` has it changed (`false`, and nothing
    /// done, if `source` holds no change of `key`): one key of a reused
    /// snapshot's table brought up to date.
    pub(crate) fn copy_change(&mut self, key: &[u8], source: &Top) -> bool {
        match source.lookup(key) {
            Some(Some(entry)) => {
                self.set(
                    key,
                    Some(entry.value),
                    entry.mod_revision,
                    entry.observed_ns,
                );
                true
            }
            Some(None) => {
                self.set(key, None, 0, 0);
                true
            }
            None => false,
        }
    }

    /// The table's changes, in no particular order.
    pub(crate) fn changes(&self) -> impl Iterator<Item = (&[u8], Option<Entry<'_>>)> {
        self.slots
            .iter()
            .map(|slot| (self.key(slot), self.change(slot)))
    }

    /// The table's changes in key order, strictly after `after` (or all).
    pub(crate) fn sorted_after<'a>(
        &'a self,
        after: Option<&[u8]>,
    ) -> std::vec::IntoIter<(&'a [u8], Option<Entry<'a>>)> {
        let mut order: Vec<&Slot> = self
            .slots
            .iter()
            .filter(|slot| after.is_none_or(|after| self.key(slot) > after))
            .collect();
        order.sort_unstable_by(|a, b| key_order(self.key(a), self.key(b)));
        order
            .into_iter()
            .map(|slot| (self.key(slot), self.change(slot)))
            .collect::<Vec<_>>()
            .into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_found_replaced_in_place_and_listed_in_key_order() {
        let mut top = Top::default();
        assert!(top.lookup(b"a").is_none());
        assert_eq!(top.set(b"b", Some(b"12"), 1, 10), None);
        assert_eq!(top.set(b"a", Some(b"3"), 2, 20), None);
        let used = top.bytes.len();
        assert_eq!(top.set(b"b", Some(b"45"), 3, 30), Some(true));
        assert_eq!(top.bytes.len(), used, "same length: overwritten in place");
        assert_eq!(top.set(b"a", None, 4, 40), Some(true));
        assert_eq!(top.set(b"a", Some(b"longer"), 5, 50), Some(false));
        let b = top.lookup(b"b").expect("changed").expect("set");
        assert_eq!(
            (b.value, b.mod_revision, b.observed_ns),
            (&b"45"[..], 3, 30)
        );
        let listed: Vec<_> = top
            .sorted_after(None)
            .map(|(k, e)| (k.to_vec(), e.map(|e| e.value.to_vec())))
            .collect();
        assert_eq!(
            listed,
            vec![
                (b"a".to_vec(), Some(b"longer".to_vec())),
                (b"b".to_vec(), Some(b"45".to_vec()))
            ]
        );
        assert_eq!(top.sorted_after(Some(b"a")).count(), 1);
        let copy = top.clone();
        top.set(b"b", None, 6, 60);
        assert!(top.lookup(b"b").expect("changed").is_none());
        assert!(
            copy.lookup(b"b").expect("changed").is_some(),
            "copy unaffected"
        );
        assert!(!top.is_full());
        top.set(b"c", Some(b""), 7, 70);
        top.set(b"d", Some(b""), 8, 80);
        assert!(top.is_full(), "{TOP_ENTRIES} keys");
        top.clear();
        assert!(top.is_empty() && top.lookup(b"a").is_none());
    }
}
