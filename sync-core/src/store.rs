//! The store: one `ArcSwap<Snapshot>` that readers load, and the single
//! writer that publishes changes with revisions.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::{ArcSwap, Guard};
use bytes::Bytes;
use tokio::sync::watch;

use crate::changelog::{ChangeLog, LogLimits};
pub use crate::dumped::{DumpEntries, SortedDump};
use crate::entries::Entries;
use crate::event::{Epoch, EventSource, Revision};
use crate::flat::key_order;
use crate::map_info::MapInfo;
use crate::snapshot::{Delta, MapView, Snapshot};

mod apply;
mod reclaim;

use apply::{PrevValues, apply_one, apply_to_view};
use reclaim::{Reclaimer, Retired};

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

#[cfg(test)]
mod tests;
