//! The entries of one mirrored map, in levels (newest first):
//!
//! - a small flat hash table of the latest changes, owned by the snapshot
//!   and copied whole into the next one, or brought up to date key by key
//!   in a reused older snapshot ([`Entries::catch_up`]) (`entries/top.rs`);
//! - up to [`LEVELS`] immutable runs of older changes, with delete markers,
//!   shared by `Arc` (`entries/run.rs`); the table is folded into the
//!   newest run when it fills (or when copying it has cost more than a
//!   fold), and a run past its level's size into the next
//!   ([`RUN_UNIT`] x [`RATIO`]^(level + 1));
//! - the read-optimized flat base of everything else (`flat.rs`), into
//!   which every level is merged once they hold more than
//!   max([`MIN_OVERLAY`], base / 8) changes, or base / 32 when they only
//!   hold new values of base keys ([`Entries::merge`]).
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

#[cfg(test)]
thread_local! {
    /// Merges of this thread that rewrote a copy of the base in place.
    pub(crate) static IN_PLACE_MERGES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Fewest changes held above the base that trigger a merge (below this the
/// merge cost of a large base would dominate).
pub const MIN_OVERLAY: usize = 4096;

/// Most immutable runs between the table and the base.
pub const LEVELS: usize = 4;

/// Size ratio between consecutive levels.
pub const RATIO: usize = if cfg!(test) { 4 } else { 8 };

/// Table records copied (its slots, one copy per publish) that cost about
/// as much as one record merged by a fold (a merge step, a hash and a push
/// into a new run). 1 measured best in `benches/memory.rs` (single-change
/// publishes on a 100,000-entry map: 2.5 us p50 with 1, 3.7 us with 8; the
/// copies also allocate and are freed on another thread).
const FOLD_COPY_WEIGHT: usize = 1;

/// Table records copied whole (`memcpy`) that cost about as much as one
/// key copied by itself (a lookup and a set), when a reused snapshot's
/// table is brought up to date ([`Entries::catch_up`]).
const KEY_COPY_WEIGHT: usize = if cfg!(test) { 1 } else { 16 };

/// Most changed keys of one publish worth recording for
/// [`Entries::catch_up`]: past them the table is copied whole anyway.
pub(crate) const CATCH_UP_KEYS: usize = TOP_ENTRIES / KEY_COPY_WEIGHT;

/// Changes of the smallest fold the level sizes are scaled to: a full
/// table is [`TOP_ENTRIES`], but a map published a change at a time folds
/// tables of a few dozen ([`Entries::fold_if_copied_enough`]), and merging
/// those into a newest run sized for full tables would cost ~4,000 records
/// per fold.
const RUN_UNIT: usize = if cfg!(test) {
    TOP_ENTRIES
} else {
    TOP_ENTRIES / 8
};

/// Most changes run `level` holds before it is merged into the next one
/// ([`RUN_UNIT`] x [`RATIO`]^(level + 1)).
fn run_capacity(level: usize) -> usize {
    RUN_UNIT * RATIO.pow(level as u32 + 1)
}

/// Levels below the table that a reused copy of a map's entries no longer
/// holds ([`Entries::catch_up`]), kept only to be dropped elsewhere.
#[derive(Debug)]
pub(crate) struct Levels {
    #[allow(dead_code, reason = "held only to be dropped")]
    base: Arc<Base>,
    #[allow(dead_code, reason = "held only to be dropped")]
    runs: [Option<Arc<Run>>; LEVELS],
}

impl Levels {
    /// Whether these levels held a base other than `now`'s (a replaced
    /// base: a large allocation, worth freeing soon).
    pub(crate) fn held_another_base(&self, now: &Entries) -> bool {
        !Arc::ptr_eq(&self.base, &now.base)
    }
}

/// The entries of one map.
#[derive(Debug, Default)]
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
    /// Table records copied by clones (one per publish) since the table
    /// was last folded: see [`Entries::fold_if_copied_enough`].
    top_copied: usize,
}

impl Clone for Entries {
    /// A copy for the next snapshot: the runs and the base are shared, the
    /// table is copied (and counted, so that many small publishes fold it
    /// early rather than copy a large table each time).
    fn clone(&self) -> Self {
        Self {
            base: Arc::clone(&self.base),
            runs: self.runs.clone(),
            top: self.top.clone(),
            len: self.len,
            reshaped: self.reshaped,
            top_copied: self.top_copied + self.top.len(),
        }
    }
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
        self.fold_if_copied_enough();
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

    /// Brings this copy, an older version of `from` whose changes since are
    /// `keys` (each key at least once; repeats are harmless; `None`: not
    /// recorded, too many), up to date
    /// with `from`: when both still share their levels below the table
    /// (no fold or merge in between), only those keys are copied into the
    /// table; otherwise the table is copied whole into this one's buffers
    /// and the levels are taken from `from`. Either way no copy is counted
    /// against the table ([`Self::fold_if_copied_enough`]): this is what
    /// makes a one-change publish cost its change, not its table. Returns
    /// the levels replaced (to be dropped off the writer's thread).
    pub(crate) fn catch_up<'k>(
        &mut self,
        from: &Entries,
        keys: Option<impl ExactSizeIterator<Item = &'k [u8]>>,
    ) -> Option<Levels> {
        let same_levels = Arc::ptr_eq(&self.base, &from.base)
            && self
                .runs
                .iter()
                .zip(&from.runs)
                .all(|(mine, theirs)| match (mine, theirs) {
                    (Some(mine), Some(theirs)) => Arc::ptr_eq(mine, theirs),
                    (None, None) => true,
                    _ => false,
                });
        // a key by key copy costs a lookup and a set each, a copy of the
        // whole table a few `memcpy`s: by key only for few keys
        let keys =
            keys.filter(|keys| same_levels && keys.len() * KEY_COPY_WEIGHT <= from.top.len());
        let copied =
            keys.is_some_and(|mut keys| keys.all(|key| self.top.copy_change(key, &from.top)));
        let replaced = if copied {
            None
        } else {
            self.top.clone_from(&from.top);
            let base = std::mem::replace(&mut self.base, Arc::clone(&from.base));
            let runs = std::mem::replace(&mut self.runs, from.runs.clone());
            (!same_levels).then_some(Levels { base, runs })
        };
        self.len = from.len;
        self.reshaped = from.reshaped;
        self.top_copied = from.top_copied;
        debug_assert_eq!(self.top.len(), from.top.len(), "same keys changed");
        replaced
    }

    /// Folds the table once the copies of it made since the last fold cost
    /// more than the fold itself (records of the table and the newest run,
    /// each worth [`FOLD_COPY_WEIGHT`] copied records), the rent-or-buy
    /// rule: a map published one change at a time keeps a table of about
    /// sqrt(2 x weight x newest run) records instead of copying up to
    /// [`TOP_ENTRIES`] per publish, and large batches (few copies per
    /// change) still fold full tables.
    fn fold_if_copied_enough(&mut self) {
        let folded = self.top.len() + self.runs[0].as_ref().map_or(0, |run| run.len());
        if !self.top.is_empty() && self.top_copied > FOLD_COPY_WEIGHT * folded {
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
        self.top_copied = 0;
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
        // a merge of new values only is a copy of the base rewritten in
        // place, cheap enough to do four times as often (shallower runs)
        let share = if self.reshaped { 8 } else { 32 };
        self.overlay_len() > MIN_OVERLAY.max(self.base.len() / share)
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
                #[cfg(test)]
                IN_PLACE_MERGES.with(|merges| merges.set(merges.get() + 1));
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
mod tests;

#[cfg(test)]
mod props;
