//! Model-based property test of [`Entries`] against a `BTreeMap`: random
//! puts, deletes, bursts of puts and deletes (which fill the top table and
//! fold it into runs, and runs into deeper runs: unit tests use a table of
//! 4 keys and a level ratio of 4), merges and clones (kept snapshots), with
//! lookups, lengths and ordered paging compared after every step.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::Entries;

#[derive(Debug, Clone)]
enum Step {
    Put(u8, u8),
    Delete(u8),
    /// Puts (or, if the flag is set, deletes) of `count` consecutive keys.
    Burst(u8, u8, bool),
    Merge,
    Keep,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u8..KEYS, any::<u8>()).prop_map(|(k, v)| Step::Put(k, v)),
        3 => (0u8..KEYS).prop_map(Step::Delete),
        1 => (0u8..KEYS, 1u8..100, proptest::bool::weighted(0.3))
            .prop_map(|(k, n, delete)| Step::Burst(k, n, delete)),
        1 => Just(Step::Merge),
        1 => Just(Step::Keep),
    ]
}

/// Keys are `0..KEYS` (wide enough for runs three levels deep).
const KEYS: u8 = 200;

type Model = BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

/// Keys of two lengths, so that merged bases use both layouts.
fn key(k: u8) -> Vec<u8> {
    if k.is_multiple_of(5) {
        vec![k, k]
    } else {
        vec![k]
    }
}

fn check(entries: &Entries, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(entries.len(), model.len());
    for k in 0u8..KEYS {
        let key = key(k);
        let got = entries
            .get(&key)
            .map(|e| (e.value.to_vec(), e.mod_revision));
        prop_assert_eq!(got.as_ref(), model.get(&key));
    }
    let all: Vec<(Vec<u8>, Vec<u8>, u64)> = entries
        .iter_after(None)
        .map(|(k, e)| (k.to_vec(), e.value.to_vec(), e.mod_revision))
        .collect();
    let expected: Vec<_> = model
        .iter()
        .map(|(k, (v, r))| (k.clone(), v.clone(), *r))
        .collect();
    prop_assert_eq!(&all, &expected);
    for cursor in [vec![0u8], vec![10, 10], vec![17], vec![47, 0], vec![150]] {
        let after: Vec<Vec<u8>> = entries
            .iter_after(Some(&cursor))
            .map(|(k, _)| k.to_vec())
            .collect();
        let expected: Vec<Vec<u8>> = model
            .range::<Vec<u8>, _>((
                std::ops::Bound::Excluded(cursor.clone()),
                std::ops::Bound::Unbounded,
            ))
            .map(|(k, _)| k.clone())
            .collect();
        prop_assert_eq!(after, expected);
    }
    Ok(())
}

proptest! {
    #[test]
    fn entries_behave_like_an_ordered_map_across_merges_and_clones(
        initial in proptest::collection::btree_map(0u8..KEYS, any::<u8>(), 0..120),
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        let mut model: Model = initial
            .iter()
            .map(|(k, v)| (key(*k), (vec![*v; 3], 1)))
            .collect();
        let records: Vec<_> = model.iter().map(|(k, (v, r))| (k.clone(), v.clone(), *r)).collect();
        let mut entries = Entries::from_sorted(
            records.len(),
            records.iter().map(|(k, v, r)| (&k[..], &v[..], *r, 0)),
        );
        let mut kept: Vec<(Entries, Model)> = Vec::new();
        check(&entries, &model)?;
        for (revision, step) in (2u64..).zip(steps) {
            match step {
                Step::Put(k, v) => {
                    // values of two lengths too
                    let value = vec![v; 1 + usize::from(v % 2) * 2];
                    let present = model.contains_key(&key(k));
                    entries.insert_known(&key(k), &value, revision, revision, present);
                    model.insert(key(k), (value, revision));
                }
                Step::Delete(k) => {
                    if model.contains_key(&key(k)) {
                        entries.remove_present(&key(k));
                    } else {
                        entries.remove(&key(k));
                    }
                    model.remove(&key(k));
                }
                Step::Burst(first, count, delete) => {
                    for k in (first..KEYS).take(usize::from(count)) {
                        if delete {
                            entries.remove(&key(k));
                            model.remove(&key(k));
                        } else {
                            let value = vec![k; 2];
                            entries.insert(&key(k), &value, revision, revision);
                            model.insert(key(k), (value, revision));
                        }
                    }
                }
                Step::Merge => entries.merge(),
                Step::Keep => kept.push((entries.clone(), model.clone())),
            }
            check(&entries, &model)?;
        }
        for (entries, model) in &kept {
            check(entries, model)?;
        }
    }
}
