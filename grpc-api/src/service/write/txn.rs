//! A `TxnRequest` checked against the maps and converted into a
//! [`control::Txn`].

use std::collections::HashSet;

use bytes::Bytes;
use mapsync_core::Snapshot;
use mapsync_core::control::{self, Compare, CompareResult, CompareTarget, MAX_TXN_OPS, WriteOp};

use super::{check_entry, check_size, hex, put_mode, view};
use crate::pb;
use crate::service::write_status::{WriteError, check_epoch};

/// The maps a Txn names, for its span: `a,b` in first-seen order.
/// Every map a Txn names (compares and ops), each once.
pub(super) fn all_maps(request: &pb::TxnRequest) -> Vec<&str> {
    let ops = request.success.iter().chain(&request.failure);
    let mut maps: Vec<&str> = request
        .compare
        .iter()
        .map(|c| c.map.as_str())
        .chain(ops.filter_map(|op| match &op.op {
            Some(pb::txn_op::Op::Put(put)) => Some(put.map.as_str()),
            Some(pb::txn_op::Op::Delete(delete)) => Some(delete.map.as_str()),
            None => None,
        }))
        .collect();
    maps.sort_unstable();
    maps.dedup();
    maps
}

pub(super) fn maps_of(request: &pb::TxnRequest) -> String {
    let mut seen: Vec<&str> = Vec::new();
    let ops = request.success.iter().chain(&request.failure);
    let names = request
        .compare
        .iter()
        .map(|c| c.map.as_str())
        .chain(ops.filter_map(|op| match &op.op {
            Some(pb::txn_op::Op::Put(put)) => Some(put.map.as_str()),
            Some(pb::txn_op::Op::Delete(delete)) => Some(delete.map.as_str()),
            None => None,
        }));
    for name in names {
        if !seen.contains(&name) && seen.len() < 8 {
            seen.push(name);
        }
    }
    seen.join(",")
}

/// Checks every compare and op of `request` against `snapshot`'s maps and
/// converts them.
pub(super) fn convert(
    snapshot: &Snapshot,
    request: pb::TxnRequest,
) -> Result<control::Txn, WriteError> {
    if request.compare.is_empty() && request.success.is_empty() && request.failure.is_empty() {
        return Err(WriteError::EmptyTxn);
    }
    for (field, count) in [
        ("compare", request.compare.len()),
        ("success", request.success.len()),
        ("failure", request.failure.len()),
    ] {
        if count > MAX_TXN_OPS {
            return Err(WriteError::TooMany {
                field,
                count,
                max: MAX_TXN_OPS,
            });
        }
    }
    let mut compares = Vec::with_capacity(request.compare.len());
    let mut by_revision = false;
    for (index, compare) in request.compare.into_iter().enumerate() {
        let compare = convert_compare(snapshot, index, compare)?;
        by_revision |= matches!(compare.target, CompareTarget::ModRevision(_));
        compares.push(compare);
    }
    if by_revision {
        check_epoch(request.epoch, snapshot.epoch())?;
    }
    Ok(control::Txn {
        compares,
        success: convert_ops(snapshot, "success", request.success)?,
        failure: convert_ops(snapshot, "failure", request.failure)?,
    })
}

fn convert_compare(
    snapshot: &Snapshot,
    index: usize,
    compare: pb::Compare,
) -> Result<Compare, WriteError> {
    let field = format!("compare[{index}].");
    let info = view(snapshot, &compare.map)?.info();
    check_size(
        &compare.map,
        || format!("{field}key"),
        &compare.key,
        info.key_size,
    )?;
    let result = match pb::compare::Result::try_from(compare.result) {
        Ok(pb::compare::Result::Equal) => CompareResult::Equal,
        Ok(pb::compare::Result::NotEqual) => CompareResult::NotEqual,
        Ok(pb::compare::Result::Greater) => CompareResult::Greater,
        Ok(pb::compare::Result::Less) => CompareResult::Less,
        Err(_) => {
            return Err(WriteError::UnknownEnum {
                field: format!("{field}result"),
                value: compare.result,
            });
        }
    };
    let target = match compare.target {
        Some(pb::compare::Target::ModRevision(revision)) => CompareTarget::ModRevision(revision),
        Some(pb::compare::Target::Value(value)) => {
            check_size(
                &compare.map,
                || format!("{field}value"),
                &value,
                info.value_bytes,
            )?;
            CompareTarget::Value(value)
        }
        Some(pb::compare::Target::Exists(exists)) => {
            if matches!(result, CompareResult::Greater | CompareResult::Less) {
                return Err(WriteError::OrderedExists {
                    field: format!("{field}result"),
                });
            }
            CompareTarget::Exists(exists)
        }
        None => {
            return Err(WriteError::Missing {
                field: format!("{field}target"),
                what: "one of mod_revision, value or exists",
            });
        }
    };
    Ok(Compare {
        map: compare.map,
        key: compare.key,
        result,
        target,
    })
}

/// One branch's ops; a key written twice in one branch is refused (the
/// branch is one revision, in which each key has one new state).
fn convert_ops(
    snapshot: &Snapshot,
    branch: &'static str,
    ops: Vec<pb::TxnOp>,
) -> Result<Vec<WriteOp>, WriteError> {
    let mut seen: HashSet<(String, Bytes)> = HashSet::with_capacity(ops.len());
    let mut out = Vec::with_capacity(ops.len());
    for (index, op) in ops.into_iter().enumerate() {
        let field = format!("{branch}[{index}].");
        let op = match op.op {
            Some(pb::txn_op::Op::Put(put)) => {
                let field = format!("{field}put.");
                check_entry(snapshot, &put.map, &field, &put.key, Some(&put.value))?;
                let mode = put_mode(put.mode, || format!("{field}mode"))?;
                WriteOp::Put(control::Put {
                    map: put.map,
                    key: put.key,
                    value: put.value,
                    mode,
                    expect_mod_revision: None,
                })
            }
            Some(pb::txn_op::Op::Delete(delete)) => {
                let field = format!("{field}delete.");
                check_entry(snapshot, &delete.map, &field, &delete.key, None)?;
                WriteOp::Delete(control::Delete {
                    map: delete.map,
                    key: delete.key,
                    expect_mod_revision: None,
                })
            }
            None => {
                return Err(WriteError::Missing {
                    field: format!("{branch}[{index}]"),
                    what: "put or delete",
                });
            }
        };
        if !seen.insert((op.map().to_owned(), op.key().clone())) {
            return Err(WriteError::DuplicateKey {
                field: format!("{branch}[{index}]"),
                map: op.map().to_owned(),
                key: hex(op.key()),
            });
        }
        out.push(op);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mapsync_core::{LogLimits, MapInfo, MapKind, Store};
    use tonic::Code;

    fn snapshot() -> std::sync::Arc<Snapshot> {
        let (store, mut publisher) = Store::new(LogLimits::default());
        publisher.add_map(MapInfo::new("m", MapKind::Hash, 4, 2, 16), Vec::new(), 0);
        store.snapshot()
    }

    fn put(key: &[u8], value: &[u8]) -> pb::TxnOp {
        pb::TxnOp {
            op: Some(pb::txn_op::Op::Put(pb::TxnPut {
                map: "m".into(),
                key: Bytes::copy_from_slice(key),
                value: Bytes::copy_from_slice(value),
                mode: 0,
            })),
        }
    }

    fn compare(result: i32, target: pb::compare::Target) -> pb::Compare {
        pb::Compare {
            map: "m".into(),
            key: Bytes::from_static(&[0; 4]),
            result,
            target: Some(target),
        }
    }

    fn refused(request: pb::TxnRequest) -> (Code, String) {
        let error = convert(&snapshot(), request).expect_err("refused");
        (error.code(), error.to_string())
    }

    #[test]
    fn a_good_txn_converts_in_order() {
        let txn = convert(
            &snapshot(),
            pb::TxnRequest {
                compare: vec![compare(2, pb::compare::Target::ModRevision(3))],
                success: vec![put(&[1; 4], b"ab"), put(&[2; 4], b"cd")],
                failure: vec![pb::TxnOp {
                    op: Some(pb::txn_op::Op::Delete(pb::TxnDelete {
                        map: "m".into(),
                        key: Bytes::from_static(&[1; 4]),
                    })),
                }],
                ..Default::default()
            },
        )
        .expect("valid");
        assert_eq!(txn.compares[0].result, CompareResult::Greater);
        assert_eq!(txn.compares[0].target, CompareTarget::ModRevision(3));
        assert_eq!(txn.success.len(), 2);
        assert_eq!(txn.success[1].key().as_ref(), &[2; 4]);
        assert!(matches!(txn.failure[0], WriteOp::Delete(_)));
    }

    #[test]
    fn bad_txns_are_refused_naming_the_field() {
        let (code, _) = refused(pb::TxnRequest::default());
        assert_eq!(code, Code::InvalidArgument);
        let many = vec![put(&[1; 4], b"ab"); MAX_TXN_OPS + 1];
        let (code, message) = refused(pb::TxnRequest {
            success: many,
            ..Default::default()
        });
        assert_eq!(code, Code::InvalidArgument);
        assert!(
            message.contains("success: 129 given, at most 128"),
            "{message}"
        );
        let (code, message) = refused(pb::TxnRequest {
            failure: vec![put(&[1; 4], b"ab"), put(&[1; 3], b"ab")],
            ..Default::default()
        });
        assert_eq!(code, Code::InvalidArgument);
        assert!(message.contains("failure[1].put.key"), "{message}");
        assert!(message.contains("takes 4 bytes, got 3"), "{message}");
        let (_, message) = refused(pb::TxnRequest {
            success: vec![put(&[1; 4], b"abc")],
            ..Default::default()
        });
        assert!(message.contains("success[0].put.value"), "{message}");
        let (code, message) = refused(pb::TxnRequest {
            success: vec![put(&[1; 4], b"ab"), put(&[1; 4], b"cd")],
            ..Default::default()
        });
        assert_eq!(code, Code::InvalidArgument);
        assert!(message.contains("appears twice"), "{message}");
        let (_, message) = refused(pb::TxnRequest {
            compare: vec![compare(2, pb::compare::Target::Exists(true))],
            ..Default::default()
        });
        assert!(message.contains("compare[0].result"), "{message}");
        let (_, message) = refused(pb::TxnRequest {
            compare: vec![pb::Compare {
                target: None,
                ..compare(0, pb::compare::Target::Exists(true))
            }],
            ..Default::default()
        });
        assert!(message.contains("compare[0].target"), "{message}");
        let (code, _) = refused(pb::TxnRequest {
            success: vec![pb::TxnOp { op: None }],
            ..Default::default()
        });
        assert_eq!(code, Code::InvalidArgument);
        let mut unknown = put(&[1; 4], b"ab");
        if let Some(pb::txn_op::Op::Put(put)) = &mut unknown.op {
            put.map = "nope".into();
        }
        let (code, _) = refused(pb::TxnRequest {
            success: vec![unknown],
            ..Default::default()
        });
        assert_eq!(code, Code::NotFound);
    }

    #[test]
    fn a_revision_compare_from_another_epoch_is_a_failed_precondition() {
        let snapshot = snapshot();
        let request = pb::TxnRequest {
            compare: vec![compare(0, pb::compare::Target::ModRevision(3))],
            epoch: snapshot.epoch().0 ^ 1,
            ..Default::default()
        };
        let error = convert(&snapshot, request).expect_err("other epoch");
        assert_eq!(error.code(), Code::FailedPrecondition);
        let same = pb::TxnRequest {
            compare: vec![compare(0, pb::compare::Target::ModRevision(3))],
            epoch: snapshot.epoch().0,
            ..Default::default()
        };
        assert!(convert(&snapshot, same).is_ok());
    }
}
