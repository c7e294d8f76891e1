//! Property: whatever the capture path loses, duplicates or reorders (within
//! a bound), the mirror never moves a key back to an older value, and it
//! converges to the kernel: by itself when nothing was lost, after a resync
//! (a dump diffed against the mirror) otherwise.
//!
//! An in-memory model stands in for the kernel here; the same store code
//! runs against real maps in the kernel tests.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use mapsync_core::Dump;
use mapsync_core::{Change, EventSource, LogLimits, MapInfo, MapKind, Op, Publisher, Store};
use proptest::prelude::*;

const MAP: &str = "m";
/// How far a record may be overtaken by later ones.
const REORDER: usize = 3;

/// A write the model kernel applied at time `at`; a put's value is `at`.
#[derive(Debug, Clone)]
struct Write {
    key: u8,
    put: bool,
    at: u64,
}

fn value_of(at: u64) -> Bytes {
    Bytes::from(at.to_ne_bytes().to_vec())
}

fn time_of(value: &[u8]) -> u64 {
    u64::from_ne_bytes(value.try_into().expect("8-byte value"))
}

fn new_store() -> (Store, Publisher) {
    let (store, mut writer) = Store::new(LogLimits::default());
    let info = MapInfo::new(MAP, MapKind::Hash, 1, 8, 64).with_id(1);
    writer.add_map(info, Vec::new(), 0);
    (store, writer)
}

/// The kernel's content after every write up to time `now`.
fn kernel_at(writes: &[Write], now: u64) -> BTreeMap<u8, u64> {
    let mut state = BTreeMap::new();
    for write in writes.iter().filter(|w| w.at <= now) {
        if write.put {
            state.insert(write.key, write.at);
        } else {
            state.remove(&write.key);
        }
    }
    state
}

fn mirror(store: &Store) -> BTreeMap<u8, u64> {
    let snapshot = store.snapshot();
    snapshot
        .map(MAP)
        .expect("map")
        .iter()
        .map(|(k, e)| (k[0], time_of(e.value)))
        .collect()
}

fn dump_at(writes: &[Write], now: u64) -> Dump {
    Dump {
        entries: kernel_at(writes, now)
            .into_iter()
            .map(|(k, at)| (Bytes::from(vec![k]), value_of(at), now))
            .collect(),
        started_ns: now,
        ended_ns: now,
    }
}

/// Writes as the kernel would accept them: a delete of an absent key fails
/// and produces no record.
fn writes_from(ops: &[(u8, bool)]) -> Vec<Write> {
    let mut present = std::collections::HashSet::new();
    let mut writes = Vec::new();
    for (i, (key, put)) in ops.iter().enumerate() {
        if *put {
            present.insert(*key);
        } else if !present.remove(key) {
            continue;
        }
        writes.push(Write {
            key: *key,
            put: *put,
            at: i as u64 + 1,
        });
    }
    writes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_mirror_never_regresses_a_key_and_converges(
        ops in proptest::collection::vec((0u8..6, any::<bool>()), 1..120),
        faults in proptest::collection::vec((0u8..20, 0usize..=REORDER), 120),
        dump_every in 0usize..40,
    ) {
        let writes = writes_from(&ops);
        // delivery order: each record may be overtaken by up to REORDER later ones
        let mut delivery: Vec<usize> = (0..writes.len()).collect();
        for i in 0..delivery.len() {
            let shift = faults[i % faults.len()].1.min(delivery.len() - 1 - i);
            delivery.swap(i, i + shift);
        }
        let (store, mut writer) = new_store();
        let mut lost = false;
        let mut newest_visible: HashMap<u8, u64> = HashMap::new();
        let mut produced_up_to = 0u64;
        for (step, index) in delivery.iter().enumerate() {
            let write = &writes[*index];
            produced_up_to = produced_up_to.max(write.at);
            let fault = faults[step % faults.len()].0;
            let change = Change {
                map: MAP.into(),
                key: Bytes::from(vec![write.key]),
                value: write.put.then(|| value_of(write.at)),
                source: EventSource::Trace,
                observed_ns: write.at,
            };
            match fault {
                0 | 1 => lost = true,                                   // dropped
                2 => { writer.apply([change.clone(), change]); }        // duplicated
                _ => { writer.apply([change]); }
            }
            if dump_every > 0 && step % dump_every == dump_every - 1 {
                // a resync: the kernel as it is now, every record produced so
                // far included, some of them still to be delivered
                writer.apply_dump(MAP, dump_at(&writes, produced_up_to), EventSource::Resync);
            }
            for (key, at) in mirror(&store) {
                let newest = newest_visible.entry(key).or_insert(0);
                prop_assert!(at >= *newest, "key {key} went back from the value of time {newest} to {at}");
                *newest = at;
            }
        }
        let end = writes.last().map_or(0, |w| w.at);
        if !lost {
            prop_assert_eq!(mirror(&store), kernel_at(&writes, end), "converged with nothing lost");
        }
        writer.apply_dump(MAP, dump_at(&writes, end), EventSource::Resync);
        prop_assert_eq!(mirror(&store), kernel_at(&writes, end), "converged after the resync");

        // every put in the change log, per key, is at least as new as the last
        let snapshot = store.snapshot();
        let log = snapshot.log().read_from(snapshot.log().oldest(), usize::MAX).expect("log");
        let mut last_put: HashMap<u8, u64> = HashMap::new();
        for event in log.iter().filter(|e| e.op == Op::Put) {
            let at = time_of(event.value.as_ref().expect("put value"));
            let last = last_put.entry(event.key[0]).or_insert(0);
            prop_assert!(at >= *last);
            *last = at;
        }
    }
}
