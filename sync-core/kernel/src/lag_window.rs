//! The ingest lag of the records of the last minute, as a log-linear
//! histogram per second (8 buckets per power of two: percentiles within
//! 12.5%), so that `Status` can say p50 and p99 with bounded memory
//! (60 x 496 counters).

use mapsync_core::status::LagPercentiles;

/// Seconds the window covers.
pub(crate) const WINDOW_SECS: u64 = 60;
/// Sub-buckets per power of two (as a shift).
const SUB_BITS: u32 = 3;
const SUBS: u64 = 1 << SUB_BITS;
/// Buckets covering every u64.
const BUCKETS: usize = ((64 - SUB_BITS as usize) * SUBS as usize) + SUBS as usize;

/// The bucket of `value`: exact below 8, then 8 per power of two.
fn bucket(value: u64) -> usize {
    if value < SUBS {
        return value as usize;
    }
    let octave = 63 - value.leading_zeros();
    let sub = (value >> (octave - SUB_BITS)) & (SUBS - 1);
    ((octave - SUB_BITS + 1) as u64 * SUBS + sub) as usize
}

/// The middle of bucket `index`'s range.
fn bucket_value(index: usize) -> u64 {
    let index = index as u64;
    if index < SUBS {
        return index;
    }
    let octave = index / SUBS + SUB_BITS as u64 - 1;
    let sub = index % SUBS;
    let width = 1u64 << (octave - SUB_BITS as u64);
    ((SUBS + sub) << (octave - SUB_BITS as u64)).saturating_add(width / 2)
}

/// One second of samples.
#[derive(Debug)]
struct Slot {
    second: u64,
    counts: Box<[u32]>,
}

/// Lag samples of the last [`WINDOW_SECS`] seconds.
#[derive(Debug)]
pub(crate) struct LagWindow {
    slots: Vec<Slot>,
}

impl Default for LagWindow {
    fn default() -> Self {
        Self {
            slots: (0..WINDOW_SECS)
                .map(|_| Slot {
                    second: u64::MAX,
                    counts: vec![0; BUCKETS].into_boxed_slice(),
                })
                .collect(),
        }
    }
}

impl LagWindow {
    /// Counts one sample of `lag_ns` taken at `second` (any clock in seconds).
    pub(crate) fn record(&mut self, second: u64, lag_ns: u64) {
        let slot = &mut self.slots[(second % WINDOW_SECS) as usize];
        if slot.second != second {
            slot.second = second;
            slot.counts.fill(0);
        }
        let count = &mut slot.counts[bucket(lag_ns)];
        *count = count.saturating_add(1);
    }

    /// p50 and p99 of the samples of the window ending at `second`.
    pub(crate) fn percentiles(&self, second: u64) -> LagPercentiles {
        let mut totals = vec![0u64; BUCKETS];
        for slot in &self.slots {
            if slot.second <= second && second - slot.second < WINDOW_SECS {
                for (total, count) in totals.iter_mut().zip(slot.counts.iter()) {
                    *total += u64::from(*count);
                }
            }
        }
        let samples: u64 = totals.iter().sum();
        let at = |fraction: f64| {
            if samples == 0 {
                return None;
            }
            // the rank of the sample at `fraction`, 1-based
            let rank = ((samples as f64 * fraction).ceil() as u64).clamp(1, samples);
            let mut seen = 0;
            totals.iter().enumerate().find_map(|(index, count)| {
                seen += count;
                (seen >= rank).then(|| bucket_value(index))
            })
        };
        LagPercentiles {
            samples,
            p50_ns: at(0.50),
            p99_ns: at(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_values_fall_in_their_bucket() {
        let mut last = 0;
        for value in (0..5000u64).chain([1 << 20, 123_456_789, u64::MAX]) {
            let index = bucket(value);
            assert!(index >= last || value > 5000, "{value}");
            assert!(index < BUCKETS);
            last = index;
            let middle = bucket_value(index);
            // within 12.5% (one sub-bucket) of the value
            assert!(middle.abs_diff(value) <= value / 8 + 1, "{value}: {middle}");
        }
    }

    #[test]
    fn percentiles_of_the_last_minute_only() {
        let mut window = LagWindow::default();
        // 99 fast samples and one slow one, now
        for _ in 0..99 {
            window.record(100, 1_000);
        }
        window.record(100, 1_000_000);
        let now = window.percentiles(100);
        assert_eq!(now.samples, 100);
        let p50 = now.p50_ns.expect("samples");
        assert!((900..=1100).contains(&p50), "{p50}");
        let p99 = now.p99_ns.expect("samples");
        assert!((900..=1100).contains(&p99), "{p99}");
        window.record(101, 1_000_000);
        window.record(101, 1_000_000);
        let p99 = window.percentiles(101).p99_ns.expect("samples");
        assert!(p99 > 800_000, "{p99}");
        // a minute later the first second is out of the window
        let later = window.percentiles(100 + WINDOW_SECS);
        assert_eq!(later.samples, 2);
        assert_eq!(window.percentiles(200).samples, 0);
        assert_eq!(window.percentiles(200).p50_ns, None);
        // a slot reused a minute later starts empty
        window.record(160, 5);
        assert_eq!(window.percentiles(160).samples, 3);
    }
}
