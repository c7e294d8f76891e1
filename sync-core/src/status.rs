//! What the capture side reports about itself, for `Status` and metrics:
//! a plain snapshot the kernel task fills ([`IngestStatus`]) behind a trait
//! ([`StatusSource`]), so that the server crate reads it without depending
//! on the kernel crate.

use std::fmt::Debug;
use std::time::Duration;

use crate::event::{EventSource, Revision};

/// Every source an applied event can come from (not `Initial`, which only
/// watches use), in the order reports list them.
pub const EVENT_SOURCES: [EventSource; 5] = [
    EventSource::Emit,
    EventSource::Trace,
    EventSource::Resync,
    EventSource::Poll,
    EventSource::Api,
];

/// One mirrored map's counters, as the kernel task keeps them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapCounters {
    /// The name the map is served under.
    pub name: String,
    /// What can see its changes: `emit`, `trace`, `poll`, `reconcile`.
    pub capture_sources: Vec<&'static str>,
    /// How often it is polled (`None`: never).
    pub poll_interval: Option<Duration>,
    /// Events applied to its mirror, indexed as [`EVENT_SOURCES`].
    pub events: [u64; EVENT_SOURCES.len()],
    /// Full re-reads after lost or ambiguous records.
    pub resyncs: u64,
    /// Differences the periodic reconcile found and repaired.
    pub reconcile_repairs: u64,
    /// Revision of its newest change (0: none since the start).
    pub last_change_revision: Revision,
}

impl MapCounters {
    /// The events `source` saw (0 for `Initial`).
    pub fn events_from(&self, source: EventSource) -> u64 {
        EVENT_SOURCES
            .iter()
            .position(|known| *known == source)
            .map_or(0, |index| self.events[index])
    }
}

/// Percentiles of a latency over a recent window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LagPercentiles {
    /// Samples in the window.
    pub samples: u64,
    /// Median, in nanoseconds (`None` without samples).
    pub p50_ns: Option<u64>,
    /// 99th percentile, in nanoseconds (`None` without samples).
    pub p99_ns: Option<u64>,
}

/// The capture side's state at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestStatus {
    /// Time since the mirror started.
    pub uptime: Duration,
    /// Capture ring size in bytes.
    pub ring_bytes: u64,
    /// Bytes queued in the ring and not yet read, as last seen.
    pub ring_used_bytes: u64,
    /// Change records read from the ring.
    pub records_read: u64,
    /// Records lost: not queued (ring full) or missing from the sequences.
    pub records_lost: u64,
    /// Ring items that could not be decoded.
    pub records_undecodable: u64,
    /// Kernel write -> mirror publish over the last minute.
    pub ingest_lag: LagPercentiles,
    /// Per map, in name order.
    pub maps: Vec<MapCounters>,
}

/// Something that can say how the capture side is doing (the kernel task's
/// counters); the server's `Status` and the metrics read it on demand.
pub trait StatusSource: Debug + Send + Sync + 'static {
    /// The state now.
    fn ingest_status(&self) -> IngestStatus;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_found_by_source() {
        let mut counters = MapCounters::default();
        counters.events[1] = 7;
        assert_eq!(counters.events_from(EventSource::Trace), 7);
        assert_eq!(counters.events_from(EventSource::Emit), 0);
        assert_eq!(counters.events_from(EventSource::Initial), 0);
    }
}
