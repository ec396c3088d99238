//! An allowance of requests that grows back over time (a token bucket): how often one session
//! may ask to join or leave channels. Each join or leave of a topic's first or last session
//! sends a subscription to the forwarder, so a page looping over subscribe and unsubscribe
//! would otherwise make every server and the forwarder work for it.

use std::time::Instant;

/// What is left of an allowance, and when it was last looked at.
#[derive(Debug, Clone, Copy, Default)]
pub struct Budget {
    /// Requests spent beyond what has grown back, in thousandths.
    spent_milli: u64,
    at: Option<Instant>,
}

impl Budget {
    /// Spends one request at `now` from an allowance of `burst` that grows back by
    /// `per_second`; false (and nothing spent) when none is left.
    pub fn spend(&mut self, now: Instant, burst: u32, per_second: u32) -> bool {
        if let Some(at) = self.at {
            let grown =
                now.saturating_duration_since(at).as_millis() as u64 * u64::from(per_second);
            self.spent_milli = self.spent_milli.saturating_sub(grown);
        }
        self.at = Some(now);
        if self.spent_milli + 1000 > u64::from(burst) * 1000 {
            return false;
        }
        self.spent_milli += 1000;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let start = Instant::now();
        let mut b = Budget::default();
        for _ in 0..5 {
            assert!(b.spend(start, 5, 10));
        }
        assert!(!b.spend(start, 5, 10), "the burst is spent");
        assert!(!b.spend(start + Duration::from_millis(50), 5, 10));
        // 10 a second: one more after 100 ms.
        assert!(b.spend(start + Duration::from_millis(100), 5, 10));
        assert!(!b.spend(start + Duration::from_millis(100), 5, 10));
        // Never more than the burst, however long it rested.
        let later = start + Duration::from_secs(3600);
        for _ in 0..5 {
            assert!(b.spend(later, 5, 10));
        }
        assert!(!b.spend(later, 5, 10));
    }
}
