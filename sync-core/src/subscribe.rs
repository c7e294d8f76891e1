//! In-process subscriptions: the initial state, then every change in
//! revision order, read from the change log.
//!
//! A subscription holds only a cursor (the next revision it needs) and reads
//! the shared change log from the current snapshot, so a slow subscriber
//! costs no memory and never slows ingest or other subscribers. One that
//! falls further behind than the log reaches ends with
//! [`SyncError::Compacted`]: it must start again from a snapshot.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::watch;

use crate::changelog::SharedEvent;
use crate::error::SyncError;
use crate::event::{ChangeEvent, EventSource, Op, Revision};
use crate::snapshot::Snapshot;
use crate::store::{Store, SubscriberGuard};

impl Store {
    /// A stream of the changes to the maps `filter` selects, from
    /// `from_revision` on; `from_revision` 0 first yields the selected
    /// entries as of one revision R and an end-of-initial-state marker, then
    /// every change after R. Errors: an unknown map in the filter, or a
    /// revision older than the change log.
    pub fn subscribe(
        &self,
        from_revision: Revision,
        filter: SubscribeFilter,
    ) -> Result<Subscription, SyncError> {
        Subscription::new(self.clone(), from_revision, filter)
    }
}

/// Most events in one [`WatchBatch::Events`].
pub const MAX_BATCH: usize = 512;

/// At most this many key and value bytes per batch of the initial state.
/// The mirror stores values inline, so each initial event is a copy: a
/// watch that is not read holds one such batch, not 512 large values.
pub const MAX_INITIAL_BATCH_BYTES: usize = 64 << 10;

/// Which changes a subscription delivers. Every condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// Map names; empty selects every map.
    pub maps: Vec<String>,
    /// Only keys starting with these bytes.
    pub key_prefix: Option<Bytes>,
    /// Only one key or a range of keys.
    pub key_range: Option<KeyRange>,
    /// Skip puts (initial-state entries are puts, so they are skipped too).
    pub no_put: bool,
    /// Skip deletes.
    pub no_delete: bool,
}

/// One key (`end` = `None`) or the keys in `[start, end)`, bytewise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// The key, or the first key of the range.
    pub start: Bytes,
    /// The end of the range, exclusive; `None` selects `start` alone.
    pub end: Option<Bytes>,
}

impl KeyRange {
    /// Whether `key` is in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match &self.end {
            None => key == &self.start[..],
            Some(end) => key >= &self.start[..] && key < &end[..],
        }
    }
}

impl SubscribeFilter {
    /// Every change to the named maps.
    pub fn maps(names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            maps: names.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    fn selects_map(&self, map: &str) -> bool {
        self.maps.is_empty() || self.maps.iter().any(|name| name == map)
    }

    /// Whether `key` passes the key conditions.
    pub fn selects_key(&self, key: &[u8]) -> bool {
        self.key_prefix
            .as_ref()
            .is_none_or(|prefix| key.starts_with(prefix))
            && self
                .key_range
                .as_ref()
                .is_none_or(|range| range.contains(key))
    }

    fn selects_op(&self, op: Op) -> bool {
        match op {
            Op::Put => !self.no_put,
            Op::Delete => !self.no_delete,
        }
    }

    fn selects(&self, event: &ChangeEvent) -> bool {
        self.selects_map(&event.map) && self.selects_op(event.op) && self.selects_key(&event.key)
    }
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchBatch {
    /// Changes (or, before [`WatchBatch::InitialStateDone`], entries of the
    /// initial state with source [`EventSource::Initial`]) in revision order.
    /// Live changes are the change log's own events, shared; each batch of
    /// the initial state is one allocation of its own.
    Events(Vec<SharedEvent>),
    /// The initial state, as of `revision`, is complete; live changes from
    /// `revision + 1` follow.
    InitialStateDone {
        /// The revision the initial state was read at.
        revision: Revision,
    },
}

enum Phase {
    Initial {
        snapshot: Arc<Snapshot>,
        maps: Vec<Arc<str>>,
        map_index: usize,
        after: Option<Bytes>,
    },
    Live {
        next: Revision,
    },
    Done,
}

/// A stream of [`WatchBatch`]es; see [`Store::subscribe`]. Ends after an
/// error.
pub struct Subscription {
    inner: Pin<Box<dyn Stream<Item = Result<WatchBatch, SyncError>> + Send>>,
    position: Arc<AtomicU64>,
    _counted: SubscriberGuard,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Subscription {
    pub(crate) fn new(
        store: Store,
        from_revision: Revision,
        filter: SubscribeFilter,
    ) -> Result<Self, SyncError> {
        let snapshot = store.snapshot();
        for name in &filter.maps {
            if snapshot.map(name).is_none() {
                return Err(SyncError::UnknownMap { name: name.clone() });
            }
        }
        let phase = if from_revision == 0 {
            let maps = snapshot
                .maps()
                .map(|(name, _)| name.clone())
                .filter(|name| filter.selects_map(name))
                .collect();
            Phase::Initial {
                snapshot,
                maps,
                map_index: 0,
                after: None,
            }
        } else {
            if from_revision < snapshot.log().oldest() {
                return Err(SyncError::Compacted {
                    requested: from_revision,
                    oldest: snapshot.log().oldest(),
                });
            }
            Phase::Live {
                next: from_revision,
            }
        };
        let revisions = store.revisions();
        let counted = store.count_subscriber();
        let position = Arc::new(AtomicU64::new(from_revision.saturating_sub(1)));
        let state = (store, revisions, filter, phase, position.clone());
        let inner = futures::stream::unfold(
            state,
            |(store, mut revisions, filter, phase, position)| async move {
                let (item, phase) = step(&store, &mut revisions, &filter, phase, &position).await?;
                Some((item, (store, revisions, filter, phase, position)))
            },
        );
        Ok(Self {
            inner: Box::pin(inner),
            position,
            _counted: counted,
        })
    }

    /// The revision up to which this subscription is complete: every selected
    /// change with a revision at or below it has been yielded (0 while the
    /// initial state is still being yielded). Moves forward also when changes
    /// are read and none is selected, so it is the basis of honest progress
    /// notifications.
    pub fn position(&self) -> Revision {
        self.position.load(Ordering::Acquire)
    }
}

impl Stream for Subscription {
    type Item = Result<WatchBatch, SyncError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Produces the next item and the phase after it; `None` ends the stream.
async fn step(
    store: &Store,
    revisions: &mut watch::Receiver<Revision>,
    filter: &SubscribeFilter,
    phase: Phase,
    position: &AtomicU64,
) -> Option<(Result<WatchBatch, SyncError>, Phase)> {
    match phase {
        Phase::Done => None,
        Phase::Initial {
            snapshot,
            maps,
            mut map_index,
            mut after,
        } => {
            let mut batch = Vec::new();
            let mut bytes = 0;
            while batch.len() < MAX_BATCH
                && bytes < MAX_INITIAL_BATCH_BYTES
                && map_index < maps.len()
            {
                let name = &maps[map_index];
                let view = snapshot.map(name).expect("listed from this snapshot");
                let room = MAX_BATCH - batch.len();
                let mut taken = 0;
                let mut last = None;
                // stopped by the byte bound, not at the map's end
                let mut full = false;
                for (key, entry) in view.iter_after(after.as_deref()).take(room) {
                    if bytes >= MAX_INITIAL_BATCH_BYTES {
                        full = true;
                        break;
                    }
                    taken += 1;
                    last = Some(key);
                    if filter.no_put || !filter.selects_key(key) {
                        continue;
                    }
                    bytes += key.len() + entry.value.len();
                    batch.push(ChangeEvent {
                        revision: entry.mod_revision,
                        map: name.clone(),
                        op: Op::Put,
                        key: Bytes::copy_from_slice(key),
                        value: Some(entry.value_bytes()),
                        source: EventSource::Initial,
                        prev_value: None,
                        prev_mod_revision: 0,
                    });
                }
                if let Some(key) = last {
                    after = Some(Bytes::copy_from_slice(key));
                }
                if taken < room && !full {
                    map_index += 1;
                    after = None;
                }
            }
            if batch.is_empty() {
                let revision = snapshot.revision();
                position.store(revision, Ordering::Release);
                let next = Phase::Live { next: revision + 1 };
                return Some((Ok(WatchBatch::InitialStateDone { revision }), next));
            }
            let next = Phase::Initial {
                snapshot,
                maps,
                map_index,
                after,
            };
            Some((Ok(WatchBatch::Events(SharedEvent::batch(batch))), next))
        }
        Phase::Live { mut next } => loop {
            if revisions
                .wait_for(|current| *current >= next)
                .await
                .is_err()
            {
                return Some((Err(SyncError::Stopped), Phase::Done));
            }
            let events = match store.load().log().read_from(next, MAX_BATCH) {
                Ok(events) => events,
                Err(error) => return Some((Err(error), Phase::Done)),
            };
            let Some(last) = events.last() else {
                continue;
            };
            next = last.revision + 1;
            let selected: Vec<_> = events.into_iter().filter(|e| filter.selects(e)).collect();
            position.store(next - 1, Ordering::Release);
            if !selected.is_empty() {
                return Some((Ok(WatchBatch::Events(selected)), Phase::Live { next }));
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changelog::LogLimits;
    use crate::map_info::{MapInfo, MapKind};
    use crate::store::Change;
    use futures::StreamExt;

    fn info(name: &str) -> MapInfo {
        MapInfo::new(name, MapKind::Hash, 2, 1, 4096).with_id(1)
    }

    fn collect(batch: WatchBatch) -> Vec<(Revision, Vec<u8>, EventSource)> {
        match batch {
            WatchBatch::Events(events) => events
                .iter()
                .map(|e| (e.revision, e.key.to_vec(), e.source))
                .collect(),
            other => panic!("expected events, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn from_zero_gives_state_then_marker_then_live_without_gap_or_duplicate() {
        let (store, mut writer) = Store::new(LogLimits::default());
        let entries = (0..1000u16)
            .map(|i| {
                (
                    Bytes::from(i.to_be_bytes().to_vec()),
                    Bytes::from_static(b"v"),
                    1,
                )
            })
            .collect();
        writer.add_map(info("m"), entries, 0);
        let mut sub = store
            .subscribe(0, SubscribeFilter::default())
            .expect("subscribe");
        // a change published after the subscription started is live, not initial
        writer.apply([Change::put(
            "m",
            &[0xff, 0xff][..],
            &b"w"[..],
            EventSource::Trace,
            2,
        )]);
        let mut initial = Vec::new();
        loop {
            match sub.next().await.expect("item").expect("ok") {
                WatchBatch::InitialStateDone { revision } => {
                    assert_eq!(revision, 1000);
                    break;
                }
                batch => initial.extend(collect(batch)),
            }
        }
        assert_eq!(initial.len(), 1000);
        assert!(
            initial
                .iter()
                .all(|(_, _, source)| *source == EventSource::Initial)
        );
        let live = collect(sub.next().await.expect("item").expect("ok"));
        assert_eq!(live, vec![(1001, vec![0xff, 0xff], EventSource::Trace)]);
    }

    #[tokio::test]
    async fn resume_from_revision_and_filter_by_map_and_prefix() {
        let (store, mut writer) = Store::new(LogLimits::default());
        writer.add_map(info("a"), vec![], 0);
        writer.add_map(info("b"), vec![], 0);
        writer.apply([
            Change::put("a", &[1, 1][..], &b"x"[..], EventSource::Trace, 1),
            Change::put("b", &[1, 1][..], &b"x"[..], EventSource::Trace, 1),
            Change::put("a", &[2, 1][..], &b"x"[..], EventSource::Trace, 1),
            Change::put("a", &[1, 2][..], &b"x"[..], EventSource::Trace, 1),
        ]);
        let filter = SubscribeFilter {
            maps: vec!["a".into()],
            key_prefix: Some(Bytes::from_static(&[1])),
            ..SubscribeFilter::default()
        };
        let mut sub = store.subscribe(2, filter).expect("subscribe");
        let got = collect(sub.next().await.expect("item").expect("ok"));
        assert_eq!(got.iter().map(|(r, _, _)| *r).collect::<Vec<_>>(), vec![4]);
    }

    #[tokio::test]
    async fn unknown_map_and_compacted_revision_are_refused() {
        let (store, mut writer) = Store::new(LogLimits {
            max_events: 2,
            max_bytes: usize::MAX,
        });
        writer.add_map(info("m"), vec![], 0);
        for i in 0..5u8 {
            writer.apply([Change::put(
                "m",
                vec![i, 0],
                &b"v"[..],
                EventSource::Trace,
                1,
            )]);
        }
        match store.subscribe(0, SubscribeFilter::maps(["nope"])) {
            Err(SyncError::UnknownMap { name }) => assert_eq!(name, "nope"),
            other => panic!("expected unknown map, got {other:?}"),
        }
        match store.subscribe(1, SubscribeFilter::default()) {
            Err(SyncError::Compacted {
                requested: 1,
                oldest: 4,
            }) => {}
            other => panic!("expected compacted, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_subscriber_left_behind_the_log_is_told_it_is_compacted() {
        let (store, mut writer) = Store::new(LogLimits {
            max_events: 4,
            max_bytes: usize::MAX,
        });
        writer.add_map(info("m"), vec![], 0);
        let mut sub = store
            .subscribe(1, SubscribeFilter::default())
            .expect("subscribe");
        for i in 0..10u8 {
            writer.apply([Change::put(
                "m",
                vec![i, 0],
                &b"v"[..],
                EventSource::Trace,
                1,
            )]);
        }
        match sub.next().await.expect("item") {
            Err(SyncError::Compacted {
                requested: 1,
                oldest: 7,
            }) => {}
            other => panic!("expected compacted, got {other:?}"),
        }
        assert!(
            sub.next().await.is_none(),
            "the stream ends after the error"
        );
    }
}
