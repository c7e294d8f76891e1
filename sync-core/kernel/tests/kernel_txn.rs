//! Txn through the kernel task, on real maps: compares choosing the branch,
//! malformed transactions refused before any write, a refusal mid-way undone
//! with nothing published, one revision in one batch across maps, and
//! compares that see a write made just before the request.

mod write_support;

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::time::Duration;

use mapsync_core::control::{
    Compare, CompareResult, CompareTarget, Delete, MAX_TXN_OPS, Previous, Refusal, Txn, WriteOp,
};
use mapsync_core::{EventSource, Op, SubscribeFilter};
use mapsync_kernel::{MapSpec, open, sys};
use mapsync_test_support::{self as support, PinDir};
use write_support::{events_within, invalid, k, mirror, put, refused, start, v8};

fn compare(map: &str, key: [u8; 4], result: CompareResult, target: CompareTarget) -> Compare {
    Compare {
        map: map.into(),
        key: key.to_vec().into(),
        result,
        target,
    }
}

fn op_put(map: &str, key: [u8; 4], value: &[u8]) -> WriteOp {
    WriteOp::Put(put(map, key, value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_txn_runs_the_branch_its_compares_choose_and_refuses_malformed_ones() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("write-txn");
    let pin = pins.join("cfg");
    support::create_map(&pin, "hash", 4, 8, 16, "cfg");
    let sync = start(&pins, &[&pin]).await;
    let cmd = sync.commands();
    let base = cmd.put(put("cfg", k(1), &v8(1))).await.expect("seed");

    // a failed compare is no error: the failure branch runs, success does not
    let txn = Txn {
        compares: vec![
            compare(
                "cfg",
                k(1),
                CompareResult::Equal,
                CompareTarget::Exists(true),
            ),
            compare(
                "cfg",
                k(1),
                CompareResult::Equal,
                CompareTarget::Value(v8(7).to_vec().into()),
            ),
        ],
        success: vec![op_put("cfg", k(2), &v8(2))],
        failure: vec![op_put("cfg", k(3), &v8(3))],
    };
    let outcome = cmd.txn(txn).await.expect("txn");
    assert!(!outcome.succeeded);
    assert_eq!(
        outcome.previous,
        vec![Previous {
            value: None,
            mod_revision: 0
        }]
    );
    let kernel = support::dump(&pin);
    assert!(!kernel.contains_key(k(2).as_slice()) && kernel.contains_key(k(3).as_slice()));

    // every compare holds: success runs, one op each, deletes too
    let txn = Txn {
        compares: vec![
            compare(
                "cfg",
                k(1),
                CompareResult::Equal,
                CompareTarget::ModRevision(base.revision),
            ),
            compare(
                "cfg",
                k(1),
                CompareResult::Less,
                CompareTarget::ModRevision(base.revision + 1),
            ),
            compare(
                "cfg",
                k(2),
                CompareResult::NotEqual,
                CompareTarget::Exists(true),
            ),
            compare(
                "cfg",
                k(1),
                CompareResult::Greater,
                CompareTarget::Value(v8(0).to_vec().into()),
            ),
        ],
        success: vec![
            op_put("cfg", k(2), &v8(2)),
            WriteOp::Delete(Delete::new("cfg", k(3).to_vec())),
        ],
        failure: vec![],
    };
    let outcome = cmd.txn(txn).await.expect("txn");
    assert!(outcome.succeeded);
    assert_eq!(outcome.previous.len(), 2);
    assert_eq!(outcome.previous[1].value.as_deref(), Some(&v8(3)[..]));
    let expected = BTreeMap::from([
        (k(1).to_vec(), v8(1).to_vec()),
        (k(2).to_vec(), v8(2).to_vec()),
    ]);
    assert_eq!(support::dump(&pin), expected);
    assert_eq!(mirror(sync.store(), "cfg"), expected);

    // malformed: refused before anything is written
    let before = sync.store().revision();
    let exists_greater = Txn {
        compares: vec![compare(
            "cfg",
            k(1),
            CompareResult::Greater,
            CompareTarget::Exists(true),
        )],
        ..Txn::default()
    };
    assert!(invalid(cmd.txn(exists_greater).await).contains("compares[0]"));
    let with_cas = Txn {
        success: vec![WriteOp::Put(
            put("cfg", k(4), &v8(4)).expect_mod_revision(0),
        )],
        ..Txn::default()
    };
    assert!(invalid(cmd.txn(with_cas).await).contains("success[0]: expect_mod_revision"));
    let twice = Txn {
        success: vec![
            op_put("cfg", k(4), &v8(4)),
            WriteOp::Delete(Delete::new("cfg", k(4).to_vec())),
        ],
        ..Txn::default()
    };
    assert!(invalid(cmd.txn(twice).await).contains("success[1]: key 04000000"));
    let too_many = Txn {
        failure: (0..=MAX_TXN_OPS)
            .map(|i| op_put("cfg", [i as u8, 1, 0, 0], &v8(0)))
            .collect(),
        ..Txn::default()
    };
    assert!(invalid(cmd.txn(too_many).await).contains("failure: 129 entries"));
    let bad_size = Txn {
        success: vec![op_put("cfg", k(5), &v8(5)), op_put("cfg", k(6), &[1, 2])],
        ..Txn::default()
    };
    assert!(invalid(cmd.txn(bad_size).await).contains("success[1]: value: 2 bytes"));
    assert_eq!(sync.store().revision(), before);
    assert_eq!(support::dump(&pin), expected);
    sync.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_txn_the_kernel_refuses_mid_way_is_undone_and_publishes_nothing() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("write-undo");
    let pin = pins.join("full");
    support::create_map(&pin, "hash", 4, 8, 3, "full");
    for n in 1..=3 {
        support::update(&pin, &k(n), &v8(n)).expect("fill");
    }
    let sync = start(&pins, &[&pin]).await;
    let store = sync.store().clone();
    let kernel_before = support::dump(&pin);
    let mirror_before = mirror(&store, "full");
    let revision_before = store.revision();
    let mut sub = store
        .subscribe(revision_before + 1, SubscribeFilter::default())
        .expect("subscribe");

    // replace 1, delete 2, create 4 (room after the delete), create 5: full
    let txn = Txn {
        success: vec![
            op_put("full", k(1), &v8(10)),
            WriteOp::Delete(Delete::new("full", k(2).to_vec())),
            op_put("full", k(4), &v8(4)),
            op_put("full", k(5), &v8(5)),
        ],
        ..Txn::default()
    };
    let (refusal, errno, op) = refused(sync.commands().txn(txn).await);
    assert_eq!(
        (refusal, errno, op),
        (Refusal::MapFull, libc::E2BIG, Some(3))
    );
    assert_eq!(
        support::dump(&pin),
        kernel_before,
        "the kernel holds what it held"
    );
    assert_eq!(
        mirror(&store, "full"),
        mirror_before,
        "the mirror is unchanged"
    );
    assert_eq!(store.revision(), revision_before);
    let arrived = events_within(&mut sub, Duration::from_millis(300)).await;
    assert!(
        arrived.is_empty(),
        "no event at all, not even the undone states: {arrived:?}"
    );
    sync.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_txn_across_two_maps_is_one_revision_delivered_in_one_batch() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("write-one");
    let a = pins.join("left");
    let b = pins.join("right");
    support::create_map(&a, "hash", 4, 8, 16, "left");
    support::create_map(&b, "array", 4, 8, 4, "right");
    let sync = start(&pins, &[&a, &b]).await;
    let store = sync.store().clone();
    let before = store.revision();
    let mut sub = store
        .subscribe(before + 1, SubscribeFilter::default())
        .expect("subscribe");
    let txn = Txn {
        success: vec![
            op_put("left", k(1), &v8(1)),
            op_put("right", k(0), &v8(2)),
            op_put("left", k(2), &v8(3)),
        ],
        ..Txn::default()
    };
    let outcome = sync.commands().txn(txn).await.expect("txn");
    assert_eq!(outcome.revision, before + 1);
    assert_eq!(store.revision(), before + 1, "exactly one revision");
    let batches = events_within(&mut sub, Duration::from_millis(300)).await;
    assert_eq!(batches.len(), 1, "one batch: {batches:?}");
    let events = &batches[0];
    assert_eq!(events.len(), 3);
    for event in events {
        assert_eq!(
            (event.revision, event.source, event.op),
            (outcome.revision, EventSource::Api, Op::Put)
        );
    }
    let maps: Vec<&str> = events.iter().map(|e| &*e.map).collect();
    assert_eq!(maps, ["left", "right", "left"], "in op order");
    sync.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compares_see_a_write_another_writer_completed_just_before_the_request() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("write-catchup");
    let pin = pins.join("fresh");
    support::create_map(&pin, "hash", 4, 8, 16, "fresh");
    let sync = start(&pins, &[&pin]).await;
    let cmd = sync.commands();
    // a writer that is not mapsync: this thread, through its own fd, with
    // the request sent microseconds after its write returned (the ingest
    // task has usually not drained the record yet: the request must)
    let fd = open::open(&MapSpec::pin(None, &pin)).expect("open").fd;
    for n in 0..50u8 {
        sys::update(fd.as_fd(), &k(1), &v8(n), 0).expect("their write");
        let txn = Txn {
            compares: vec![compare(
                "fresh",
                k(1),
                CompareResult::Equal,
                CompareTarget::Value(v8(n).to_vec().into()),
            )],
            success: vec![op_put("fresh", k(2), &v8(n))],
            failure: vec![],
        };
        let outcome = cmd.txn(txn).await.expect("txn");
        assert!(
            outcome.succeeded,
            "round {n}: the compare saw the write made before it"
        );
    }
    assert_eq!(mirror(sync.store(), "fresh"), support::dump(&pin));
    sync.shutdown().await.expect("shutdown");
}
