//! What the ingest task keeps about the ring's faults: the run of
//! undecodable records, the rate-limited warnings, and the resync a reset
//! owes the mirror.

use std::time::{Duration, Instant};

use super::{RingFault, RingReset};
use crate::record::BadRecord;
use crate::stats::SyncStats;
use mapsync_core::ratelimit::LogLimiter;

/// Undecodable records in a row that count as a broken ring (the consumer
/// is then reset).
pub(crate) const MAX_UNDECODABLE_RUN: u32 = 64;

/// The ring's fault bookkeeping on the ingest side.
#[derive(Debug)]
pub(crate) struct RingHealth {
    /// Undecodable records since the last decodable one.
    undecodable_run: u32,
    undecodable_log: LogLimiter,
    reset_log: LogLimiter,
    /// A reset happened and every map must be resynced.
    resync_owed: bool,
    last_resync: Option<Instant>,
    /// Least time between two resyncs owed to resets.
    resync_every: Duration,
}

impl RingHealth {
    /// Resyncs owed to resets happen at most once per `resync_every`.
    pub(crate) fn new(resync_every: Duration) -> Self {
        Self {
            undecodable_run: 0,
            undecodable_log: LogLimiter::default(),
            reset_log: LogLimiter::default(),
            resync_owed: false,
            last_resync: None,
            resync_every,
        }
    }

    /// A record decoded: the run of undecodable ones ends.
    pub(crate) fn decoded(&mut self) {
        self.undecodable_run = 0;
    }

    /// Counts and (rate-limited) logs an undecodable record; returns the
    /// fault when the run is long enough to reset the ring.
    pub(crate) fn undecodable(
        &mut self,
        bad: BadRecord,
        len: usize,
        stats: &SyncStats,
    ) -> Option<RingFault> {
        SyncStats::add(&stats.bad_records, 1);
        self.undecodable_run += 1;
        if let Some(suppressed) = self.undecodable_log.check() {
            tracing::warn!(?bad, len, suppressed, "undecodable ring record");
        }
        (self.undecodable_run >= MAX_UNDECODABLE_RUN).then_some(RingFault::Undecodable {
            run: self.undecodable_run,
        })
    }

    /// Counts and logs (one line; rate-limited) a reset, and owes a resync.
    pub(crate) fn reset(&mut self, reset: &RingReset, stats: &SyncStats) {
        SyncStats::add(&stats.ring_resets, 1);
        self.undecodable_run = 0;
        self.resync_owed = true;
        if let Some(suppressed) = self.reset_log.check() {
            tracing::warn!(
                fault = %reset.fault,
                consumer = reset.consumer,
                producer = reset.producer,
                skipped_bytes = reset.producer.saturating_sub(reset.consumer),
                suppressed,
                "impossible ring buffer state: consumer moved to the producer position, resyncing every map"
            );
        }
    }

    /// Whether the resync owed to a reset is due now (and no longer owed).
    pub(crate) fn take_resync(&mut self, now: Instant) -> bool {
        let due = self.resync_owed
            && self
                .last_resync
                .is_none_or(|last| now.saturating_duration_since(last) >= self.resync_every);
        if due {
            self.resync_owed = false;
            self.last_resync = Some(now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_run_of_undecodable_records_is_a_fault_and_a_good_one_ends_it() {
        let stats = SyncStats::default();
        let mut health = RingHealth::new(Duration::from_millis(100));
        for _ in 0..MAX_UNDECODABLE_RUN - 1 {
            assert_eq!(health.undecodable(BadRecord::Truncated, 0, &stats), None);
        }
        health.decoded();
        for _ in 0..MAX_UNDECODABLE_RUN - 1 {
            assert_eq!(health.undecodable(BadRecord::Truncated, 0, &stats), None);
        }
        assert_eq!(
            health.undecodable(BadRecord::UnknownKind, 8, &stats),
            Some(RingFault::Undecodable {
                run: MAX_UNDECODABLE_RUN
            })
        );
        assert_eq!(stats.snapshot().bad_records, 2 * 63 + 1);
    }

    #[test]
    fn resets_owe_one_resync_at_a_bounded_rate() {
        let stats = SyncStats::default();
        let mut health = RingHealth::new(Duration::from_millis(100));
        let start = Instant::now();
        assert!(!health.take_resync(start));
        let reset = RingReset {
            fault: RingFault::Misaligned { consumer: 4 },
            consumer: 4,
            producer: 64,
        };
        health.reset(&reset, &stats);
        health.reset(&reset, &stats);
        assert!(health.take_resync(start));
        assert!(!health.take_resync(start), "owed once for both resets");
        health.reset(&reset, &stats);
        assert!(!health.take_resync(start + Duration::from_millis(50)));
        assert!(health.take_resync(start + Duration::from_millis(100)));
        assert_eq!(stats.snapshot().ring_resets, 3);
    }
}
