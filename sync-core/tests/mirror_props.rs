//! Model-based property test of the mirror through its public API, against
//! a `BTreeMap` history: random batches of puts and deletes over enough
//! distinct keys to make the writer merge its overlay into new bases, with
//! kept snapshots, `map_at` at past revisions and paging compared to the
//! model's state at the same revision.

use std::collections::BTreeMap;

use bytes::Bytes;
use mapsync_core::{Change, EventSource, MapInfo, MapKind, Snapshot, Store};
use proptest::prelude::*;

type Model = BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

/// Distinct keys: more than the overlay's minimum merge size.
const KEYS: u16 = 9000;

fn state(snapshot: &Snapshot, revision: u64) -> Model {
    let view = snapshot.map_at("m", revision).expect("readable");
    view.iter()
        .map(|(k, e)| (k.to_vec(), (e.value.to_vec(), e.mod_revision)))
        .collect()
}

fn check_view(snapshot: &Snapshot, model: &Model) -> Result<(), TestCaseError> {
    let view = snapshot.map("m").expect("map");
    prop_assert_eq!(view.len(), model.len());
    for (key, (value, revision)) in model.iter().step_by(7) {
        let entry = view.entry(key).expect("present");
        prop_assert_eq!((entry.value, entry.mod_revision), (&value[..], *revision));
    }
    // a page from the middle, by cursor
    if let Some((cursor, _)) = model.iter().nth(model.len() / 2) {
        let page: Vec<Vec<u8>> = view
            .iter_after(Some(cursor))
            .take(50)
            .map(|(k, _)| k.to_vec())
            .collect();
        let expected: Vec<Vec<u8>> = model
            .range::<Vec<u8>, _>((
                std::ops::Bound::Excluded(cursor.clone()),
                std::ops::Bound::Unbounded,
            ))
            .take(50)
            .map(|(k, _)| k.clone())
            .collect();
        prop_assert_eq!(page, expected);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn snapshots_and_past_revisions_match_the_model_across_merges(
        initial in 0u16..3000,
        batches in proptest::collection::vec(
            proptest::collection::vec((0..KEYS, any::<u8>(), 0u8..10), 1..400),
            10..30,
        ),
    ) {
        let (store, mut writer) = Store::new(Default::default());
        let info = MapInfo::new("m", MapKind::Hash, 2, 4, u32::from(KEYS)).with_id(1);
        let entries: Vec<_> = (0..initial)
            .map(|k| (Bytes::copy_from_slice(&k.to_be_bytes()), Bytes::from_static(b"init"), 0))
            .collect();
        writer.add_map(info, entries, 0);
        let mut model: Model = store
            .load()
            .map("m")
            .expect("m")
            .iter()
            .map(|(k, e)| (k.to_vec(), (e.value.to_vec(), e.mod_revision)))
            .collect();
        prop_assert_eq!(model.len(), usize::from(initial));
        let mut history = vec![(store.revision(), model.clone())];
        let mut kept = Vec::new();
        let mut observed = 1;
        for batch in batches {
            let mut changes = Vec::new();
            let mut revision = store.revision();
            for (k, v, kind) in batch {
                observed += 1;
                let key = k.to_be_bytes().to_vec();
                if kind < 3 {
                    changes.push(Change::delete("m", key.clone(), EventSource::Trace, observed));
                    if model.remove(&key).is_some() {
                        revision += 1;
                    }
                } else {
                    let value = vec![v; 4];
                    changes.push(Change::put("m", key.clone(), value.clone(), EventSource::Trace, observed));
                    revision += 1;
                    model.insert(key, (value, revision));
                }
            }
            prop_assert_eq!(writer.apply(changes), revision);
            let snapshot = store.snapshot();
            check_view(&snapshot, &model)?;
            history.push((revision, model.clone()));
            kept.push((snapshot, model.clone()));
        }
        let snapshot = store.snapshot();
        for (revision, past) in history.iter().step_by(3) {
            prop_assert_eq!(&state(&snapshot, *revision), past, "map_at({})", revision);
        }
        for (old, model) in kept.iter().step_by(4) {
            check_view(old, model)?;
        }
    }
}
