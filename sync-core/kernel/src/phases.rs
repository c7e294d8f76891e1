//! Where the ingest task's time goes, per phase of a batch: reading and
//! decoding the ring, routing records to changes, applying them to the
//! mirror, and the accounting after a publish. Cumulative nanoseconds,
//! counted with relaxed atomics once per batch (not per record), so a
//! benchmark or an operator can tell the ring side's cost from the
//! mirror's in one run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// An apply phase longer than this is counted as slow.
pub const SLOW_APPLY: Duration = Duration::from_millis(1);

/// The live phase counters (part of [`crate::SyncStats`]).
#[derive(Debug, Default)]
pub(crate) struct PhaseCounters {
    ring_ns: AtomicU64,
    route_ns: AtomicU64,
    apply_ns: AtomicU64,
    account_ns: AtomicU64,
    /// Batches whose apply phase took longer than [`SLOW_APPLY`].
    slow_applies: AtomicU64,
    tick_ns: AtomicU64,
    /// Ticks whose own work took longer than [`SLOW_APPLY`].
    slow_ticks: AtomicU64,
    batches: AtomicU64,
    records: AtomicU64,
}

/// One of the phases [`PhaseCounters`] times.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Phase {
    /// `read_next`, decode, sequence check.
    Ring,
    /// Record -> change (map lookup, routing).
    Route,
    /// `Publisher::apply` and the publish.
    Apply,
    /// Counting published events and lags.
    Account,
    /// A tick's own work after its drain: loss check, polls, the mirror's
    /// tidy-up (not per batch: counted apart from the records).
    Tick,
}

impl PhaseCounters {
    /// Adds the time since `since` to `phase`, and returns now (the start of
    /// the next phase).
    pub(crate) fn add(&self, phase: Phase, since: Instant) -> Instant {
        let now = Instant::now();
        let counter = match phase {
            Phase::Ring => &self.ring_ns,
            Phase::Route => &self.route_ns,
            Phase::Apply => &self.apply_ns,
            Phase::Account => &self.account_ns,
            Phase::Tick => &self.tick_ns,
        };
        let took = (now - since).as_nanos() as u64;
        counter.fetch_add(took, Ordering::Relaxed);
        if took > SLOW_APPLY.as_nanos() as u64 {
            match phase {
                Phase::Apply => self.slow_applies.fetch_add(1, Ordering::Relaxed),
                Phase::Tick => self.slow_ticks.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
        }
        now
    }

    /// Counts one batch of `records` records read from the ring.
    pub(crate) fn batch(&self, records: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
    }

    /// The counters now.
    pub(crate) fn snapshot(&self) -> IngestPhases {
        IngestPhases {
            ring_ns: self.ring_ns.load(Ordering::Relaxed),
            route_ns: self.route_ns.load(Ordering::Relaxed),
            apply_ns: self.apply_ns.load(Ordering::Relaxed),
            account_ns: self.account_ns.load(Ordering::Relaxed),
            slow_applies: self.slow_applies.load(Ordering::Relaxed),
            tick_ns: self.tick_ns.load(Ordering::Relaxed),
            slow_ticks: self.slow_ticks.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
        }
    }
}

/// Cumulative time the ingest task spent per phase of its batches, since
/// it started (see [`crate::SyncStats::phases`]). Take two and
/// [`IngestPhases::since`] for a period's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestPhases {
    /// Reading the ring: positions, decode, key/value copies, sequence check.
    pub ring_ns: u64,
    /// Routing records to changes (map lookup, the route decision).
    pub route_ns: u64,
    /// Applying the changes to the mirror and publishing the snapshot.
    pub apply_ns: u64,
    /// Counting what was published (per-map counters, lag histograms).
    pub account_ns: u64,
    /// Batches whose apply phase took longer than [`SLOW_APPLY`] (what a
    /// write's visibility waits for at the tail of its distribution).
    pub slow_applies: u64,
    /// A tick's own work after its drain (loss check, polls, the mirror's
    /// tidy-up), all ticks together.
    pub tick_ns: u64,
    /// Ticks whose own work took longer than [`SLOW_APPLY`].
    pub slow_ticks: u64,
    /// Batches read from the ring that held at least one record.
    pub batches: u64,
    /// Records in those batches.
    pub records: u64,
}

impl IngestPhases {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &IngestPhases) -> IngestPhases {
        IngestPhases {
            ring_ns: self.ring_ns.saturating_sub(earlier.ring_ns),
            route_ns: self.route_ns.saturating_sub(earlier.route_ns),
            apply_ns: self.apply_ns.saturating_sub(earlier.apply_ns),
            account_ns: self.account_ns.saturating_sub(earlier.account_ns),
            slow_applies: self.slow_applies.saturating_sub(earlier.slow_applies),
            tick_ns: self.tick_ns.saturating_sub(earlier.tick_ns),
            slow_ticks: self.slow_ticks.saturating_sub(earlier.slow_ticks),
            batches: self.batches.saturating_sub(earlier.batches),
            records: self.records.saturating_sub(earlier.records),
        }
    }

    /// The ring side's time (ring read and routing) per record, in ns.
    pub fn ring_side_ns_per_record(&self) -> f64 {
        (self.ring_ns + self.route_ns) as f64 / self.records.max(1) as f64
    }

    /// The mirror's time (apply and accounting) per record, in ns.
    pub fn mirror_ns_per_record(&self) -> f64 {
        (self.apply_ns + self.account_ns) as f64 / self.records.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_add_up_per_batch_and_difference() {
        let counters = PhaseCounters::default();
        let before = counters.snapshot();
        let start = Instant::now() - Duration::from_micros(50);
        let next = counters.add(Phase::Ring, start);
        counters.add(Phase::Apply, next - Duration::from_micros(30));
        counters.batch(10);
        let period = counters.snapshot().since(&before);
        assert!(period.ring_ns >= 50_000, "{period:?}");
        assert!(period.apply_ns >= 30_000, "{period:?}");
        assert_eq!(period.slow_applies, 0, "{period:?}");
        counters.add(Phase::Apply, Instant::now() - SLOW_APPLY * 2);
        assert_eq!(counters.snapshot().since(&before).slow_applies, 1);
        counters.add(Phase::Tick, Instant::now() - SLOW_APPLY * 2);
        let period = counters.snapshot().since(&before);
        assert_eq!((period.slow_applies, period.slow_ticks), (1, 1));
        assert!(period.tick_ns >= 2_000_000);
        assert_eq!((period.route_ns, period.account_ns), (0, 0));
        assert_eq!((period.batches, period.records), (1, 10));
        assert!(period.ring_side_ns_per_record() >= 5_000.0);
        assert!(period.mirror_ns_per_record() >= 3_000.0);
    }
}
