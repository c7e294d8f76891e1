//! Rate-limited logging: a line that anything outside the process can cause
//! (a corrupt record, a flood of refused connections) is logged at most once
//! per period, with a count of what was suppressed in between.

use std::time::{Duration, Instant};

/// Lets one event through per period and counts the rest.
///
/// ```
/// use std::time::Duration;
/// use mapsync_core::ratelimit::LogLimiter;
///
/// let mut limiter = LogLimiter::new(Duration::from_secs(1));
/// for _ in 0..1000 {
///     if let Some(suppressed) = limiter.check() {
///         // logs once: the first event, with 0 suppressed before it
///         assert_eq!(suppressed, 0);
///     }
/// }
/// assert_eq!(limiter.suppressed(), 999);
/// ```
#[derive(Debug, Clone)]
pub struct LogLimiter {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

/// The period of [`LogLimiter::default`]: one line per second.
pub const DEFAULT_LOG_PERIOD: Duration = Duration::from_secs(1);

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new(DEFAULT_LOG_PERIOD)
    }
}

impl LogLimiter {
    /// A limiter letting one event through every `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Counts one event. Returns `Some(n)` when this one may be logged, `n`
    /// being the events suppressed since the last one logged (the count is
    /// reset); `None` when it is to be suppressed.
    pub fn check(&mut self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    /// [`LogLimiter::check`] at a given time (for tests).
    pub fn check_at(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Events suppressed since the last one let through.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_the_count_between() {
        let start = Instant::now();
        let mut limiter = LogLimiter::new(Duration::from_secs(1));
        assert_eq!(limiter.check_at(start), Some(0));
        for ms in 1..=500 {
            assert_eq!(limiter.check_at(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(
            limiter.check_at(start + Duration::from_millis(1000)),
            Some(500)
        );
        assert_eq!(limiter.check_at(start + Duration::from_millis(1001)), None);
        assert_eq!(limiter.suppressed(), 1);
    }
}
