//! Fuzzing the BTF parser and decoder (proptest over arbitrary bytes,
//! mutations of the committed `typed.bpf.o` BTF, and generated type tables;
//! `cargo test -p mapsync-btf --lib fuzz_`, longer with
//! `PROPTEST_CASES=100000`).
//!
//! BTF comes from the kernel, but of whatever object a user loaded: parsing
//! and decoding must answer `Err` for what makes no sense, never panic,
//! never loop, and never build more than a bounded number of values for
//! the bytes decoded.

use std::sync::Arc;

use proptest::prelude::*;

use crate::parse::Btf;
use crate::testdata;
use crate::{MapTypes, TypedValue};

/// Cases per property: modest by default (the whole fuzz set stays well
/// under a minute in a debug build), `PROPTEST_CASES` when set.
fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

/// Types examined per blob, and the largest type decoded.
const IDS_CHECKED: u32 = 64;
const MAX_DECODED: u32 = 1 << 16;

/// Values in a decoded tree.
fn values_in(value: &TypedValue) -> usize {
    1 + match value {
        TypedValue::Array(items) | TypedValue::PerCpu(items) => items.iter().map(values_in).sum(),
        TypedValue::Struct(members) => members.iter().map(|(_, v)| values_in(v)).sum(),
        _ => 0,
    }
}

/// Everything a caller can ask of a parsed blob, on its first types:
/// nothing may panic, and a decode builds at most
/// [`crate::decode::values_allowed`] values.
fn exercise(btf: &Btf, noise: &[u8]) {
    let count = (0..).take_while(|id| btf.get(*id).is_ok()).count() as u32;
    for id in 0..count.min(IDS_CHECKED) {
        let _ = btf.type_name(id);
        let _ = btf.resolve(id);
        let Ok(size) = btf.size_of(id) else {
            assert!(btf.decode(id, noise).is_err());
            continue;
        };
        let _ = MapTypes::new(Arc::new(btf.clone()), 1, id, id, size, size);
        if size > MAX_DECODED {
            continue;
        }
        let data: Vec<u8> = noise.iter().copied().cycle().take(size as usize).collect();
        let data = if noise.is_empty() {
            vec![0; size as usize]
        } else {
            data
        };
        if let Ok(value) = btf.decode(id, &data) {
            let allowed = crate::decode::values_allowed(size as usize);
            assert!(
                values_in(&value) <= allowed,
                "type {id}: {} values > {allowed}",
                values_in(&value)
            );
        }
        if size > 0 {
            assert!(
                btf.decode(id, &data[..size as usize - 1]).is_err(),
                "type {id}: short data"
            );
        }
    }
}

/// A blob from raw type-section words and a string section.
fn blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
    let type_len = (types.len() * 4) as u32;
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&0xeb9fu16.to_ne_bytes());
    bytes.extend_from_slice(&[1, 0]);
    for word in [24, 0, type_len, type_len, strings.len() as u32] {
        bytes.extend_from_slice(&u32::to_ne_bytes(word));
    }
    for word in types {
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    bytes.extend_from_slice(strings);
    bytes
}

/// Names at offsets 0 (""), 1 ("a"), 3 ("char"), 8 ("b").
const STRINGS: &[u8] = b"\0a\0char\0b\0";

/// A word of a type record: a small id or size, an edge value, a
/// bitfield-shaped offset, or anything.
fn word() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => 0u32..12,
        1 => Just(u32::MAX),
        1 => Just(65_536u32),
        1 => Just(1u32 << 29),
        1 => (0u32..=255, 0u32..512).prop_map(|(bits, offset)| (bits << 24) | offset),
        2 => any::<u32>(),
    ]
}

/// Extra words after a type record's 12-byte head, as the kind needs them.
fn trailing(kind: u32, vlen: u32) -> usize {
    match kind {
        1 | 14 | 17 => 1,
        3 => 3,
        4 | 5 | 15 => 3 * vlen as usize,
        6 | 13 => 2 * vlen as usize,
        19 => 3 * vlen as usize,
        _ => 0,
    }
}

/// One generated type record: kind, flag, vlen, name, size or type, then
/// the words its kind reads (sometimes too few).
fn type_record() -> impl Strategy<Value = Vec<u32>> {
    (
        prop_oneof![8 => 1u32..=19, 1 => 0u32..=31],
        any::<bool>(),
        prop_oneof![4 => 0u32..4, 1 => Just(0xffffu32)],
        prop_oneof![Just(0u32), Just(1), Just(3), Just(8), any::<u32>()],
        word(),
        any::<bool>(),
    )
        .prop_flat_map(|(kind, flag, vlen, name, size_or_type, short)| {
            let need = trailing(kind, vlen).min(24);
            let words = if short && need > 0 { need - 1 } else { need };
            proptest::collection::vec(word(), words).prop_map(move |rest| {
                let info = (u32::from(flag) << 31) | (kind << 24) | vlen;
                let mut record = vec![name, info, size_or_type];
                record.extend(rest);
                record
            })
        })
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn fuzz_arbitrary_bytes_parse_or_fail_without_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        noise in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        if let Ok(btf) = Btf::parse(&bytes) {
            exercise(&btf, &noise);
        }
        let _ = Btf::from_elf(&bytes);
    }

    #[test]
    fn fuzz_generated_type_tables_parse_and_decode_without_panic(
        records in proptest::collection::vec(type_record(), 1..12),
        noise in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let words: Vec<u32> = records.concat();
        if let Ok(btf) = Btf::parse(&blob(&words, STRINGS)) {
            exercise(&btf, &noise);
        }
    }
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn fuzz_mutated_object_btf_parses_and_decodes_without_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        noise in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        let mut bytes = testdata::object_btf_bytes();
        // most flips in the header and the type section, where they matter
        let types_end = 24 + u32::from_ne_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
        for (at, byte) in flips {
            let at = at.index(types_end.min(bytes.len()));
            bytes[at] = byte;
        }
        if let Ok(btf) = Btf::parse(&bytes) {
            exercise(&btf, &noise);
        }
    }

    #[test]
    fn fuzz_mutated_object_files_are_read_or_refused_without_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut elf = mapsync_ebpf::TYPED_OBJECT.to_vec();
        for (at, byte) in flips {
            let at = at.index(elf.len());
            elf[at] = byte;
        }
        let _ = Btf::from_elf(&elf);
        let _ = Btf::from_elf(&elf[..cut.index(elf.len())]);
    }
}

/// Seed corpus: hand-made tables at the edges found while fuzzing (each
/// once panicked, looped or allocated without bound), run as plain tests.
#[test]
fn fuzz_seed_corpus_is_refused_or_decoded_within_bounds() {
    const INT: u32 = 1 << 24;
    const ARRAY: u32 = 3 << 24;
    const STRUCT: u32 = 4 << 24;
    const ENUM: u32 = 6 << 24;
    const TYPEDEF: u32 = 8 << 24;
    const KIND_FLAG: u32 = 1 << 31;
    let seeds: Vec<(&str, Vec<u32>)> = vec![
        // 1: a zero-size int; 2: 4 billion of them in 0 bytes
        (
            "array of 4G zero-size elements",
            vec![1, INT, 0, 0, 0, ARRAY, 0, 1, 1, u32::MAX],
        ),
        // 1: signed int of 0 bytes
        ("zero-size signed int", vec![1, INT, 0, 1 << 24]),
        // 1: int with its value shifted past 64 bits
        (
            "int bit offset past its width",
            vec![1, INT, 4, (200 << 16) | 32],
        ),
        // 1: u8; 2: struct of 1 byte with a 255-bit bitfield
        (
            "bitfield wider than 128 bits",
            vec![1, INT, 1, 8, 1, STRUCT | KIND_FLAG | 1, 1, 1, 1, 255 << 24],
        ),
        ("enum of 0 bytes", vec![1, ENUM | 1, 0, 1, 0]),
        ("enum of 20 bytes", vec![1, ENUM | 1, 20, 1, 7]),
        // 1: struct of 1 byte, three members of itself at offset 0 (a loop)
        (
            "struct containing itself",
            vec![1, STRUCT | 3, 1, 1, 1, 0, 1, 1, 0, 1, 1, 0],
        ),
        // 1: u8; 2: 3 x u8 at offset 0; 3: 3 x (2); ... each level triples
        ("exponential nesting in few bytes", {
            let mut words = vec![1, INT, 1, 8];
            for id in 1..20u32 {
                words.extend([1, STRUCT | 3, 1]);
                for _ in 0..3 {
                    words.extend([1, id, 0]);
                }
            }
            words
        }),
        // 1: anonymous typedef of 2, 2: anonymous array of 1 (a name loop)
        (
            "anonymous typedef and array in a loop",
            vec![0, TYPEDEF, 2, 0, ARRAY, 0, 1, 0, 4],
        ),
    ];
    for (what, words) in seeds {
        let btf = Btf::parse(&blob(&words, STRINGS)).unwrap_or_else(|e| panic!("{what}: {e}"));
        exercise(&btf, &[0xff; 8]);
        exercise(&btf, &[]);
    }
}
