//! etcd's state of a map against the mirror's, as write ops.

use std::collections::BTreeMap;

use bytes::Bytes;
use mapsync_core::MapView;
use mapsync_core::control::{Delete, MAX_TXN_OPS, Put, Txn, WriteOp};

/// What etcd says for some keys: `Some(value)` present, `None` absent.
pub type Desired = BTreeMap<Bytes, Option<Bytes>>;

/// The ops that make `view` agree with `desired`: a put for each key that is
/// new or whose value differs, a delete for each key `desired` marks absent
/// that the mirror holds. With `full`, `desired` is the whole set: every key
/// the mirror holds and `desired` lacks is deleted too. Nothing that already
/// agrees is written.
pub fn difference(map: &str, view: &MapView, desired: &Desired, full: bool) -> Vec<WriteOp> {
    let mut ops = Vec::new();
    for (key, want) in desired {
        match (want, view.get(key)) {
            (Some(want), Some(have)) if want == have => {}
            (Some(want), _) => ops.push(WriteOp::Put(Put::new(map, key.clone(), want.clone()))),
            (None, Some(_)) => ops.push(WriteOp::Delete(Delete::new(map, key.clone()))),
            (None, None) => {}
        }
    }
    if full {
        for (key, _) in view.iter() {
            if !desired.contains_key(key) {
                ops.push(WriteOp::Delete(Delete::new(
                    map,
                    Bytes::copy_from_slice(key),
                )));
            }
        }
    }
    ops
}

/// The ops as write requests of at most [`MAX_TXN_OPS`] ops each: one
/// mapsync revision per request, so a difference larger than that is
/// several revisions.
pub fn into_txns(ops: Vec<WriteOp>) -> Vec<Txn> {
    let mut txns = Vec::new();
    let mut ops = ops.into_iter().peekable();
    while ops.peek().is_some() {
        txns.push(Txn {
            success: ops.by_ref().take(MAX_TXN_OPS).collect(),
            ..Txn::default()
        });
    }
    txns
}

#[cfg(test)]
mod tests {
    use super::*;
    use mapsync_core::store::Change;
    use mapsync_core::{EventSource, LogLimits, MapInfo, MapKind, Store};

    fn b(bytes: &[u8]) -> Bytes {
        Bytes::copy_from_slice(bytes)
    }

    #[test]
    fn only_what_differs_is_written_and_a_full_set_deletes_the_rest() {
        let (store, mut publisher) = Store::new(LogLimits::default());
        publisher.add_map(MapInfo::new("m", MapKind::Hash, 1, 1, 16), Vec::new(), 0);
        publisher.apply([
            Change::put("m", b(&[1]), b(&[1]), EventSource::Api, 1),
            Change::put("m", b(&[2]), b(&[2]), EventSource::Api, 1),
            Change::put("m", b(&[3]), b(&[3]), EventSource::Api, 1),
        ]);
        let snapshot = store.snapshot();
        let view = snapshot.map("m").expect("map");
        let desired = Desired::from([
            (b(&[1]), Some(b(&[1]))),
            (b(&[2]), Some(b(&[9]))),
            (b(&[4]), Some(b(&[4]))),
            (b(&[5]), None),
        ]);
        let partial = difference("m", view, &desired, false);
        assert_eq!(
            partial,
            vec![
                WriteOp::Put(Put::new("m", b(&[2]), b(&[9]))),
                WriteOp::Put(Put::new("m", b(&[4]), b(&[4]))),
            ]
        );
        let full = difference("m", view, &desired, true);
        assert_eq!(full.len(), 3);
        assert_eq!(full[2], WriteOp::Delete(Delete::new("m", b(&[3]))));
    }

    #[test]
    fn a_large_difference_is_cut_into_requests_of_at_most_max_txn_ops() {
        let ops: Vec<WriteOp> = (0..300u32)
            .map(|i| WriteOp::Delete(Delete::new("m", i.to_le_bytes().to_vec())))
            .collect();
        let sizes: Vec<usize> = into_txns(ops).iter().map(|t| t.success.len()).collect();
        assert_eq!(sizes, vec![128, 128, 44]);
        assert!(into_txns(Vec::new()).is_empty());
    }
}
