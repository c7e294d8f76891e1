//! The middle levels of a map's entries: immutable runs of changes, each a
//! pair of flat bases (`flat.rs`): the keys it sets, with their values, and
//! the keys it deletes. Shared by `Arc` between snapshots, never copied.
//!
//! Runs are built by merging sorted streams of changes ([`Merged`]), newest
//! first: the table of the newest changes into the newest run, a run grown
//! past its level's size into the next one, and all of them into a new
//! base. Each change is so copied a few times, in sequential passes, rather
//! than once per publish.

use crate::entries::Entry;
use crate::flat::{Base, BaseBuilder, key_order};

/// One key's change in key order: `Some` set, `None` deleted.
pub(crate) type Change<'a> = (&'a [u8], Option<Entry<'a>>);

/// A sorted stream of changes (a concrete type, so that a merge's inner
/// loop makes no virtual calls).
pub(crate) enum Stream<'a> {
    /// Records of a base from a position: sets, or (`deletes`) deletes.
    Base {
        base: &'a Base,
        next: usize,
        deletes: bool,
    },
    /// Changes listed beforehand (the top table's, sorted).
    Listed(std::vec::IntoIter<Change<'a>>),
}

impl<'a> Stream<'a> {
    fn peek_key(&self) -> Option<&'a [u8]> {
        match self {
            Self::Base { base, next, .. } => (*next < base.len()).then(|| base.record(*next).key),
            Self::Listed(listed) => listed.as_slice().first().map(|(key, _)| *key),
        }
    }

    fn skip(&mut self) {
        match self {
            Self::Base { next, .. } => *next += 1,
            Self::Listed(listed) => {
                listed.next();
            }
        }
    }

    fn take(&mut self) -> Option<Change<'a>> {
        match self {
            Self::Base {
                base,
                next,
                deletes,
            } => {
                let record = (*next < base.len()).then(|| base.record(*next))?;
                *next += 1;
                Some((record.key, (!*deletes).then(|| Entry::from(record))))
            }
            Self::Listed(listed) => listed.next(),
        }
    }
}

/// An immutable run of changes.
#[derive(Debug, Default)]
pub(crate) struct Run {
    /// Keys the run sets, with their values.
    puts: Base,
    /// Keys the run deletes (empty values).
    deletes: Base,
}

/// Records of `base` from position `start`, as changes that set them.
pub(crate) fn base_stream(base: &Base, start: usize) -> Stream<'_> {
    Stream::Base {
        base,
        next: start,
        deletes: false,
    }
}

impl Run {
    /// A run of `changes` (sorted by key, one per key, about `len` of
    /// them); deletes of keys for which `keep_delete` is false are left out
    /// (nothing below the run holds them).
    pub(crate) fn build<'a>(
        len: usize,
        changes: impl Iterator<Item = Change<'a>>,
        keep_delete: impl Fn(&[u8]) -> bool,
    ) -> Self {
        let mut puts = BaseBuilder::new(len);
        let mut deletes = BaseBuilder::new(0);
        for (key, change) in changes {
            match change {
                Some(entry) => puts.push(key, entry.value, entry.mod_revision, entry.observed_ns),
                None if keep_delete(key) => deletes.push(key, &[], 0, 0),
                None => {}
            }
        }
        Self {
            puts: puts.finish(),
            deletes: deletes.finish(),
        }
    }

    /// Number of keys the run changes.
    pub(crate) fn len(&self) -> usize {
        self.puts.len() + self.deletes.len()
    }

    /// The run's change of `key`: `Some(Some(entry))` set, `Some(None)`
    /// deleted, `None` not changed here.
    pub(crate) fn lookup(&self, key: &[u8]) -> Option<Option<Entry<'_>>> {
        if let Some(record) = self.puts.get(key) {
            return Some(Some(record.into()));
        }
        (self.deletes.len() > 0 && self.deletes.find(key).is_some()).then_some(None)
    }

    /// The run's changes as two sorted streams (sets, deletes: disjoint
    /// keys), strictly after `after` (or all).
    pub(crate) fn streams_after<'a>(&'a self, after: Option<&[u8]>) -> [Stream<'a>; 2] {
        let start = |base: &Base| after.map_or(0, |after| base.position_after(after));
        [
            base_stream(&self.puts, start(&self.puts)),
            Stream::Base {
                base: &self.deletes,
                next: start(&self.deletes),
                deletes: true,
            },
        ]
    }

    /// The keys the run sets, with their values, in key order.
    pub(crate) fn puts(&self) -> impl Iterator<Item = (&[u8], Entry<'_>)> {
        (0..self.puts.len()).map(|i| {
            let record = self.puts.record(i);
            (record.key, Entry::from(record))
        })
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.puts.heap_bytes() + self.deletes.heap_bytes()
    }
}

/// Sorted streams merged into one, each key once, with the change of the
/// earliest stream that has it (streams are given newest first).
pub(crate) struct Merged<'a> {
    streams: Vec<Stream<'a>>,
}

impl<'a> Merged<'a> {
    /// The merge of `streams`, newest first.
    pub(crate) fn new(streams: impl IntoIterator<Item = Stream<'a>>) -> Self {
        Self {
            streams: streams.into_iter().collect(),
        }
    }
}

impl<'a> Iterator for Merged<'a> {
    type Item = Change<'a>;

    fn next(&mut self) -> Option<Change<'a>> {
        let mut first: Option<(usize, &'a [u8])> = None;
        for (i, stream) in self.streams.iter().enumerate() {
            if let Some(key) = stream.peek_key()
                && first.is_none_or(|(_, least)| key_order(key, least).is_lt())
            {
                first = Some((i, key));
            }
        }
        let (winner, key) = first?;
        let change = self.streams[winner].take();
        for stream in &mut self.streams[winner + 1..] {
            if stream
                .peek_key()
                .is_some_and(|other| key_order(other, key).is_eq())
            {
                stream.skip();
            }
        }
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &'static [u8], revision: u64) -> Change<'static> {
        let entry = Entry {
            value: key,
            mod_revision: revision,
            observed_ns: revision,
        };
        (key, Some(entry))
    }

    #[test]
    fn key_order_is_bytewise_for_words_and_other_lengths_and_keeps_its_prefix() {
        let keys: [&[u8]; 7] = [
            &[0, 0, 0, 0, 0, 0, 0, 1],
            &[1, 0, 0, 0, 0, 0, 0, 0],
            &[0xff; 8],
            &[1, 0],
            &[],
            &[1, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0x80, 0, 0, 0, 0, 0, 0, 0],
        ];
        for a in keys {
            for b in keys {
                assert_eq!(key_order(a, b), a.cmp(b), "{a:?} vs {b:?}");
                assert!(crate::flat::key_prefix(a) <= crate::flat::key_prefix(b) || a > b);
            }
        }
    }

    #[test]
    fn newer_streams_win_and_runs_keep_sets_and_deletes_apart() {
        let newer: Vec<Change<'static>> = vec![put(b"b", 5), (b"c", None)];
        let older: Vec<Change<'static>> = vec![put(b"a", 1), put(b"b", 2), put(b"c", 3)];
        let merged: Vec<_> = Merged::new([
            Stream::Listed(newer.into_iter()),
            Stream::Listed(older.into_iter()),
        ])
        .map(|(k, e)| (k.to_vec(), e.map(|e| e.mod_revision)))
        .collect();
        assert_eq!(
            merged,
            vec![
                (b"a".to_vec(), Some(1)),
                (b"b".to_vec(), Some(5)),
                (b"c".to_vec(), None)
            ]
        );
        let changes = [put(b"a", 1), (b"b", None), (b"x", None)];
        let run = Run::build(3, changes.into_iter(), |key| key != b"x");
        assert_eq!(run.len(), 2, "the delete nothing below holds is dropped");
        assert_eq!(run.lookup(b"a").expect("set").expect("set").mod_revision, 1);
        assert!(run.lookup(b"b").expect("deleted").is_none());
        assert!(run.lookup(b"x").is_none() && run.lookup(b"z").is_none());
        let [sets, deletes] = run.streams_after(Some(b"a"));
        assert_eq!(Merged::new([sets]).count(), 0);
        let deleted: Vec<_> = Merged::new([deletes]).collect();
        assert_eq!(deleted.len(), 1);
        assert_eq!((deleted[0].0, deleted[0].1.is_none()), (&b"b"[..], true));
    }
}
