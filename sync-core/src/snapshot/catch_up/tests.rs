//! Reused snapshots against a model: random publishes (single changes,
//! batches, deletes, stale and repeated changes, write requests, tidies,
//! maps added), with snapshots held by "readers" for a while (so that the
//! spare is sometimes busy and copied instead), and every map of the
//! current snapshot and of every held one compared with the model of its
//! revision after every step. Unit tests fold a table at 4 keys, so folds,
//! deeper runs and merges happen often.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use crate::changelog::LogLimits;
use crate::event::EventSource;
use crate::map_info::{MapInfo, MapKind};
use crate::snapshot::Snapshot;
use crate::store::{Change, Publisher, Store};

const MAPS: [&str; 2] = ["a", "b"];
const KEYS: u8 = 40;

/// Per map: key -> (value, mod revision).
type Model = BTreeMap<&'static str, BTreeMap<Vec<u8>, (Vec<u8>, u64)>>;

#[derive(Debug, Clone)]
enum Step {
    /// One change per publish: map, key, value (`None`: delete).
    One(usize, u8, Option<u8>),
    /// A batch of changes in one publish.
    Batch(Vec<(usize, u8, Option<u8>)>),
    /// A change observed before what the mirror holds (skipped).
    Stale(usize, u8),
    /// A write request (one revision, not the reusing path).
    AsOne(usize, u8, u8),
    /// Housekeeping (merges when quiet).
    Tidy,
    /// Keep the current snapshot for this many steps.
    Hold(u8),
    /// A third map added (a publish that changes the maps' layout).
    AddMap,
}

fn change() -> impl Strategy<Value = (usize, u8, Option<u8>)> {
    (
        0..MAPS.len(),
        0..KEYS,
        proptest::option::weighted(0.8, any::<u8>()),
    )
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => change().prop_map(|(m, k, v)| Step::One(m, k, v)),
        2 => proptest::collection::vec(change(), 1..20).prop_map(Step::Batch),
        1 => (0..MAPS.len(), 0..KEYS).prop_map(|(m, k)| Step::Stale(m, k)),
        1 => (0..MAPS.len(), 0..KEYS, any::<u8>()).prop_map(|(m, k, v)| Step::AsOne(m, k, v)),
        1 => Just(Step::Tidy),
        2 => (1u8..6).prop_map(Step::Hold),
        1 => Just(Step::AddMap),
    ]
}

/// Values of two lengths, so that a table both overwrites in place and
/// appends.
fn value(v: u8) -> Vec<u8> {
    vec![v; 1 + usize::from(v % 3)]
}

fn check(snapshot: &Snapshot, model: &Model) -> Result<(), TestCaseError> {
    for (name, expected) in model {
        let view = snapshot.map(name).expect("mirrored");
        let got: BTreeMap<Vec<u8>, (Vec<u8>, u64)> = view
            .iter()
            .map(|(k, e)| (k.to_vec(), (e.value.to_vec(), e.mod_revision)))
            .collect();
        prop_assert_eq!(
            &got,
            expected,
            "map {} at revision {}",
            name,
            snapshot.revision()
        );
        prop_assert_eq!(view.len(), expected.len());
        for k in 0..KEYS {
            let got = view.entry(&[k]).map(|e| (e.value.to_vec(), e.mod_revision));
            prop_assert_eq!(got.as_ref(), expected.get(&vec![k]));
        }
    }
    Ok(())
}

fn put_or_delete(map: usize, key: u8, v: Option<u8>, observed_ns: u64) -> Change {
    match v {
        Some(v) => Change::put(
            MAPS[map],
            vec![key],
            value(v),
            EventSource::Trace,
            observed_ns,
        ),
        None => Change::delete(MAPS[map], vec![key], EventSource::Trace, observed_ns),
    }
}

/// Applies `changes` to the model as `Publisher::apply` does (each change
/// that takes effect gets the next revision).
fn model_apply(model: &mut Model, revision: &mut u64, changes: &[(usize, u8, Option<u8>)]) {
    for (map, key, v) in changes {
        let entries = model.get_mut(MAPS[*map]).expect("modelled");
        match v {
            Some(v) => {
                *revision += 1;
                entries.insert(vec![*key], (value(*v), *revision));
            }
            None => {
                if entries.remove(&vec![*key]).is_some() {
                    *revision += 1;
                }
            }
        }
    }
}

fn apply(writer: &mut Publisher, clock: &mut u64, changes: &[(usize, u8, Option<u8>)]) {
    let batch: Vec<Change> = changes
        .iter()
        .map(|(map, key, v)| {
            *clock += 1;
            put_or_delete(*map, *key, *v, *clock)
        })
        .collect();
    writer.apply(batch);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn reused_snapshots_equal_fresh_copies_and_held_ones_never_change(
        steps in proptest::collection::vec(step(), 1..150),
    ) {
        let (store, mut writer) = Store::new(LogLimits::default());
        let mut model = Model::new();
        for name in MAPS {
            let info = MapInfo::new(name, MapKind::Hash, 1, 3, 64).with_id(1);
            let initial: Vec<(Bytes, Bytes, u64)> = (0..KEYS / 2)
                .map(|k| (Bytes::from(vec![k]), Bytes::from(value(k)), 1))
                .collect();
            // floor 5: a change observed at 0 is stale, for absent keys too
            writer.add_map(info, initial.clone(), 5);
            let first = store.revision() - initial.len() as u64;
            model.insert(
                name,
                initial
                    .iter()
                    .enumerate()
                    .map(|(n, (k, v, _))| (k.to_vec(), (v.to_vec(), first + 1 + n as u64)))
                    .collect(),
            );
        }
        let mut revision = store.revision();
        let mut clock = 10u64;
        // held snapshots: (snapshot, the model at its revision, steps left)
        let mut held: Vec<(Arc<Snapshot>, Model, u8)> = Vec::new();
        for step in steps {
            match step {
                Step::One(map, key, v) => {
                    apply(&mut writer, &mut clock, &[(map, key, v)]);
                    model_apply(&mut model, &mut revision, &[(map, key, v)]);
                }
                Step::Batch(changes) => {
                    apply(&mut writer, &mut clock, &changes);
                    model_apply(&mut model, &mut revision, &changes);
                }
                Step::Stale(map, key) => {
                    // observed before everything the mirror holds
                    writer.apply([put_or_delete(map, key, Some(7), 0)]);
                }
                Step::AsOne(map, key, v) => {
                    clock += 1;
                    writer.apply_as_one([put_or_delete(map, key, Some(v), clock)]);
                    model_apply(&mut model, &mut revision, &[(map, key, Some(v))]);
                }
                Step::Tidy => {
                    writer.tidy();
                }
                Step::Hold(steps) => held.push((store.snapshot(), model.clone(), steps)),
                Step::AddMap => {
                    let info = MapInfo::new("c", MapKind::Hash, 1, 3, 64).with_id(2);
                    writer.add_map(info, Vec::new(), 0);
                    revision = store.revision();
                }
            }
            let current = store.snapshot();
            prop_assert_eq!(current.revision(), revision);
            check(&current, &model)?;
            for (snapshot, at, _) in &held {
                check(snapshot, at)?;
            }
            held.retain_mut(|(_, _, left)| {
                *left -= 1;
                *left > 0
            });
        }
    }
}

#[test]
fn single_change_publishes_alternate_between_two_snapshots() {
    let (store, mut writer) = Store::new(LogLimits::default());
    let info = MapInfo::new("a", MapKind::Hash, 1, 1, 64).with_id(1);
    writer.add_map(info, Vec::new(), 0);
    let mut seen = std::collections::HashSet::new();
    for i in 0..50u8 {
        writer.apply([Change::put(
            "a",
            vec![i % 3],
            vec![i],
            EventSource::Trace,
            1 + u64::from(i),
        )]);
        seen.insert(Arc::as_ptr(&store.snapshot()) as usize);
    }
    // the first publish after `add_map` copies; every later one reuses the
    // snapshot the previous one replaced (a merge would copy once more)
    assert!(
        seen.len() <= 3,
        "{} snapshot allocations for 50 publishes",
        seen.len()
    );
    let view = store.load();
    let view = view.map("a").expect("mirrored");
    assert_eq!(view.get(&[0]), Some(&[48][..]));
    assert_eq!(view.get(&[1]), Some(&[49][..]));
    assert_eq!(view.get(&[2]), Some(&[47][..]));
}

/// Readers on other threads load snapshots (borrowed and kept) while the
/// writer publishes one change at a time, reusing snapshots: every snapshot
/// a reader holds must stay exactly the state of its revision for as long
/// as it is held (a reused snapshot changed under a reader would fail it).
#[test]
fn snapshots_held_by_reader_threads_never_change_under_them() {
    const KEYS: u64 = 8;
    const PUBLISHES: u64 = 20_000;
    let (store, mut writer) = Store::new(LogLimits::default());
    let info = MapInfo::new("a", MapKind::Hash, 1, 8, 64).with_id(1);
    writer.add_map(info, Vec::new(), 0);
    assert_eq!(store.revision(), 0);
    // at revision r, key k holds the newest i <= r with i % KEYS == k
    let check = |snapshot: &Snapshot| {
        let revision = snapshot.revision();
        let view = snapshot.map("a").expect("mirrored");
        for k in 0..KEYS {
            let newest = (1..=revision).rev().find(|i| i % KEYS == k);
            let got = view.entry(&[k as u8]).map(|e| {
                (
                    u64::from_le_bytes(e.value.try_into().expect("8 bytes")),
                    e.mod_revision,
                )
            });
            assert_eq!(
                got,
                newest.map(|i| (i, i)),
                "key {k} at revision {revision}"
            );
        }
    };
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|reader| {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || {
                let mut checked = 0u64;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    if reader == 0 {
                        let guard = store.load();
                        check(&guard);
                        std::hint::spin_loop();
                        check(&guard);
                    } else {
                        let kept = store.snapshot();
                        check(&kept);
                        std::thread::yield_now();
                        check(&kept);
                    }
                    checked += 1;
                }
                checked
            })
        })
        .collect();
    for i in 1..=PUBLISHES {
        writer.apply([Change::put(
            "a",
            vec![(i % KEYS) as u8],
            i.to_le_bytes().to_vec(),
            EventSource::Trace,
            i,
        )]);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        let checked = reader
            .join()
            .expect("a reader saw a snapshot change under it");
        assert!(checked > 0, "each reader checked snapshots");
    }
    check(&store.load());
}
