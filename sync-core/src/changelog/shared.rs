//! Handles to change events held by value in shared chunks: what the change
//! log hands to subscriptions and the gRPC fan-out.
//!
//! The log stores its events in chunks of slots ([`EventChunk`]), each
//! chunk one allocation for [`CHUNK`](super::events) events, so logging an
//! event allocates nothing of its own. A [`SharedEvent`] is the chunk's
//! `Arc` and a slot index: cloning one is a reference-count increment, and it
//! keeps its chunk (and so the event) readable after the log has dropped
//! it. A [`WeakEvent`] names the very same event without keeping it alive,
//! for caches that must recognize an event they have seen (the fan-out's
//! shared encodings).

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock, Weak};

use crate::event::ChangeEvent;

/// A fixed run of event slots, each set once. The slots are boxed apart
/// from the `Arc`'s own allocation, so a [`WeakEvent`] keeps only the small
/// header alive once the last [`SharedEvent`] of the chunk is gone.
#[derive(Debug)]
pub(crate) struct EventChunk {
    slots: Box<[OnceLock<ChangeEvent>]>,
}

impl EventChunk {
    /// A chunk of `len` empty slots.
    pub(crate) fn empty(len: usize) -> Self {
        Self {
            slots: (0..len).map(|_| OnceLock::new()).collect(),
        }
    }

    /// A chunk holding `events`, each in its slot, in order.
    pub(crate) fn filled(events: impl IntoIterator<Item = ChangeEvent>) -> Self {
        Self {
            slots: events.into_iter().map(OnceLock::from).collect(),
        }
    }

    /// The event in `slot`, if it is set.
    pub(crate) fn get(&self, slot: usize) -> Option<&ChangeEvent> {
        self.slots.get(slot)?.get()
    }

    /// Sets `slot` to `event`; gives the event back (`Some`) if the slot
    /// was set already or is out of the chunk.
    pub(crate) fn set(&self, slot: usize, event: ChangeEvent) -> Option<ChangeEvent> {
        match self.slots.get(slot) {
            Some(cell) => cell.set(event).err(),
            None => Some(event),
        }
    }
}

/// One change event, shared: derefs to the [`ChangeEvent`], and a clone
/// costs one reference-count increment (no allocation).
///
/// The change log ([`ChangeLog::read_from`](super::ChangeLog::read_from))
/// and subscriptions ([`WatchBatch::Events`](crate::WatchBatch::Events))
/// hand out these. A handle stays readable after the log has trimmed its
/// event; it keeps the chunk of events it came from allocated, so a
/// consumer should not hold handles much longer than it takes to process
/// them. [`SharedEvent::to_event`] gives an owned copy (its key and values
/// are reference-counted [`bytes::Bytes`], so that copies no bytes).
///
/// Equality compares the events' contents; [`SharedEvent::is_same`] tells
/// whether two handles are the same logged event.
///
/// ```
/// use mapsync_core::{ChangeEvent, EventSource, Op, SharedEvent};
///
/// let event = SharedEvent::new(ChangeEvent {
///     revision: 7,
///     map: "flows".into(),
///     op: Op::Delete,
///     key: bytes::Bytes::from_static(b"k"),
///     value: None,
///     source: EventSource::Api,
///     prev_value: None,
///     prev_mod_revision: 0,
/// });
/// let copy = event.clone();
/// assert_eq!(copy.revision, 7);
/// assert!(copy.is_same(&event));
/// let owned: ChangeEvent = copy.to_event();
/// assert_eq!(owned.op, Op::Delete);
/// ```
#[derive(Clone)]
pub struct SharedEvent {
    chunk: Arc<EventChunk>,
    /// Index of a slot of `chunk` that is set.
    slot: u32,
}

impl SharedEvent {
    /// A handle to `event` alone (one chunk of one slot: for events that
    /// are not in a log, such as tests' or a caller's own).
    pub fn new(event: ChangeEvent) -> Self {
        Self {
            chunk: Arc::new(EventChunk::filled([event])),
            slot: 0,
        }
    }

    /// Handles to `events`, held together in one chunk (one allocation for
    /// all of them), in order.
    pub fn batch(events: Vec<ChangeEvent>) -> Vec<Self> {
        let len = events.len();
        let chunk = Arc::new(EventChunk::filled(events));
        (0..len).filter_map(|slot| Self::at(&chunk, slot)).collect()
    }

    /// A handle to the event in `slot` of `chunk`, if that slot is set.
    pub(crate) fn at(chunk: &Arc<EventChunk>, slot: usize) -> Option<Self> {
        chunk.get(slot)?;
        Some(Self {
            chunk: Arc::clone(chunk),
            slot: u32::try_from(slot).ok()?,
        })
    }

    /// An owned copy of the event (reference counts of its map name, key
    /// and values are incremented; no bytes are copied).
    pub fn to_event(&self) -> ChangeEvent {
        (**self).clone()
    }

    /// Whether `self` and `other` are handles to the very same event (not
    /// merely equal contents).
    pub fn is_same(&self, other: &SharedEvent) -> bool {
        Arc::ptr_eq(&self.chunk, &other.chunk) && self.slot == other.slot
    }

    /// Which logged event this is, as a value to hash or compare: equal for
    /// handles of the same event, and unique among the events whose chunks
    /// are still allocated (a [`WeakEvent`] keeps its chunk's allocation).
    pub fn identity(&self) -> EventIdentity {
        EventIdentity(Arc::as_ptr(&self.chunk) as usize, self.slot)
    }

    /// A name of this very event that does not keep it alive.
    pub fn downgrade(&self) -> WeakEvent {
        WeakEvent {
            chunk: Arc::downgrade(&self.chunk),
            slot: self.slot,
        }
    }
}

impl Deref for SharedEvent {
    type Target = ChangeEvent;

    fn deref(&self) -> &ChangeEvent {
        self.chunk
            .get(self.slot as usize)
            .expect("a handle is made for a set slot, and a set slot stays set")
    }
}

impl AsRef<ChangeEvent> for SharedEvent {
    fn as_ref(&self) -> &ChangeEvent {
        self
    }
}

impl From<ChangeEvent> for SharedEvent {
    fn from(event: ChangeEvent) -> Self {
        Self::new(event)
    }
}

impl From<SharedEvent> for ChangeEvent {
    fn from(event: SharedEvent) -> Self {
        event.to_event()
    }
}

impl fmt::Debug for SharedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl PartialEq for SharedEvent {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for SharedEvent {}

/// A [`SharedEvent`]'s identity without its event: tells whether a handle
/// is the very same event, and keeps nothing of the events alive (only the
/// chunk's small header, so its address is never reused while this exists).
#[derive(Debug, Clone)]
pub struct WeakEvent {
    chunk: Weak<EventChunk>,
    slot: u32,
}

/// The identity of one logged event ([`SharedEvent::identity`],
/// [`WeakEvent::identity`]): its chunk's address and its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventIdentity(usize, u32);

impl WeakEvent {
    /// The identity of the event this was made from; while this lives, no
    /// other event has it.
    pub fn identity(&self) -> EventIdentity {
        EventIdentity(self.chunk.as_ptr() as usize, self.slot)
    }

    /// Whether `event` is the event this was made from.
    pub fn is(&self, event: &SharedEvent) -> bool {
        std::ptr::eq(self.chunk.as_ptr(), Arc::as_ptr(&event.chunk)) && self.slot == event.slot
    }

    /// Whether no [`SharedEvent`] of this event's chunk is left (the event is
    /// gone for good).
    pub fn is_gone(&self) -> bool {
        self.chunk.strong_count() == 0
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
            value: Some(Bytes::from_static(b"v")),
            source: EventSource::Trace,
            prev_value: None,
            prev_mod_revision: 0,
        }
    }

    #[test]
    fn a_batch_is_one_chunk_of_distinct_events() {
        let batch = SharedEvent::batch(vec![event(1), event(1), event(2)]);
        assert_eq!(batch.len(), 3);
        assert_eq!(batch[0], batch[1], "equal contents");
        assert!(!batch[0].is_same(&batch[1]), "yet different events");
        assert!(batch[0].is_same(&batch[0].clone()));
        assert!(Arc::ptr_eq(&batch[0].chunk, &batch[2].chunk));
        assert_eq!(batch[2].to_event(), event(2));
    }

    #[test]
    fn a_handle_is_two_words_and_its_chunk_is_one_allocation_of_slots() {
        assert_eq!(
            std::mem::size_of::<SharedEvent>(),
            2 * std::mem::size_of::<usize>()
        );
        // what a chunk of the log costs per event (the bound the docs quote)
        assert!(std::mem::size_of::<OnceLock<ChangeEvent>>() <= 144);
    }

    #[test]
    fn a_weak_event_names_one_event_and_keeps_none_alive() {
        let batch = SharedEvent::batch(vec![event(1), event(2)]);
        let weak = batch[1].downgrade();
        assert!(weak.is(&batch[1]) && !weak.is(&batch[0]));
        assert!(!weak.is(&SharedEvent::new(event(2))), "equal is not same");
        assert!(!weak.is_gone());
        drop(batch);
        assert!(weak.is_gone());
        // a chunk made after the first one is gone is never taken for it
        let later = SharedEvent::batch(vec![event(1), event(2)]);
        assert!(!weak.is(&later[1]));
    }
}
