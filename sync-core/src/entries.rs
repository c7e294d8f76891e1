//! The entries of one mirrored map, in levels (newest first):
//!
//! - a small flat hash table of the latest changes, owned by the snapshot
//!   and copied whole into the next one (`entries/top.rs`);
//! - up to [`LEVELS`] immutable runs of older changes, with delete markers,
//!   shared by `Arc` (`entries/run.rs`); the table is folded into the
//!   newest run when it fills, and a run past its level's size
//!   ([`TOP_ENTRIES`] x [`RATIO`]^(level + 1)) into the next;
//! - the read-optimized flat base of everything else (`flat.rs`), into
//!   which every level is merged once they hold more than
//!   max([`MIN_OVERLAY`], base / 8) changes ([`Entries::merge`]).
//!
//! A read asks each level in turn (the table and the runs are usually
//! small; a quiet map is the base alone). A change is made in place in the
//! table: no allocation, no node copy; it is copied later a few times in
//! sequential passes (folds and merges), LSM-style. Snapshots holding older
//! levels keep them.

use std::sync::Arc;

use bytes::Bytes;

use crate::event::Revision;
use crate::flat::{Base, BaseBuilder, Record};

mod run;
mod top;

use run::{Merged, Run, Stream, base_stream};
use top::{TOP_ENTRIES, Top};

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

/// Keys of up to this many bytes were stored inline by the former overlay;
/// every level now stores keys of any length inline (kept for
/// compatibility).
pub const INLINE_KEY_BYTES: usize = 30;

/// Values of up to this many bytes were stored inline by the former
/// overlay; every level now stores values of any length inline (kept for
/// compatibility).
pub const INLINE_VALUE_BYTES: usize = 30;

/// Fewest changes held above the base that trigger a merge (below this the
/// merge cost of a large base would dominate).
pub const MIN_OVERLAY: usize = 4096;

/// Most immutable runs between the table and the base.
pub const LEVELS: usize = 4;

/// Size ratio between consecutive levels.
pub const RATIO: usize = if cfg!(test) { 4 } else { 16 };

/// Most changes run `level` holds before it is merged into the next one.
fn run_capacity(level: usize) -> usize {
    TOP_ENTRIES * RATIO.pow(level as u32 + 1)
}

/// The entries of one map.
#[derive(Debug, Clone, Default)]
pub(crate) struct Entries {
    base: Arc<Base>,
    /// Runs of changes since the base, newest first (`None`: empty level).
    runs: [Option<Arc<Run>>; LEVELS],
    /// The newest changes.
    top: Top,
    len: usize,
    /// Whether a key was added or deleted since the base was built (if
    /// not, every change is a new value of a base key, and a merge can
    /// rewrite a copy of the base in place: [`Base::with_values`]).
    reshaped: bool,
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
        Self::from_base(builder.finish())
    }

    fn from_base(base: Base) -> Self {
        Self {
            len: base.len(),
            base: Arc::new(base),
            ..Self::default()
        }
    }

    /// The entry of `key`, if present.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Entry<'_>> {
        if let Some(change) = self.top.lookup(key) {
            return change;
        }
        for run in self.runs.iter().flatten() {
            if let Some(change) = run.lookup(key) {
                return change;
            }
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
        self.change(key, Some(value), mod_revision, observed_ns, None);
    }

    /// Sets `key` to `value`, the caller knowing whether `key` is
    /// `present` (one lookup fewer than [`Self::insert`]).
    pub(crate) fn insert_known(
        &mut self,
        key: &[u8],
        value: &[u8],
        mod_revision: Revision,
        observed_ns: u64,
        present: bool,
    ) {
        self.change(key, Some(value), mod_revision, observed_ns, Some(present));
    }

    /// Removes `key`, if present.
    pub(crate) fn remove(&mut self, key: &[u8]) {
        self.change(key, None, 0, 0, None);
    }

    /// Removes `key`, which the caller knows is present.
    pub(crate) fn remove_present(&mut self, key: &[u8]) {
        self.change(key, None, 0, 0, Some(true));
    }

    fn change(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        mod_revision: Revision,
        observed_ns: u64,
        present: Option<bool>,
    ) {
        let was = present.unwrap_or_else(|| match self.top.lookup(key) {
            Some(change) => change.is_some(),
            None => self.below_top(key),
        });
        // a delete of an absent key changes nothing (and is not recorded)
        if value.is_none() && !was {
            return;
        }
        self.top.set(key, value, mod_revision, observed_ns);
        self.reshaped |= !was || value.is_none();
        match (was, value.is_some()) {
            (false, true) => self.len += 1,
            (true, false) => self.len -= 1,
            _ => {}
        }
        if self.top.is_full() {
            self.fold_top();
        }
    }

    /// Whether `key` is present in the levels below the table.
    fn below_top(&self, key: &[u8]) -> bool {
        match self.runs.iter().flatten().find_map(|run| run.lookup(key)) {
            Some(change) => change.is_some(),
            None => self.base.find(key).is_some(),
        }
    }

    /// Whether a delete marker for `key` is needed in a run with nothing
    /// but the base below it.
    fn in_base(&self, key: &[u8]) -> bool {
        self.base.find(key).is_some()
    }

    /// Folds the table into the newest run, then each run past its level's
    /// size into the next.
    fn fold_top(&mut self) {
        let bottom = self.runs.iter().skip(1).all(Option::is_none);
        let mut streams: Vec<Stream<'_>> = vec![Stream::Listed(self.top.sorted_after(None))];
        if let Some(run) = &self.runs[0] {
            streams.extend(run.streams_after(None));
        }
        let len = self.top.len() + self.runs[0].as_ref().map_or(0, |run| run.len());
        let run = Run::build(len, Merged::new(streams), |key| {
            !bottom || self.in_base(key)
        });
        self.runs[0] = Some(Arc::new(run));
        self.top.clear();
        for level in 0..LEVELS - 1 {
            let Some(newer) = self.runs[level].take_if(|run| run.len() > run_capacity(level))
            else {
                break;
            };
            let bottom = self.runs.iter().skip(level + 2).all(Option::is_none);
            let older = self.runs[level + 1].take();
            let mut streams: Vec<Stream<'_>> = newer.streams_after(None).into();
            if let Some(older) = &older {
                streams.extend(older.streams_after(None));
            }
            let len = newer.len() + older.as_ref().map_or(0, |run| run.len());
            let run = Run::build(len, Merged::new(streams), |key| {
                !bottom || self.in_base(key)
            });
            self.runs[level + 1] = Some(Arc::new(run));
        }
    }

    /// Changes held above the base (a key changed at two levels counts twice).
    fn overlay_len(&self) -> usize {
        self.top.len()
            + self
                .runs
                .iter()
                .flatten()
                .map(|run| run.len())
                .sum::<usize>()
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether any change is held above the base.
    pub(crate) fn has_overlay(&self) -> bool {
        !self.top.is_empty() || self.runs.iter().any(Option::is_some)
    }

    /// Whether the levels above the base hold enough changes to be merged
    /// into a new base.
    pub(crate) fn needs_merge(&self) -> bool {
        self.overlay_len() > MIN_OVERLAY.max(self.base.len() / 8)
    }

    /// Heap bytes of the base (the levels above it are not counted).
    pub(crate) fn base_bytes(&self) -> usize {
        self.base.heap_bytes()
    }

    /// Heap bytes of the immutable runs above the base.
    #[cfg_attr(not(test), allow(dead_code, reason = "for tests and figures"))]
    pub(crate) fn run_bytes(&self) -> usize {
        self.runs.iter().flatten().map(|run| run.heap_bytes()).sum()
    }

    /// Every level's changes, newest first, strictly after `after`.
    fn streams_after<'a>(&'a self, after: Option<&[u8]>) -> Vec<Stream<'a>> {
        let mut streams: Vec<Stream<'a>> = Vec::with_capacity(2 + 2 * LEVELS);
        if !self.top.is_empty() {
            streams.push(Stream::Listed(self.top.sorted_after(after)));
        }
        for run in self.runs.iter().flatten() {
            streams.extend(run.streams_after(after));
        }
        let start = after.map_or(0, |after| self.base.position_after(after));
        streams.push(base_stream(&self.base, start));
        streams
    }

    /// Merges every level into a new base, the old levels staying with
    /// older snapshots: when only values of base keys changed, a copy of
    /// the base rewritten in place (no sort, no rehash); otherwise one pass
    /// over every level in key order.
    pub(crate) fn merge(&mut self) {
        if !self.reshaped {
            // oldest level first: newer values overwrite older ones
            let runs = self.runs.iter().rev().flatten().flat_map(|run| run.puts());
            let top = self
                .top
                .changes()
                .filter_map(|(key, entry)| Some((key, entry?)));
            let changes = runs
                .chain(top)
                .map(|(key, entry)| (key, entry.value, entry.mod_revision, entry.observed_ns));
            if let Some(base) = self.base.with_values(changes) {
                *self = Self::from_base(base);
                return;
            }
        }
        let mut builder = BaseBuilder::new(self.len);
        for (key, entry) in self.iter_after(None) {
            builder.push(key, entry.value, entry.mod_revision, entry.observed_ns);
        }
        let base = builder.finish();
        debug_assert_eq!(base.len(), self.len);
        *self = Self::from_base(base);
    }

    /// Entries with keys strictly after `after` (or all), in key order.
    pub(crate) fn iter_after<'a>(&'a self, after: Option<&[u8]>) -> Iter<'a> {
        if self.has_overlay() {
            Iter::Merged(Merged::new(self.streams_after(after)))
        } else {
            let start = after.map_or(0, |after| self.base.position_after(after));
            Iter::Base(&self.base, start)
        }
    }
}

/// Entries in key order: the base alone, or every level merged (the
/// newest change of each key; deleted keys left out).
pub(crate) enum Iter<'a> {
    /// No level above the base: its records from a position.
    Base(&'a Base, usize),
    /// The merge of every level.
    Merged(Merged<'a>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], Entry<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::Base(base, next) => {
                let record = (*next < base.len()).then(|| base.record(*next))?;
                *next += 1;
                Some((record.key, record.into()))
            }
            Self::Merged(merged) => loop {
                if let (key, Some(entry)) = merged.next()? {
                    return Some((key, entry));
                }
            },
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
        let long = [7u8; 40];
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
    fn changes_fold_through_every_level_and_deletes_hide_older_levels() {
        let mut entries = Entries::default();
        let n = 2 * run_capacity(LEVELS - 2) as u64;
        for i in 0..n {
            put(&mut entries, &i.to_be_bytes(), i + 1);
        }
        let kept = entries.clone();
        assert!(
            entries.runs[LEVELS - 1].is_some(),
            "{n} distinct keys reach the last level: {:?}",
            entries
                .runs
                .iter()
                .map(|r| r.as_ref().map(|r| r.len()))
                .collect::<Vec<_>>()
        );
        for i in (0..n).step_by(3) {
            entries.remove(&i.to_be_bytes());
        }
        put(&mut entries, &0u64.to_be_bytes(), 1000);
        let expected: Vec<(u64, u64)> = (0..n)
            .filter(|i| i % 3 != 0 || *i == 0)
            .map(|i| (i, if i == 0 { 1000 } else { i + 1 }))
            .collect();
        assert_eq!(entries.len(), expected.len());
        let seen: Vec<(u64, u64)> = entries
            .iter_after(None)
            .map(|(k, e)| {
                (
                    u64::from_be_bytes(k.try_into().expect("8 bytes")),
                    e.mod_revision,
                )
            })
            .collect();
        assert_eq!(seen, expected);
        for (i, revision) in &expected {
            assert_eq!(
                entries.get(&i.to_be_bytes()).map(|e| e.mod_revision),
                Some(*revision)
            );
        }
        assert!(entries.get(&3u64.to_be_bytes()).is_none());
        assert!(entries.run_bytes() > 0);
        assert_eq!(kept.len(), n as usize, "the clone kept its levels");
        assert_eq!(kept.iter_after(None).count(), n as usize);
        entries.merge();
        assert!(!entries.has_overlay());
        let merged: Vec<(u64, u64)> = entries
            .iter_after(None)
            .map(|(k, e)| {
                (
                    u64::from_be_bytes(k.try_into().expect("8 bytes")),
                    e.mod_revision,
                )
            })
            .collect();
        assert_eq!(merged, expected, "the merged base holds the same");
    }

    #[test]
    fn a_merge_of_new_values_only_rewrites_a_copy_of_the_base() {
        let keys: Vec<[u8; 8]> = (0..300u64).map(u64::to_be_bytes).collect();
        let mut entries = Entries::from_sorted(
            keys.len(),
            keys.iter().map(|k| (&k[..], &[0u8; 8][..], 1, 1)),
        );
        let kept = entries.clone();
        // enough changes to reach the runs, several per key
        for round in 0..3u64 {
            for (i, key) in keys.iter().enumerate().step_by(1 + round as usize) {
                put(&mut entries, key, 10 * round + i as u64 + 2);
            }
        }
        assert!(!entries.reshaped && entries.runs.iter().any(Option::is_some));
        let before: Vec<(Vec<u8>, Vec<u8>, u64)> = entries
            .iter_after(None)
            .map(|(k, e)| (k.to_vec(), e.value.to_vec(), e.mod_revision))
            .collect();
        entries.merge();
        assert!(!entries.has_overlay());
        let after: Vec<_> = entries
            .iter_after(None)
            .map(|(k, e)| (k.to_vec(), e.value.to_vec(), e.mod_revision))
            .collect();
        assert_eq!(after, before);
        assert_eq!(
            entries.get(&keys[6]).map(|e| e.mod_revision),
            Some(10 * 2 + 6 + 2),
            "the newest of three rounds"
        );
        assert_eq!(
            kept.get(&keys[6]).map(|e| e.mod_revision),
            Some(1),
            "old base untouched"
        );
        // a value of another length cannot be rewritten in place: rebuilt
        entries.insert(&keys[0], b"longer value", 99, 99);
        entries.merge();
        assert_eq!(
            entries.get(&keys[0]).map(|e| e.value),
            Some(&b"longer value"[..])
        );
        assert_eq!(entries.len(), keys.len());
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
