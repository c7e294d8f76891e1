//! Fuzzing the ring record decoder and the routing of what it decodes
//! (proptest over arbitrary and mutated bytes; `cargo test -p mapsync-kernel
//! --lib fuzz_`, longer with `PROPTEST_CASES=100000`).
//!
//! A ring item is written by a BPF program or the syscall trace, and a ring
//! shared with another instance (or a buggy program) can hold anything:
//! decoding must answer `Err` for what is not a record, never panic, never
//! read past the item, and routing whatever decodes must never panic either.

use std::sync::Arc;

use mapsync_core::map_info::{MapInfo, MapKind};
use mapsync_ebpf::abi::{RecordHeader, RecordOp, RecordSource};
use proptest::prelude::*;

use crate::record::{BadRecord, Record};
use crate::route::{Action, MappedMap, route};

/// Cases per property: modest by default (the whole fuzz set stays well
/// under a minute in a debug build), `PROPTEST_CASES` when set.
fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

/// The wire form of a record: header, key, value, then `tail` (ring items
/// are padded, so bytes after the value are allowed and ignored).
fn encode(header: &RecordHeader, key: &[u8], value: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(RecordHeader::SIZE + key.len() + value.len() + tail.len());
    bytes.extend_from_slice(&header.seq.to_ne_bytes());
    bytes.extend_from_slice(&header.ts_ns.to_ne_bytes());
    bytes.extend_from_slice(&header.map_id.to_ne_bytes());
    bytes.extend_from_slice(&header.cpu.to_ne_bytes());
    bytes.extend_from_slice(&header.key_size.to_ne_bytes());
    bytes.extend_from_slice(&header.value_size.to_ne_bytes());
    bytes.push(header.op);
    bytes.push(header.source);
    bytes.extend_from_slice(&header.flags.to_ne_bytes());
    bytes.extend_from_slice(key);
    bytes.extend_from_slice(value);
    bytes.extend_from_slice(tail);
    bytes
}

/// A well-formed record and its wire form.
fn valid_record() -> impl Strategy<Value = (Record, Vec<u8>)> {
    (
        any::<(u64, u64, u32, u32, u16)>(),
        prop_oneof![
            Just(RecordOp::Put),
            Just(RecordOp::Delete),
            Just(RecordOp::Resync)
        ],
        prop_oneof![Just(RecordSource::Emit), Just(RecordSource::Trace)],
        proptest::collection::vec(any::<u8>(), 0..80),
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(
            |((seq, ts_ns, map_id, cpu, flags), op, source, key, value, tail)| {
                let header = RecordHeader {
                    seq,
                    ts_ns,
                    map_id,
                    cpu,
                    key_size: key.len() as u16,
                    value_size: value.len() as u16,
                    op: op as u8,
                    source: source as u8,
                    flags,
                };
                let bytes = encode(&header, &key, &value, &tail);
                let record = Record {
                    header,
                    op,
                    source,
                    key: key.into(),
                    value: value.into(),
                };
                (record, bytes)
            },
        )
}

/// A mirrored map of any kind and shape to route into.
fn any_map() -> impl Strategy<Value = MapInfo> {
    (
        prop_oneof![
            Just(MapKind::Hash),
            Just(MapKind::Array),
            Just(MapKind::PercpuHash),
            Just(MapKind::PercpuArray),
            Just(MapKind::LruHash),
            Just(MapKind::LruPercpuHash),
            Just(MapKind::ArrayOfMaps),
            Just(MapKind::HashOfMaps),
        ],
        0u32..80,
        0u32..300,
        1u32..1024,
    )
        .prop_map(|(kind, key_size, value_size, max_entries)| {
            MapInfo::new("fuzzed", kind, key_size, value_size, max_entries).with_id(7)
        })
}

/// What a decoded record must satisfy whatever the bytes were.
fn check_decoded(bytes: &[u8], record: &Record) {
    let key = usize::from(record.header.key_size);
    let value = usize::from(record.header.value_size);
    assert_eq!(record.key.len(), key);
    assert_eq!(record.value.len(), value);
    assert!(bytes.len() >= RecordHeader::SIZE + key + value);
    assert_eq!(
        &record.key[..],
        &bytes[RecordHeader::SIZE..RecordHeader::SIZE + key]
    );
    assert_eq!(RecordOp::from_u8(record.header.op), Some(record.op));
    assert_eq!(
        RecordSource::from_u8(record.header.source),
        Some(record.source)
    );
}

/// What routing must satisfy for any record and map.
fn check_routed(record: &Record, info: &MapInfo) {
    let name: Arc<str> = info.name.as_str().into();
    assert_eq!(route(record.clone(), None), Action::Foreign);
    match route(record.clone(), Some(MappedMap { name: &name, info })) {
        Action::Apply(change) => {
            assert_eq!(
                change.key.len(),
                info.key_size as usize,
                "applied keys have the map's size"
            );
            if let Some(value) = &change.value {
                assert_eq!(
                    value.len(),
                    info.value_bytes as usize,
                    "applied values as lookups give them"
                );
                assert!(
                    !info.kind.is_map_of_maps(),
                    "an inner map's fd is never applied as a value"
                );
            }
        }
        Action::ReadKey { map_id, key, .. } => {
            assert_eq!(map_id, record.header.map_id);
            assert_eq!(key.len(), info.key_size as usize);
        }
        Action::Resync { map_id } => assert_eq!(map_id, record.header.map_id),
        Action::Foreign => panic!("a mirrored map's record is never foreign"),
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn fuzz_arbitrary_bytes_decode_or_fail_without_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        if let Ok(record) = Record::parse(&bytes) {
            check_decoded(&bytes, &record);
        }
    }

    #[test]
    fn fuzz_a_valid_record_round_trips((record, bytes) in valid_record()) {
        prop_assert_eq!(Record::parse(&bytes), Ok(record));
    }

    #[test]
    fn fuzz_a_record_cut_short_is_truncated(
        (record, bytes) in valid_record(),
        cut in any::<prop::sample::Index>(),
    ) {
        let end = RecordHeader::SIZE + record.key.len() + record.value.len();
        let short = &bytes[..cut.index(end)];
        prop_assert_eq!(Record::parse(short), Err(BadRecord::Truncated));
    }

    #[test]
    fn fuzz_mutated_records_decode_or_fail_and_route_without_panic(
        (_, mut bytes) in valid_record(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        info in any_map(),
    ) {
        for (at, byte) in flips {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        if let Ok(record) = Record::parse(&bytes) {
            check_decoded(&bytes, &record);
            check_routed(&record, &info);
        }
    }

    #[test]
    fn fuzz_any_valid_record_routes_consistently(
        (record, _) in valid_record(),
        info in any_map(),
    ) {
        check_routed(&record, &info);
    }
}

/// Seed corpus: inputs at the edges, run as plain tests.
#[test]
fn fuzz_seed_corpus_decodes_as_expected() {
    let header = |key_size: u16, value_size: u16, op: u8, source: u8| RecordHeader {
        seq: u64::MAX,
        ts_ns: 0,
        map_id: u32::MAX,
        cpu: u32::MAX,
        key_size,
        value_size,
        op,
        source,
        flags: u16::MAX,
    };
    let cases: Vec<(&str, Vec<u8>, Result<(), BadRecord>)> = vec![
        ("empty", vec![], Err(BadRecord::Truncated)),
        (
            "one byte short of a header",
            vec![0; RecordHeader::SIZE - 1],
            Err(BadRecord::Truncated),
        ),
        (
            "all-zero header: op 0",
            vec![0; RecordHeader::SIZE],
            Err(BadRecord::UnknownKind),
        ),
        (
            "header only, empty key and value",
            encode(&header(0, 0, 2, 1), &[], &[], &[]),
            Ok(()),
        ),
        (
            "sizes at u16::MAX with no bytes behind",
            encode(&header(u16::MAX, u16::MAX, 1, 2), &[], &[], &[]),
            Err(BadRecord::Truncated),
        ),
        (
            "largest sizes, all bytes present",
            encode(
                &header(u16::MAX, u16::MAX, 1, 2),
                &vec![1; 65535],
                &vec![2; 65535],
                &[],
            ),
            Ok(()),
        ),
        (
            "unknown source",
            encode(&header(1, 0, 1, 0), &[9], &[], &[]),
            Err(BadRecord::UnknownKind),
        ),
        (
            "unknown op 255",
            encode(&header(1, 0, 255, 1), &[9], &[], &[]),
            Err(BadRecord::UnknownKind),
        ),
        (
            "padding after the value",
            encode(&header(1, 1, 1, 1), &[1], &[2], &[0; 7]),
            Ok(()),
        ),
    ];
    for (what, bytes, expected) in cases {
        let parsed = Record::parse(&bytes);
        assert_eq!(
            parsed.as_ref().map(|_| ()).map_err(|e| *e),
            expected,
            "{what}"
        );
        if let Ok(record) = parsed {
            check_decoded(&bytes, &record);
            for kind in [MapKind::Hash, MapKind::PercpuArray, MapKind::HashOfMaps] {
                check_routed(&record, &MapInfo::new("seed", kind, 1, 1, 1).with_id(7));
            }
        }
    }
}
