//! Propagation times: a lock-free histogram with exponential buckets from
//! 1 us, and the clock of when each recent revision was published (so a
//! reader can tell how long a change took to reach it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Revision;

/// Finite upper bounds of a [`Histogram`]: 1 us, doubling, 24 buckets (the
/// last finite one is about 8.4 s), then +Inf.
pub const HISTOGRAM_BUCKETS: usize = 24;

/// A cumulative histogram of durations, in nanoseconds, updated with
/// relaxed atomics (no lock on the hot path).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Samples at or below bucket i's bound and above the previous one's;
    /// the last slot holds the samples above every bound.
    counts: [AtomicU64; HISTOGRAM_BUCKETS + 1],
    sum_ns: AtomicU64,
}

/// A copy of a [`Histogram`], as Prometheus encodes one.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Sum of the samples, in seconds.
    pub sum_seconds: f64,
    /// Number of samples.
    pub count: u64,
    /// (upper bound in seconds, samples above the previous bound and at or
    /// below this one), not cumulative (the Prometheus encoder sums them);
    /// the last bound is +Inf.
    pub buckets: Vec<(f64, u64)>,
}

fn bound_ns(index: usize) -> u64 {
    1_000u64 << index
}

impl Histogram {
    /// Counts one sample of `ns` nanoseconds.
    pub fn observe_ns(&self, ns: u64) {
        self.observe_ns_times(ns, 1);
    }

    /// Counts `times` samples of `ns` nanoseconds each, with one update of
    /// the bucket and one of the sum (several events that took the same
    /// time, e.g. the events of one revision sent in one message).
    pub fn observe_ns_times(&self, ns: u64, times: u64) {
        if times == 0 {
            return;
        }
        let index = (0..HISTOGRAM_BUCKETS)
            .find(|index| ns <= bound_ns(*index))
            .unwrap_or(HISTOGRAM_BUCKETS);
        self.counts[index].fetch_add(times, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(ns.saturating_mul(times), Ordering::Relaxed);
    }

    /// The samples so far.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(HISTOGRAM_BUCKETS + 1);
        for (index, count) in self.counts.iter().enumerate() {
            let count = count.load(Ordering::Relaxed);
            total += count;
            let bound = if index == HISTOGRAM_BUCKETS {
                f64::INFINITY
            } else {
                bound_ns(index) as f64 / 1e9
            };
            buckets.push((bound, count));
        }
        HistogramSnapshot {
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            count: total,
            buckets,
        }
    }
}

/// Revisions whose publish time is remembered (the newest ones).
pub const PUBLISH_CLOCK_SLOTS: usize = 4096;

/// When each of the newest [`PUBLISH_CLOCK_SLOTS`] revisions was published:
/// a fixed ring written by the one publisher and read by anyone, lock-free.
#[derive(Debug)]
pub struct PublishClock {
    start: Instant,
    /// Per slot: the revision it holds (0 while being written) and its
    /// publish time in ns since `start`.
    slots: Box<[(AtomicU64, AtomicU64)]>,
}

impl Default for PublishClock {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            slots: (0..PUBLISH_CLOCK_SLOTS)
                .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
        }
    }
}

impl PublishClock {
    /// Records revisions `after + 1 ..= revision` as published now (only the
    /// newest [`PUBLISH_CLOCK_SLOTS`] of them when more).
    pub fn record(&self, after: Revision, revision: Revision) {
        let now = self.start.elapsed().as_nanos() as u64;
        let first = (after + 1).max(revision.saturating_sub(PUBLISH_CLOCK_SLOTS as u64 - 1));
        for revision in first.max(1)..=revision {
            let (held, at) = &self.slots[revision as usize % PUBLISH_CLOCK_SLOTS];
            held.store(0, Ordering::Release);
            at.store(now, Ordering::Release);
            held.store(revision, Ordering::Release);
        }
    }

    /// How long ago `revision` was published, if it is still remembered.
    pub fn since_published(&self, revision: Revision) -> Option<Duration> {
        let (held, at) = &self.slots[revision as usize % PUBLISH_CLOCK_SLOTS];
        if revision == 0 || held.load(Ordering::Acquire) != revision {
            return None;
        }
        let published = at.load(Ordering::Acquire);
        // overwritten meanwhile: the time read may be another revision's
        if held.load(Ordering::Acquire) != revision {
            return None;
        }
        let now = self.start.elapsed().as_nanos() as u64;
        Some(Duration::from_nanos(now.saturating_sub(published)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_double_from_one_microsecond() {
        let histogram = Histogram::default();
        for ns in [500, 1_000, 1_001, 3_000_000, u64::MAX / 2] {
            histogram.observe_ns(ns);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 5);
        assert_eq!(snapshot.buckets.len(), HISTOGRAM_BUCKETS + 1);
        assert_eq!(snapshot.buckets[0], (1e-6, 2));
        assert_eq!(snapshot.buckets[1], (2e-6, 1));
        // 3 ms: above 2.048 ms, at or below 4.096 ms (bucket 12)
        assert_eq!(snapshot.buckets[11].1, 0);
        assert_eq!(snapshot.buckets[12].1, 1);
        assert_eq!(snapshot.buckets[HISTOGRAM_BUCKETS], (f64::INFINITY, 1));
    }

    #[test]
    fn several_samples_at_once_count_like_one_by_one() {
        let one_by_one = Histogram::default();
        let at_once = Histogram::default();
        for _ in 0..100 {
            one_by_one.observe_ns(3_000_000);
        }
        one_by_one.observe_ns(700);
        at_once.observe_ns_times(3_000_000, 100);
        at_once.observe_ns_times(700, 1);
        at_once.observe_ns_times(5, 0);
        assert_eq!(one_by_one.snapshot(), at_once.snapshot());
        assert_eq!(at_once.snapshot().count, 101);
    }

    #[test]
    fn the_clock_remembers_the_newest_revisions_only() {
        let clock = PublishClock::default();
        clock.record(0, 3);
        std::thread::sleep(Duration::from_millis(5));
        let ago = clock.since_published(2).expect("remembered");
        assert!(ago >= Duration::from_millis(5), "{ago:?}");
        assert_eq!(clock.since_published(4), None);
        assert_eq!(clock.since_published(0), None);
        clock.record(3, 3 + PUBLISH_CLOCK_SLOTS as u64);
        assert_eq!(clock.since_published(3), None, "overwritten");
        assert!(clock.since_published(4).is_some());
        assert!(
            clock
                .since_published(3 + PUBLISH_CLOCK_SLOTS as u64)
                .is_some()
        );
        // a huge jump records only the newest slots' worth
        clock.record(10, 10_000_000);
        assert!(clock.since_published(10_000_000).is_some());
        assert_eq!(clock.since_published(11), None);
    }
}
