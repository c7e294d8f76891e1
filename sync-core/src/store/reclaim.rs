//! The reclaimer: a thread that frees what the writer replaced (old
//! snapshots, the levels a fold replaced, consumed dumps), so that the
//! ingest thread does not.

use std::sync::Arc;

use super::DumpEntries;
use crate::snapshot::{Garbage, Snapshot};

/// What the writer hands to the reclaimer thread to drop.
#[derive(Debug)]
pub(super) enum Retired {
    Snapshots(#[allow(dead_code, reason = "held only to be dropped")] Vec<Arc<Snapshot>>),
    Parts(#[allow(dead_code, reason = "held only to be dropped")] Vec<Garbage>),
    Dump(#[allow(dead_code, reason = "held only to be dropped")] DumpEntries),
}

/// Most batches queued for the reclaimer; past it the writer drops them
/// itself (slower, never unbounded).
const RECLAIM_QUEUE: usize = 64;
/// Replaced snapshots handed over together (one wakeup of the reclaimer
/// per this many publishes, not one per publish).
const RECLAIM_BATCH: usize = 64;
/// Parts of reused snapshots handed over together: the old copies of the
/// change log (one per publish once the log is full, each pinning at most
/// the few events compacted since it was current) count 1, so that a
/// mirror published a change at a time wakes the reclaimer every ~1,000
/// publishes, not every 64; the levels a fold replaced (up to a few
/// thousand records each) count 1/[`RECLAIM_LEVELS`] of the batch.
const RECLAIM_PARTS: usize = 16 * RECLAIM_BATCH;
/// Most replaced levels of folds queued for the reclaimer at a time.
const RECLAIM_LEVELS: usize = 8;

/// A thread that frees replaced snapshots (with the overlay nodes and bases
/// only they held) and consumed dumps, so that the ingest thread does not.
#[derive(Debug)]
pub(super) struct Reclaimer {
    sender: Option<std::sync::mpsc::SyncSender<Retired>>,
    pending: Vec<Arc<Snapshot>>,
    /// Parts of reused snapshots (`snapshot/catch_up.rs`) queued likewise.
    parts: Vec<Garbage>,
    /// Weight of `parts` (see [`RECLAIM_PARTS`]).
    parts_weight: usize,
}

impl Reclaimer {
    pub(super) fn start() -> Self {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Retired>(RECLAIM_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("mapsync-reclaim".into())
            .spawn(move || receiver.into_iter().for_each(drop));
        if let Err(error) = &spawned {
            tracing::warn!(%error, "no reclaimer thread: old snapshots are freed by the writer");
        }
        Self {
            sender: spawned.ok().map(|_| sender),
            pending: Vec::with_capacity(RECLAIM_BATCH),
            parts: Vec::new(),
            parts_weight: 0,
        }
    }

    /// Queues a part a reused snapshot let go of, as
    /// [`Self::retire_snapshot`] does a snapshot.
    pub(super) fn retire_part(&mut self, part: Garbage, now: bool) {
        self.parts_weight += match part {
            Garbage::Levels(_) => RECLAIM_PARTS / RECLAIM_LEVELS,
            Garbage::Log(_) => 1,
        };
        self.parts.push(part);
        if now || self.parts_weight >= RECLAIM_PARTS {
            self.parts_weight = 0;
            let batch = std::mem::take(&mut self.parts);
            self.retire(Retired::Parts(batch));
        }
    }

    /// Queues a replaced snapshot; hands the queue over when it is full or
    /// when `now` (the snapshot held a replaced base: worth freeing soon).
    pub(super) fn retire_snapshot(&mut self, snapshot: Arc<Snapshot>, now: bool) {
        self.pending.push(snapshot);
        if now || self.pending.len() >= RECLAIM_BATCH {
            let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(RECLAIM_BATCH));
            self.retire(Retired::Snapshots(batch));
        }
    }

    /// Drops `retired` on the reclaimer thread (here if it is busy).
    pub(super) fn retire(&self, retired: Retired) {
        if let Some(sender) = &self.sender {
            // a full queue hands the item back: it is dropped right here
            let _ = sender.try_send(retired);
        }
    }
}
