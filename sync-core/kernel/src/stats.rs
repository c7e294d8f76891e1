//! Counters of the ingest task, shared with whoever reports them (metrics,
//! `Status`). Updated with relaxed atomics: no lock on the hot path.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mapsync_core::status::{EVENT_SOURCES, IngestStatus, MapCounters, StatusSource};
use mapsync_core::{EventSource, Revision, Snapshot};

use crate::lag_window::LagWindow;

/// What the ingest task has done so far.
#[derive(Debug)]
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
    /// Capture ring size and the bytes queued in it when last read.
    pub(crate) ring_bytes: AtomicU64,
    pub(crate) ring_used_bytes: AtomicU64,
    /// Whether the periodic reconcile runs (a capture source of every map).
    pub(crate) reconciling: AtomicBool,
    started: Instant,
    /// Per map, by name; updated by the ingest task once per publish.
    maps: Mutex<BTreeMap<Arc<str>, MapCounters>>,
    /// Ingest lag of the last minute's records.
    lag: Mutex<LagWindow>,
    /// Kernel write -> mirror publish of every record since the start.
    propagation: mapsync_core::propagation::Histogram,
    /// Time per phase of the ingest task's batches.
    pub(crate) phases: crate::phases::PhaseCounters,
}

/// Upper bounds of the propagation histogram: 1 us, doubling, 24 buckets
/// (the last finite one is about 8.4 s), then +Inf.
pub const PROPAGATION_BUCKETS: usize = mapsync_core::propagation::HISTOGRAM_BUCKETS;

pub use mapsync_core::propagation::HistogramSnapshot;

impl Default for SyncStats {
    fn default() -> Self {
        Self {
            records: AtomicU64::default(),
            drops: AtomicU64::default(),
            seq_gaps: AtomicU64::default(),
            duplicates: AtomicU64::default(),
            resyncs: AtomicU64::default(),
            reconciles: AtomicU64::default(),
            reconcile_repairs: AtomicU64::default(),
            polled_changes: AtomicU64::default(),
            bad_records: AtomicU64::default(),
            ring_resets: AtomicU64::default(),
            foreign_records: AtomicU64::default(),
            last_lag_ns: AtomicU64::default(),
            ring_bytes: AtomicU64::default(),
            ring_used_bytes: AtomicU64::default(),
            reconciling: AtomicBool::default(),
            started: Instant::now(),
            maps: Mutex::default(),
            lag: Mutex::default(),
            propagation: Default::default(),
            phases: Default::default(),
        }
    }
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

/// Locks a mutex whose holder cannot leave it inconsistent (counters only).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SyncStats {
    /// Starts counting for a map (its capture sources: `emit` and `trace`
    /// always, `poll` when polled; `reconcile` is added in reports when the
    /// reconcile runs).
    pub(crate) fn add_map(&self, name: &Arc<str>, poll_interval: Option<Duration>) {
        let mut sources = vec!["emit", "trace"];
        if poll_interval.is_some() {
            sources.push("poll");
        }
        lock(&self.maps).insert(
            name.clone(),
            MapCounters {
                name: name.to_string(),
                capture_sources: sources,
                poll_interval,
                ..MapCounters::default()
            },
        );
    }

    /// Counts the events published after revision `before`, as `snapshot`'s
    /// change log holds them (called by the ingest task right after each
    /// publish, so nothing was compacted in between unless one publish
    /// exceeded the log's bounds: those events are then not counted).
    pub(crate) fn count_published(&self, snapshot: &Snapshot, before: Revision) {
        if snapshot.revision() <= before {
            return;
        }
        let log = snapshot.log();
        let Ok(events) = log.read_from(log.oldest().max(before + 1), usize::MAX) else {
            return;
        };
        let mut maps = lock(&self.maps);
        // a batch's events come in runs of one map and source: one map
        // lookup per run, not per event
        let mut runs = events.chunk_by(|a, b| Arc::ptr_eq(&a.map, &b.map) && a.source == b.source);
        for run in &mut runs {
            let newest = run.last().map_or(0, |event| event.revision);
            if let Some(map) = maps.get_mut(&run[0].map) {
                count(map, run[0].source, run.len() as u64, newest);
            }
        }
    }

    /// Counts `events` events of one map from `source`, the newest at `revision`.
    pub(crate) fn count_events(
        &self,
        map: &str,
        source: EventSource,
        events: u64,
        revision: Revision,
    ) {
        if events == 0 {
            return;
        }
        if let Some(map) = lock(&self.maps).get_mut(map) {
            count(map, source, events, revision);
        }
    }

    /// Counts a resync of `map` (`repairs`: the differences a reconcile found, else 0).
    pub(crate) fn count_resync(&self, map: &str, resync: bool, repairs: u64) {
        if let Some(map) = lock(&self.maps).get_mut(map) {
            map.resyncs += u64::from(resync);
            map.reconcile_repairs += repairs;
        }
    }

    /// Records the lags of records published now (ns each).
    pub(crate) fn record_lags(&self, lags: impl IntoIterator<Item = u64>) {
        let second = self.started.elapsed().as_secs();
        let mut window = lock(&self.lag);
        for lag in lags {
            window.record(second, lag);
            self.propagation.observe_ns(lag);
        }
    }

    /// Time the ingest task spent per phase of its batches so far.
    pub fn phases(&self) -> crate::phases::IngestPhases {
        self.phases.snapshot()
    }

    /// The kernel write -> mirror publish histogram of every record read so
    /// far (its count equals the records read).
    pub fn propagation(&self) -> HistogramSnapshot {
        self.propagation.snapshot()
    }
}

fn count(map: &mut MapCounters, source: EventSource, events: u64, revision: Revision) {
    if let Some(index) = EVENT_SOURCES.iter().position(|known| *known == source) {
        map.events[index] += events;
    }
    map.last_change_revision = map.last_change_revision.max(revision);
}

impl StatusSource for SyncStats {
    fn ingest_status(&self) -> IngestStatus {
        let counters = self.snapshot();
        let reconciling = self.reconciling.load(Ordering::Relaxed);
        let maps = lock(&self.maps)
            .values()
            .cloned()
            .map(|mut map| {
                if reconciling {
                    map.capture_sources.push("reconcile");
                }
                map
            })
            .collect();
        let uptime = self.started.elapsed();
        IngestStatus {
            uptime,
            ring_bytes: self.ring_bytes.load(Ordering::Relaxed),
            ring_used_bytes: self.ring_used_bytes.load(Ordering::Relaxed),
            records_read: counters.records,
            records_lost: counters.drops + counters.seq_gaps,
            records_undecodable: counters.bad_records,
            ingest_lag: lock(&self.lag).percentiles(uptime.as_secs()),
            maps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation_buckets_double_from_one_microsecond() {
        let stats = SyncStats::default();
        stats.record_lags([500, 1_000, 1_001, 3_000_000, u64::MAX / 2]);
        let histogram = stats.propagation();
        assert_eq!(histogram.count, 5);
        assert_eq!(histogram.buckets.len(), PROPAGATION_BUCKETS + 1);
        assert_eq!(histogram.buckets[0], (1e-6, 2));
        assert_eq!(histogram.buckets[1], (2e-6, 1));
        // 3 ms: above 2.048 ms, at or below 4.096 ms (bucket 12)
        assert_eq!(histogram.buckets[11].1, 0);
        assert_eq!(histogram.buckets[12].1, 1);
        assert_eq!(histogram.buckets[PROPAGATION_BUCKETS], (f64::INFINITY, 1));
        let counted: u64 = histogram.buckets.iter().map(|(_, n)| n).sum();
        assert_eq!(counted, 5);
    }
}
