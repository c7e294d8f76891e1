use super::*;

/// What `sorted` must give: per key, the latest read (on equal
/// times the one read last), in key order.
fn expected(entries: &[(Vec<u8>, Vec<u8>, u64)]) -> Vec<(Vec<u8>, Vec<u8>, u64)> {
    let mut newest: std::collections::BTreeMap<Vec<u8>, (Vec<u8>, u64)> = Default::default();
    for (key, value, at) in entries {
        match newest.get(key) {
            Some((_, seen)) if seen > at => {}
            _ => {
                newest.insert(key.clone(), (value.clone(), *at));
            }
        }
    }
    newest
        .into_iter()
        .map(|(key, (value, at))| (key, value, at))
        .collect()
}

fn sorted(dump: &DumpEntries) -> Vec<(Vec<u8>, Vec<u8>, u64)> {
    let sorted = dump.sorted();
    let all: Vec<_> = sorted
        .iter()
        .map(|(key, value, at)| (key.to_vec(), value.to_vec(), at))
        .collect();
    assert_eq!(all.len(), sorted.len());
    all
}

#[test]
fn batched_reads_keep_their_entries_and_times() {
    let mut dump = DumpEntries::with_shape(2, 3);
    let filled = dump
        .read_into(4, 10, |keys, values| {
            assert_eq!((keys.len(), values.len()), (8, 12));
            keys[..4].copy_from_slice(&[0, 2, 0, 1]);
            values[..6].copy_from_slice(&[2, 2, 2, 1, 1, 1]);
            Ok::<_, ()>(2)
        })
        .expect("read");
    assert_eq!(filled, 2);
    let failed = dump.read_into(4, 20, |keys, _| {
        keys[0] = 9;
        Err("refused")
    });
    assert_eq!(failed, Err("refused"));
    dump.push(&[0, 1], &[3, 3, 3], 30);
    assert_eq!(dump.len(), 3);
    let read: Vec<_> = dump.iter().collect();
    assert_eq!(
        read,
        vec![
            (&[0u8, 2][..], &[2u8, 2, 2][..], 10),
            (&[0, 1][..], &[1, 1, 1][..], 10),
            (&[0, 1][..], &[3, 3, 3][..], 30),
        ]
    );
    assert_eq!(
        sorted(&dump),
        vec![
            (vec![0, 1], vec![3, 3, 3], 30),
            (vec![0, 2], vec![2, 2, 2], 10)
        ]
    );
}

#[test]
fn entries_of_another_shape_are_kept_beside_the_flat_ones() {
    let dump: DumpEntries = vec![
        (Bytes::from_static(b"bb"), Bytes::from_static(b"1"), 5),
        (Bytes::from_static(b"a"), Bytes::from_static(b"22"), 6),
        (Bytes::from_static(b"bb"), Bytes::from_static(b"3"), 4),
    ]
    .into();
    assert_eq!(dump.len(), 3);
    assert_eq!(
        sorted(&dump),
        vec![
            (b"a".to_vec(), b"22".to_vec(), 6),
            (b"bb".to_vec(), b"1".to_vec(), 5),
        ]
    );
    let owned: Vec<_> = dump.clone().into_iter().collect();
    assert_eq!(
        owned[1],
        (Bytes::from_static(b"a"), Bytes::from_static(b"22"), 6)
    );
    assert_eq!(dump, owned.into_iter().collect::<DumpEntries>());
}

#[test]
fn a_large_dump_of_8_byte_keys_sorts_by_bytes() {
    let mut dump = DumpEntries::with_shape(8, 16);
    // native-endian counters, as a kernel map of u64 keys holds them, in a
    // scrambled order, and every 100th key read twice (the second newer)
    for i in 0..50_000u64 {
        let k = (i * 7_919) % 50_000;
        dump.push(&k.to_ne_bytes(), &[1; 16], i / 1000);
    }
    for k in (0..50_000u64).step_by(100) {
        dump.push(&k.to_ne_bytes(), &[2; 16], 1000);
    }
    let got = sorted(&dump);
    assert_eq!(got.len(), 50_000);
    assert!(
        got.windows(2).all(|w| w[0].0 < w[1].0),
        "strictly increasing"
    );
    let twice = got
        .iter()
        .filter(|(_, value, _)| value == &vec![2; 16])
        .count();
    assert_eq!(twice, 500, "the later read of a key read twice wins");
}

#[test]
fn a_large_dump_of_many_reads_sorts_like_the_reference() {
    // 12 reads of different times, many keys read in two of them
    let mut dump = DumpEntries::with_shape(4, 12);
    let mut entries = Vec::new();
    for read in 0..12u32 {
        let at = 100 + u64::from(read);
        let keys: Vec<u32> = (0..10_000u32)
            .map(|i| ((u64::from(i * 12 + read) * 2_654_435) % 100_003) as u32)
            .collect();
        dump.read_into(keys.len(), at, |out_keys, out_values| {
            for (n, key) in keys.iter().enumerate() {
                out_keys[n * 4..n * 4 + 4].copy_from_slice(&key.to_le_bytes());
                out_values[n * 12..n * 12 + 4].copy_from_slice(&read.to_le_bytes());
            }
            Ok::<_, ()>(keys.len())
        })
        .expect("read");
        for key in keys {
            let mut value = vec![0u8; 12];
            value[..4].copy_from_slice(&read.to_le_bytes());
            entries.push((key.to_le_bytes().to_vec(), value, at));
        }
    }
    assert_eq!(dump.len(), 120_000);
    assert_eq!(sorted(&dump), expected(&entries));
}

proptest::proptest! {
    #[test]
    fn sorted_is_the_newest_read_of_each_key_in_key_order(
        key_size in 1usize..12,
        // small values are sorted with their keys, large ones by position
        value_size in proptest::sample::select(vec![1usize, 16, 100]),
        reads in proptest::collection::vec(
            (proptest::collection::vec((0u8..3, 0u8..255), 0..20), 0u64..4),
            0..12,
        ),
        in_time_order in proptest::bool::ANY,
    ) {
        // small alphabets and a shared prefix: many equal keys and, for keys
        // over 8 bytes, many equal 8-byte prefixes
        let mut entries = Vec::new();
        let mut dump = DumpEntries::with_shape(key_size, value_size);
        for (n, (read, at)) in reads.into_iter().enumerate() {
            let at = if in_time_order { n as u64 * 4 + at } else { at };
            let filled = dump.read_into(read.len() + 1, at, |keys, values| {
                for (i, (last, value)) in read.iter().enumerate() {
                    keys[(i + 1) * key_size - 1] = *last;
                    values[i * value_size] = *value;
                }
                Ok::<_, ()>(read.len())
            }).expect("read");
            proptest::prop_assert_eq!(filled, read.len());
            for (last, value) in read {
                let mut key = vec![0u8; key_size];
                key[key_size - 1] = last;
                let mut stored = vec![0u8; value_size];
                stored[0] = value;
                entries.push((key, stored, at));
            }
        }
        proptest::prop_assert_eq!(dump.len(), entries.len());
        proptest::prop_assert_eq!(sorted(&dump), expected(&entries));
    }

    #[test]
    fn mixed_shapes_sort_like_the_reference(
        entries in proptest::collection::vec(
            (proptest::collection::vec(0u8..4, 0..12), 0u8..9, 0u64..3),
            0..200,
        ),
    ) {
        let entries: Vec<(Vec<u8>, Vec<u8>, u64)> = entries
            .into_iter()
            .map(|(key, value, at)| (key, vec![value], at))
            .collect();
        let dump: DumpEntries = entries
            .iter()
            .map(|(k, v, at)| (Bytes::from(k.clone()), Bytes::from(v.clone()), *at))
            .collect();
        proptest::prop_assert_eq!(sorted(&dump), expected(&entries));
    }
}

#[test]
fn two_dumps_merged_by_time_keep_the_later_read_of_a_key() {
    let read = |dump: &mut DumpEntries, at: u64, entries: &[(u8, u8)]| {
        dump.read_into(entries.len(), at, |keys, values| {
            for (i, (key, value)) in entries.iter().enumerate() {
                keys[i] = *key;
                values[i] = *value;
            }
            Ok::<_, ()>(entries.len())
        })
        .expect("read");
    };
    let (mut low, mut high) = (DumpEntries::with_shape(1, 1), DumpEntries::with_shape(1, 1));
    read(&mut low, 10, &[(1, 1), (2, 1)]);
    read(&mut high, 11, &[(5, 2), (6, 2)]);
    // the low half's last read runs into the high half's keys, later
    read(&mut low, 12, &[(3, 1), (5, 3)]);
    let merged = low.merge_by_time(high);
    let times: Vec<u64> = merged.iter().map(|(_, _, at)| at).collect();
    assert_eq!(times, vec![10, 10, 11, 11, 12, 12], "reads in time order");
    assert_eq!(
        sorted(&merged),
        vec![
            (vec![1], vec![1], 10),
            (vec![2], vec![1], 10),
            (vec![3], vec![1], 12),
            (vec![5], vec![3], 12),
            (vec![6], vec![2], 11),
        ]
    );
}
