//! A log line that an outsider can trigger, written at most once a second: a flood of refused
//! sessions or channels writes one line a second with how many there were, not one per
//! refusal.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often such a line is written at most.
const EVERY: Duration = Duration::from_secs(1);

/// Counts occurrences between the lines it lets through.
#[derive(Default)]
pub(crate) struct LogEvery {
    /// When the last line was let through, and the occurrences since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogEvery {
    /// Counts one occurrence at `now`; when a line is due, how many occurred since the last.
    pub(crate) fn tick(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (logged, count) = &mut *state;
        *count += 1;
        if logged.is_some_and(|t| now.saturating_duration_since(t) < EVERY) {
            return None;
        }
        *logged = Some(now);
        Some(std::mem::take(count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_with_the_count_since_the_last() {
        let log = LogEvery::default();
        let t = Instant::now();
        assert_eq!(log.tick(t), Some(1));
        for _ in 0..999 {
            assert_eq!(log.tick(t + Duration::from_millis(500)), None);
        }
        assert_eq!(log.tick(t + Duration::from_secs(1)), Some(1000));
        assert_eq!(log.tick(t + Duration::from_millis(1100)), None);
    }
}
