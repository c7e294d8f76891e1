//! sync-core types to protobuf types. Nothing else in the crate builds
//! protobuf messages from domain types.

use mapsync_core::{ChangeEvent, EventSource, MapView, Op};

use crate::pb;

/// A change as a protobuf event, without its previous value.
pub fn event(event: &ChangeEvent) -> pb::Event {
    event_with_prev(event, false)
}

/// A change as a protobuf event, with its previous value if `prev` is set.
pub fn event_with_prev(event: &ChangeEvent, prev: bool) -> pb::Event {
    pb::Event {
        revision: event.revision,
        map: event.map.to_string(),
        op: op(event.op) as i32,
        key: event.key.clone(),
        value: event.value.clone().unwrap_or_default(),
        source: source(event.source) as i32,
        prev_value: if prev {
            event.prev_value.clone().unwrap_or_default()
        } else {
            Default::default()
        },
        has_prev: prev && event.prev_value.is_some(),
    }
}

/// An operation as its protobuf enum.
pub fn op(op: Op) -> pb::Op {
    match op {
        Op::Put => pb::Op::Put,
        Op::Delete => pb::Op::Delete,
    }
}

/// A capture source as its protobuf enum.
pub fn source(source: EventSource) -> pb::Source {
    match source {
        EventSource::Initial => pb::Source::Initial,
        EventSource::Emit => pb::Source::Emit,
        EventSource::Trace => pb::Source::Trace,
        EventSource::Resync => pb::Source::Resync,
        EventSource::Poll => pb::Source::Poll,
    }
}

/// A mirrored map's description.
pub fn map_description(name: &str, view: &MapView) -> pb::MapDescription {
    let info = view.info();
    pb::MapDescription {
        name: name.to_owned(),
        id: info.id,
        kind: info.kind.name(),
        key_size: info.key_size,
        value_size: info.value_size,
        value_bytes: info.value_bytes,
        max_entries: info.max_entries,
        entries: view.len() as u64,
        kernel_name: info.kernel_name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_delete_carries_an_empty_value() {
        let pb = event(&ChangeEvent {
            revision: 9,
            map: "m".into(),
            op: Op::Delete,
            key: Bytes::from_static(b"k"),
            value: None,
            source: EventSource::Trace,
            prev_value: None,
            prev_mod_revision: 0,
        });
        assert_eq!(pb.op, pb::Op::Delete as i32);
        assert_eq!(pb.source, pb::Source::Trace as i32);
        assert!(pb.value.is_empty());
        assert_eq!(&pb.key[..], b"k");
    }
}
