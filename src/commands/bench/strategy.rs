//! The capture strategies the bench compares, and the plan of a run.

use std::time::Duration;

use mapsync_core::EventSource;

use super::env::{DEMO_MAP, SWITCH_MAP, TRACE_MAP};

/// The ingest task's tick (`mapsync-kernel`'s `ingest::TICK`): polls are
/// served on it, so no poll comes sooner than this after the last.
pub const INGEST_TICK: Duration = Duration::from_millis(100);

/// One way of getting a map's changes into the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// A BPF program writes through `mapsync_update()`: a record in the ring.
    Emit,
    /// A process writes through `bpf()`: the tracepoints record it.
    Trace,
    /// `Apply` into a switchable map: one atomic switch per set.
    Switch,
    /// The map is re-read this often and diffed (writes in place by a BPF
    /// program, seen by nothing else).
    Poll(Duration),
}

impl Strategy {
    /// Every strategy, in the report's order.
    pub fn all() -> Vec<Strategy> {
        vec![
            Strategy::Emit,
            Strategy::Trace,
            Strategy::Switch,
            Strategy::Poll(Duration::from_millis(10)),
            Strategy::Poll(Duration::from_millis(100)),
            Strategy::Poll(Duration::from_secs(1)),
        ]
    }

    /// Row name: `emit`, `trace`, `switch`, `poll 10ms`, ...
    pub fn name(self) -> String {
        match self {
            Strategy::Emit => "emit".into(),
            Strategy::Trace => "trace".into(),
            Strategy::Switch => "switch".into(),
            Strategy::Poll(every) if every.as_millis() >= 1000 => {
                format!("poll {}s", every.as_secs())
            }
            Strategy::Poll(every) => format!("poll {}ms", every.as_millis()),
        }
    }

    /// What the load writes with, for the table's footnote.
    pub fn writer(self) -> &'static str {
        match self {
            Strategy::Emit => "XDP demo_count via BPF_PROG_TEST_RUN, one run per write",
            Strategy::Trace => "BPF_MAP_UPDATE_ELEM from the bench process",
            Strategy::Switch => "one Apply (merge) per batch through the command channel",
            Strategy::Poll(_) => "XDP demo_bump (in place, no record) via BPF_PROG_TEST_RUN",
        }
    }

    /// The source the mirror names for changes this strategy reports.
    pub fn source(self) -> EventSource {
        match self {
            Strategy::Emit => EventSource::Emit,
            Strategy::Trace => EventSource::Trace,
            Strategy::Switch => EventSource::Api,
            Strategy::Poll(_) => EventSource::Poll,
        }
    }

    /// The map the load writes.
    pub fn map(self) -> &'static str {
        match self {
            Strategy::Emit | Strategy::Poll(_) => DEMO_MAP,
            Strategy::Trace => TRACE_MAP,
            Strategy::Switch => SWITCH_MAP,
        }
    }

    /// The poll interval, for polling rows.
    pub fn poll(self) -> Option<Duration> {
        match self {
            Strategy::Poll(every) => Some(every),
            _ => None,
        }
    }

    /// How often a poll really comes: the interval, but never sooner than
    /// the ingest tick.
    pub fn poll_period(self) -> Option<Duration> {
        self.poll().map(|every| every.max(INGEST_TICK))
    }
}

/// How much load each row gets.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Distinct keys written per round (the closed loop's batch).
    pub batch: u32,
    /// Whether this is the `--quick` plan.
    pub quick: bool,
}

impl Plan {
    /// The plan for `--quick` (CI) or a full run.
    pub fn new(quick: bool) -> Self {
        Self { batch: 256, quick }
    }

    /// Rounds of `batch` writes for `strategy`.
    pub fn rounds(self, strategy: Strategy) -> u32 {
        let (quick, full) = match strategy {
            Strategy::Emit | Strategy::Trace | Strategy::Switch => (16, 400),
            Strategy::Poll(every) if every < Duration::from_millis(100) => (8, 100),
            Strategy::Poll(every) if every < Duration::from_secs(1) => (5, 40),
            Strategy::Poll(_) => (3, 15),
        };
        if self.quick { quick } else { full }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sources() {
        let names: Vec<String> = Strategy::all().into_iter().map(Strategy::name).collect();
        assert_eq!(
            names,
            [
                "emit",
                "trace",
                "switch",
                "poll 10ms",
                "poll 100ms",
                "poll 1s"
            ]
        );
        assert_eq!(Strategy::Switch.source(), EventSource::Api);
        assert_eq!(
            Strategy::Poll(Duration::from_millis(10)).poll_period(),
            Some(INGEST_TICK)
        );
        assert_eq!(Strategy::Emit.poll_period(), None);
    }

    #[test]
    fn quick_is_smaller() {
        for strategy in Strategy::all() {
            assert!(Plan::new(true).rounds(strategy) < Plan::new(false).rounds(strategy));
        }
    }
}
