//! The store: one `ArcSwap<Snapshot>` that readers load, and the single
//! writer that publishes changes with revisions.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::{ArcSwap, Guard};
use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

use crate::changelog::{ChangeLog, LogLimits};
pub use crate::dumped::{DumpEntries, SortedDump};
use crate::entries::Entries;
use crate::event::{ChangeEvent, Epoch, EventSource, Op, Revision};
use crate::flat::key_order;
use crate::map_info::MapInfo;
use crate::snapshot::{Delta, Garbage, MapView, Snapshot};

/// A handle on the mirror of every map one mapsync instance follows. Cheap to
/// clone; all clones see the same data.
///
/// ```
/// use bytes::Bytes;
/// use mapsync_core::{Change, EventSource, MapInfo, MapKind, Store};
///
/// let (store, mut writer) = Store::new(Default::default());
/// let info = MapInfo::new("counts", MapKind::Hash, 4, 8, 16).with_id(7);
/// writer.add_map(info, Vec::new(), 0);
/// writer.apply([Change::put("counts", &[1, 0, 0, 0][..], &[9, 0, 0, 0, 0, 0, 0, 0][..], EventSource::Trace, 1)]);
///
/// // Readers: no lock, no syscall.
/// let snapshot = store.snapshot();
/// assert_eq!(snapshot.revision(), 1);
/// assert_eq!(snapshot.map("counts").unwrap().get(&[1, 0, 0, 0]).unwrap()[0], 9);
/// ```
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    current: ArcSwap<Snapshot>,
    revision: watch::Sender<Revision>,
    ready: watch::Sender<bool>,
    subscribers: AtomicUsize,
    /// When the newest revisions were published (mirror -> watch latency).
    published: crate::propagation::PublishClock,
}

/// Counts a live subscription for as long as it exists.
#[derive(Debug)]
pub(crate) struct SubscriberGuard(Store);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.inner.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Store {
    /// A new, empty store with a fresh epoch, and its only writer.
    pub fn new(limits: LogLimits) -> (Store, Publisher) {
        let snapshot = Snapshot::empty(Epoch::random(), ChangeLog::new(limits));
        let store = Store {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(snapshot),
                revision: watch::channel(0).0,
                ready: watch::channel(false).0,
                subscribers: AtomicUsize::new(0),
                published: Default::default(),
            }),
        };
        let writer = Publisher {
            store: store.clone(),
            reclaimer: Reclaimer::start(),
            merged: false,
            busy: false,
            prev_values: PrevValues::default(),
            spare: None,
            delta: Delta::default(),
        };
        (store, writer)
    }

    /// The current snapshot, to keep. For a short read, [`Store::load`] is
    /// cheaper.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.current.load_full()
    }

    /// The current snapshot, borrowed for a short read (no reference count
    /// traffic on the shared pointer).
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.inner.current.load()
    }

    /// A handle on the mirrored map `name`, resolved once: reads through
    /// it ([`Snapshot::view`]) skip the lookup by name, in this and every
    /// later snapshot. Error: no map of that name is mirrored.
    pub fn handle(&self, name: &str) -> Result<crate::snapshot::MapHandle, crate::SyncError> {
        self.load()
            .map_handle(name)
            .ok_or_else(|| crate::SyncError::UnknownMap {
                name: name.to_owned(),
            })
    }

    /// The instance's epoch.
    pub fn epoch(&self) -> Epoch {
        self.load().epoch
    }

    /// The newest published revision.
    pub fn revision(&self) -> Revision {
        *self.inner.revision.borrow()
    }

    /// A receiver that changes whenever a new revision is published.
    pub fn revisions(&self) -> watch::Receiver<Revision> {
        self.inner.revision.subscribe()
    }

    /// Number of live subscriptions.
    pub fn subscribers(&self) -> usize {
        self.inner.subscribers.load(Ordering::Relaxed)
    }

    pub(crate) fn count_subscriber(&self) -> SubscriberGuard {
        self.inner.subscribers.fetch_add(1, Ordering::Relaxed);
        SubscriberGuard(self.clone())
    }

    /// Whether every configured map has had its initial dump.
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// Waits until every configured map has had its initial dump.
    pub async fn wait_ready(&self) {
        let mut ready = self.inner.ready.subscribe();
        // the sender lives in `self`, so this cannot fail
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// Waits until the mirror has reached `revision` (read-your-writes).
    pub async fn wait_for_revision(&self, revision: Revision) {
        let mut revisions = self.revisions();
        let _ = revisions.wait_for(|current| *current >= revision).await;
    }

    /// How long ago `revision` was published to readers, while it is among
    /// the newest [`crate::propagation::PUBLISH_CLOCK_SLOTS`] revisions.
    pub fn since_published(&self, revision: Revision) -> Option<std::time::Duration> {
        self.inner.published.since_published(revision)
    }

    /// Publishes `snapshot` and returns the one it replaced (for the
    /// writer to retire off its thread).
    #[must_use = "the replaced snapshot goes to the reclaimer"]
    fn publish(&self, snapshot: Arc<Snapshot>) -> Arc<Snapshot> {
        let revision = snapshot.revision;
        let before = self.revision();
        let replaced = self.inner.current.swap(snapshot);
        self.inner.published.record(before, revision);
        self.inner.revision.send_if_modified(|current| {
            let advanced = *current != revision;
            *current = revision;
            advanced
        });
        replaced
    }
}

/// What the writer hands to the reclaimer thread to drop.
#[derive(Debug)]
enum Retired {
    Snapshots(#[allow(dead_code, reason = "held only to be dropped")] Vec<Arc<Snapshot>>),
    Parts(#[allow(dead_code, reason = "held only to be dropped")] Vec<Garbage>),
    Dump(#[allow(dead_code, reason = "held only to be dropped")] DumpEntries),
}

/// Most batches queued for the reclaimer; past it the writer drops them
/// itself (slower, never unbounded).
const RECLAIM_QUEUE: usize = 64;
/// Replaced snapshots handed over together (one wakeup of the reclaimer
/// per this many publishes, not one per publish).
const RECLAIM_BATCH: usize = 64;
/// Parts of reused snapshots handed over together: the old copies of the
/// change log (one per publish once the log is full, each pinning at most
/// the few events compacted since it was current) count 1, so that a
/// mirror published a change at a time wakes the reclaimer every ~1,000
/// publishes, not every 64; the levels a fold replaced (up to a few
/// thousand records each) count 1/[`RECLAIM_LEVELS`] of the batch.
const RECLAIM_PARTS: usize = 16 * RECLAIM_BATCH;
/// Most replaced levels of folds queued for the reclaimer at a time.
const RECLAIM_LEVELS: usize = 8;

/// A thread that frees replaced snapshots (with the overlay nodes and bases
/// only they held) and consumed dumps, so that the ingest thread does not.
#[derive(Debug)]
struct Reclaimer {
    sender: Option<std::sync::mpsc::SyncSender<Retired>>,
    pending: Vec<Arc<Snapshot>>,
    /// Parts of reused snapshots (`snapshot/catch_up.rs`) queued likewise.
    parts: Vec<Garbage>,
    /// Weight of `parts` (see [`RECLAIM_PARTS`]).
    parts_weight: usize,
}

impl Reclaimer {
    fn start() -> Self {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Retired>(RECLAIM_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("mapsync-reclaim".into())
            .spawn(move || receiver.into_iter().for_each(drop));
        if let Err(error) = &spawned {
            tracing::warn!(%error, "no reclaimer thread: old snapshots are freed by the writer");
        }
        Self {
            sender: spawned.ok().map(|_| sender),
            pending: Vec::with_capacity(RECLAIM_BATCH),
            parts: Vec::new(),
            parts_weight: 0,
        }
    }

    /// Queues a part a reused snapshot let go of, as
    /// [`Self::retire_snapshot`] does a snapshot.
    fn retire_part(&mut self, part: Garbage, now: bool) {
        self.parts_weight += match part {
            Garbage::Levels(_) => RECLAIM_PARTS / RECLAIM_LEVELS,
            Garbage::Log(_) => 1,
        };
        self.parts.push(part);
        if now || self.parts_weight >= RECLAIM_PARTS {
            self.parts_weight = 0;
            let batch = std::mem::take(&mut self.parts);
            self.retire(Retired::Parts(batch));
        }
    }

    /// Queues a replaced snapshot; hands the queue over when it is full or
    /// when `now` (the snapshot held a replaced base: worth freeing soon).
    fn retire_snapshot(&mut self, snapshot: Arc<Snapshot>, now: bool) {
        self.pending.push(snapshot);
        if now || self.pending.len() >= RECLAIM_BATCH {
            let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(RECLAIM_BATCH));
            self.retire(Retired::Snapshots(batch));
        }
    }

    /// Drops `retired` on the reclaimer thread (here if it is busy).
    fn retire(&self, retired: Retired) {
        if let Some(sender) = &self.sender {
            // a full queue hands the item back: it is dropped right here
            let _ = sender.try_send(retired);
        }
    }
}

/// One observed change to apply to the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Map name.
    pub map: Arc<str>,
    /// Key bytes.
    pub key: Bytes,
    /// New value, or `None` for a delete.
    pub value: Option<Bytes>,
    /// Who saw it.
    pub source: EventSource,
    /// CLOCK_MONOTONIC time (ns) at which the change was known to be in
    /// the kernel; used to never apply a change older than what the mirror holds.
    pub observed_ns: u64,
}

impl Change {
    /// A put.
    pub fn put(
        map: &str,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        source: EventSource,
        observed_ns: u64,
    ) -> Self {
        Self {
            map: map.into(),
            key: key.into(),
            value: Some(value.into()),
            source,
            observed_ns,
        }
    }

    /// A delete.
    pub fn delete(map: &str, key: impl Into<Bytes>, source: EventSource, observed_ns: u64) -> Self {
        Self {
            map: map.into(),
            key: key.into(),
            value: None,
            source,
            observed_ns,
        }
    }
}

/// A full read of one map, as [`Publisher::apply_dump`] takes it: the
/// kernel side fills it (a batch lookup or an iteration), the mirror diffs
/// it against what it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    /// Key, value, and the CLOCK_MONOTONIC time just before the call that
    /// read it (the value was current at some point after that time), flat
    /// as the kernel returned them.
    pub entries: DumpEntries,
    /// When the dump began: every write completed before it is reflected.
    pub started_ns: u64,
    /// When the dump ended.
    pub ended_ns: u64,
}

/// The single writer of a [`Store`]: owned by the ingest task.
#[derive(Debug)]
pub struct Publisher {
    store: Store,
    reclaimer: Reclaimer,
    /// Whether a base was replaced since the last publish.
    merged: bool,
    /// Whether a new revision was published since the last [`Publisher::tidy`].
    busy: bool,
    /// Where the change events' copies of replaced values are cut from.
    prev_values: PrevValues,
    /// The snapshot the last [`Publisher::apply`] replaced, to be brought
    /// up to date and reused by the next one (`snapshot/catch_up.rs`);
    /// `None` after any other publish.
    spare: Option<Arc<Snapshot>>,
    /// What the current snapshot changed beyond `spare`.
    delta: Delta,
}

impl Publisher {
    /// The store this writer publishes to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Publishes `next`, made by a path that does not record a [`Delta`]:
    /// the spare cannot be brought up to date from it and is retired.
    fn publish(&mut self, next: Snapshot) {
        if let Some(spare) = self.spare.take() {
            self.reclaimer.retire_snapshot(spare, false);
        }
        self.publish_arc(Arc::new(next));
    }

    fn publish_arc(&mut self, next: Arc<Snapshot>) -> Arc<Snapshot> {
        // an apply that changed nothing still publishes (tombstones), but
        // only a new revision means the mirror is not quiet
        self.busy |= next.revision != self.store.revision();
        self.store.publish(next)
    }

    /// Publishes `next`, whose changes beyond the current snapshot are in
    /// `self.delta`, and keeps the replaced snapshot as the spare, unless a
    /// base was replaced (the old one is freed soon rather than kept).
    fn publish_reusable(&mut self, next: Arc<Snapshot>) {
        let replaced = self.publish_arc(next);
        if std::mem::take(&mut self.merged) {
            self.reclaimer.retire_snapshot(replaced, true);
        } else {
            self.spare = Some(replaced);
        }
    }

    /// A snapshot equal to the current one, for [`Publisher::apply`] to
    /// change and publish: the spare brought up to date when no reader
    /// holds it, else a copy of the current one. Clears `self.delta` for
    /// the changes about to be made.
    fn next_snapshot(&mut self) -> Arc<Snapshot> {
        let current = self.store.snapshot();
        if let Some(mut spare) = self.spare.take() {
            let reclaimer = &mut self.reclaimer;
            let caught_up = Arc::get_mut(&mut spare).is_some_and(|reused| {
                reused.catch_up(&current, &mut self.delta, |part, now| {
                    reclaimer.retire_part(part, now);
                })
            });
            if caught_up {
                self.delta.clear();
                return spare;
            }
            self.reclaimer.retire_snapshot(spare, false);
        }
        self.delta.clear();
        Arc::new((*current).clone())
    }

    /// Adds (or replaces) a map with its initial entries, each taking the
    /// next revision, in key order. `floor_ns` is when the dump of those
    /// entries began: any change observed earlier is already in them.
    /// Revisions up to the new one are compacted: the initial state is served
    /// as a snapshot, not as history.
    pub fn add_map(&mut self, info: MapInfo, entries: Vec<(Bytes, Bytes, u64)>, floor_ns: u64) {
        self.add_dump(info, entries.into(), floor_ns);
    }

    /// [`Publisher::add_map`] of a dump as the kernel side reads it (flat:
    /// the base is built from its buffers, no allocation per entry).
    pub fn add_dump(&mut self, info: MapInfo, entries: DumpEntries, floor_ns: u64) {
        let mut next = (*self.store.snapshot()).clone();
        // in key order; of one key dumped twice, the later read wins
        let sorted = entries.sorted();
        let first = next.revision + 1;
        let map = Entries::from_sorted(
            sorted.len(),
            sorted
                .iter()
                .enumerate()
                .map(|(n, (key, value, observed_ns))| (key, value, first + n as u64, observed_ns)),
        );
        next.revision += sorted.len() as u64;
        drop(sorted);
        self.reclaimer.retire(Retired::Dump(entries));
        self.merged = true;
        let name: Arc<str> = info.name.as_str().into();
        next.maps.insert(
            name,
            MapView {
                info: Arc::new(info),
                entries: map,
                floor_ns,
                tombstones: imbl::OrdMap::new(),
                version: 0,
            },
        );
        next.log.compact_through(next.revision);
        self.publish(next);
    }

    /// Replaces the description of the mirrored map `info.name` (its pin now
    /// names another kernel map of the same shape: new id, capacity, BTF),
    /// leaving its entries and the revision as they are.
    pub fn set_map_info(&mut self, info: MapInfo) {
        let mut next = (*self.store.snapshot()).clone();
        if let Some(view) = next.maps.get_mut(info.name.as_str()) {
            view.info = Arc::new(info);
            self.publish(next);
        }
    }

    /// Housekeeping, for the owner to call periodically (the ingest task
    /// does, every tick): when no new revision was published since the
    /// previous call, merges every map's overlay of recent changes into its base, so
    /// that reads of a map gone quiet take the base's path alone. Publishes
    /// the same content at the same revision (no subscriber wakes). Returns
    /// whether it merged.
    pub fn tidy(&mut self) -> bool {
        if std::mem::take(&mut self.busy) {
            return false;
        }
        let current = self.store.snapshot();
        let pending: Vec<Arc<str>> = current
            .maps
            .iter()
            .filter(|(_, view)| view.entries.has_overlay())
            .map(|(name, _)| name.clone())
            .collect();
        if pending.is_empty() {
            return false;
        }
        let mut next = (*current).clone();
        drop(current);
        for name in pending {
            if let Some(view) = next.maps.get_mut(&name) {
                view.entries.merge();
            }
        }
        self.merged = true;
        self.publish(next);
        self.busy = false;
        true
    }

    /// Marks the store ready: every configured map has had its initial dump.
    pub fn set_ready(&mut self) {
        self.store.inner.ready.send_replace(true);
    }

    /// Stops mirroring the map `name`: publishes, at the same revision, a
    /// snapshot without it (no events: its watchers see no deletes).
    /// [`Store::handle`]s on it answer `HandleError::Removed` until a map of
    /// that name is added again. Returns whether the map was mirrored.
    pub fn remove_map(&mut self, name: &str) -> bool {
        let mut next = (*self.store.snapshot()).clone();
        let removed = next.maps.remove(name).is_some();
        if removed {
            self.publish(next);
        }
        removed
    }

    /// Applies changes in order and publishes the result once. A change to
    /// an unknown map, a delete of an absent key, and a change observed
    /// before what the mirror holds for its key are skipped. Returns the
    /// published revision.
    pub fn apply(&mut self, changes: impl IntoIterator<Item = Change>) -> Revision {
        let mut reused = self.next_snapshot();
        let next = Arc::get_mut(&mut reused).expect("a snapshot no reader has seen");
        let Snapshot {
            maps,
            log,
            revision: next_revision,
            ..
        } = next;
        let mut changes = changes.into_iter().peekable();
        // one map lookup per run of changes to the same map (batches
        // mostly hold one map's)
        while let Some(first) = changes.next() {
            let Some((slot, view)) = maps.slot_mut(&first.map) else {
                continue;
            };
            self.delta.touch(slot);
            let name = first.map.clone();
            let mut change = Some(first);
            while let Some(this) = change {
                let revision = *next_revision + 1;
                let key = self.delta.wants_keys().then(|| this.key.clone());
                if let Some(event) = apply_to_view(
                    view,
                    this,
                    revision,
                    &mut self.merged,
                    &mut self.prev_values,
                ) {
                    *next_revision = revision;
                    if let Some(key) = key {
                        self.delta.changed(slot, key);
                    }
                    log.push(event);
                }
                change = changes.next_if(|next| Arc::ptr_eq(&next.map, &name) || next.map == name);
            }
        }
        let revision = next.revision;
        // publish even without a new revision: tombstones may have changed
        self.publish_reusable(reused);
        revision
    }

    /// Applies one write request's changes (a put, a delete, a transaction,
    /// an atomic switch) as **one** revision: every change that takes effect
    /// gets the same next revision, the change log keeps them together, and
    /// no reader sees some of them without the others. A key should appear
    /// at most once. The skipping rules are [`Self::apply`]'s. Returns the
    /// published revision (the current one if nothing took effect).
    pub fn apply_as_one(&mut self, changes: impl IntoIterator<Item = Change>) -> Revision {
        let current = self.store.snapshot();
        let mut next = (*current).clone();
        drop(current);
        self.apply_at_next_revision(&mut next, changes);
        let revision = next.revision;
        self.publish(next);
        revision
    }

    /// Applies `changes` to `next` at `next`'s next revision, all of them
    /// at that one revision (the log keeps them together); `next.revision`
    /// advances only if one took effect. Returns how many did.
    fn apply_at_next_revision(
        &mut self,
        next: &mut Snapshot,
        changes: impl IntoIterator<Item = Change>,
    ) -> u64 {
        let revision = next.revision + 1;
        let events: Vec<_> = changes
            .into_iter()
            .filter_map(|change| {
                apply_one(
                    next,
                    change,
                    revision,
                    &mut self.merged,
                    &mut self.prev_values,
                )
            })
            .collect();
        let changed = events.len() as u64;
        if !events.is_empty() {
            next.revision = revision;
            next.log.push_revision(events);
        }
        changed
    }

    /// Publishes the atomic switch of a switchable map (`info.name`) to the
    /// new set `set` as **one** revision: the events are exactly the
    /// difference between the mirror's view of the old set and `set` (puts
    /// of new or changed keys, deletes of keys `set` lacks), all with source
    /// [`EventSource::Api`] and observed at `observed_ns` (just before the
    /// switch). In the same publish the map's description becomes `info`
    /// (its `id` is the now active inner map's) and its
    /// [`MapView::version`] becomes `version`. An empty difference takes no
    /// revision but still publishes the description and the version.
    /// Returns the published revision and the number of events. An unknown
    /// map changes nothing.
    pub fn apply_switch(
        &mut self,
        info: MapInfo,
        set: impl IntoIterator<Item = (Bytes, Bytes)>,
        observed_ns: u64,
        version: u64,
    ) -> (Revision, u64) {
        let current = self.store.snapshot();
        let mut next = (*current).clone();
        drop(current);
        let name: Arc<str> = info.name.as_str().into();
        let Some(view) = next.maps.get(&name) else {
            return (next.revision, 0);
        };
        let mut changes = Vec::new();
        let mut present = HashSet::new();
        for (key, value) in set {
            if view.get(&key) != Some(&value[..]) {
                changes.push(Change {
                    map: name.clone(),
                    key: key.clone(),
                    value: Some(value),
                    source: EventSource::Api,
                    observed_ns,
                });
            }
            present.insert(key);
        }
        for (key, _) in view.iter() {
            if !present.contains(key) {
                changes.push(Change::delete(
                    &name,
                    Bytes::copy_from_slice(key),
                    EventSource::Api,
                    observed_ns,
                ));
            }
        }
        let changed = self.apply_at_next_revision(&mut next, changes);
        if let Some(view) = next.maps.get_mut(&name) {
            view.info = Arc::new(info);
            view.version = version;
        }
        let revision = next.revision;
        self.publish(next);
        (revision, changed)
    }

    /// Applies a fresh full dump of `map` as a diff against the mirror, with
    /// the per-key rule: a dumped value replaces the mirror's unless the
    /// mirror's is newer; a key the dump lacks is deleted unless the mirror
    /// learned of it after the dump began. Afterwards, changes observed
    /// before the dump began are known to be reflected (the map's floor).
    /// Returns the published revision.
    pub fn apply_dump(&mut self, map: &str, dump: Dump, source: EventSource) -> Revision {
        let current = self.store.snapshot();
        let Some(view) = current.map(map) else {
            return current.revision;
        };
        let name: Arc<str> = map.into();
        let dumped = &dump.entries;
        // one walk over both in key order; unchanged values re-read by a
        // resync or a poll are no events, so they are not even changes
        let skips_same = matches!(source, EventSource::Resync | EventSource::Poll);
        let mut changes = Vec::new();
        let delete = |key: &[u8]| Change {
            map: name.clone(),
            key: Bytes::copy_from_slice(key),
            value: None,
            source,
            observed_ns: dump.started_ns,
        };
        let mut mirror = view.iter().peekable();
        for (key, value, observed_ns) in dumped.sorted().iter() {
            while let Some((gone, entry)) =
                mirror.next_if(|(mirrored, _)| key_order(mirrored, key).is_lt())
            {
                if entry.observed_ns < dump.started_ns {
                    changes.push(delete(gone));
                }
            }
            let same = mirror
                .next_if(|(mirrored, _)| key_order(mirrored, key).is_eq())
                .is_some_and(|(_, entry)| entry.value == value);
            if !(same && skips_same) {
                changes.push(Change {
                    map: name.clone(),
                    key: Bytes::copy_from_slice(key),
                    value: Some(Bytes::copy_from_slice(value)),
                    source,
                    observed_ns,
                });
            }
        }
        for (gone, entry) in mirror {
            if entry.observed_ns < dump.started_ns {
                changes.push(delete(gone));
            }
        }
        drop(current);
        let revision = self.apply(changes);
        let mut next = (*self.store.snapshot()).clone();
        if let Some(view) = next.maps.get_mut(map) {
            view.raise_floor(dump.started_ns);
            self.publish(next);
        }
        revision
    }
}

/// Bytes of each buffer that replaced values are copied into.
const PREV_VALUE_CHUNK: usize = 16 << 10;

/// Copies of replaced values for the change events (`prev_value`), cut
/// from shared buffers of [`PREV_VALUE_CHUNK`] bytes: one allocation per
/// buffer, not one per event. A buffer is freed when the last event cut
/// from it is; the change log's byte bound counts each copy's length.
#[derive(Debug, Default)]
struct PrevValues(BytesMut);

impl PrevValues {
    /// A copy of `value`.
    fn copy(&mut self, value: &[u8]) -> Bytes {
        if self.0.capacity() - self.0.len() < value.len() {
            self.0 = BytesMut::with_capacity(PREV_VALUE_CHUNK.max(value.len()));
        }
        self.0.extend_from_slice(value);
        self.0.split().freeze()
    }
}

/// Applies one change at `revision` (the caller advances the snapshot's
/// revision when an event comes back); `None` when the change is skipped.
fn apply_one(
    next: &mut Snapshot,
    change: Change,
    revision: Revision,
    merged: &mut bool,
    prev_values: &mut PrevValues,
) -> Option<ChangeEvent> {
    let view = next.maps.get_mut(&change.map)?;
    apply_to_view(view, change, revision, merged, prev_values)
}

/// [`apply_one`] to the map's view, already looked up.
fn apply_to_view(
    view: &mut MapView,
    change: Change,
    revision: Revision,
    merged: &mut bool,
    prev_values: &mut PrevValues,
) -> Option<ChangeEvent> {
    let existing = view.entries.get(&change.key[..]);
    let newest_known = match existing {
        Some(entry) => entry.observed_ns,
        None => view
            .tombstones
            .get(&change.key)
            .copied()
            .unwrap_or(0)
            .max(view.floor_ns),
    };
    if change.observed_ns < newest_known {
        return None;
    }
    let op = match (&change.value, existing) {
        (None, None) => {
            // remember it: a put observed earlier may still be on its way
            view.remember_delete(change.key, change.observed_ns);
            return None;
        }
        (None, Some(_)) => Op::Delete,
        (Some(value), Some(entry))
            if matches!(change.source, EventSource::Resync | EventSource::Poll)
                && entry.value == &value[..] =>
        {
            return None;
        }
        (Some(_), _) => Op::Put,
    };
    let (prev_value, prev_mod_revision) = existing
        .map(|entry| (Some(prev_values.copy(entry.value)), entry.mod_revision))
        .unwrap_or((None, 0));
    // a present key has no tombstone (a put clears it, a delete removes the
    // entry): only a key that was absent can have one to clear
    let was_absent = prev_value.is_none();
    match &change.value {
        Some(value) => {
            if was_absent {
                view.tombstones.remove(&change.key);
            }
            view.entries.insert_known(
                &change.key,
                value,
                revision,
                change.observed_ns,
                !was_absent,
            );
        }
        None => {
            view.entries.remove_present(&change.key[..]);
            view.remember_delete(change.key.clone(), change.observed_ns);
        }
    }
    if view.entries.needs_merge() {
        view.entries.merge();
        *merged = true;
    }
    Some(ChangeEvent {
        revision,
        map: change.map,
        op,
        key: change.key,
        value: change.value,
        source: change.source,
        prev_value,
        prev_mod_revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map_info::MapKind;

    pub(crate) fn info(name: &str) -> MapInfo {
        MapInfo::new(name, MapKind::Hash, 1, 1, 64).with_id(1)
    }

    #[test]
    fn initial_entries_take_revisions_in_key_order_and_are_not_history() {
        let (store, mut writer) = Store::new(LogLimits::default());
        writer.add_map(
            info("m"),
            vec![
                (Bytes::from_static(b"b"), Bytes::from_static(b"2"), 10),
                (Bytes::from_static(b"a"), Bytes::from_static(b"1"), 10),
            ],
            5,
        );
        let snapshot = store.snapshot();
        assert_eq!(snapshot.revision(), 2);
        let view = snapshot.map("m").expect("map added");
        assert_eq!(view.entry(b"a").expect("a").mod_revision, 1);
        assert_eq!(view.entry(b"b").expect("b").mod_revision, 2);
        assert_eq!(snapshot.log().oldest(), 3);
    }

    #[test]
    fn a_change_older_than_the_mirror_never_moves_a_key_back() {
        let (store, mut writer) = Store::new(LogLimits::default());
        writer.add_map(
            info("m"),
            vec![(Bytes::from_static(b"k"), Bytes::from_static(b"new"), 100)],
            50,
        );
        // observed before the dump read the key: stale
        writer.apply([Change::put(
            "m",
            &b"k"[..],
            &b"old"[..],
            EventSource::Trace,
            99,
        )]);
        // an absent key whose write predates the dump start: already reflected
        writer.apply([Change::put(
            "m",
            &b"x"[..],
            &b"gone"[..],
            EventSource::Trace,
            49,
        )]);
        let snapshot = store.snapshot();
        assert_eq!(
            snapshot.map("m").expect("map").get(b"k").expect("k"),
            &b"new"[..]
        );
        assert!(snapshot.map("m").expect("map").get(b"x").is_none());
        assert_eq!(snapshot.revision(), 1, "skipped changes take no revision");
        // a newer change applies
        writer.apply([Change::put(
            "m",
            &b"k"[..],
            &b"newer"[..],
            EventSource::Trace,
            101,
        )]);
        assert_eq!(
            store.load().map("m").expect("map").get(b"k").expect("k"),
            &b"newer"[..]
        );
        assert_eq!(store.revision(), 2);
    }

    #[test]
    fn deletes_of_absent_keys_and_unchanged_resync_values_are_not_events() {
        let (store, mut writer) = Store::new(LogLimits::default());
        writer.add_map(
            info("m"),
            vec![(Bytes::from_static(b"k"), Bytes::from_static(b"v"), 1)],
            0,
        );
        writer.apply([
            Change::delete("m", &b"nope"[..], EventSource::Trace, 5),
            Change::put("m", &b"k"[..], &b"v"[..], EventSource::Resync, 5),
            Change::put("other", &b"k"[..], &b"v"[..], EventSource::Trace, 5),
        ]);
        assert_eq!(store.revision(), 1);
        writer.apply([Change::put(
            "m",
            &b"k"[..],
            &b"v"[..],
            EventSource::Trace,
            6,
        )]);
        assert_eq!(
            store.revision(),
            2,
            "a real write of the same value is a change"
        );
        writer.apply([Change::delete("m", &b"k"[..], EventSource::Trace, 7)]);
        let snapshot = store.snapshot();
        assert!(snapshot.map("m").expect("map").is_empty());
        let log = snapshot.log().read_from(2, 10).expect("in log");
        assert_eq!(
            log.iter().map(|e| e.op).collect::<Vec<_>>(),
            vec![Op::Put, Op::Delete]
        );
        assert_eq!(log[1].value, None);
    }

    #[test]
    fn old_snapshots_stay_unchanged_after_publishing() {
        let (store, mut writer) = Store::new(LogLimits::default());
        writer.add_map(info("m"), vec![], 0);
        let before = store.snapshot();
        writer.apply([Change::put("m", &b"k"[..], &b"v"[..], EventSource::Emit, 1)]);
        assert!(before.map("m").expect("map").is_empty());
        assert_eq!(store.snapshot().map("m").expect("map").len(), 1);
    }

    #[test]
    fn a_switch_is_one_revision_with_exactly_the_difference_and_the_new_version() {
        let (store, mut writer) = Store::new(LogLimits::default());
        let old = info("s").switchable();
        writer.add_map(
            old.clone(),
            vec![
                (Bytes::from_static(b"a"), Bytes::from_static(b"1"), 1),
                (Bytes::from_static(b"b"), Bytes::from_static(b"2"), 1),
                (Bytes::from_static(b"c"), Bytes::from_static(b"3"), 1),
            ],
            0,
        );
        // only the version and the description: no revision
        let (revision, changed) = writer.apply_switch(old.clone(), store_set(&store), 2, 1);
        assert_eq!((revision, changed), (3, 0));
        assert_eq!(store.load().map("s").expect("s").version(), 1);
        let new = old.clone().with_id(99);
        let (revision, changed) = writer.apply_switch(
            new,
            [
                (Bytes::from_static(b"a"), Bytes::from_static(b"1")),
                (Bytes::from_static(b"b"), Bytes::from_static(b"9")),
                (Bytes::from_static(b"d"), Bytes::from_static(b"4")),
            ],
            5,
            2,
        );
        assert_eq!((revision, changed), (4, 3), "b changed, d new, c gone");
        let snapshot = store.snapshot();
        let view = snapshot.map("s").expect("s");
        assert_eq!((view.version(), view.info().id), (2, 99));
        assert_eq!(view.len(), 3);
        assert_eq!(view.entry(b"a").expect("a").mod_revision, 1, "unchanged");
        let events = snapshot.log().read_from(4, 100).expect("in the log");
        assert!(
            events
                .iter()
                .all(|e| e.revision == 4 && e.source == EventSource::Api)
        );
        let mut ops: Vec<_> = events.iter().map(|e| (e.key.clone(), e.op)).collect();
        ops.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            ops,
            vec![
                (Bytes::from_static(b"b"), Op::Put),
                (Bytes::from_static(b"c"), Op::Delete),
                (Bytes::from_static(b"d"), Op::Put),
            ]
        );
    }

    #[test]
    fn tidy_merges_the_overlay_of_a_quiet_map_only() {
        let (store, mut writer) = Store::new(LogLimits::default());
        writer.add_map(
            info("m"),
            vec![(Bytes::from_static(b"a"), Bytes::from_static(b"1"), 1)],
            0,
        );
        writer.apply([Change::put(
            "m",
            &b"a"[..],
            &b"2"[..],
            EventSource::Trace,
            2,
        )]);
        assert!(!writer.tidy(), "something was published since: not quiet");
        assert!(store.load().map("m").expect("m").entries.has_overlay());
        let before = store.snapshot();
        assert!(writer.tidy(), "quiet since the last call");
        let after = store.snapshot();
        assert!(!after.map("m").expect("m").entries.has_overlay());
        assert_eq!(after.revision(), before.revision());
        let entry = after.map("m").expect("m").entry(b"a").expect("a");
        assert_eq!((entry.value, entry.mod_revision), (&b"2"[..], 2));
        assert!(!writer.tidy(), "nothing left to merge");
    }

    fn store_set(store: &Store) -> Vec<(Bytes, Bytes)> {
        store
            .load()
            .map("s")
            .expect("s")
            .iter()
            .map(|(k, e)| (Bytes::copy_from_slice(k), e.value_bytes()))
            .collect()
    }

    #[test]
    fn a_write_request_is_one_revision_for_all_its_events() {
        let (store, mut writer) = Store::new(LogLimits::default());
        writer.add_map(info("m"), vec![], 0);
        writer.add_map(info("n"), vec![], 0);
        writer.apply([Change::put(
            "m",
            &b"a"[..],
            &b"1"[..],
            EventSource::Trace,
            1,
        )]);
        let revision = writer.apply_as_one([
            Change::put("m", &b"a"[..], &b"2"[..], EventSource::Api, 2),
            Change::put("n", &b"b"[..], &b"3"[..], EventSource::Api, 2),
            // skipped: nothing to delete
            Change::delete("m", &b"zz"[..], EventSource::Api, 2),
        ]);
        assert_eq!(revision, 2, "one revision after the captured put");
        let snapshot = store.snapshot();
        let events = snapshot.log().read_from(2, 1).expect("in the log");
        assert_eq!(events.len(), 2, "both events, even with max 1");
        assert!(
            events
                .iter()
                .all(|e| e.revision == 2 && e.source == EventSource::Api)
        );
        assert_eq!(events[0].prev_value.as_deref(), Some(&b"1"[..]));
        assert_eq!(
            snapshot
                .map("n")
                .expect("n")
                .entry(b"b")
                .expect("b")
                .mod_revision,
            2
        );
        // nothing took effect: no revision
        assert_eq!(
            writer.apply_as_one([Change::delete("m", &b"zz"[..], EventSource::Api, 3)]),
            2
        );
        // and the next captured change takes the next revision
        assert_eq!(
            writer.apply([Change::put(
                "m",
                &b"c"[..],
                &b"4"[..],
                EventSource::Trace,
                4
            )]),
            3
        );
    }
}
