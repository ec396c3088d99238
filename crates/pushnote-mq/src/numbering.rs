//! The forwarder's numbering: the last number given on each topic, for [`wire::Stamp`]s, in
//! bounded memory.
//!
//! Each topic costs its bytes and a map entry ([`ENTRY_OVERHEAD`]). The topics are kept in two
//! generations: every `idle` period the recent generation becomes the older one and the older
//! one is forgotten, so a topic that has had no message for between one and two periods is
//! forgotten; a message on a topic of the older generation moves it back to the recent one.
//! When a new topic would take the total over the byte budget, the older generation is
//! forgotten at once; if that is not enough, the numbering starts a new run (servers start
//! every count again on a new run).
//!
//! A forgotten topic's numbering starts again from 1. A server reads a number that is not after
//! the last one it saw as the start of a new count, so nothing is counted lost for it.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use pushnote::wire::Stamp;

/// What a topic's entry costs beyond its bytes, in bytes, by estimate: the map's slot (a boxed
/// slice's pointer and length, the number, padding and control byte, at the map's load
/// factor) and the allocator's header and rounding of the boxed topic.
pub const ENTRY_OVERHEAD: usize = 64;

/// The last number given on each topic.
pub struct Numbering {
    run: u32,
    recent: Generation,
    older: Generation,
    budget: usize,
    idle: Duration,
    rotated: Instant,
    /// Topics forgotten so far, idle or over the budget.
    forgotten: u64,
    /// Runs started because of the budget and not logged yet, and when that was last logged.
    restarts: u64,
    logged: Option<Instant>,
}

/// How often new runs for the budget are logged at most.
const RESTART_LOG_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Generation {
    last: HashMap<Box<[u8]>, u32>,
    bytes: usize,
}

impl Generation {
    fn forget(&mut self) -> u64 {
        let n = self.last.len() as u64;
        *self = Generation::default();
        n
    }
}

fn cost(topic: &[u8]) -> usize {
    topic.len() + ENTRY_OVERHEAD
}

impl Numbering {
    /// Starts a run whose id differs from any earlier forwarder's, almost surely, keeping at
    /// most `budget` bytes of topics and forgetting a topic idle for `idle` to twice that.
    pub fn new(budget: usize, idle: Duration, now: Instant) -> Numbering {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        h.write_u32(std::process::id());
        Numbering {
            // Run 0 is the publishers' room for a stamp, never a run.
            run: (h.finish() as u32).max(1),
            recent: Generation::default(),
            older: Generation::default(),
            budget,
            idle,
            rotated: now,
            forgotten: 0,
            restarts: 0,
            logged: None,
        }
    }

    /// The next stamp of `topic` (up to and including its NUL).
    pub fn stamp(&mut self, topic: &[u8]) -> Stamp {
        let number = if let Some(n) = self.recent.last.get_mut(topic) {
            *n = n.wrapping_add(1);
            *n
        } else if let Some((topic, n)) = self.older.last.remove_entry(topic) {
            let c = cost(&topic);
            self.older.bytes -= c;
            self.recent.bytes += c;
            let n = n.wrapping_add(1);
            self.recent.last.insert(topic, n);
            n
        } else {
            self.make_room(cost(topic));
            self.recent.bytes += cost(topic);
            self.recent.last.insert(topic.into(), 1);
            1
        };
        Stamp {
            run: self.run,
            number,
        }
    }

    fn make_room(&mut self, needed: usize) {
        if self.bytes() + needed <= self.budget {
            return;
        }
        self.forgotten += self.older.forget();
        if self.bytes() + needed <= self.budget {
            return;
        }
        self.forgotten += self.recent.forget();
        self.run = self.run.wrapping_add(1).max(1);
        self.restarts += 1;
        let now = Instant::now();
        if self
            .logged
            .is_none_or(|t| now.duration_since(t) >= RESTART_LOG_EVERY)
        {
            tracing::warn!(
                runs = self.restarts,
                budget = self.budget,
                "topic numbering over its memory budget (--topic-memory): it started again"
            );
            self.restarts = 0;
            self.logged = Some(now);
        }
    }

    /// Forgets the topics idle for a whole period, once a period has passed since the last
    /// time; cheap to call often.
    pub fn tick(&mut self, now: Instant) {
        if now.saturating_duration_since(self.rotated) < self.idle {
            return;
        }
        self.rotated = now;
        self.forgotten += self.older.forget();
        self.older = std::mem::take(&mut self.recent);
    }

    /// Topics numbered now.
    pub fn topics(&self) -> usize {
        self.recent.last.len() + self.older.last.len()
    }

    /// What the topics take, by estimate ([`ENTRY_OVERHEAD`] each beyond their bytes).
    pub fn bytes(&self) -> usize {
        self.recent.bytes + self.older.bytes
    }

    /// Topics forgotten so far.
    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn each_topic_counts_from_one() {
        let mut n = Numbering::new(1 << 20, HOUR, Instant::now());
        let numbers: Vec<u32> = [&b"a\0"[..], b"b\0", b"a\0", b"a\0"]
            .iter()
            .map(|t| n.stamp(t).number)
            .collect();
        assert_eq!(numbers, [1, 1, 2, 3]);
        assert_eq!(n.topics(), 2);
        assert_eq!(n.bytes(), 2 * (2 + ENTRY_OVERHEAD));
    }

    #[test]
    fn a_topic_idle_for_two_periods_is_forgotten_and_a_busy_one_is_kept() {
        let start = Instant::now();
        let mut n = Numbering::new(1 << 20, HOUR, start);
        n.stamp(b"idle\0");
        n.stamp(b"busy\0");
        n.tick(start + HOUR);
        assert_eq!(n.topics(), 2, "one period idle: still known");
        assert_eq!(n.stamp(b"busy\0").number, 2);
        n.tick(start + 2 * HOUR);
        assert_eq!(n.topics(), 1);
        assert_eq!(n.forgotten(), 1);
        assert_eq!(n.stamp(b"busy\0").number, 3);
        assert_eq!(n.stamp(b"idle\0").number, 1, "starts again");
        assert_eq!(n.bytes(), 5 + ENTRY_OVERHEAD + 5 + ENTRY_OVERHEAD);
    }

    #[test]
    fn the_budget_forgets_the_older_generation_then_starts_a_new_run() {
        let start = Instant::now();
        let one = 10 + ENTRY_OVERHEAD;
        let mut n = Numbering::new(3 * one, HOUR, start);
        let run = n.stamp(b"topic-001\0").run;
        n.tick(start + HOUR);
        n.stamp(b"topic-002\0");
        n.stamp(b"topic-003\0");
        assert_eq!(n.bytes(), 3 * one);
        // Room is made by forgetting the older generation (topic-001) only.
        let s = n.stamp(b"topic-004\0");
        assert_eq!((s.run, n.topics(), n.forgotten()), (run, 3, 1));
        // Now every topic is recent: a new one starts a new run.
        let s = n.stamp(b"topic-005\0");
        assert_ne!(s.run, run);
        assert_eq!((s.number, n.topics(), n.forgotten()), (1, 1, 4));
        assert!(n.bytes() <= 3 * one);
    }

    #[test]
    fn memory_stays_within_the_budget_whatever_the_topics() {
        let start = Instant::now();
        let budget = 1 << 20;
        let mut n = Numbering::new(budget, HOUR, start);
        for i in 0..5_000u32 {
            let mut topic = vec![b'x'; 20_000];
            topic.extend_from_slice(&i.to_be_bytes());
            topic.push(0);
            n.stamp(&topic);
            assert!(n.bytes() <= budget);
        }
    }
}
