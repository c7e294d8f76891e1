//! One change applied to a map's view: the old entry looked up once, the
//! entry set or removed, the change event made (with its previous value).

use bytes::{Bytes, BytesMut};

use super::Change;
use crate::event::{ChangeEvent, EventSource, Op, Revision};
use crate::snapshot::{MapView, Snapshot};

/// Bytes of each buffer that replaced values are copied into.
const PREV_VALUE_CHUNK: usize = 16 << 10;

/// Copies of replaced values for the change events (`prev_value`), cut
/// from shared buffers of [`PREV_VALUE_CHUNK`] bytes: one allocation per
/// buffer, not one per event. A buffer is freed when the last event cut
/// from it is; the change log's byte bound counts each copy's length.
#[derive(Debug, Default)]
pub(super) struct PrevValues(BytesMut);

impl PrevValues {
    /// A copy of `value`.
    pub(super) fn copy(&mut self, value: &[u8]) -> Bytes {
        if self.0.capacity() - self.0.len() < value.len() {
            self.0 = BytesMut::with_capacity(PREV_VALUE_CHUNK.max(value.len()));
        }
        self.0.extend_from_slice(value);
        self.0.split().freeze()
    }
}

/// Applies one change at `revision` (the caller advances the snapshot's
/// revision when an event comes back); `None` when the change is skipped.
pub(super) fn apply_one(
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
pub(super) fn apply_to_view(
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
