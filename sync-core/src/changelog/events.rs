//! The change log's events: append-only chunks shared by every snapshot's
//! copy of the log.
//!
//! A log copied into the next snapshot shares its chunks; an event is
//! appended by filling the next empty slot of the last chunk, which the
//! older copies never read (they stop at their own length). So an append
//! copies nothing and allocates only a new chunk every [`CHUNK`] events,
//! where a persistent vector copies its tail node (and the `Arc` of every
//! event in it) on each append to a shared log. Dropping the oldest events
//! moves a start offset and releases a chunk once all of it is dropped.

use std::sync::{Arc, OnceLock};

use crate::event::ChangeEvent;

/// Events per chunk.
const CHUNK: usize = if cfg!(test) { 4 } else { 256 };

/// A fixed run of slots, each set once.
#[derive(Debug)]
struct Chunk(Box<[OnceLock<Arc<ChangeEvent>>]>);

impl Chunk {
    fn new() -> Self {
        Self((0..CHUNK).map(|_| OnceLock::new()).collect())
    }
}

/// The events of one copy of the log, oldest first.
#[derive(Debug, Clone, Default)]
pub(super) struct Events {
    chunks: imbl::Vector<Arc<Chunk>>,
    /// Events of the first chunk already dropped.
    head: usize,
    len: usize,
}

impl Events {
    /// Number of events.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether the log holds no event.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The event at `index` (0: the oldest), if within the log.
    pub(super) fn get(&self, index: usize) -> Option<&Arc<ChangeEvent>> {
        if index >= self.len {
            return None;
        }
        let at = self.head + index;
        self.chunks[at / CHUNK].0[at % CHUNK].get()
    }

    /// The oldest event.
    pub(super) fn front(&self) -> Option<&Arc<ChangeEvent>> {
        self.get(0)
    }

    /// The newest event.
    pub(super) fn back(&self) -> Option<&Arc<ChangeEvent>> {
        self.get(self.len.checked_sub(1)?)
    }

    /// Appends `event`.
    pub(super) fn push_back(&mut self, event: Arc<ChangeEvent>) {
        let at = self.head + self.len;
        let (chunk, slot) = (at / CHUNK, at % CHUNK);
        if chunk == self.chunks.len() {
            self.chunks.push_back(Arc::new(Chunk::new()));
        }
        if let Err(event) = self.chunks[chunk].0[slot].set(event) {
            // another copy of this log (one that was not published) filled
            // the slot first: this copy takes a chunk of its own
            let fresh = Chunk::new();
            for (from, to) in self.chunks[chunk].0[..slot].iter().zip(fresh.0.iter()) {
                if let Some(older) = from.get() {
                    let _ = to.set(Arc::clone(older));
                }
            }
            let _ = fresh.0[slot].set(event);
            self.chunks.set(chunk, Arc::new(fresh));
        }
        self.len += 1;
    }

    /// Removes and returns the oldest event.
    pub(super) fn pop_front(&mut self) -> Option<Arc<ChangeEvent>> {
        let event = Arc::clone(self.front()?);
        self.head += 1;
        self.len -= 1;
        if self.head == CHUNK {
            self.chunks.pop_front();
            self.head = 0;
        }
        Some(event)
    }

    /// Index of the first event for which `is_before` is false (events are
    /// partitioned: `is_before` holds for a prefix).
    pub(super) fn partition_point(&self, is_before: impl Fn(&ChangeEvent) -> bool) -> usize {
        let (mut low, mut high) = (0, self.len);
        while low < high {
            let middle = low + (high - low) / 2;
            match self.get(middle) {
                Some(event) if is_before(event) => low = middle + 1,
                _ => high = middle,
            }
        }
        low
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventSource, Op};
    use bytes::Bytes;

    fn event(revision: u64) -> Arc<ChangeEvent> {
        Arc::new(ChangeEvent {
            revision,
            map: "m".into(),
            op: Op::Put,
            key: Bytes::from_static(b"k"),
            value: None,
            source: EventSource::Trace,
            prev_value: None,
            prev_mod_revision: 0,
        })
    }

    fn revisions(events: &Events) -> Vec<u64> {
        (0..events.len())
            .map(|i| events.get(i).expect("within").revision)
            .collect()
    }

    #[test]
    fn copies_share_chunks_yet_each_sees_only_its_own_events() {
        let mut log = Events::default();
        for revision in 1..=6 {
            log.push_back(event(revision));
        }
        let older = log.clone();
        log.push_back(event(7));
        assert_eq!(revisions(&older), (1..=6).collect::<Vec<_>>());
        assert_eq!(revisions(&log), (1..=7).collect::<Vec<_>>());
        // a second copy of `older` appends where `log` already did: it
        // takes a chunk of its own, and neither sees the other's event
        let mut other = older.clone();
        other.push_back(event(70));
        assert_eq!(other.back().map(|e| e.revision), Some(70));
        assert_eq!(log.back().map(|e| e.revision), Some(7));
        assert_eq!(other.len(), 7);
        // dropping from the front releases whole chunks
        for revision in 1..=5 {
            assert_eq!(log.pop_front().map(|e| e.revision), Some(revision));
        }
        assert_eq!((log.chunks.len(), log.head), (1, 1));
        assert_eq!(revisions(&log), vec![6, 7]);
        assert_eq!(revisions(&older), (1..=6).collect::<Vec<_>>());
        assert_eq!(log.partition_point(|e| e.revision < 7), 1);
        assert_eq!(log.partition_point(|e| e.revision < 100), 2);
        while log.pop_front().is_some() {}
        assert!(log.front().is_none() && log.back().is_none());
        log.push_back(event(8));
        assert_eq!(revisions(&log), vec![8]);
    }
}
