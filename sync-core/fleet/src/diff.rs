//! etcd's state of a map against the mirror's, as write ops.

use std::collections::BTreeMap;

use bytes::Bytes;
use mapsync_core::MapView;
use mapsync_core::control::{Apply, ApplyMode, Delete, MAX_BATCH_OPS, Put, WriteOp};

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

/// The ops as write requests of at most [`MAX_BATCH_OPS`] ops each (one
/// [`Command::Batch`](mapsync_core::control::Command::Batch), one mapsync
/// revision, per request): an etcd txn is far below that (etcd's
/// `--max-txn-ops`), only a relist difference larger than it is several
/// revisions.
pub fn into_batches(ops: Vec<WriteOp>) -> Vec<Vec<WriteOp>> {
    let mut batches = Vec::new();
    let mut ops = ops.into_iter().peekable();
    while ops.peek().is_some() {
        batches.push(ops.by_ref().take(MAX_BATCH_OPS).collect());
    }
    batches
}

/// The ops as one merge [`Apply`] of a switchable map: one atomic switch,
/// whatever their number.
pub fn into_apply(map: &str, ops: Vec<WriteOp>) -> Apply {
    let entries = ops
        .into_iter()
        .map(|op| match op {
            WriteOp::Put(put) => (put.key, Some(put.value)),
            WriteOp::Delete(delete) => (delete.key, None),
        })
        .collect();
    Apply {
        map: map.to_owned(),
        mode: ApplyMode::Merge,
        entries,
        expect_version: None,
    }
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
    fn a_large_difference_is_cut_into_batches_and_a_switchable_one_is_one_merge() {
        let ops: Vec<WriteOp> = (0..(MAX_BATCH_OPS as u32 + 5))
            .map(|i| WriteOp::Delete(Delete::new("m", i.to_le_bytes().to_vec())))
            .collect();
        let sizes: Vec<usize> = into_batches(ops).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![MAX_BATCH_OPS, 5]);
        assert!(into_batches(Vec::new()).is_empty());
        let apply = into_apply(
            "s",
            vec![
                WriteOp::Put(Put::new("s", b(&[1]), b(&[7]))),
                WriteOp::Delete(Delete::new("s", b(&[2]))),
            ],
        );
        assert_eq!(apply.mode, ApplyMode::Merge);
        assert_eq!(apply.expect_version, None);
        assert_eq!(
            apply.entries,
            vec![(b(&[1]), Some(b(&[7]))), (b(&[2]), None)]
        );
    }
}
