//! How many refused requests a Watch stream may cause: a token bucket, so a
//! client that keeps sending requests that are refused (100,000 creates past
//! the watch limit, say) has its stream ended instead of keeping the server
//! answering it forever.

use std::time::Instant;

/// Refusals a stream may get in a burst, and per second after it; a client
/// that keeps sending requests that are refused past this rate has its
/// stream ended with `RESOURCE_EXHAUSTED`.
pub(super) const REFUSAL_BURST: f64 = 1024.0;
pub(super) const REFUSALS_PER_SECOND: f64 = 100.0;

pub(super) struct RefusalBucket {
    tokens: f64,
    at: Instant,
}

impl RefusalBucket {
    pub(super) fn new() -> Self {
        Self {
            tokens: REFUSAL_BURST,
            at: Instant::now(),
        }
    }

    /// Takes one token; false when the client is refused faster than allowed.
    pub(super) fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * REFUSALS_PER_SECOND;
        self.tokens = (self.tokens + refill).min(REFUSAL_BURST);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_only_the_refill_rate() {
        let started = Instant::now();
        let mut bucket = RefusalBucket::new();
        let allowed = (0..2 * REFUSAL_BURST as usize)
            .filter(|_| bucket.take())
            .count();
        let refilled = started.elapsed().as_secs_f64() * REFUSALS_PER_SECOND;
        assert!(allowed >= REFUSAL_BURST as usize, "{allowed}");
        assert!(
            allowed as f64 <= REFUSAL_BURST + refilled + 1.0,
            "{allowed} allowed, {refilled} refilled"
        );
    }
}
