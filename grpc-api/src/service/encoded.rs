//! Live events encoded once and shared between watches.
//!
//! Every watch reading the same revision of the change log sees the same
//! `Arc<ChangeEvent>`s, and watches that want the same form of an event
//! (with or without its previous value, nothing decoded) send the same
//! bytes. The first watch to reach a revision encodes its events and leaves
//! them in a slot of this cache (one slot per revision and form, direct
//! mapped); watches after it copy the `Bytes` handles. A slot remembers its
//! events by `Weak` pointer, so it keeps no value alive and a match is the
//! very same event, whatever a watch's filter left out: events a slot lacks
//! (another filter chose them) are encoded by the watch that needs them.
//!
//! Bounded: at most [`SLOTS`] groups, together at most [`MAX_BYTES`] of
//! encodings (a group that would pass it is not kept; watches with it then
//! encode their own).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use mapsync_core::{ChangeEvent, Revision};
use prost::Message;

use crate::convert;

/// Revision groups remembered (per form).
pub const SLOTS: usize = 2048;
/// Most bytes of encodings remembered at once, over all slots.
pub const MAX_BYTES: usize = 16 << 20;

/// The encodings of one revision's events, in one form.
struct Group {
    revision: Revision,
    prev: bool,
    events: Vec<(Weak<ChangeEvent>, Bytes)>,
    bytes: usize,
    used: Arc<AtomicUsize>,
}

impl Drop for Group {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl Group {
    fn is_stale(&self, revision: Revision) -> bool {
        self.revision < revision
            || self
                .events
                .first()
                .is_none_or(|(event, _)| event.strong_count() == 0)
    }
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

fn encode(event: &ChangeEvent, prev: bool) -> Bytes {
    Bytes::from(convert::event_with_prev(event, prev).encode_to_vec())
}

impl SharedEncodings {
    /// Bytes of encodings held now.
    #[cfg(test)]
    fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Appends the encodings of `group` (events of one revision, in log
    /// order, as one watch selected them) to `out`, with previous values if
    /// `prev`: shared when a watch before this one encoded them.
    pub(super) fn encode_revision(
        &self,
        group: &[Arc<ChangeEvent>],
        prev: bool,
        out: &mut Vec<Bytes>,
    ) {
        let Some(first) = group.first() else { return };
        let revision = first.revision;
        let index = (revision.wrapping_mul(2) + u64::from(prev)) as usize % SLOTS;
        let slot = &self.slots[index];
        let cached = slot.load();
        match cached.as_deref() {
            Some(cached) if cached.revision == revision && cached.prev == prev => {
                // the slot's events are a selection of the same revision in
                // the same order: walk both
                let mut next = 0;
                for event in group {
                    let found = cached.events[next..]
                        .iter()
                        .position(|(them, _)| std::ptr::eq(them.as_ptr(), Arc::as_ptr(event)));
                    match found {
                        Some(at) => {
                            out.push(cached.events[next + at].1.clone());
                            next += at + 1;
                        }
                        None => out.push(encode(event, prev)),
                    }
                }
            }
            cached => {
                let start = out.len();
                out.extend(group.iter().map(|event| encode(event, prev)));
                if cached.is_some_and(|cached| !cached.is_stale(revision)) {
                    // a newer revision holds the slot: this watch is behind
                    return;
                }
                let bytes = out[start..].iter().map(Bytes::len).sum();
                let before = self.used.fetch_add(bytes, Ordering::Relaxed);
                if before + bytes > MAX_BYTES {
                    self.used.fetch_sub(bytes, Ordering::Relaxed);
                    return;
                }
                let events = group
                    .iter()
                    .map(Arc::downgrade)
                    .zip(out[start..].iter().cloned())
                    .collect();
                slot.store(Some(Arc::new(Group {
                    revision,
                    prev,
                    events,
                    bytes,
                    used: self.used.clone(),
                })));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mapsync_core::{EventSource, Op};

    fn event(revision: Revision, key: u8) -> Arc<ChangeEvent> {
        Arc::new(ChangeEvent {
            revision,
            map: "m".into(),
            op: Op::Put,
            key: vec![key; 4].into(),
            value: Some(vec![key; 16].into()),
            source: EventSource::Trace,
            prev_value: Some(vec![9; 16].into()),
            prev_mod_revision: 1,
        })
    }

    fn encodings(cache: &SharedEncodings, group: &[Arc<ChangeEvent>], prev: bool) -> Vec<Bytes> {
        let mut out = Vec::new();
        cache.encode_revision(group, prev, &mut out);
        out
    }

    #[test]
    fn a_second_watch_gets_the_same_bytes_without_encoding_again() {
        let cache = SharedEncodings::default();
        let group: Vec<_> = (0..5).map(|k| event(10, k)).collect();
        let first = encodings(&cache, &group, false);
        let second = encodings(&cache, &group, false);
        for (a, b) in first.iter().zip(&second) {
            assert_eq!(a.as_ptr(), b.as_ptr(), "shared, not encoded again");
        }
        for (event, bytes) in group.iter().zip(&first) {
            assert_eq!(
                bytes[..],
                convert::event_with_prev(event, false).encode_to_vec()[..]
            );
        }
    }

    #[test]
    fn a_watch_with_other_options_gets_its_own_encoding() {
        let cache = SharedEncodings::default();
        let group: Vec<_> = (0..3).map(|k| event(4, k)).collect();
        let without = encodings(&cache, &group, false);
        let with = encodings(&cache, &group, true);
        for ((event, plain), prev) in group.iter().zip(&without).zip(&with) {
            assert_eq!(
                plain[..],
                convert::event_with_prev(event, false).encode_to_vec()[..]
            );
            assert_eq!(
                prev[..],
                convert::event_with_prev(event, true).encode_to_vec()[..]
            );
            assert_ne!(plain, prev);
        }
        // each form is shared with watches of the same form
        assert_eq!(
            encodings(&cache, &group, true)[0].as_ptr(),
            with[0].as_ptr()
        );
        assert_eq!(
            encodings(&cache, &group, false)[0].as_ptr(),
            without[0].as_ptr()
        );
    }

    #[test]
    fn another_selection_of_a_revision_shares_what_it_can_and_encodes_the_rest() {
        let cache = SharedEncodings::default();
        let group: Vec<_> = (0..6).map(|k| event(8, k)).collect();
        let odd: Vec<_> = group.iter().skip(1).step_by(2).cloned().collect();
        let stored = encodings(&cache, &odd, false);
        let all = encodings(&cache, &group, false);
        for (event, bytes) in group.iter().zip(&all) {
            assert_eq!(
                bytes[..],
                convert::event_with_prev(event, false).encode_to_vec()[..]
            );
        }
        assert_eq!(all[1].as_ptr(), stored[0].as_ptr());
        assert_eq!(all[5].as_ptr(), stored[2].as_ptr());
        // a different event of the same revision (another epoch's) is no hit
        let other = vec![event(8, 1)];
        let fresh = encodings(&cache, &other, false);
        assert_ne!(fresh[0].as_ptr(), stored[0].as_ptr());
    }

    #[test]
    fn the_cache_is_bounded_and_keeps_no_event_alive() {
        let cache = SharedEncodings::default();
        let group: Vec<_> = (0..4).map(|k| event(3, k)).collect();
        let weak = Arc::downgrade(&group[0]);
        let _ = encodings(&cache, &group, false);
        assert!(cache.used() > 0);
        drop(group);
        assert!(weak.upgrade().is_none(), "only weak pointers are kept");
        // an older revision does not push a newer one out; a newer one does
        let newer = vec![event(3 + SLOTS as u64 / 2, 0)];
        let _ = encodings(&cache, &newer, false);
        let older = vec![event(3, 0)];
        let _ = encodings(&cache, &older, false);
        let used = cache.used();
        assert!(used < 200, "one small group per slot, {used} bytes");
    }
}
