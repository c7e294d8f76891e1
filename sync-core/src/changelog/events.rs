//! The change log's events: append-only chunks shared by every snapshot's
//! copy of the log.
//!
//! A log copied into the next snapshot shares its chunks; an event is
//! appended by moving it into the next empty slot of the last chunk, which
//! the older copies never read (they stop at their own length). So an
//! append copies nothing and allocates only a new chunk every [`CHUNK`]
//! events (the events are held by value: no allocation per event), where a
//! persistent vector copies its tail node on each append to a shared log.
//! Dropping the oldest events moves a start offset and releases a chunk
//! once all of it is dropped (and no [`SharedEvent`] of it is held).

use std::sync::Arc;

use super::shared::{EventChunk, SharedEvent};
use crate::event::ChangeEvent;

/// Events per chunk.
const CHUNK: usize = if cfg!(test) { 4 } else { 256 };

/// The events of one copy of the log, oldest first.
#[derive(Debug, Clone, Default)]
pub(super) struct Events {
    chunks: imbl::Vector<Arc<EventChunk>>,
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

    /// Chunk and slot of the event at `index` (0: the oldest), if within
    /// the log.
    fn locate(&self, index: usize) -> Option<(&Arc<EventChunk>, usize)> {
        if index >= self.len {
            return None;
        }
        let at = self.head + index;
        Some((&self.chunks[at / CHUNK], at % CHUNK))
    }

    /// The event at `index` (0: the oldest), if within the log.
    pub(super) fn get(&self, index: usize) -> Option<&ChangeEvent> {
        let (chunk, slot) = self.locate(index)?;
        chunk.get(slot)
    }

    /// A shared handle to the event at `index`, if within the log.
    pub(super) fn shared(&self, index: usize) -> Option<SharedEvent> {
        let (chunk, slot) = self.locate(index)?;
        SharedEvent::at(chunk, slot)
    }

    /// The oldest event.
    pub(super) fn front(&self) -> Option<&ChangeEvent> {
        self.get(0)
    }

    /// The newest event.
    pub(super) fn back(&self) -> Option<&ChangeEvent> {
        self.get(self.len.checked_sub(1)?)
    }

    /// Appends `event`.
    pub(super) fn push_back(&mut self, event: ChangeEvent) {
        let at = self.head + self.len;
        let (chunk, slot) = (at / CHUNK, at % CHUNK);
        if chunk == self.chunks.len() {
            self.chunks.push_back(Arc::new(EventChunk::empty(CHUNK)));
        }
        if let Some(event) = self.chunks[chunk].set(slot, event) {
            // another copy of this log (one that was not published) filled
            // the slot first: this copy takes a chunk of its own, with
            // copies of the events before the slot (reference counts, no
            // bytes copied)
            let fresh = EventChunk::empty(CHUNK);
            for older in 0..slot {
                if let Some(older_event) = self.chunks[chunk].get(older) {
                    let _ = fresh.set(older, older_event.clone());
                }
            }
            let _ = fresh.set(slot, event);
            self.chunks.set(chunk, Arc::new(fresh));
        }
        self.len += 1;
    }

    /// Drops the oldest event; false if there is none.
    pub(super) fn pop_front(&mut self) -> bool {
        if self.len == 0 {
            return false;
        }
        self.head += 1;
        self.len -= 1;
        if self.head == CHUNK {
            self.chunks.pop_front();
            self.head = 0;
        }
        true
    }

    /// Events of the first chunk already dropped (0 after the chunk was
    /// released).
    pub(super) fn head(&self) -> usize {
        self.head
    }

    /// Puts a copy of the first chunk in its place holding only the events
    /// still in the log (at the same slots; the copies share their bytes), so
    /// the events dropped from it are freed now rather than when the whole
    /// chunk is dropped. Other copies of the log and [`SharedEvent`]s keep
    /// the old chunk as it was.
    pub(super) fn release_dropped_head(&mut self) {
        let Some(first) = self.chunks.front() else {
            return;
        };
        if self.head == 0 {
            return;
        }
        let fresh = EventChunk::empty(CHUNK);
        for slot in self.head..CHUNK.min(self.head + self.len) {
            if let Some(event) = first.get(slot) {
                let _ = fresh.set(slot, event.clone());
            }
        }
        self.chunks.set(0, Arc::new(fresh));
    }

    /// Bytes of every event the chunks hold, dropped or not (tests of the
    /// byte bound).
    #[cfg(test)]
    pub(super) fn held_bytes(&self) -> usize {
        self.chunks
            .iter()
            .flat_map(|chunk| (0..CHUNK).filter_map(|slot| chunk.get(slot)))
            .map(ChangeEvent::approx_bytes)
            .sum()
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

    fn event(revision: u64) -> ChangeEvent {
        ChangeEvent {
            revision,
            map: "m".into(),
            op: Op::Put,
            key: Bytes::from_static(b"k"),
            value: Some(Bytes::from(revision.to_be_bytes().to_vec())),
            source: EventSource::Trace,
            prev_value: None,
            prev_mod_revision: 0,
        }
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
            assert_eq!(log.front().map(|e| e.revision), Some(revision));
            assert!(log.pop_front());
        }
        assert_eq!((log.chunks.len(), log.head), (1, 1));
        assert_eq!(revisions(&log), vec![6, 7]);
        assert_eq!(revisions(&older), (1..=6).collect::<Vec<_>>());
        assert_eq!(log.partition_point(|e| e.revision < 7), 1);
        assert_eq!(log.partition_point(|e| e.revision < 100), 2);
        while log.pop_front() {}
        assert!(log.front().is_none() && log.back().is_none());
        log.push_back(event(8));
        assert_eq!(revisions(&log), vec![8]);
    }

    #[test]
    fn a_shared_event_outlives_the_log_dropping_its_chunk() {
        let mut log = Events::default();
        for revision in 1..=CHUNK as u64 + 1 {
            log.push_back(event(revision));
        }
        let first = log.shared(0).expect("within");
        let last = log.shared(CHUNK).expect("within");
        assert!(log.shared(CHUNK + 1).is_none());
        let weak = first.downgrade();
        for _ in 0..CHUNK {
            assert!(log.pop_front());
        }
        assert_eq!(log.chunks.len(), 1, "the first chunk left the log");
        // the handle still reads its event, value bytes and all
        assert_eq!(first.revision, 1);
        assert_eq!(first.value.as_deref(), Some(&1u64.to_be_bytes()[..]));
        assert!(!weak.is_gone() && weak.is(&first));
        drop(first);
        assert!(weak.is_gone(), "the last handle released the chunk");
        assert_eq!(last.revision, CHUNK as u64 + 1);
        assert!(log.shared(0).expect("within").is_same(&last));
    }

    #[test]
    fn a_copy_that_takes_its_own_chunk_holds_other_events_than_the_first() {
        let mut log = Events::default();
        log.push_back(event(1));
        let older = log.clone();
        log.push_back(event(2));
        let mut other = older.clone();
        other.push_back(event(20));
        // the slot of 20 is the slot of 2 in another chunk: not the same
        let (two, twenty) = (log.shared(1).expect("2"), other.shared(1).expect("20"));
        assert!(!two.is_same(&twenty));
        assert!(!two.downgrade().is(&twenty));
        assert_eq!((two.revision, twenty.revision), (2, 20));
        // the events before it are copies in the new chunk: equal, not same
        let (one, one_copy) = (log.shared(0).expect("1"), other.shared(0).expect("1"));
        assert_eq!(one, one_copy);
        assert!(!one.is_same(&one_copy));
    }
}
