//! The entries of one mirrored map: a persistent hash map for lookups and a
//! persistent ordered set of its keys for paging in key order.
//!
//! Lookups are what readers do most, so they go to a hash trie (a few node
//! visits, however large the map); the ordered set changes only when a key
//! appears or disappears, so an update of an existing key (a counter, a
//! config value) touches the hash trie alone. Both are `imbl` structures:
//! cloning is O(1) and a change copies O(log n) nodes, never the map.

use std::ops::Bound;

use bytes::Bytes;

use crate::event::Revision;

/// One key's current value in the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Value bytes (syscall layout).
    pub value: Bytes,
    /// Revision of the change that set this value.
    pub mod_revision: Revision,
    /// CLOCK_MONOTONIC time (ns) at which the value was known to be current
    /// in the kernel; a change observed earlier is older and never applied.
    pub(crate) observed_ns: u64,
}

/// Bytes of a key stored inline (longer keys go to the heap). Keys compared
/// in place, not behind a pointer, save a cache miss per comparison.
pub const INLINE_KEY_BYTES: usize = 24;

/// A key as the mirror stores it.
pub(crate) type MapKey = smallvec::SmallVec<[u8; INLINE_KEY_BYTES]>;

/// The entries of one map.
#[derive(Debug, Clone, Default)]
pub(crate) struct Entries {
    by_key: imbl::HashMap<MapKey, Entry>,
    order: imbl::OrdSet<MapKey>,
}

impl Entries {
    /// The entry of `key`, if present.
    pub(crate) fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.by_key.get(key)
    }

    /// Sets `key` to `entry`.
    pub(crate) fn insert(&mut self, key: &[u8], entry: Entry) {
        let key = MapKey::from_slice(key);
        if self.by_key.insert(key.clone(), entry).is_none() {
            self.order.insert(key);
        }
    }

    /// Removes `key`, if present.
    pub(crate) fn remove(&mut self, key: &[u8]) {
        if self.by_key.remove(key).is_some() {
            self.order.remove(key);
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Entries with keys strictly after `after` (or all), in key order.
    pub(crate) fn iter_after<'a>(
        &'a self,
        after: Option<&[u8]>,
    ) -> impl Iterator<Item = (&'a [u8], &'a Entry)> + 'a {
        let lower: Bound<&[u8]> = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.order
            .range::<_, [u8]>((lower, Bound::Unbounded))
            .map(|key| {
                let entry = self
                    .by_key
                    .get(key.as_slice())
                    .expect("ordered keys are present");
                (key.as_slice(), entry)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry(revision: u64) -> Entry {
        Entry {
            value: Bytes::from(revision.to_ne_bytes().to_vec()),
            mod_revision: revision,
            observed_ns: revision,
        }
    }

    #[test]
    fn lookups_order_and_paging_agree_after_puts_updates_and_deletes() {
        let mut entries = Entries::default();
        for (revision, key) in [3u8, 1, 2, 5, 4].into_iter().enumerate() {
            entries.insert(&[key], entry(revision as u64));
        }
        entries.insert(&[2], entry(10)); // an update: order unchanged
        entries.remove(&[4]);
        entries.remove(&[9]); // absent: nothing happens
        // a long key, stored on the heap
        let long = [7u8; INLINE_KEY_BYTES + 8];
        entries.insert(&long, entry(11));

        assert_eq!(entries.len(), 5);
        assert_eq!(entries.get(&[2]).map(|e| e.mod_revision), Some(10));
        assert_eq!(entries.get(&long).map(|e| e.mod_revision), Some(11));
        assert!(entries.get(&[4]).is_none());
        let keys: Vec<Vec<u8>> = entries.iter_after(None).map(|(k, _)| k.to_vec()).collect();
        assert_eq!(
            keys,
            vec![vec![1], vec![2], vec![3], vec![5], long.to_vec()],
            "bytewise key order"
        );
        let after: Vec<u8> = entries.iter_after(Some(&[2])).map(|(k, _)| k[0]).collect();
        assert_eq!(after, vec![3, 5, 7], "strictly after the cursor");
    }

    #[test]
    fn a_clone_is_unaffected_by_later_changes() {
        let mut entries = Entries::default();
        entries.insert(&[1], entry(1));
        let before = entries.clone();
        entries.insert(&[1], entry(2));
        entries.insert(&[2], entry(3));
        assert_eq!(before.get(&[1]).map(|e| e.mod_revision), Some(1));
        assert_eq!(before.len(), 1);
        assert_eq!(entries.len(), 2);
    }
}
