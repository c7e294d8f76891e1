//! Record -> action routing: what one ring record asks the kernel task to
//! do, as a pure function of the record and the mirrored map it names.
//!
//! No kernel, no store: the ingest task looks the map up, calls [`route`],
//! and carries the action out (apply, re-read one key, resync the map).

use std::sync::Arc;

use bytes::Bytes;
use mapsync_core::event::EventSource;
use mapsync_core::map_info::MapInfo;
use mapsync_core::store::Change;
use mapsync_ebpf::abi::{RecordOp, RecordSource};

use crate::record::Record;

/// What routing needs of a mirrored map: the name it is served under and
/// its description.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MappedMap<'a> {
    /// The name the mirror serves the map under.
    pub(crate) name: &'a Arc<str>,
    /// Its kind and sizes.
    pub(crate) info: &'a MapInfo,
}

/// What a record asks the kernel task to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// The record says the change: apply it as is.
    Apply(Change),
    /// The record names the key but not the value as lookups give it
    /// (one CPU's slot of a per-CPU map, an inner map's fd): re-read it.
    ReadKey {
        /// The kernel map id.
        map_id: u32,
        /// The key to re-read.
        key: Bytes,
        /// Who produced the record.
        source: EventSource,
    },
    /// The record cannot say what changed (a batch call, a key of the wrong
    /// size): re-read the whole map.
    Resync {
        /// The kernel map id.
        map_id: u32,
    },
    /// The record is of a map this instance does not mirror (the ring is
    /// shared): count it, do nothing.
    Foreign,
}

/// Routes one record; `map` is the mirrored map of `record.header.map_id`,
/// `None` when the map is not mirrored. The record is taken by value so
/// that its key and value buffers move into the change: cloning a freshly
/// copied `Bytes` would allocate a shared header for each.
pub(crate) fn route(record: Record, map: Option<MappedMap<'_>>) -> Action {
    let Some(map) = map else {
        return Action::Foreign;
    };
    let source = match record.source {
        RecordSource::Emit => EventSource::Emit,
        RecordSource::Trace => EventSource::Trace,
    };
    let map_id = record.header.map_id;
    match record.op {
        RecordOp::Resync => Action::Resync { map_id },
        _ if record.key.len() != map.info.key_size as usize => Action::Resync { map_id },
        RecordOp::Delete => Action::Apply(Change {
            map: map.name.clone(),
            key: record.key,
            value: None,
            source,
            observed_ns: record.header.ts_ns,
        }),
        // a BPF program's write to a per-CPU map carries one CPU's slot,
        // a write to a map of maps carries an fd where lookups give the
        // inner map's id: read the value back
        RecordOp::Put
            if record.value.len() != map.info.value_bytes as usize
                || map.info.kind.is_map_of_maps() =>
        {
            Action::ReadKey {
                map_id,
                key: record.key,
                source,
            }
        }
        RecordOp::Put => Action::Apply(Change {
            map: map.name.clone(),
            key: record.key,
            value: Some(record.value),
            source,
            observed_ns: record.header.ts_ns,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mapsync_core::map_info::MapKind;
    use mapsync_ebpf::abi::RecordHeader;

    const MAP_ID: u32 = 42;

    fn record(op: RecordOp, source: RecordSource, key: &[u8], value: &[u8]) -> Record {
        Record {
            header: RecordHeader {
                seq: 1,
                ts_ns: 1_000,
                map_id: MAP_ID,
                cpu: 0,
                key_size: key.len() as u16,
                value_size: value.len() as u16,
                op: op as u8,
                source: source as u8,
                flags: 0,
            },
            op,
            source,
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
        }
    }

    fn hash() -> MapInfo {
        MapInfo::new("flows", MapKind::Hash, 4, 8, 64).with_id(MAP_ID)
    }

    fn route_in(info: &MapInfo, record: &Record) -> Action {
        let name: Arc<str> = info.name.as_str().into();
        route(record.clone(), Some(MappedMap { name: &name, info }))
    }

    #[test]
    fn a_put_is_applied_with_its_value_source_and_time() {
        let put = record(RecordOp::Put, RecordSource::Trace, &[1, 0, 0, 0], &[7; 8]);
        assert_eq!(
            route_in(&hash(), &put),
            Action::Apply(Change {
                map: "flows".into(),
                key: Bytes::from_static(&[1, 0, 0, 0]),
                value: Some(Bytes::from_static(&[7; 8])),
                source: EventSource::Trace,
                observed_ns: 1_000,
            })
        );
    }

    #[test]
    fn a_delete_is_applied_without_a_value() {
        let delete = record(RecordOp::Delete, RecordSource::Emit, &[2, 0, 0, 0], &[]);
        assert_eq!(
            route_in(&hash(), &delete),
            Action::Apply(Change {
                map: "flows".into(),
                key: Bytes::from_static(&[2, 0, 0, 0]),
                value: None,
                source: EventSource::Emit,
                observed_ns: 1_000,
            })
        );
    }

    #[test]
    fn a_per_cpu_emit_of_one_slot_re_reads_the_key() {
        // 4 CPUs of 8-byte slots: lookups carry 32 bytes, an emit one slot
        let per_cpu = MapInfo::new("hits", MapKind::PercpuHash, 4, 8, 64)
            .with_id(MAP_ID)
            .with_value_bytes(32);
        let emit = record(RecordOp::Put, RecordSource::Emit, &[3, 0, 0, 0], &[1; 8]);
        assert_eq!(
            route_in(&per_cpu, &emit),
            Action::ReadKey {
                map_id: MAP_ID,
                key: Bytes::from_static(&[3, 0, 0, 0]),
                source: EventSource::Emit,
            }
        );
        // a syscall write carries every CPU's slot: applied as is
        let full = record(RecordOp::Put, RecordSource::Trace, &[3, 0, 0, 0], &[1; 32]);
        assert!(matches!(route_in(&per_cpu, &full), Action::Apply(_)));
    }

    #[test]
    fn a_resync_record_resyncs_the_map() {
        // a batch call the trace could not itemise: no key, no value
        let batch = record(RecordOp::Resync, RecordSource::Trace, &[], &[]);
        assert_eq!(route_in(&hash(), &batch), Action::Resync { map_id: MAP_ID });
    }

    #[test]
    fn a_record_of_a_map_not_mirrored_is_foreign() {
        let put = record(RecordOp::Put, RecordSource::Trace, &[1, 0, 0, 0], &[7; 8]);
        assert_eq!(route(put.clone(), None), Action::Foreign);
    }

    #[test]
    fn a_key_of_the_wrong_size_resyncs_instead_of_applying() {
        for op in [RecordOp::Put, RecordOp::Delete] {
            let short = record(op, RecordSource::Trace, &[1, 0], &[7; 8]);
            assert_eq!(
                route_in(&hash(), &short),
                Action::Resync { map_id: MAP_ID },
                "{op:?}"
            );
        }
    }

    #[test]
    fn a_put_into_a_map_of_maps_re_reads_the_inner_map_id() {
        // the record carries the inner map's fd, lookups give its id: same
        // size, still re-read
        let outer = MapInfo::new("outer", MapKind::HashOfMaps, 4, 4, 8).with_id(MAP_ID);
        let put = record(
            RecordOp::Put,
            RecordSource::Trace,
            &[1, 0, 0, 0],
            &[5, 0, 0, 0],
        );
        assert_eq!(
            route_in(&outer, &put),
            Action::ReadKey {
                map_id: MAP_ID,
                key: Bytes::from_static(&[1, 0, 0, 0]),
                source: EventSource::Trace,
            }
        );
    }
}
