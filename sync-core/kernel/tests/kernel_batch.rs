//! Command::Batch through the kernel task, on a real map: more ops than a
//! Txn takes, published as one revision; a refusal mid-way undone with
//! nothing published; an oversized batch refused before any write.

mod write_support;

use mapsync_core::control::{Delete, MAX_BATCH_OPS, MAX_TXN_OPS, Refusal, WriteOp};
use mapsync_test_support::{self as support, PinDir};
use write_support::{invalid, mirror, put, refused, start};

fn key(n: u32) -> [u8; 4] {
    n.to_le_bytes()
}

fn op(n: u32, value: u8) -> WriteOp {
    WriteOp::Put(put("big", key(n), &[value; 8]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_past_the_txn_limit_is_one_revision_and_all_or_nothing() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("write-batch");
    let pin = pins.join("big");
    let full = (MAX_TXN_OPS * 3) as u32;
    support::create_map(&pin, "hash", 4, 8, full, "big");
    let sync = start(&pins, &[&pin]).await;
    let cmd = sync.commands();
    let before = sync.store().revision();

    let outcome = cmd
        .batch((0..full).map(|n| op(n, 1)).collect())
        .await
        .expect("batch");
    assert_eq!(outcome.revision, before + 1, "one revision for {full} ops");
    assert_eq!(outcome.previous.len(), full as usize);
    assert_eq!(support::dump(&pin).len(), full as usize);

    // the map is full: the new key (op 10) is refused, ops 0..10 undone
    let mut ops: Vec<WriteOp> = (0..10).map(|n| op(n, 2)).collect();
    ops.push(op(full, 2));
    let (refusal, _, at) = refused(cmd.batch(ops).await);
    assert_eq!((refusal, at), (Refusal::MapFull, Some(10)));
    assert_eq!(sync.store().revision(), before + 1, "nothing published");
    let kernel = support::dump(&pin);
    assert!(
        kernel.values().all(|v| v == &[1u8; 8]),
        "the undo restored every value"
    );
    assert_eq!(kernel, mirror(sync.store(), "big"));

    // too many ops: refused before any write
    let many: Vec<WriteOp> = (0..=MAX_BATCH_OPS as u32)
        .map(|n| WriteOp::Delete(Delete::new("big", key(n).to_vec())))
        .collect();
    let reason = invalid(cmd.batch(many).await);
    assert!(reason.contains("at most 65536"), "{reason}");
    assert_eq!(support::dump(&pin).len(), full as usize);
    sync.shutdown().await.expect("shutdown");
}
