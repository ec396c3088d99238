//! What recovery answers may replay: an allowance of bytes that grows back at
//! `--recovery-rate` a second, up to one second's worth, shared by every server's requests. A
//! page asking in a loop for a topic of large messages would otherwise make the forwarder send
//! (and its servers take in) without bound; past the allowance, an answer gives nothing and
//! says so (`End::Busy`), and the page goes on without what it missed.

use std::time::{Duration, Instant};

/// How often answers refused are logged at most; the metrics count every one at once.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// The bytes answers may still replay, growing back over time.
pub struct Replay {
    /// Bytes a second, and the most the allowance holds.
    rate: u64,
    left: u64,
    at: Instant,
    /// Answers refused and not logged yet.
    unreported: u64,
    logged: Option<Instant>,
}

impl Replay {
    /// A full allowance of `rate` bytes a second.
    pub fn new(rate: u64, now: Instant) -> Replay {
        Replay {
            rate,
            left: rate,
            at: now,
            unreported: 0,
            logged: None,
        }
    }

    /// Spends `bytes` at `now` if the allowance holds them; false (and nothing spent) if not.
    pub fn spend(&mut self, bytes: u64, now: Instant) -> bool {
        let grown = now.saturating_duration_since(self.at).as_micros() as u64;
        let grown = grown.saturating_mul(self.rate) / 1_000_000;
        if grown > 0 {
            self.left = self.left.saturating_add(grown).min(self.rate);
            self.at = now;
        }
        if bytes > self.left {
            return false;
        }
        self.left -= bytes;
        true
    }

    /// Notes an answer refused, for the log.
    pub fn refused(&mut self) {
        self.unreported += 1;
    }

    /// Logs the answers refused since the last line, at most once every [`LOG_EVERY`].
    pub fn report(&mut self, now: Instant) {
        if self.unreported == 0
            || self
                .logged
                .is_some_and(|t| now.saturating_duration_since(t) < LOG_EVERY)
        {
            return;
        }
        tracing::warn!(
            refused = std::mem::take(&mut self.unreported),
            rate = self.rate,
            "recovery answers refused as busy: what they missed would pass the server's \
             allowance or --recovery-rate"
        );
        self.logged = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_s_worth_then_the_rate() {
        let start = Instant::now();
        let mut r = Replay::new(1000, start);
        assert!(r.spend(600, start));
        assert!(!r.spend(600, start), "400 left");
        assert!(r.spend(400, start));
        assert!(r.spend(0, start), "nothing costs nothing");
        let later = start + Duration::from_millis(500);
        assert!(!r.spend(501, later));
        assert!(r.spend(500, later));
        // Never more than a second's worth, however long it rested.
        let much_later = later + Duration::from_secs(3600);
        assert!(!r.spend(1001, much_later));
        assert!(r.spend(1000, much_later));
    }
}
