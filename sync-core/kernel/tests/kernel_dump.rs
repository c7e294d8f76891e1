//! The flat dump of real kernel maps (`dump::dump`: batched lookups into one
//! buffer of keys and one of values) against bpftool's view of the same
//! map; the mirror built from it (`Publisher::add_dump`); and a resync's
//! diff of a second dump (`Publisher::apply_dump`) after the kernel map
//! changed: exactly the changes, as events, each once.

use std::collections::BTreeMap;
use std::os::fd::AsFd;

use mapsync_core::{EventSource, Op, Store};
use mapsync_kernel::{MapSpec, dump, open, sys};
mod dump_support;
use dump_support::{Entries, fill, read};

use mapsync_test_support::{self as support, PinDir};

/// More entries than one batch call returns (64 Ki): the dump takes two.
const MANY: u32 = 70_000;
/// A map this large is dumped by two threads, each over half the buckets.
const SPLIT: u32 = 1 << 18;

/// `n` entries with keys of `key_size` bytes (a counter, native order,
/// zero-padded) and 16-byte values derived from it.
fn entries(n: u32, key_size: usize) -> Entries {
    (0..n)
        .map(|i| {
            let mut key = vec![0u8; key_size];
            key[..4].copy_from_slice(&i.to_ne_bytes());
            let mut value = [0u8; 16];
            value[..4].copy_from_slice(&(i * 7).to_ne_bytes());
            value[8..12].copy_from_slice(&(!i).to_ne_bytes());
            (key, value.to_vec())
        })
        .collect()
}

/// The entries of a dump in the order `sorted` gives, one per key.
fn sorted(entries: &dump::DumpEntries) -> Vec<(Vec<u8>, Vec<u8>)> {
    entries
        .sorted()
        .iter()
        .map(|(key, value, _)| (key.to_vec(), value.to_vec()))
        .collect()
}

/// What the mirror holds of `map`.
fn mirrored(store: &Store, map: &str) -> Entries {
    store
        .snapshot()
        .map(map)
        .expect("mirrored")
        .iter()
        .map(|(key, entry)| (key.to_vec(), entry.value.to_vec()))
        .collect()
}

fn dumped(pin: &std::path::Path) -> (mapsync_core::Dump, mapsync_core::MapInfo) {
    let map = open::open(&MapSpec::pin(None, pin)).expect("open the map");
    (
        dump::dump(map.fd.as_fd(), &map.info).expect("dump"),
        map.info,
    )
}

#[test]
fn a_flat_dump_of_a_hash_map_is_what_bpftool_reads() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("dump-bpftool");
    for (key_size, n) in [(8usize, 3_000u32), (12, 3_000)] {
        let pin = pins.join(&format!("k{key_size}"));
        support::create_map(&pin, "hash", key_size as u32, 16, n * 2, "flat");
        let want = entries(n, key_size);
        fill(&pin, &want);
        let (dump, _) = dumped(&pin);
        assert_eq!(dump.entries.len(), n as usize);
        assert!(dump.started_ns <= dump.ended_ns);
        for (_, _, observed_ns) in dump.entries.iter() {
            assert!((dump.started_ns..=dump.ended_ns).contains(&observed_ns));
        }
        let got = read(&dump.entries);
        assert_eq!(got, support::dump(&pin), "keys of {key_size} bytes");
        assert_eq!(got, want);
        // in bytewise key order (the kernel returns hash order), each once
        assert_eq!(sorted(&dump.entries), want.into_iter().collect::<Vec<_>>());
    }
}

#[test]
fn an_array_dump_holds_every_index() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("dump-array");
    let pin = pins.join("slots");
    support::create_map(&pin, "array", 4, 8, 1000, "slots");
    let map = open::open(&MapSpec::pin(None, &pin)).expect("open the map");
    sys::update(map.fd.as_fd(), &7u32.to_ne_bytes(), &[9; 8], 0).expect("write slot 7");
    let (dump, _) = dumped(&pin);
    let got = read(&dump.entries);
    assert_eq!(got.len(), 1000);
    assert_eq!(got, support::dump(&pin));
    assert_eq!(got[&7u32.to_ne_bytes().to_vec()], vec![9; 8]);
}

#[test]
fn a_mirror_built_from_a_large_dump_then_diffed_holds_the_kernel_map() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("dump-diff");
    let pin = pins.join("flows");
    support::create_map(&pin, "hash", 8, 16, MANY + 1000, "flows");
    let mut want = entries(MANY, 8);
    fill(&pin, &want);
    let (dump, info) = dumped(&pin);
    assert_eq!(dump.entries.len(), MANY as usize);
    let (store, mut writer) = Store::new(Default::default());
    writer.add_dump(info, dump.entries, dump.started_ns);
    let snapshot = store.snapshot();
    let view = snapshot.map("flows").expect("added");
    let with_revisions: Vec<(Vec<u8>, Vec<u8>, u64)> = view
        .iter()
        .map(|(key, entry)| (key.to_vec(), entry.value.to_vec(), entry.mod_revision))
        .collect();
    // every entry, in key order, taking revisions 1..=n in that order
    assert_eq!(with_revisions.len(), want.len());
    for (n, ((key, value, revision), (want_key, want_value))) in
        with_revisions.iter().zip(&want).enumerate()
    {
        assert_eq!((key, value), (want_key, want_value));
        assert_eq!(*revision, n as u64 + 1);
    }
    for (key, value) in want.iter().step_by(997) {
        assert_eq!(view.get(key), Some(&value[..]));
    }
    drop(snapshot);

    // the kernel map changes behind the mirror's back: 100 values rewritten,
    // 50 keys deleted, 25 added
    let map = open::open(&MapSpec::pin(None, &pin)).expect("open the map");
    let keys: Vec<Vec<u8>> = want.keys().cloned().collect();
    let mut expected = BTreeMap::new();
    for key in keys.iter().step_by(500).take(100) {
        let value = vec![0xab; 16];
        sys::update(map.fd.as_fd(), key, &value, 0).expect("rewrite");
        want.insert(key.clone(), value.clone());
        expected.insert(key.clone(), Op::Put);
    }
    for key in keys.iter().skip(3).step_by(1000).take(50) {
        sys::delete(map.fd.as_fd(), key).expect("delete");
        want.remove(key);
        expected.insert(key.clone(), Op::Delete);
    }
    for i in MANY..MANY + 25 {
        let key = u64::from(i).to_ne_bytes().to_vec();
        sys::update(map.fd.as_fd(), &key, &[1; 16], 0).expect("add");
        want.insert(key.clone(), vec![1; 16]);
        expected.insert(key, Op::Put);
    }
    let before = store.revision();
    let (dump, _) = dumped(&pin);
    let after = writer.apply_dump("flows", dump, EventSource::Resync);
    assert_eq!(
        after,
        before + expected.len() as u64,
        "a revision per change"
    );
    let events = store
        .snapshot()
        .log()
        .read_from(before + 1, usize::MAX)
        .expect("the diff's events");
    let seen: BTreeMap<Vec<u8>, Op> = events
        .iter()
        .map(|event| {
            assert_eq!(event.source, EventSource::Resync);
            (event.key.to_vec(), event.op)
        })
        .collect();
    assert_eq!(events.len(), expected.len(), "each change once");
    assert_eq!(seen, expected, "exactly what changed");
    assert_eq!(mirrored(&store, "flows"), want);

    // and a second resync of the same kernel state changes nothing
    let (dump, _) = dumped(&pin);
    assert_eq!(writer.apply_dump("flows", dump, EventSource::Resync), after);
}

#[test]
fn a_large_hash_map_read_by_two_threads_is_read_whole() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("dump-split");
    let pin = pins.join("big");
    support::create_map(&pin, "hash", 8, 16, SPLIT, "big");
    let want = entries(SPLIT - SPLIT / 8, 8);
    fill(&pin, &want);
    let (dump, _) = dumped(&pin);
    // where the halves meet a few keys may be read twice, never more
    assert!(dump.entries.len() >= want.len());
    assert!(dump.entries.len() <= want.len() + 64 * 1024);
    for (key, value, observed_ns) in dump.entries.iter() {
        assert_eq!(
            want.get(key).map(Vec::as_slice),
            Some(value),
            "a key it holds"
        );
        assert!((dump.started_ns..=dump.ended_ns).contains(&observed_ns));
    }
    assert_eq!(
        sorted(&dump.entries),
        want.into_iter().collect::<Vec<_>>(),
        "every key once"
    );
}
