//! The bounded log of recent changes that subscribers resume from.

use crate::error::SyncError;
use crate::event::{ChangeEvent, Revision};

mod events;
mod shared;
use events::Events;
pub use shared::{EventIdentity, SharedEvent, WeakEvent};

/// Bounds of the change log: the oldest changes are compacted once either
/// is exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Most changes kept.
    pub max_events: usize,
    /// Most bytes of keys and values (plus a fixed overhead per event) kept.
    pub max_bytes: usize,
}

impl Default for LogLimits {
    /// 100,000 changes or 64 MiB, whichever is reached first.
    fn default() -> Self {
        Self {
            max_events: 100_000,
            max_bytes: 64 << 20,
        }
    }
}

/// A contiguous run of the most recent changes, revisions
/// `oldest()..=newest`, held by value in append-only chunks that snapshots
/// share (`changelog/events.rs`); reads hand out [`SharedEvent`]s.
#[derive(Debug, Clone)]
pub struct ChangeLog {
    events: Events,
    bytes: usize,
    /// Highest revision no longer in the log (0: nothing compacted yet).
    compacted: Revision,
    /// Bytes of the events dropped from the front that the first chunk
    /// still holds (a chunk is released only once all of it is dropped).
    dropped_held: usize,
    limits: LogLimits,
}

impl ChangeLog {
    /// An empty log with the given bounds.
    pub fn new(limits: LogLimits) -> Self {
        Self {
            events: Events::default(),
            bytes: 0,
            compacted: 0,
            dropped_held: 0,
            limits,
        }
    }

    /// The oldest revision a resume can start from.
    pub fn oldest(&self) -> Revision {
        self.compacted + 1
    }

    /// Number of changes held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the log holds no change.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Bytes accounted to the held changes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Marks every revision up to `revision` as not available (used when
    /// the initial state is published without per-change history).
    pub(crate) fn compact_through(&mut self, revision: Revision) {
        while self
            .events
            .front()
            .is_some_and(|event| event.revision <= revision)
        {
            self.pop_front();
        }
        self.compacted = self.compacted.max(revision);
        self.release_dropped();
    }

    pub(crate) fn push(&mut self, event: ChangeEvent) {
        self.bytes += event.approx_bytes();
        self.events.push_back(event);
        self.trim();
    }

    /// Appends the events of one revision (a write request's change set)
    /// together, so that trimming never keeps half of it.
    pub(crate) fn push_revision(&mut self, events: Vec<ChangeEvent>) {
        for event in events {
            self.bytes += event.approx_bytes();
            self.events.push_back(event);
        }
        self.trim();
    }

    /// Drops the oldest revisions, whole, while over a limit; the newest
    /// revision always stays (one change set larger than the limits is kept
    /// until the next one arrives).
    fn trim(&mut self) {
        while self.events.len() > self.limits.max_events || self.bytes > self.limits.max_bytes {
            let (Some(front), Some(back)) = (self.events.front(), self.events.back()) else {
                return;
            };
            if front.revision == back.revision {
                break;
            }
            self.pop_front();
        }
        self.release_dropped();
    }

    /// Lets the dropped events the first chunk still holds go once they
    /// are more than a sixteenth of the byte bound (small events never get
    /// there: a chunk of them is released whole, soon): without this, up to
    /// a chunk's worth of large dropped events would stay beyond the bound.
    fn release_dropped(&mut self) {
        if self.dropped_held > self.limits.max_bytes / 16 {
            self.events.release_dropped_head();
            self.dropped_held = 0;
        }
    }

    /// Drops every event of the oldest revision.
    fn pop_front(&mut self) {
        let Some(revision) = self.events.front().map(|event| event.revision) else {
            return;
        };
        while let Some(event) = self
            .events
            .front()
            .filter(|event| event.revision == revision)
        {
            let bytes = event.approx_bytes();
            self.bytes -= bytes;
            self.events.pop_front();
            // a chunk released whole takes its dropped events with it
            self.dropped_held = if self.events.head() == 0 {
                0
            } else {
                self.dropped_held + bytes
            };
        }
        self.compacted = revision;
    }

    /// The changes from revision `from` on, in whole revisions: at least
    /// the first revision (all its events, however many), then further
    /// revisions while the total stays within `max` events. `from` may be one
    /// past the newest revision (nothing yet); older than [`Self::oldest`] is
    /// [`SyncError::Compacted`]. Each [`SharedEvent`] is a reference to the
    /// log's own copy (no allocation per event).
    pub fn read_from(&self, from: Revision, max: usize) -> Result<Vec<SharedEvent>, SyncError> {
        if from < self.oldest() {
            return Err(SyncError::Compacted {
                requested: from,
                oldest: self.oldest(),
            });
        }
        // revisions are sorted; several events may share one
        let start = self.events.partition_point(|event| event.revision < from);
        let mut out = Vec::new();
        let mut index = start;
        while let Some(first) = self.events.get(index) {
            let revision = first.revision;
            let mut end = index;
            while self
                .events
                .get(end)
                .is_some_and(|event| event.revision == revision)
            {
                end += 1;
            }
            if !out.is_empty() && out.len() + (end - index) > max {
                break;
            }
            out.extend((index..end).filter_map(|i| self.events.shared(i)));
            index = end;
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventSource, Op};
    use bytes::Bytes;

    fn event(revision: Revision, value_len: usize) -> ChangeEvent {
        ChangeEvent {
            revision,
            map: "m".into(),
            op: Op::Put,
            key: Bytes::from_static(b"k"),
            value: Some(Bytes::from(vec![0u8; value_len])),
            source: EventSource::Trace,
            prev_value: None,
            prev_mod_revision: 0,
        }
    }

    #[test]
    fn keeps_at_most_max_events_and_reports_compaction() {
        let mut log = ChangeLog::new(LogLimits {
            max_events: 3,
            max_bytes: usize::MAX,
        });
        for revision in 1..=5 {
            log.push(event(revision, 1));
        }
        assert_eq!(log.len(), 3);
        assert_eq!(log.oldest(), 3);
        let read: Vec<_> = log
            .read_from(3, 10)
            .expect("in range")
            .iter()
            .map(|e| e.revision)
            .collect();
        assert_eq!(read, vec![3, 4, 5]);
        assert!(log.read_from(6, 10).expect("one past newest").is_empty());
        match log.read_from(2, 10) {
            Err(SyncError::Compacted {
                requested: 2,
                oldest: 3,
            }) => {}
            other => panic!("expected compacted, got {other:?}"),
        }
    }

    #[test]
    fn dropped_large_events_are_freed_though_their_chunk_stays() {
        let one = event(1, 1000).approx_bytes();
        let limits = LogLimits {
            max_events: 100,
            max_bytes: 4 * one,
        };
        let mut log = ChangeLog::new(limits);
        let older = log.clone();
        for revision in 1..=21 {
            log.push(event(revision, 1000));
            let held = log.events.held_bytes();
            assert!(
                held <= limits.max_bytes + limits.max_bytes / 16 + one,
                "revision {revision}: the chunks hold {held} bytes, the bound is {}",
                limits.max_bytes
            );
        }
        assert_eq!(log.oldest(), 18);
        let read: Vec<_> = log
            .read_from(18, 10)
            .expect("in range")
            .iter()
            .map(|e| e.revision)
            .collect();
        assert_eq!(read, vec![18, 19, 20, 21]);
        assert!(older.is_empty());
    }

    #[test]
    fn byte_bound_compacts_oldest_first() {
        let mut log = ChangeLog::new(LogLimits {
            max_events: 100,
            max_bytes: 3 * (72 + 1 + 100),
        });
        for revision in 1..=10 {
            log.push(event(revision, 100));
        }
        assert_eq!(log.len(), 3);
        assert_eq!(log.oldest(), 8);
        assert!(log.bytes() <= 3 * (72 + 1 + 100));
    }

    #[test]
    fn read_is_capped_by_max() {
        let mut log = ChangeLog::new(LogLimits::default());
        for revision in 1..=10 {
            log.push(event(revision, 1));
        }
        let read = log.read_from(4, 2).expect("in range");
        assert_eq!(
            read.iter().map(|e| e.revision).collect::<Vec<_>>(),
            vec![4, 5]
        );
    }

    #[test]
    fn compact_through_marks_initial_state_unavailable() {
        let mut log = ChangeLog::new(LogLimits::default());
        log.compact_through(40);
        assert_eq!(log.oldest(), 41);
        assert!(log.read_from(41, 5).expect("next revision").is_empty());
        assert!(log.read_from(40, 5).is_err());
    }

    fn revisions(events: &[SharedEvent]) -> Vec<Revision> {
        events.iter().map(|e| e.revision).collect()
    }

    #[test]
    fn one_revision_of_many_events_is_read_and_trimmed_whole() {
        let mut log = ChangeLog::new(LogLimits {
            max_events: 4,
            max_bytes: usize::MAX,
        });
        log.push(event(1, 1));
        log.push_revision(vec![event(2, 1), event(2, 1), event(2, 1)]);
        log.push(event(3, 1));
        assert_eq!(log.len(), 4, "1 was trimmed whole, 2 stays whole");
        assert_eq!(log.oldest(), 2);
        // a read never cuts revision 2, even with max 1
        assert_eq!(
            revisions(&log.read_from(2, 1).expect("kept")),
            vec![2, 2, 2]
        );
        assert_eq!(
            revisions(&log.read_from(2, 3).expect("kept")),
            vec![2, 2, 2]
        );
        assert_eq!(
            revisions(&log.read_from(2, 4).expect("kept")),
            vec![2, 2, 2, 3]
        );
        assert_eq!(revisions(&log.read_from(3, 10).expect("kept")), vec![3]);
        // a change set larger than the log is kept until the next one
        log.push_revision((0..6).map(|_| event(4, 1)).collect());
        assert_eq!(log.oldest(), 4);
        assert_eq!(log.len(), 6);
        assert_eq!(log.read_from(4, 2).expect("kept").len(), 6);
        log.push(event(5, 1));
        assert_eq!(log.oldest(), 5);
        assert_eq!(revisions(&log.read_from(5, 2).expect("kept")), vec![5]);
    }
}
