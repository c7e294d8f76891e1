//! The entries of one mirrored map: a read-optimized flat base (`flat.rs`)
//! plus a small persistent overlay of the changes since it was built.
//!
//! Reads look in the overlay (a hash trie, usually small) and then in the
//! base's hash index. A change touches the overlay alone: cloning the
//! entries for a new snapshot is O(1) and a change copies O(log m) overlay
//! nodes, m the overlay's size. When the overlay outgrows an eighth of the
//! base (or [`MIN_OVERLAY`]), the writer merges it into a new base in one
//! linear pass ([`Entries::merge`]); snapshots holding the old base keep it.

use std::sync::Arc;

use bytes::Bytes;

use imbl::shared_ptr::DefaultSharedPtr;

use crate::event::Revision;
use crate::flat::{Base, BaseBuilder, KeyHasher, Record};
use crate::inline::InlineBytes;

/// One key's current value in the mirror, borrowed from a snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Value bytes (syscall layout).
    pub value: &'a [u8],
    /// Revision of the change that set this value.
    pub mod_revision: Revision,
    /// CLOCK_MONOTONIC time (ns) at which the value was known to be current
    /// in the kernel; a change observed earlier is older and never applied.
    pub(crate) observed_ns: u64,
}

impl PartialEq for Entry<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value && self.mod_revision == other.mod_revision
    }
}

impl Eq for Entry<'_> {}

impl Entry<'_> {
    /// The value copied into owned [`Bytes`] (the mirror stores values
    /// inline, not as shared buffers).
    pub fn value_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self.value)
    }
}

impl<'a> From<Record<'a>> for Entry<'a> {
    fn from(record: Record<'a>) -> Self {
        Entry {
            value: record.value,
            mod_revision: record.mod_revision,
            observed_ns: record.observed_ns,
        }
    }
}

/// Bytes of a key stored inline in the overlay (longer keys are shared on
/// the heap).
pub const INLINE_KEY_BYTES: usize = crate::inline::INLINE_BYTES;

/// A key as the overlay stores it.
pub(crate) type MapKey = InlineBytes;

/// Fewest overlay entries that trigger a merge (below this the merge cost
/// of a large base would dominate).
pub const MIN_OVERLAY: usize = 4096;

/// Bytes of a value stored inline in the overlay (longer values are shared
/// on the heap). Inline, a copied overlay node copies bytes: no reference
/// counts to touch, no shared buffer kept alive.
pub const INLINE_VALUE_BYTES: usize = crate::inline::INLINE_BYTES;

/// A value as the overlay stores it.
type Value = InlineBytes;

/// A value set since the base was built.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    value: Value,
    mod_revision: Revision,
    observed_ns: u64,
}

impl Slot {
    fn entry(&self) -> Entry<'_> {
        Entry {
            value: self.value.as_slice(),
            mod_revision: self.mod_revision,
            observed_ns: self.observed_ns,
        }
    }
}

/// The entries of one map.
#[derive(Debug, Clone, Default)]
pub(crate) struct Entries {
    base: Arc<Base>,
    /// Changes since the base: `Some` set, `None` deleted (base keys only).
    overlay: imbl::GenericHashMap<MapKey, Option<Slot>, KeyHasher, DefaultSharedPtr>,
    /// Keys present in the overlay and absent from the base, in key order.
    added: imbl::OrdSet<MapKey>,
    len: usize,
}

impl Entries {
    /// Entries built from records sorted by key, without duplicates.
    pub(crate) fn from_sorted<'a>(
        len: usize,
        records: impl IntoIterator<Item = (&'a [u8], &'a [u8], Revision, u64)>,
    ) -> Self {
        let mut builder = BaseBuilder::new(len);
        for (key, value, mod_revision, observed_ns) in records {
            builder.push(key, value, mod_revision, observed_ns);
        }
        let base = builder.finish();
        Self {
            len: base.len(),
            base: Arc::new(base),
            ..Self::default()
        }
    }

    /// The entry of `key`, if present.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Entry<'_>> {
        if !self.overlay.is_empty()
            && let Some(slot) = self.overlay.get(key)
        {
            return slot.as_ref().map(Slot::entry);
        }
        self.base.get(key).map(Entry::from)
    }

    /// Sets `key` to `value`.
    pub(crate) fn insert(
        &mut self,
        key: &[u8],
        value: &[u8],
        mod_revision: Revision,
        observed_ns: u64,
    ) {
        let slot = Slot {
            value: Value::from_slice(value),
            mod_revision,
            observed_ns,
        };
        match self.overlay.insert(MapKey::from_slice(key), Some(slot)) {
            Some(Some(_)) => {}
            Some(None) => self.len += 1, // a deleted base key is back
            None => {
                if self.base.find(key).is_none() {
                    self.len += 1;
                    self.added.insert(MapKey::from_slice(key));
                }
            }
        }
    }

    /// Removes `key`, if present.
    pub(crate) fn remove(&mut self, key: &[u8]) {
        let in_base = self.base.find(key).is_some();
        let present = match self.overlay.get(key) {
            Some(slot) => slot.is_some(),
            None => in_base,
        };
        if !present {
            return;
        }
        self.len -= 1;
        if in_base {
            self.overlay.insert(MapKey::from_slice(key), None);
        } else {
            self.overlay.remove(key);
            self.added.remove(key);
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether any change is held in the overlay (not yet in the base).
    pub(crate) fn has_overlay(&self) -> bool {
        !self.overlay.is_empty()
    }

    /// Whether the overlay is large enough to be merged into a new base.
    pub(crate) fn needs_merge(&self) -> bool {
        self.overlay.len() > MIN_OVERLAY.max(self.base.len() / 8)
    }

    /// Heap bytes of the base (the overlay is not counted).
    pub(crate) fn base_bytes(&self) -> usize {
        self.base.heap_bytes()
    }

    /// Merges the overlay into a new base in one pass over both (the
    /// overlay sorted first); the old base stays with older snapshots.
    pub(crate) fn merge(&mut self) {
        let mut changed: Vec<(&[u8], &Option<Slot>)> = self
            .overlay
            .iter()
            .map(|(key, slot)| (key.as_slice(), slot))
            .collect();
        changed.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut builder = BaseBuilder::new(self.len);
        let mut changed = changed.into_iter().peekable();
        let push_slot = |builder: &mut BaseBuilder, key: &[u8], slot: &Option<Slot>| {
            if let Some(slot) = slot {
                builder.push(
                    key,
                    slot.value.as_slice(),
                    slot.mod_revision,
                    slot.observed_ns,
                );
            }
        };
        for i in 0..self.base.len() {
            let record = self.base.record(i);
            while let Some((key, slot)) = changed.next_if(|(key, _)| *key < record.key) {
                push_slot(&mut builder, key, slot);
            }
            match changed.next_if(|(key, _)| *key == record.key) {
                Some((key, slot)) => push_slot(&mut builder, key, slot),
                None => builder.push(
                    record.key,
                    record.value,
                    record.mod_revision,
                    record.observed_ns,
                ),
            }
        }
        for (key, slot) in changed {
            push_slot(&mut builder, key, slot);
        }
        let base = builder.finish();
        debug_assert_eq!(base.len(), self.len);
        *self = Self {
            len: base.len(),
            base: Arc::new(base),
            ..Self::default()
        };
    }

    /// Entries with keys strictly after `after` (or all), in key order.
    pub(crate) fn iter_after<'a>(&'a self, after: Option<&[u8]>) -> Iter<'a> {
        let start = after.map_or(0, |after| self.base.position_after(after));
        let added = match after {
            Some(after) => self
                .added
                .range::<_, [u8]>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => self.added.range::<_, [u8]>(..),
        };
        Iter {
            entries: self,
            next_base: start,
            added: added.peekable(),
        }
    }
}

/// Entries in key order: the base's records, each replaced or hidden by the
/// overlay, interleaved with the keys only the overlay holds.
pub(crate) struct Iter<'a> {
    entries: &'a Entries,
    next_base: usize,
    added: std::iter::Peekable<imbl::ordset::RangedIter<'a, MapKey, DefaultSharedPtr>>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], Entry<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let entries = self.entries;
        loop {
            let record =
                (self.next_base < entries.base.len()).then(|| entries.base.record(self.next_base));
            let added_first = match (&record, self.added.peek()) {
                (Some(record), Some(added)) => added.as_slice() < record.key,
                (None, Some(_)) => true,
                (_, None) => false,
            };
            if added_first {
                let key = self.added.next().expect("peeked");
                let slot = entries.overlay.get(key.as_slice())?.as_ref()?;
                return Some((key.as_slice(), slot.entry()));
            }
            let record = record?;
            self.next_base += 1;
            if entries.overlay.is_empty() {
                return Some((record.key, record.into()));
            }
            match entries.overlay.get(record.key) {
                None => return Some((record.key, record.into())),
                Some(Some(slot)) => return Some((record.key, slot.entry())),
                Some(None) => continue, // deleted since the base
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(entries: &mut Entries, key: &[u8], revision: u64) {
        entries.insert(key, &revision.to_ne_bytes(), revision, revision);
    }

    #[test]
    fn lookups_order_and_paging_agree_after_puts_updates_and_deletes() {
        let mut entries = Entries::default();
        for (revision, key) in [3u8, 1, 2, 5, 4].into_iter().enumerate() {
            put(&mut entries, &[key], revision as u64);
        }
        put(&mut entries, &[2], 10); // an update: order unchanged
        entries.remove(&[4]);
        entries.remove(&[9]); // absent: nothing happens
        // a long key, stored on the heap
        let long = [7u8; INLINE_KEY_BYTES + 8];
        put(&mut entries, &long, 11);

        for merged in [false, true] {
            if merged {
                entries.merge();
            }
            assert_eq!(entries.len(), 5);
            assert_eq!(entries.get(&[2]).map(|e| e.mod_revision), Some(10));
            assert_eq!(entries.get(&long).map(|e| e.mod_revision), Some(11));
            assert!(entries.get(&[4]).is_none());
            let keys: Vec<Vec<u8>> = entries.iter_after(None).map(|(k, _)| k.to_vec()).collect();
            assert_eq!(
                keys,
                vec![vec![1], vec![2], vec![3], vec![5], long.to_vec()],
                "bytewise key order (merged: {merged})"
            );
            let after: Vec<u8> = entries.iter_after(Some(&[2])).map(|(k, _)| k[0]).collect();
            assert_eq!(after, vec![3, 5, 7], "strictly after the cursor");
        }
        // changes on top of a base: replace, delete and re-add a base key
        put(&mut entries, &[1], 20);
        entries.remove(&[3]);
        entries.remove(&[5]);
        put(&mut entries, &[5], 21);
        put(&mut entries, &[0], 22);
        assert_eq!(entries.len(), 5);
        let seen: Vec<(u8, u64)> = entries
            .iter_after(None)
            .map(|(k, e)| (k[0], e.mod_revision))
            .collect();
        assert_eq!(seen, vec![(0, 22), (1, 20), (2, 10), (5, 21), (7, 11)]);
    }

    #[test]
    fn a_clone_is_unaffected_by_later_changes_and_merges() {
        let mut entries = Entries::default();
        put(&mut entries, &[1], 1);
        let before = entries.clone();
        put(&mut entries, &[1], 2);
        put(&mut entries, &[2], 3);
        entries.merge();
        entries.remove(&[1]);
        assert_eq!(before.get(&[1]).map(|e| e.mod_revision), Some(1));
        assert_eq!(before.len(), 1);
        assert_eq!(entries.len(), 1);
        assert!(entries.get(&[1]).is_none());
    }

    #[test]
    fn the_overlay_asks_for_a_merge_past_an_eighth_of_the_base() {
        let mut entries = Entries::default();
        for i in 0..=MIN_OVERLAY as u64 {
            assert!(!entries.needs_merge());
            put(&mut entries, &i.to_be_bytes(), i + 1);
        }
        assert!(entries.needs_merge());
        entries.merge();
        assert!(!entries.needs_merge());
        assert_eq!(entries.len(), MIN_OVERLAY + 1);
    }
}

#[cfg(test)]
mod props;
