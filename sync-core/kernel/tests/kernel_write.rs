//! Put and Delete through the kernel task, on real maps: the kernel's flags
//! and refusals, per-CPU, array and map-of-maps values, compare-and-swap, no
//! echo of mapsync's own writes through the syscall trace, and a later write
//! by another process winning in the mirror. Txn: `kernel_txn.rs`.

mod write_support;

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use mapsync_core::control::{Delete, Previous, Put, PutMode, Refusal};
use mapsync_core::{CommandError, EventSource, SubscribeFilter};
use mapsync_kernel::{MapSpec, open, sys};
use mapsync_test_support::{self as support, PinDir};
use write_support::{
    events_settled, invalid, k, mirror, mod_revision, put, refused, start, start_on, v8,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_delete_flags_on_a_hash_map_give_the_kernels_answers_and_previous_values() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("write-hash");
    let pin = pins.join("flows");
    support::create_map(&pin, "hash", 4, 8, 16, "flows");
    let sync = start(&pins, &[&pin]).await;
    let (store, cmd) = (sync.store().clone(), sync.commands());

    let first = cmd.put(put("flows", k(1), &v8(1))).await.expect("put any");
    assert_eq!(
        first.previous,
        vec![Previous {
            value: None,
            mod_revision: 0
        }]
    );
    assert!(first.succeeded);
    assert_eq!(store.revision(), first.revision, "visible when answered");
    assert_eq!(mod_revision(&store, "flows", &k(1)), first.revision);
    assert_eq!(support::dump(&pin), mirror(&store, "flows"));

    let (refusal, errno, op) = refused(
        cmd.put(put("flows", k(1), &v8(2)).mode(PutMode::NoExist))
            .await,
    );
    assert_eq!(
        (refusal, errno, op),
        (Refusal::AlreadyExists, libc::EEXIST, None)
    );
    let (refusal, errno, _) = refused(
        cmd.put(put("flows", k(2), &v8(2)).mode(PutMode::Exist))
            .await,
    );
    assert_eq!((refusal, errno), (Refusal::NotFound, libc::ENOENT));
    assert_eq!(store.revision(), first.revision, "refusals publish nothing");
    assert_eq!(support::dump(&pin).len(), 1, "and write nothing");

    let created = cmd
        .put(put("flows", k(2), &v8(2)).mode(PutMode::NoExist))
        .await
        .expect("noexist");
    assert_eq!(created.revision, first.revision + 1);
    let replaced = cmd
        .put(put("flows", k(1), &v8(9)).mode(PutMode::Exist))
        .await
        .expect("exist");
    assert_eq!(
        replaced.previous,
        vec![Previous {
            value: Some(v8(1).to_vec().into()),
            mod_revision: first.revision
        }]
    );
    let deleted = cmd
        .delete(Delete::new("flows", k(2).to_vec()))
        .await
        .expect("delete");
    assert_eq!(deleted.previous[0].mod_revision, created.revision);
    let (refusal, errno, _) = refused(cmd.delete(Delete::new("flows", k(2).to_vec())).await);
    assert_eq!((refusal, errno), (Refusal::NotFound, libc::ENOENT));
    let expected = BTreeMap::from([(k(1).to_vec(), v8(9).to_vec())]);
    assert_eq!(support::dump(&pin), expected);
    assert_eq!(mirror(&store, "flows"), expected);

    // bad requests: named precisely, nothing written
    let reason = invalid(
        cmd.put(Put::new("flows", vec![1u8; 3], v8(0).to_vec()))
            .await,
    );
    assert!(
        reason.contains("key: 3 bytes") && reason.contains("4-byte keys"),
        "{reason}"
    );
    let reason = invalid(
        cmd.put(Put::new("flows", k(5).to_vec(), vec![0u8; 9]))
            .await,
    );
    assert!(
        reason.contains("value: 9 bytes") && reason.contains("8-byte values"),
        "{reason}"
    );
    assert_eq!(
        cmd.put(put("nope", k(1), &v8(1))).await,
        Err(CommandError::UnknownMap {
            name: "nope".into()
        })
    );
    assert_eq!(support::dump(&pin), expected);
    sync.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_puts_refuse_noexist_and_indexes_past_the_end_and_deletes_are_invalid() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("write-array");
    let pin = pins.join("config");
    support::create_map(&pin, "array", 4, 4, 8, "config");
    let sync = start(&pins, &[&pin]).await;
    let (store, cmd) = (sync.store().clone(), sync.commands());

    let written = cmd
        .put(put("config", k(3), &[7, 7, 7, 7]))
        .await
        .expect("put");
    assert_eq!(
        written.previous[0].value.as_deref(),
        Some(&[0u8; 4][..]),
        "arrays hold zeros"
    );
    for index in [3, 5] {
        let (refusal, errno, _) = refused(
            cmd.put(put("config", k(index), &[1; 4]).mode(PutMode::NoExist))
                .await,
        );
        assert_eq!(
            (refusal, errno),
            (Refusal::AlreadyExists, libc::EEXIST),
            "index {index}"
        );
    }
    let (refusal, errno, _) = refused(cmd.put(put("config", k(8), &[1; 4])).await);
    assert_eq!((refusal, errno), (Refusal::IndexOutOfRange, libc::E2BIG));
    let reason = invalid(cmd.delete(Delete::new("config", k(3).to_vec())).await);
    assert!(reason.contains("cannot be deleted"), "{reason}");
    assert_eq!(store.revision(), written.revision);
    assert_eq!(support::dump(&pin)[&k(3).to_vec()], vec![7, 7, 7, 7]);
    assert_eq!(mirror(&store, "config"), support::dump(&pin));
    sync.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_cpu_puts_carry_one_value_per_possible_cpu() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("write-percpu");
    let hash = pins.join("cpu_hash");
    let array = pins.join("cpu_array");
    // 4-byte values: each CPU's slot is padded to 8 in the syscall layout
    support::create_map(&hash, "percpu_hash", 4, 4, 16, "cpu_hash");
    support::create_map(&array, "percpu_array", 4, 8, 4, "cpu_array");
    let sync = start(&pins, &[&hash, &array]).await;
    let (store, cmd) = (sync.store().clone(), sync.commands());
    let cpus = support::possible_cpus();
    let value: Vec<u8> = (0..cpus)
        .flat_map(|cpu| [cpu as u8 + 1, 0, 0, 0, 0, 0, 0, 0])
        .collect();

    for (map, pin) in [("cpu_hash", &hash), ("cpu_array", &array)] {
        let outcome = cmd.put(put(map, k(2), &value)).await.expect("per-CPU put");
        let fd = open::open(&MapSpec::pin(None, pin)).expect("open").fd;
        let mut read = vec![0u8; value.len()];
        assert!(sys::lookup(fd.as_fd(), &k(2), &mut read).expect("lookup"));
        assert_eq!(read, value, "{map}: every CPU's slot as written");
        assert_eq!(
            store
                .snapshot()
                .map(map)
                .expect("map")
                .get(&k(2))
                .expect("entry")[..],
            value[..]
        );
        assert_eq!(mod_revision(&store, map, &k(2)), outcome.revision);
        let reason = invalid(cmd.put(put(map, k(1), &value[..8])).await);
        assert!(reason.contains("possible CPUs"), "{map}: {reason}");
    }
    sync.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_hash_map_refuses_a_new_key_as_map_full() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("write-full");
    let pin = pins.join("small");
    support::create_map(&pin, "hash", 4, 8, 2, "small");
    let sync = start(&pins, &[&pin]).await;
    let cmd = sync.commands();
    cmd.put(put("small", k(1), &v8(1))).await.expect("1");
    let second = cmd.put(put("small", k(2), &v8(2))).await.expect("2");
    let (refusal, errno, _) = refused(cmd.put(put("small", k(3), &v8(3))).await);
    assert_eq!((refusal, errno), (Refusal::MapFull, libc::E2BIG));
    // replacing a present key still works in a full map
    cmd.put(put("small", k(2), &v8(4))).await.expect("replace");
    assert_eq!(sync.store().revision(), second.revision + 1);
    assert_eq!(mirror(sync.store(), "small"), support::dump(&pin));
    sync.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expected_mod_revision_writes_only_when_it_matches_and_names_the_current_one() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("write-cas");
    let pin = pins.join("cas");
    support::create_map(&pin, "hash", 4, 8, 16, "cas");
    let sync = start(&pins, &[&pin]).await;
    let cmd = sync.commands();

    // 0: only if absent
    let created = cmd
        .put(put("cas", k(1), &v8(1)).expect_mod_revision(0))
        .await
        .expect("create");
    let mismatch = CommandError::ModRevisionMismatch {
        map: "cas".into(),
        expected: 0,
        current: created.revision,
    };
    assert_eq!(
        cmd.put(put("cas", k(1), &v8(2)).expect_mod_revision(0))
            .await,
        Err(mismatch)
    );
    let swapped = cmd
        .put(put("cas", k(1), &v8(3)).expect_mod_revision(created.revision))
        .await
        .expect("swap");
    // the old revision is stale now: nothing written, the current one named
    assert_eq!(
        cmd.put(put("cas", k(1), &v8(4)).expect_mod_revision(created.revision))
            .await,
        Err(CommandError::ModRevisionMismatch {
            map: "cas".into(),
            expected: created.revision,
            current: swapped.revision,
        })
    );
    assert_eq!(
        cmd.delete(Delete::new("cas", k(1).to_vec()).expect_mod_revision(created.revision))
            .await,
        Err(CommandError::ModRevisionMismatch {
            map: "cas".into(),
            expected: created.revision,
            current: swapped.revision,
        })
    );
    assert_eq!(
        support::dump(&pin),
        BTreeMap::from([(k(1).to_vec(), v8(3).to_vec())])
    );
    assert_eq!(sync.store().revision(), swapped.revision);
    cmd.delete(Delete::new("cas", k(1).to_vec()).expect_mod_revision(swapped.revision))
        .await
        .expect("delete at the current revision");
    assert!(support::dump(&pin).is_empty());
    sync.shutdown().await.expect("shutdown");
}

fn map_id(pin: &Path) -> u32 {
    open::open(&MapSpec::pin(None, pin)).expect("open").info.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_of_maps_puts_take_an_inner_map_id_and_deletes_empty_the_slot() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("write-outer");
    let inner = [pins.join("inner_a"), pins.join("inner_b")];
    for (n, pin) in inner.iter().enumerate() {
        support::create_map(pin, "hash", 4, 8, 4, &format!("inner_{n}"));
    }
    let ids = [map_id(&inner[0]), map_id(&inner[1])];
    let hash = pins.join("outer_hash");
    let array = pins.join("outer_array");
    for (pin, kind, name) in [
        (&hash, "hash_of_maps", "outer_hash"),
        (&array, "array_of_maps", "outer_array"),
    ] {
        let path = |p: &Path| p.to_str().expect("utf-8").to_owned();
        support::bpftool(&[
            "map",
            "create",
            &path(pin),
            "type",
            kind,
            "key",
            "4",
            "value",
            "4",
            "entries",
            "4",
            "name",
            name,
            "inner_map",
            "pinned",
            &path(&inner[0]),
        ])
        .expect("create the outer map");
    }
    let sync = start(&pins, &[&hash, &array]).await;
    let (store, cmd) = (sync.store().clone(), sync.commands());
    for name in ["outer_hash", "outer_array"] {
        let pin = pins.join(name);
        cmd.put(put(name, k(1), &ids[0].to_ne_bytes()))
            .await
            .expect("put inner a");
        let replaced = cmd
            .put(put(name, k(1), &ids[1].to_ne_bytes()))
            .await
            .expect("put inner b");
        assert_eq!(
            replaced.previous[0].value.as_deref(),
            Some(&ids[0].to_ne_bytes()[..])
        );
        // the kernel and the mirror both hold the inner map's id
        let expected = BTreeMap::from([(k(1).to_vec(), ids[1].to_ne_bytes().to_vec())]);
        assert_eq!(support::dump(&pin), expected, "{name}");
        assert_eq!(mirror(&store, name), expected, "{name}");
        let reason = invalid(cmd.put(put(name, k(2), &u32::MAX.to_ne_bytes())).await);
        assert!(reason.contains("no inner map with id"), "{name}: {reason}");
        cmd.delete(Delete::new(name, k(1).to_vec()))
            .await
            .expect("empty the slot");
        assert!(support::dump(&pin).is_empty(), "{name}");
        assert!(mirror(&store, name).is_empty(), "{name}");
    }
    sync.shutdown().await.expect("shutdown");
}

/// The shared pins an older mapsync leaves behind (its trace object had no
/// quiet map), made here with bpftool as that object declared them.
fn older_capture_pins(dir: &Path) {
    std::fs::create_dir_all(dir).expect("pin dir");
    let ring = dir.join("mapsync_events");
    let path = |p: &Path| p.to_str().expect("utf-8").to_owned();
    support::bpftool(&[
        "map",
        "create",
        &path(&ring),
        "type",
        "ringbuf",
        "key",
        "0",
        "value",
        "0",
        "entries",
        "4194304",
        "name",
        "mapsync_events",
    ])
    .expect("ring pin");
    for name in ["mapsync_drops", "mapsync_seqs"] {
        support::create_map(&dir.join(name), "percpu_array", 4, 8, 1, name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_writes_are_never_echoed_by_the_trace_while_others_writes_are_captured() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("write-echo");
    let pin = pins.join("echo");
    let capture = pins.join("capture");
    support::create_map(&pin, "hash", 4, 8, 16, "echo");
    // twice on one pin dir: first on pins an older object left, then on the
    // pins of the first run (the quiet map is never pinned)
    older_capture_pins(&capture);
    for round in 0..2u8 {
        let sync = start_on(capture.clone(), &[&pin]).await;
        let store = sync.store().clone();
        let records_before = sync.stats().records;
        let mut sub = store
            .subscribe(store.revision() + 1, SubscribeFilter::default())
            .expect("subscribe");
        let writer = std::thread::spawn({
            let pin = pin.clone();
            move || support::update(&pin, &k(2), &v8(20 + round))
        });
        let ours = sync
            .commands()
            .put(put("echo", k(1), &v8(10 + round)))
            .await
            .expect("put");
        writer
            .join()
            .expect("bpftool thread")
            .expect("bpftool update");
        let events: Vec<_> = events_settled(&mut sub, 2, Duration::from_millis(300))
            .await
            .into_iter()
            .flatten()
            .map(|e| (e.key.to_vec(), e.source, e.revision))
            .collect();
        assert!(
            events.contains(&(k(1).to_vec(), EventSource::Api, ours.revision)),
            "round {round}: {events:?}"
        );
        assert!(
            events
                .iter()
                .any(|e| e.0 == k(2) && e.1 == EventSource::Trace),
            "round {round}: {events:?}"
        );
        assert_eq!(
            events.len(),
            2,
            "round {round}: nothing else, no trace echo of ours: {events:?}"
        );
        assert_eq!(
            sync.stats().records - records_before,
            1,
            "round {round}: one record, bpftool's"
        );
        assert_eq!(mirror(&store, "echo"), support::dump(&pin));
        sync.shutdown().await.expect("shutdown");
        assert!(
            !capture.join("mapsync_quiet").exists(),
            "the quiet map is not pinned"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_by_another_process_right_after_ours_wins_in_the_mirror() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("write-after");
    let pin = pins.join("race");
    support::create_map(&pin, "hash", 4, 8, 16, "race");
    let sync = start(&pins, &[&pin]).await;
    let store = sync.store().clone();
    for n in 0..5u8 {
        sync.commands()
            .put(put("race", k(1), &v8(n)))
            .await
            .expect("ours");
        support::update(&pin, &k(1), &v8(100 + n)).expect("theirs");
        let mut converged = false;
        for _ in 0..500 {
            if store
                .snapshot()
                .map("race")
                .and_then(|m| m.get(&k(1)).map(bytes::Bytes::copy_from_slice))
                .as_deref()
                == Some(&v8(100 + n)[..])
            {
                converged = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            converged,
            "round {n}: the later bpftool write is in the mirror"
        );
        assert_eq!(mirror(&store, "race"), support::dump(&pin));
    }
    sync.shutdown().await.expect("shutdown");
}
