//! Unit tests of [`Entries`]: lookups, order, paging, clones, folds through
//! the levels and merges.

use super::*;

fn put(entries: &mut Entries, key: &[u8], revision: u64) {
    entries.insert(key, &revision.to_ne_bytes(), revision, revision);
}

#[test]
fn lookups_order_and_paging_agree_after_puts_updates_and_deletes() {
    let mut entries = Entries::default();
    for (revision, key) in [3u8, 1, 2, 5, 4].into_iter().enumerate() {
        put(&mut entries, &[key], revision as u64);
    }
    put(&mut entries, &[2], 10); // an update: order unchanged
    entries.remove(&[4]);
    entries.remove(&[9]); // absent: nothing happens
    // a long key, stored on the heap
    let long = [7u8; 40];
    put(&mut entries, &long, 11);

    for merged in [false, true] {
        if merged {
            entries.merge();
        }
        assert_eq!(entries.len(), 5);
        assert_eq!(entries.get(&[2]).map(|e| e.mod_revision), Some(10));
        assert_eq!(entries.get(&long).map(|e| e.mod_revision), Some(11));
        assert!(entries.get(&[4]).is_none());
        let keys: Vec<Vec<u8>> = entries.iter_after(None).map(|(k, _)| k.to_vec()).collect();
        assert_eq!(
            keys,
            vec![vec![1], vec![2], vec![3], vec![5], long.to_vec()],
            "bytewise key order (merged: {merged})"
        );
        let after: Vec<u8> = entries.iter_after(Some(&[2])).map(|(k, _)| k[0]).collect();
        assert_eq!(after, vec![3, 5, 7], "strictly after the cursor");
    }
    // changes on top of a base: replace, delete and re-add a base key
    put(&mut entries, &[1], 20);
    entries.remove(&[3]);
    entries.remove(&[5]);
    put(&mut entries, &[5], 21);
    put(&mut entries, &[0], 22);
    assert_eq!(entries.len(), 5);
    let seen: Vec<(u8, u64)> = entries
        .iter_after(None)
        .map(|(k, e)| (k[0], e.mod_revision))
        .collect();
    assert_eq!(seen, vec![(0, 22), (1, 20), (2, 10), (5, 21), (7, 11)]);
}

#[test]
fn a_clone_is_unaffected_by_later_changes_and_merges() {
    let mut entries = Entries::default();
    put(&mut entries, &[1], 1);
    let before = entries.clone();
    put(&mut entries, &[1], 2);
    put(&mut entries, &[2], 3);
    entries.merge();
    entries.remove(&[1]);
    assert_eq!(before.get(&[1]).map(|e| e.mod_revision), Some(1));
    assert_eq!(before.len(), 1);
    assert_eq!(entries.len(), 1);
    assert!(entries.get(&[1]).is_none());
}

#[test]
fn changes_fold_through_every_level_and_deletes_hide_older_levels() {
    let mut entries = Entries::default();
    let n = 2 * run_capacity(LEVELS - 2) as u64;
    for i in 0..n {
        put(&mut entries, &i.to_be_bytes(), i + 1);
    }
    let kept = entries.clone();
    assert!(
        entries.runs[LEVELS - 1].is_some(),
        "{n} distinct keys reach the last level: {:?}",
        entries
            .runs
            .iter()
            .map(|r| r.as_ref().map(|r| r.len()))
            .collect::<Vec<_>>()
    );
    for i in (0..n).step_by(3) {
        entries.remove(&i.to_be_bytes());
    }
    put(&mut entries, &0u64.to_be_bytes(), 1000);
    let expected: Vec<(u64, u64)> = (0..n)
        .filter(|i| i % 3 != 0 || *i == 0)
        .map(|i| (i, if i == 0 { 1000 } else { i + 1 }))
        .collect();
    assert_eq!(entries.len(), expected.len());
    let seen: Vec<(u64, u64)> = entries
        .iter_after(None)
        .map(|(k, e)| {
            (
                u64::from_be_bytes(k.try_into().expect("8 bytes")),
                e.mod_revision,
            )
        })
        .collect();
    assert_eq!(seen, expected);
    for (i, revision) in &expected {
        assert_eq!(
            entries.get(&i.to_be_bytes()).map(|e| e.mod_revision),
            Some(*revision)
        );
    }
    assert!(entries.get(&3u64.to_be_bytes()).is_none());
    assert!(entries.run_bytes() > 0);
    assert_eq!(kept.len(), n as usize, "the clone kept its levels");
    assert_eq!(kept.iter_after(None).count(), n as usize);
    entries.merge();
    assert!(!entries.has_overlay());
    let merged: Vec<(u64, u64)> = entries
        .iter_after(None)
        .map(|(k, e)| {
            (
                u64::from_be_bytes(k.try_into().expect("8 bytes")),
                e.mod_revision,
            )
        })
        .collect();
    assert_eq!(merged, expected, "the merged base holds the same");
}

#[test]
fn a_merge_of_new_values_only_rewrites_a_copy_of_the_base() {
    let keys: Vec<[u8; 8]> = (0..300u64).map(u64::to_be_bytes).collect();
    let mut entries = Entries::from_sorted(
        keys.len(),
        keys.iter().map(|k| (&k[..], &[0u8; 8][..], 1, 1)),
    );
    let kept = entries.clone();
    // enough changes to reach the runs, several per key
    for round in 0..3u64 {
        for (i, key) in keys.iter().enumerate().step_by(1 + round as usize) {
            put(&mut entries, key, 10 * round + i as u64 + 2);
        }
    }
    assert!(!entries.reshaped && entries.runs.iter().any(Option::is_some));
    let before: Vec<(Vec<u8>, Vec<u8>, u64)> = entries
        .iter_after(None)
        .map(|(k, e)| (k.to_vec(), e.value.to_vec(), e.mod_revision))
        .collect();
    let in_place = IN_PLACE_MERGES.with(|merges| merges.get());
    entries.merge();
    assert_eq!(
        IN_PLACE_MERGES.with(|merges| merges.get()),
        in_place + 1,
        "rewritten in place"
    );
    assert!(!entries.has_overlay());
    let after: Vec<_> = entries
        .iter_after(None)
        .map(|(k, e)| (k.to_vec(), e.value.to_vec(), e.mod_revision))
        .collect();
    assert_eq!(after, before);
    assert_eq!(
        entries.get(&keys[6]).map(|e| e.mod_revision),
        Some(10 * 2 + 6 + 2),
        "the newest of three rounds"
    );
    assert_eq!(
        kept.get(&keys[6]).map(|e| e.mod_revision),
        Some(1),
        "old base untouched"
    );
    // a value of another length cannot be rewritten in place: rebuilt
    entries.insert(&keys[0], b"longer value", 99, 99);
    let in_place = IN_PLACE_MERGES.with(|merges| merges.get());
    entries.merge();
    assert_eq!(
        IN_PLACE_MERGES.with(|merges| merges.get()),
        in_place,
        "rebuilt"
    );
    assert_eq!(
        entries.get(&keys[0]).map(|e| e.value),
        Some(&b"longer value"[..])
    );
    assert_eq!(entries.len(), keys.len());
}

#[test]
fn new_values_merge_past_a_32nd_of_a_large_base_new_keys_past_an_eighth() {
    let n = 64 * MIN_OVERLAY as u64;
    let base = || {
        let keys: Vec<[u8; 8]> = (0..n).map(|k| (2 * k).to_be_bytes()).collect();
        Entries::from_sorted(
            keys.len(),
            keys.iter().map(|k| (&k[..], &[0u8; 8][..], 1, 1)),
        )
    };
    let (a_32nd, an_eighth) = (n / 32, n / 8);
    // new values of existing (even) keys
    let mut values = base();
    for k in 0..a_32nd {
        put(&mut values, &(2 * k).to_be_bytes(), k + 2);
    }
    assert!(!values.needs_merge(), "{a_32nd} new values: not yet");
    put(&mut values, &(2 * a_32nd).to_be_bytes(), 1);
    assert!(values.needs_merge(), "past a 32nd");
    // new (odd) keys: an eighth
    let mut keys = base();
    for k in 0..an_eighth {
        put(&mut keys, &(2 * k + 1).to_be_bytes(), k + 2);
        if k == a_32nd {
            assert!(!keys.needs_merge(), "new keys past a 32nd: not yet");
        }
    }
    assert!(!keys.needs_merge(), "{an_eighth} new keys: not yet");
    put(&mut keys, &(2 * an_eighth + 1).to_be_bytes(), 1);
    assert!(keys.needs_merge(), "past an eighth");
}

#[test]
fn the_overlay_asks_for_a_merge_past_an_eighth_of_the_base() {
    let mut entries = Entries::default();
    for i in 0..=MIN_OVERLAY as u64 {
        assert!(!entries.needs_merge());
        put(&mut entries, &i.to_be_bytes(), i + 1);
    }
    assert!(entries.needs_merge());
    entries.merge();
    assert!(!entries.needs_merge());
    assert_eq!(entries.len(), MIN_OVERLAY + 1);
}

#[test]
fn one_change_per_copy_folds_the_table_once_copying_it_costs_more_than_a_fold() {
    let mut entries = Entries::default();
    // publishes of one change each: every change is made on a fresh copy
    put(&mut entries, b"a", 1);
    entries = entries.clone(); // 1 record copied
    put(&mut entries, b"b", 2);
    assert!(entries.runs[0].is_none(), "1 copied <= 1 + 0: no fold yet");
    entries = entries.clone(); // 1 + 2 records copied
    put(&mut entries, b"c", 3);
    assert_eq!(
        entries.runs[0].as_ref().map(|run| run.len()),
        Some(2),
        "3 copied > 2 in the table + 0 in the newest run: folded"
    );
    assert_eq!((entries.top.len(), entries.top_copied), (1, 0));
    // one batch (no copy in between) fills the table before folding it
    let mut batch = Entries::default();
    for (revision, key) in (0..TOP_ENTRIES as u8).enumerate() {
        assert!(batch.runs[0].is_none(), "folded early at {revision}");
        put(&mut batch, &[key], revision as u64);
    }
    assert_eq!(
        batch.runs[0].as_ref().map(|run| run.len()),
        Some(TOP_ENTRIES)
    );
    for (key, revision) in [(b"a", 1), (b"b", 2), (b"c", 3)] {
        assert_eq!(entries.get(key).map(|e| e.mod_revision), Some(revision));
    }
}
