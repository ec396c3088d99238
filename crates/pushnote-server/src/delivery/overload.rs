//! Overload: how far behind the bus a server may fall, and what it sheds past that.
//!
//! The bus thread reads what ZeroMQ holds as soon as it can into a [`Backlog`], noting when,
//! and delivers from the backlog's front. Reading a message costs a small part of delivering
//! it, so when more comes than the server delivers, the wait moves out of ZeroMQ's queues
//! (where it could be neither seen nor bounded, and ended in drops at the high-water marks
//! after seconds of delay) into the backlog, where the age of the front is the server's lag.
//!
//! Past `--max-lag` the oldest messages are shed: not delivered, counted per kind, logged at
//! most once a second. What is shed is still kept where there is history (the forwarder keeps
//! it, a single server's history numbers and keeps it before shedding), so a page with
//! positions that asks is given it back. While the lag is over half the bound, or something
//! was shed in the last [`OVERLOAD_HOLD`], the server reports itself overloaded
//! (`pushnote_overloaded`, `/health`).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pushnote::wire;

use crate::metrics::Metrics;

/// How long the server still reports itself overloaded after it last shed a message.
pub const OVERLOAD_HOLD: Duration = Duration::from_secs(5);

/// How often shedding is logged at most; the metrics count every message at once.
const SHED_LOG_EVERY: Duration = Duration::from_secs(1);

/// Messages read from the bus and not yet delivered, oldest first, each with when it was read.
pub struct Backlog {
    waiting: VecDeque<(Instant, Vec<Vec<u8>>)>,
    /// Their size in bytes.
    bytes: usize,
    /// How old a message may be and still be delivered; `None`: no bound.
    max_lag: Option<Duration>,
    /// The most messages and bytes kept: past them, the oldest are shed whatever their age
    /// (reading goes on up to twice as many, then what comes waits in ZeroMQ's queue).
    max_messages: usize,
    max_bytes: usize,
    /// Shed and not logged yet: broadcasts, users' messages, channels' messages.
    unreported: [u64; 3],
    logged: Option<Instant>,
    last_shed: Option<Instant>,
    /// When the message popped last was read.
    popped: Option<Instant>,
}

impl Backlog {
    /// A backlog that sheds what is older than `max_lag` (none if `None`), and the oldest
    /// past `max_messages` messages or `max_bytes` bytes.
    pub fn new(max_lag: Option<Duration>, max_messages: usize, max_bytes: usize) -> Backlog {
        Backlog {
            waiting: VecDeque::new(),
            bytes: 0,
            max_lag,
            max_messages: max_messages.max(1),
            max_bytes: max_bytes.max(1),
            unreported: [0; 3],
            logged: None,
            last_shed: None,
            popped: None,
        }
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Whether there is room to read more ahead: up to twice the bounds, so that reading
    /// goes on while the oldest past them are shed.
    pub fn has_room(&self) -> bool {
        self.waiting.len() < 2 * self.max_messages && self.bytes < 2 * self.max_bytes
    }

    /// Whether more is kept than the bounds allow.
    fn over(&self) -> bool {
        self.waiting.len() > self.max_messages || self.bytes > self.max_bytes
    }

    /// Adds a message read at `at`.
    pub fn push(&mut self, at: Instant, frames: Vec<Vec<u8>>) {
        self.bytes += size(&frames);
        self.waiting.push_back((at, frames));
    }

    /// The oldest message, and whether it is to be shed: past the lag bound at `now`, or
    /// beyond the bounds of what is kept. Its wait goes into the bus lag histogram.
    pub fn pop(&mut self, now: Instant, metrics: &Metrics) -> Option<(Vec<Vec<u8>>, bool)> {
        let over = self.over();
        let (at, frames) = self.waiting.pop_front()?;
        self.bytes -= size(&frames);
        let waited = now.saturating_duration_since(at);
        metrics.histograms.bus_wait.observe_duration(waited);
        self.popped = Some(at);
        let late = over || self.max_lag.is_some_and(|max| waited > max);
        Some((frames, late))
    }

    /// After the message popped last was delivered: the time it took since it was read goes
    /// into the delivery latency histogram. Returns the time now, the one clock read.
    pub fn delivered(&self, metrics: &Metrics) -> Instant {
        let now = Instant::now();
        if let Some(at) = self.popped {
            let took = now.saturating_duration_since(at);
            metrics.histograms.delivery.observe_duration(took);
        }
        now
    }

    /// Counts a message of `topic` shed at `now`.
    pub fn count_shed(&mut self, topic: &[u8], now: Instant, metrics: &Metrics) {
        let (i, counter) = if topic.starts_with(wire::USER_TOPIC_PREFIX) {
            (1, &metrics.bus_shed_user_messages)
        } else if topic.starts_with(wire::CHANNEL_TOPIC_PREFIX) {
            (2, &metrics.bus_shed_channel_messages)
        } else {
            (0, &metrics.bus_shed_broadcasts)
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.unreported[i] += 1;
        self.last_shed = Some(now);
    }

    /// Whether the server is overloaded at `now`: behind by more than half the bound, or it
    /// shed a message within [`OVERLOAD_HOLD`].
    pub fn overloaded(&self, now: Instant) -> bool {
        let shed_lately = self
            .last_shed
            .is_some_and(|t| now.saturating_duration_since(t) < OVERLOAD_HOLD);
        let behind = self.max_lag.is_some_and(|max| self.lag(now) > max / 2);
        shed_lately || behind
    }

    /// The age of the oldest message waiting (zero when none waits).
    pub fn lag(&self, now: Instant) -> Duration {
        self.waiting
            .front()
            .map_or(Duration::ZERO, |(at, _)| now.saturating_duration_since(*at))
    }

    /// Puts the lag and the overload state in `metrics`, and logs what was shed, at most once
    /// every [`SHED_LOG_EVERY`].
    pub fn report(&mut self, now: Instant, metrics: &Metrics) {
        let lag = u64::try_from(self.lag(now).as_micros()).unwrap_or(u64::MAX);
        metrics.bus_lag_micros.store(lag, Ordering::Relaxed);
        metrics
            .overloaded
            .store(u64::from(self.overloaded(now)), Ordering::Relaxed);
        let [broadcasts, users, channels] = self.unreported;
        if broadcasts + users + channels == 0
            || self
                .logged
                .is_some_and(|t| now.saturating_duration_since(t) < SHED_LOG_EVERY)
        {
            return;
        }
        tracing::warn!(
            broadcasts,
            users,
            channels,
            max_lag_ms = self.max_lag.map_or(0, |d| d.as_millis()),
            "overloaded: bus messages older than --max-lag shed (kept for recovery where there \
             is history)"
        );
        self.unreported = [0; 3];
        self.logged = Some(now);
    }
}

fn size(frames: &[Vec<u8>]) -> usize {
    frames.iter().map(Vec::len).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(topic: &[u8]) -> Vec<Vec<u8>> {
        vec![topic.to_vec(), b"{}".to_vec()]
    }

    #[test]
    fn what_waited_past_the_bound_is_late_and_what_did_not_is_delivered() {
        let metrics = Metrics::default();
        let mut backlog = Backlog::new(Some(Duration::from_secs(2)), 10, 1 << 20);
        let t0 = Instant::now();
        backlog.push(t0, frames(wire::BROADCAST_TOPIC));
        backlog.push(t0 + Duration::from_secs(1), frames(b"user:a\0"));
        let now = t0 + Duration::from_millis(2500);
        assert_eq!(backlog.lag(now), Duration::from_millis(2500));
        assert!(
            backlog.overloaded(now),
            "behind by more than half the bound"
        );
        assert!(backlog.pop(now, &metrics).unwrap().1, "2.5 s old: shed");
        assert!(
            !backlog.pop(now, &metrics).unwrap().1,
            "1.5 s old: delivered"
        );
        assert!(backlog.pop(now, &metrics).is_none());
        assert_eq!(backlog.lag(now), Duration::ZERO);
        assert!(!backlog.overloaded(now));
    }

    #[test]
    fn shedding_is_counted_per_kind_and_keeps_the_server_overloaded_for_a_while() {
        let metrics = Metrics::default();
        let mut backlog = Backlog::new(Some(Duration::from_secs(1)), 10, 1 << 20);
        let t0 = Instant::now();
        backlog.count_shed(wire::BROADCAST_TOPIC, t0, &metrics);
        backlog.count_shed(b"user:a\0", t0, &metrics);
        backlog.count_shed(b"user:b\0", t0, &metrics);
        backlog.count_shed(b"chan:news\0", t0, &metrics);
        assert_eq!(metrics.bus_shed_broadcasts.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.bus_shed_user_messages.load(Ordering::Relaxed), 2);
        assert_eq!(metrics.bus_shed_channel_messages.load(Ordering::Relaxed), 1);
        backlog.report(t0, &metrics);
        assert_eq!(metrics.overloaded.load(Ordering::Relaxed), 1);
        backlog.report(t0 + OVERLOAD_HOLD, &metrics);
        assert_eq!(metrics.overloaded.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn past_the_message_or_byte_bound_the_oldest_are_shed_and_reading_stops_at_twice_it() {
        let metrics = Metrics::default();
        let now = Instant::now();
        let mut backlog = Backlog::new(None, 2, 1 << 20);
        for _ in 0..3 {
            backlog.push(now, frames(b"all\0"));
        }
        assert!(backlog.has_room(), "reading goes on past the bound");
        backlog.push(now, frames(b"all\0"));
        assert!(!backlog.has_room(), "twice the bound: reading stops");
        assert!(
            backlog.pop(now, &metrics).unwrap().1,
            "four kept, two allowed: shed"
        );
        assert!(backlog.pop(now, &metrics).unwrap().1, "three kept: shed");
        assert!(
            !backlog.pop(now, &metrics).unwrap().1,
            "two kept: delivered"
        );
        // 15 bytes each, 16 allowed.
        let mut backlog = Backlog::new(None, 100, 16);
        for _ in 0..3 {
            backlog.push(now, frames(b"user:someone\0"));
        }
        assert!(!backlog.has_room(), "past twice 16 bytes");
        assert!(backlog.pop(now, &metrics).unwrap().1, "45 bytes: shed");
        assert!(backlog.pop(now, &metrics).unwrap().1, "30 bytes: shed");
        let later = now + Duration::from_secs(3600);
        assert!(
            !backlog.pop(later, &metrics).unwrap().1,
            "15 bytes, no lag bound: delivered"
        );
        assert!(backlog.has_room());
    }
}
