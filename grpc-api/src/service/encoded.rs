//! Live events encoded once and shared between watches, as whole
//! `EventBatch.events` fields (one chunk per revision when a watch selects
//! all of it).
//!
//! Every watch reading the same revision of the change log sees the same
//! events (`SharedEvent`s of the log's own chunks), and watches that want the same form of an event
//! (with or without its previous value, nothing decoded) send the same
//! bytes. The first watch to reach a revision encodes its events and leaves
//! them in a slot of this cache (one slot per revision and form, direct
//! mapped); watches after it copy the `Bytes` handles. A slot remembers its
//! events as `WeakEvent`s (chunk pointer and slot), so it keeps no value
//! alive and a match is the very same event, whatever a watch's filter left out: events a slot lacks
//! (another filter chose them) are encoded by the watch that needs them.
//!
//! Bounded: at most [`SLOTS`] groups, together at most [`MAX_BYTES`] of
//! encodings and their bookkeeping (a group that would pass it is not kept;
//! watches with it then encode their own). A watch that shares under a
//! quarter of a group's bytes gets a copy of them, not slices: a slice keeps
//! the whole group's buffer alive while its message waits to be sent, past
//! what the stream's budget counts. Another selection of a large group finds
//! its events through an index, not a scan.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use mapsync_core::{EventIdentity, Revision, SharedEvent, WeakEvent};

use super::wire;
use crate::{convert, pb};

/// Revision groups remembered (per form).
pub const SLOTS: usize = 2048;
/// Most bytes of encodings remembered at once, over all slots.
pub const MAX_BYTES: usize = 16 << 20;
/// A watch with another selection of a slot's revision finds its events in
/// a slot of up to this many events by a scan, in a larger one by an index
/// of the slot's events (built once, by the first such watch): two
/// selections sharing little of a large revision (a switch, a transaction)
/// would make a scan quadratic in the revision's size.
const SCAN_UP_TO: usize = 64;

#[cfg(test)]
thread_local! {
    /// Event compares made by this thread's `encode_revision` calls.
    static COMPARES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The encodings of one revision's events, in one form.
struct Group {
    revision: Revision,
    prev: bool,
    /// Every event as an `EventBatch.events` field, one after the other.
    fields: Bytes,
    /// Each event and where its field is in `fields`.
    events: Vec<(WeakEvent, Range<usize>)>,
    /// Position in `events` of each event, for slots of more than
    /// [`SCAN_UP_TO`] events, built when first needed.
    index: OnceLock<HashMap<EventIdentity, usize>>,
    /// What this group counts in the cache's bound ([`charge`]).
    charged: usize,
    used: Arc<AtomicUsize>,
}

impl Drop for Group {
    fn drop(&mut self) {
        self.used.fetch_sub(self.charged, Ordering::Relaxed);
    }
}

/// What a group of `events` events encoded as `fields` bytes counts in the
/// cache's bound: the bytes, each event's name and range, and (as if it
/// were built) the index's entry, at a hash map's load.
fn charge(fields: usize, events: usize) -> usize {
    let per_event = std::mem::size_of::<(WeakEvent, Range<usize>)>()
        + 2 * std::mem::size_of::<(EventIdentity, usize)>();
    fields + events * per_event
}

impl Group {
    fn is_stale(&self, revision: Revision) -> bool {
        self.revision < revision || self.events.first().is_none_or(|(event, _)| event.is_gone())
    }

    /// Position in `events` of `event`, looking from `next` on (a slot's
    /// events and a watch's selection are both in log order).
    fn find(&self, event: &SharedEvent, next: usize) -> Option<usize> {
        if self.events.len() <= SCAN_UP_TO {
            #[cfg(test)]
            COMPARES.with(|compares| compares.set(compares.get() + self.events.len() - next));
            return self.events[next..]
                .iter()
                .position(|(them, _)| them.is(event))
                .map(|at| next + at);
        }
        #[cfg(test)]
        COMPARES.with(|compares| compares.set(compares.get() + 1));
        let index = self.index.get_or_init(|| {
            self.events
                .iter()
                .enumerate()
                .map(|(at, (event, _))| (event.identity(), at))
                .collect()
        });
        index
            .get(&event.identity())
            .copied()
            .filter(|&at| at >= next)
    }

    /// Whether `group` is every event of this one, in order.
    fn is_all_of(&self, group: &[SharedEvent]) -> bool {
        group.len() == self.events.len()
            && group
                .iter()
                .zip(&self.events)
                .all(|(event, (cached, _))| cached.is(event))
    }
}

/// Events of one revision as `EventBatch.events` fields, ready to send.
#[derive(Debug, Clone)]
pub(super) struct Chunk {
    /// Their revision.
    pub(super) revision: Revision,
    /// How many events `fields` holds.
    pub(super) events: usize,
    /// The fields, whole.
    pub(super) fields: Bytes,
}

/// The cache; one per service.
pub(super) struct SharedEncodings {
    slots: Box<[ArcSwapOption<Group>]>,
    used: Arc<AtomicUsize>,
}

impl std::fmt::Debug for SharedEncodings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedEncodings")
            .field("bytes", &self.used.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for SharedEncodings {
    fn default() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| ArcSwapOption::empty()).collect(),
            used: Arc::default(),
        }
    }
}

/// `events` framed one after the other, and where each one's field is.
pub(super) fn frame_all(events: impl IntoIterator<Item = pb::Event>) -> (Bytes, Vec<Range<usize>>) {
    let mut buf = Vec::new();
    let mut ranges = Vec::new();
    for event in events {
        let start = buf.len();
        wire::frame_event(&event, &mut buf);
        ranges.push(start..buf.len());
    }
    (Bytes::from(buf), ranges)
}

/// Pushes the fields at `ranges` of `fields` (in order), merging adjacent
/// ones into chunks of at most `split_above` bytes (a larger field alone).
pub(super) fn push_ranges(
    revision: Revision,
    fields: &Bytes,
    ranges: impl IntoIterator<Item = Range<usize>>,
    split_above: usize,
    out: &mut Vec<Chunk>,
) {
    let mut pending: Option<(Range<usize>, usize)> = None;
    for range in ranges {
        if let Some((current, events)) = &mut pending
            && current.end == range.start
            && range.end - current.start <= split_above
        {
            current.end = range.end;
            *events += 1;
            continue;
        }
        if let Some((current, events)) = pending.replace((range, 1)) {
            out.push(Chunk {
                revision,
                events,
                fields: fields.slice(current),
            });
        }
    }
    if let Some((current, events)) = pending {
        out.push(Chunk {
            revision,
            events,
            fields: fields.slice(current),
        });
    }
}

/// Copies out the slices of `fields` in `chunks` when together they are
/// under a quarter of it: a slice keeps the whole buffer alive while its
/// message is queued, and the stream's budget counts only the slice.
fn unpin_small_shares(fields: &Bytes, chunks: &mut [Chunk]) {
    let within = fields.as_ptr_range();
    let is_share = |chunk: &Chunk| within.contains(&chunk.fields.as_ptr());
    let shared: usize = chunks
        .iter()
        .filter(|chunk| is_share(chunk))
        .map(|chunk| chunk.fields.len())
        .sum();
    if shared * 4 >= fields.len() {
        return;
    }
    for chunk in chunks.iter_mut().filter(|chunk| is_share(chunk)) {
        chunk.fields = Bytes::copy_from_slice(&chunk.fields);
    }
}

impl SharedEncodings {
    /// Bytes of encodings held now.
    #[cfg(test)]
    fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Appends `group` (events of one revision, in log order, as one watch
    /// selected them) to `out` as framed fields, with previous values if
    /// `prev`, in chunks of at most `split_above` bytes (a larger event
    /// alone): shared when a watch before this one encoded them.
    pub(super) fn encode_revision(
        &self,
        group: &[SharedEvent],
        prev: bool,
        split_above: usize,
        out: &mut Vec<Chunk>,
    ) {
        let Some(first) = group.first() else { return };
        let revision = first.revision;
        let index = (revision.wrapping_mul(2) + u64::from(prev)) as usize % SLOTS;
        let slot = &self.slots[index];
        let cached = slot.load();
        let cached = match cached.as_deref() {
            Some(cached) if cached.revision == revision && cached.prev == prev => cached,
            cached => {
                let (fields, ranges) =
                    frame_all(group.iter().map(|e| convert::event_with_prev(e, prev)));
                push_ranges(revision, &fields, ranges.iter().cloned(), split_above, out);
                if cached.is_none_or(|cached| cached.is_stale(revision)) {
                    self.keep(slot, group, revision, prev, fields, ranges);
                }
                return;
            }
        };
        if cached.is_all_of(group) {
            let ranges = cached.events.iter().map(|(_, range)| range.clone());
            push_ranges(revision, &cached.fields, ranges, split_above, out);
            return;
        }
        // another selection of the same revision, in the same order: walk
        // both, encoding what the slot lacks (adjacent shared fields merge)
        let first_out = out.len();
        let mut next = 0;
        let mut shared: Vec<Range<usize>> = Vec::new();
        for event in group {
            let found = cached.find(event, next);
            match found {
                Some(at) => {
                    shared.push(cached.events[at].1.clone());
                    next = at + 1;
                }
                None => {
                    push_ranges(revision, &cached.fields, shared.drain(..), split_above, out);
                    let (fields, ranges) = frame_all([convert::event_with_prev(event, prev)]);
                    push_ranges(revision, &fields, ranges, split_above, out);
                }
            }
        }
        push_ranges(revision, &cached.fields, shared, split_above, out);
        unpin_small_shares(&cached.fields, &mut out[first_out..]);
    }

    /// Keeps a revision's encodings in `slot`, within [`MAX_BYTES`].
    fn keep(
        &self,
        slot: &ArcSwapOption<Group>,
        group: &[SharedEvent],
        revision: Revision,
        prev: bool,
        fields: Bytes,
        ranges: Vec<Range<usize>>,
    ) {
        let bytes = charge(fields.len(), group.len());
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes > MAX_BYTES {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            return;
        }
        let events = group
            .iter()
            .map(SharedEvent::downgrade)
            .zip(ranges)
            .collect();
        slot.store(Some(Arc::new(Group {
            revision,
            prev,
            fields,
            events,
            index: OnceLock::new(),
            charged: bytes,
            used: self.used.clone(),
        })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mapsync_core::{Change, ChangeEvent, EventSource, LogLimits, MapInfo, MapKind, Op, Store};

    fn event(revision: Revision, key: u8) -> ChangeEvent {
        ChangeEvent {
            revision,
            map: "m".into(),
            op: Op::Put,
            key: vec![key; 4].into(),
            value: Some(vec![key; 16].into()),
            source: EventSource::Trace,
            prev_value: Some(vec![9; 16].into()),
            prev_mod_revision: 1,
        }
    }

    /// An empty cache and `events` events of `revision` (keys 0, 1, ...),
    /// held in one chunk as the change log holds them.
    fn cache_and_group(revision: Revision, events: u8) -> (SharedEncodings, Vec<SharedEvent>) {
        let group = (0..events).map(|k| event(revision, k)).collect();
        (SharedEncodings::default(), SharedEvent::batch(group))
    }

    fn chunks(cache: &SharedEncodings, group: &[SharedEvent], prev: bool) -> Vec<Chunk> {
        let mut out = Vec::new();
        cache.encode_revision(group, prev, 64 << 10, &mut out);
        out
    }

    /// The events the chunks hold, as a client decodes them.
    fn decoded(chunks: &[Chunk]) -> Vec<pb::Event> {
        let mut batch = Vec::new();
        for chunk in chunks {
            batch.extend_from_slice(&chunk.fields);
        }
        let events = <pb::EventBatch as prost::Message>::decode(&batch[..])
            .expect("decodes")
            .events;
        assert_eq!(chunks.iter().map(|c| c.events).sum::<usize>(), events.len());
        events
    }

    fn want(group: &[SharedEvent], prev: bool) -> Vec<pb::Event> {
        group
            .iter()
            .map(|e| convert::event_with_prev(e, prev))
            .collect()
    }

    #[test]
    fn a_second_watch_gets_the_same_bytes_without_encoding_again() {
        let (cache, group) = cache_and_group(10, 5);
        let first = chunks(&cache, &group, false);
        let second = chunks(&cache, &group, false);
        assert_eq!(first.len(), 1, "one chunk for the whole revision");
        assert_eq!(
            first[0].fields.as_ptr(),
            second[0].fields.as_ptr(),
            "shared"
        );
        assert_eq!(decoded(&second), want(&group, false));
    }

    #[test]
    fn a_watch_with_other_options_gets_its_own_encoding() {
        let (cache, group) = cache_and_group(4, 3);
        let without = chunks(&cache, &group, false);
        let with = chunks(&cache, &group, true);
        assert_eq!(decoded(&without), want(&group, false));
        assert_eq!(decoded(&with), want(&group, true));
        assert_ne!(want(&group, false), want(&group, true));
        // each form is shared with watches of the same form
        let again = chunks(&cache, &group, true);
        assert_eq!(again[0].fields.as_ptr(), with[0].fields.as_ptr());
        let again = chunks(&cache, &group, false);
        assert_eq!(again[0].fields.as_ptr(), without[0].fields.as_ptr());
    }

    #[test]
    fn another_selection_of_a_revision_shares_what_it_can_and_encodes_the_rest() {
        let (cache, group) = cache_and_group(8, 6);
        let odd: Vec<_> = group.iter().skip(1).step_by(2).cloned().collect();
        let stored = chunks(&cache, &odd, false);
        assert_eq!(decoded(&stored), want(&odd, false));
        let all = chunks(&cache, &group, false);
        assert_eq!(decoded(&all), want(&group, false));
        assert_eq!(all.len(), 6, "shared fields are not adjacent here");
        assert_eq!(all[1].fields.as_ptr(), stored[0].fields.as_ptr());
        // a selection of the stored one: adjacent fields merge, shared
        let two: Vec<_> = odd[1..].to_vec();
        let some = chunks(&cache, &two, false);
        assert_eq!(decoded(&some), want(&two, false));
        assert_eq!(some.len(), 1);
        // a different event of the same revision (another epoch's) is no hit
        let other = vec![SharedEvent::new(event(8, 1))];
        let fresh = chunks(&cache, &other, false);
        assert_eq!(decoded(&fresh), want(&other, false));
        assert_ne!(fresh[0].fields.as_ptr(), stored[0].fields.as_ptr());
    }

    #[test]
    fn two_selections_sharing_nothing_of_a_large_revision_cost_a_bounded_scan() {
        let (cache, group) = cache_and_group(20, 0);
        drop(group);
        let events = 10_000;
        let group = SharedEvent::batch(
            (0..events)
                .map(|k| ChangeEvent {
                    key: (k as u32).to_be_bytes().to_vec().into(),
                    ..event(20, 0)
                })
                .collect(),
        );
        let evens: Vec<_> = group.iter().step_by(2).cloned().collect();
        let odds: Vec<_> = group.iter().skip(1).step_by(2).cloned().collect();
        let _ = chunks(&cache, &evens, false);
        COMPARES.with(|compares| compares.set(0));
        let out = chunks(&cache, &odds, false);
        assert_eq!(decoded(&out), want(&odds, false));
        let compares = COMPARES.with(|compares| compares.get());
        assert!(
            compares <= odds.len(),
            "{compares} compares for {} events",
            odds.len()
        );
        // a selection of most of the slot shares its bytes, found by the
        // index; a small one gets a copy (a slice would keep the whole
        // slot's buffer alive while it waits to be sent)
        let stored = chunks(&cache, &evens, false);
        let within = stored[0].fields.as_ptr()..stored[stored.len() - 1].fields.as_ptr_range().end;
        let most: Vec<_> = evens[..4000].to_vec();
        let shared = chunks(&cache, &most, false);
        assert_eq!(decoded(&shared), want(&most, false));
        assert!(shared.iter().all(|c| within.contains(&c.fields.as_ptr())));
        let few: Vec<_> = evens[100..200].to_vec();
        let copied = chunks(&cache, &few, false);
        assert_eq!(decoded(&copied), want(&few, false));
        assert_eq!(copied.len(), 1, "one run");
        assert!(!within.contains(&copied[0].fields.as_ptr()));
    }

    #[test]
    fn chunks_stay_under_the_message_cap_a_larger_event_alone() {
        let (cache, group) = cache_and_group(12, 10);
        let one = want(&group[..1], false);
        let size = wire::framed_len(prost::Message::encoded_len(&one[0]));
        for cap in [1, size, 3 * size, 100 * size] {
            let mut out = Vec::new();
            cache.encode_revision(&group, false, cap, &mut out);
            assert_eq!(decoded(&out), want(&group, false));
            assert!(
                out.iter().all(|c| c.fields.len() <= cap.max(size)),
                "cap {cap}"
            );
            assert_eq!(out.len(), 10usize.div_ceil((cap / size).clamp(1, 10)));
        }
    }

    #[test]
    fn the_cache_is_bounded_and_keeps_no_event_alive() {
        let (cache, group) = cache_and_group(3, 4);
        let weak = group[0].downgrade();
        let _ = chunks(&cache, &group, false);
        assert!(cache.used() > 0);
        drop(group);
        assert!(weak.is_gone(), "only weak names are kept");
        // an older revision does not push a newer one out; a newer one does
        let newer = SharedEvent::batch(vec![event(3 + SLOTS as u64 / 2, 0)]);
        let _ = chunks(&cache, &newer, false);
        let older = SharedEvent::batch(vec![event(3, 0)]);
        let _ = chunks(&cache, &older, false);
        let used = cache.used();
        assert!(used < 200, "one small group per slot, {used} bytes");
    }

    /// Events of the change log of a store whose one map "m" took `puts`
    /// puts (revisions 1..=puts), read as a watch would.
    fn logged(puts: u8) -> Vec<SharedEvent> {
        let (store, mut writer) = Store::new(LogLimits::default());
        writer.add_map(
            MapInfo::new("m", MapKind::Hash, 1, 1, 64).with_id(1),
            vec![],
            0,
        );
        for key in 0..puts {
            writer.apply([Change::put(
                "m",
                vec![key],
                vec![key],
                EventSource::Trace,
                1,
            )]);
        }
        store
            .load()
            .log()
            .read_from(1, usize::MAX)
            .expect("in the log")
    }

    #[test]
    fn a_logged_event_matches_itself_and_not_the_same_slot_of_another_log() {
        let cache = SharedEncodings::default();
        let first = logged(3);
        // two reads of one log hand out the same events: shared
        let stored = chunks(&cache, &first[1..2], false);
        let again = chunks(&cache, &first[1..2], false);
        assert_eq!(again[0].fields.as_ptr(), stored[0].fields.as_ptr());
        // the same revision and slot of another log's chunk (equal
        // contents, as a restarted store would log) is another event,
        // also once the first log's chunk is gone and its memory reused
        let second = logged(3);
        assert_eq!(first[1], second[1], "equal contents");
        let other = chunks(&cache, &second[1..2], false);
        assert_ne!(other[0].fields.as_ptr(), stored[0].fields.as_ptr());
        drop(first);
        let third = logged(3);
        let other = chunks(&cache, &third[1..2], false);
        assert_ne!(other[0].fields.as_ptr(), stored[0].fields.as_ptr());
        assert_eq!(decoded(&other), want(&third[1..2], false));
    }
}
