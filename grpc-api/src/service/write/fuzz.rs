//! Fuzzing request validation (proptest over arbitrary protobuf field
//! values; `cargo test -p mapsync-grpc --lib fuzz_`, longer with
//! `PROPTEST_CASES=100000`): watch creates through
//! [`crate::convert::subscribe_filter`], Put/Delete entries through
//! [`check_entry`] and [`put_mode`], and whole `TxnRequest`s through
//! [`txn::convert`]. Whatever a client sends, validation never panics and
//! either accepts a request that fits the maps or answers a status with a
//! precise code and a message naming the field.

use bytes::Bytes;
use mapsync_core::control::{CompareTarget, MAX_TXN_OPS, WriteOp};
use mapsync_core::{LogLimits, MapInfo, MapKind, Snapshot, Store};
use proptest::prelude::*;
use tonic::{Code, Status};

use super::{check_entry, put_mode, txn};
use crate::convert::subscribe_filter;
use crate::pb;
use crate::service::write_status::WriteError;

/// Cases per property: modest by default (the whole fuzz set stays well
/// under a minute in a debug build), `PROPTEST_CASES` when set.
fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

/// Maps of three shapes: `h` (hash, 4-byte keys, 2-byte values), `a`
/// (array, 4 and 8), `p` (per-CPU hash, 4 and 4 per CPU).
fn snapshot() -> std::sync::Arc<Snapshot> {
    let (store, mut publisher) = Store::new(LogLimits::default());
    publisher.add_map(MapInfo::new("h", MapKind::Hash, 4, 2, 16), Vec::new(), 0);
    publisher.add_map(MapInfo::new("a", MapKind::Array, 4, 8, 4), Vec::new(), 0);
    publisher.add_map(
        MapInfo::new("p", MapKind::PercpuHash, 4, 4, 8),
        Vec::new(),
        0,
    );
    store.snapshot()
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop_oneof![Just("h"), Just("a"), Just("p")].prop_map(str::to_owned),
        1 => Just(String::new()),
        1 => ".{0,12}",
    ]
}

/// Bytes mostly of the sizes the maps take, sometimes of any size.
fn bytes() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        4 => prop_oneof![Just(2usize), Just(4), Just(8)]
            .prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n)),
        1 => proptest::collection::vec(any::<u8>(), 0..40),
    ]
    .prop_map(Bytes::from)
}

/// An enum field's value: mostly known, sometimes anything.
fn enum_value() -> impl Strategy<Value = i32> {
    prop_oneof![4 => 0i32..4, 1 => any::<i32>()]
}

fn compare() -> impl Strategy<Value = pb::Compare> {
    let target = proptest::option::weighted(
        0.9,
        prop_oneof![
            any::<u64>().prop_map(pb::compare::Target::ModRevision),
            bytes().prop_map(pb::compare::Target::Value),
            any::<bool>().prop_map(pb::compare::Target::Exists),
        ],
    );
    (name(), bytes(), enum_value(), target).prop_map(|(map, key, result, target)| pb::Compare {
        map,
        key,
        result,
        target,
    })
}

fn txn_op() -> impl Strategy<Value = pb::TxnOp> {
    let put = (name(), bytes(), bytes(), enum_value()).prop_map(|(map, key, value, mode)| {
        pb::txn_op::Op::Put(pb::TxnPut {
            map,
            key,
            value,
            mode,
        })
    });
    let delete =
        (name(), bytes()).prop_map(|(map, key)| pb::txn_op::Op::Delete(pb::TxnDelete { map, key }));
    proptest::option::weighted(0.95, prop_oneof![put, delete]).prop_map(|op| pb::TxnOp { op })
}

/// Ops per branch: mostly few, sometimes past the limit.
fn ops<S: Strategy>(one: fn() -> S) -> impl Strategy<Value = Vec<S::Value>>
where
    S::Value: std::fmt::Debug,
{
    prop_oneof![
        8 => proptest::collection::vec(one(), 0..6),
        1 => proptest::collection::vec(one(), MAX_TXN_OPS..MAX_TXN_OPS + 3),
    ]
}

fn txn_request() -> impl Strategy<Value = pb::TxnRequest> {
    (
        ops(compare),
        ops(txn_op),
        ops(txn_op),
        prop_oneof![Just(0u64), any::<u64>()],
        any::<bool>(),
    )
        .prop_map(
            |(compare, success, failure, epoch, prev_value)| pb::TxnRequest {
                compare,
                success,
                failure,
                epoch,
                prev_value,
            },
        )
}

fn create() -> impl Strategy<Value = pb::WatchCreateRequest> {
    let short = || proptest::collection::vec(any::<u8>(), 0..4).prop_map(Bytes::from);
    (
        proptest::collection::vec(name(), 0..4),
        short(),
        short(),
        short(),
        any::<(u64, u64, bool, bool, bool, u32)>(),
    )
        .prop_map(
            |(
                maps,
                key,
                range_end,
                key_prefix,
                (start_revision, epoch, no_put, no_delete, prev_value, progress_interval_ms),
            )| {
                pb::WatchCreateRequest {
                    maps,
                    key,
                    range_end,
                    key_prefix,
                    start_revision,
                    epoch,
                    no_put,
                    no_delete,
                    prev_value,
                    progress_interval_ms,
                    ..Default::default()
                }
            },
        )
}

/// A refusal a client can act on: a request-shaped code and a message.
fn check_refusal(error: WriteError) {
    let code = error.code();
    assert!(
        matches!(
            code,
            Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition
        ),
        "unexpected code {code:?} for {error}"
    );
    let status = Status::from(error);
    assert_eq!(status.code(), code);
    assert!(!status.message().is_empty());
}

/// Sizes a map takes, from the snapshot.
fn sizes(snapshot: &Snapshot, map: &str) -> (usize, usize) {
    let info = snapshot.map(map).expect("an accepted map exists").info();
    (info.key_size as usize, info.value_bytes as usize)
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn fuzz_watch_creates_are_accepted_consistently_or_refused_as_invalid(create in create()) {
        match subscribe_filter(&create) {
            Ok(filter) => {
                prop_assert_eq!(&filter.maps, &create.maps);
                if let Some(range) = &filter.key_range {
                    prop_assert!(create.key_prefix.is_empty());
                    if let Some(end) = &range.end {
                        prop_assert!(end > &range.start);
                    }
                }
            }
            Err(error) => {
                let status = Status::from(error);
                prop_assert_eq!(status.code(), Code::InvalidArgument);
                prop_assert!(!status.message().is_empty());
            }
        }
    }

    #[test]
    fn fuzz_put_and_delete_entries_fit_the_map_or_are_refused(
        map in name(),
        key in bytes(),
        value in proptest::option::of(bytes()),
        mode in enum_value(),
    ) {
        let snapshot = snapshot();
        match check_entry(&snapshot, &map, "", &key, value.as_deref()) {
            Ok(()) => {
                let (key_size, value_size) = sizes(&snapshot, &map);
                prop_assert_eq!(key.len(), key_size);
                if let Some(value) = &value {
                    prop_assert_eq!(value.len(), value_size);
                }
            }
            Err(error) => check_refusal(error),
        }
        match put_mode(mode, || "mode".to_owned()) {
            Ok(_) => prop_assert!((0..3).contains(&mode)),
            Err(error) => {
                prop_assert!(error.to_string().contains("mode"), "{}", error);
                check_refusal(error);
            }
        }
    }

    #[test]
    fn fuzz_txn_requests_convert_to_what_fits_or_are_refused(request in txn_request()) {
        let snapshot = snapshot();
        let (compares, successes, failures) =
            (request.compare.len(), request.success.len(), request.failure.len());
        match txn::convert(&snapshot, request) {
            Ok(txn) => {
                prop_assert_eq!(
                    (txn.compares.len(), txn.success.len(), txn.failure.len()),
                    (compares, successes, failures)
                );
                prop_assert!(compares + successes + failures > 0);
                for compare in &txn.compares {
                    let (key_size, value_size) = sizes(&snapshot, &compare.map);
                    prop_assert_eq!(compare.key.len(), key_size);
                    if let CompareTarget::Value(value) = &compare.target {
                        prop_assert_eq!(value.len(), value_size);
                    }
                }
                for op in txn.success.iter().chain(&txn.failure) {
                    let (key_size, value_size) = sizes(&snapshot, op.map());
                    prop_assert_eq!(op.key().len(), key_size);
                    if let WriteOp::Put(put) = op {
                        prop_assert_eq!(put.value.len(), value_size);
                    }
                }
            }
            Err(error) => check_refusal(error),
        }
    }
}

/// Seed corpus: requests at the edges, run as plain tests.
#[test]
fn fuzz_seed_corpus_of_requests() {
    let snapshot = snapshot();
    let empty = pb::TxnRequest::default();
    assert_eq!(
        txn::convert(&snapshot, empty).expect_err("empty").code(),
        Code::InvalidArgument
    );
    let nameless = pb::TxnRequest {
        success: vec![pb::TxnOp { op: None }],
        ..Default::default()
    };
    let error = txn::convert(&snapshot, nameless).expect_err("an op with neither put nor delete");
    assert!(error.to_string().contains("success[0]"), "{error}");
    let unknown_mode = pb::TxnRequest {
        failure: vec![pb::TxnOp {
            op: Some(pb::txn_op::Op::Put(pb::TxnPut {
                map: "h".into(),
                key: Bytes::from_static(&[0; 4]),
                value: Bytes::from_static(&[0; 2]),
                mode: i32::MIN,
            })),
        }],
        ..Default::default()
    };
    let error = txn::convert(&snapshot, unknown_mode).expect_err("mode i32::MIN");
    assert!(error.to_string().contains("failure[0].put.mode"), "{error}");
    let ordered_exists = pb::TxnRequest {
        compare: vec![pb::Compare {
            map: "a".into(),
            key: Bytes::from_static(&[0; 4]),
            result: pb::compare::Result::Less as i32,
            target: Some(pb::compare::Target::Exists(true)),
        }],
        ..Default::default()
    };
    let error = txn::convert(&snapshot, ordered_exists).expect_err("LESS on exists");
    assert!(error.to_string().contains("compare[0].result"), "{error}");
    let range = pb::WatchCreateRequest {
        key: Bytes::from_static(&[0xff]),
        range_end: Bytes::from_static(&[0xff]),
        ..Default::default()
    };
    assert!(
        subscribe_filter(&range).is_err(),
        "an empty range is refused"
    );
    let prefix_and_key = pb::WatchCreateRequest {
        key: Bytes::from_static(&[1]),
        key_prefix: Bytes::from_static(&[1]),
        ..Default::default()
    };
    assert!(subscribe_filter(&prefix_and_key).is_err());
}
