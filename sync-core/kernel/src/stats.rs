//! Counters of the ingest task, shared with whoever reports them (metrics,
//! `Status`). Updated with relaxed atomics: no lock on the hot path.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the ingest task has done so far.
#[derive(Debug, Default)]
pub struct SyncStats {
    pub(crate) records: AtomicU64,
    pub(crate) drops: AtomicU64,
    pub(crate) seq_gaps: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) reconciles: AtomicU64,
    pub(crate) reconcile_repairs: AtomicU64,
    pub(crate) polled_changes: AtomicU64,
    pub(crate) bad_records: AtomicU64,
    pub(crate) ring_resets: AtomicU64,
    pub(crate) foreign_records: AtomicU64,
    pub(crate) last_lag_ns: AtomicU64,
}

/// A copy of [`SyncStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Change records read from the ring.
    pub records: u64,
    /// Records the kernel could not queue because the ring was full.
    pub drops: u64,
    /// Records found missing from the per-CPU sequence numbers.
    pub seq_gaps: u64,
    /// Records seen twice (dropped).
    pub duplicates: u64,
    /// Map resyncs (re-dumps diffed against the mirror) made.
    pub resyncs: u64,
    /// Periodic reconciles made.
    pub reconciles: u64,
    /// Differences reconciles found and repaired (0 in a healthy run whose
    /// writers are all captured).
    pub reconcile_repairs: u64,
    /// Changes found by polling.
    pub polled_changes: u64,
    /// Ring items that could not be decoded.
    pub bad_records: u64,
    /// Times the ring's consumer position was found impossible and moved to
    /// the producer's (every map is resynced after each).
    pub ring_resets: u64,
    /// Records for maps this instance does not mirror (other emitters on a shared ring).
    pub foreign_records: u64,
    /// Kernel write to mirror publish, for the newest record (ns).
    pub last_lag_ns: u64,
}

impl SyncStats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            records: self.records.load(Ordering::Relaxed),
            drops: self.drops.load(Ordering::Relaxed),
            seq_gaps: self.seq_gaps.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            resyncs: self.resyncs.load(Ordering::Relaxed),
            reconciles: self.reconciles.load(Ordering::Relaxed),
            reconcile_repairs: self.reconcile_repairs.load(Ordering::Relaxed),
            polled_changes: self.polled_changes.load(Ordering::Relaxed),
            bad_records: self.bad_records.load(Ordering::Relaxed),
            ring_resets: self.ring_resets.load(Ordering::Relaxed),
            foreign_records: self.foreign_records.load(Ordering::Relaxed),
            last_lag_ns: self.last_lag_ns.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
