//! Delivery: writing a message to sessions, at the pace the bus allows, counting what was
//! delivered and closing the sessions too slow to take it.
//!
//! A send never waits: it hands the message's shared frame to a socket that takes it at once,
//! or queues the shared message on the session's bounded queue for its writer; a session
//! whose queue is full is closed as too slow (3008), and nobody else waits for it.

use std::sync::atomic::Ordering;

use sockjs::{Message, SendError, Session};

use crate::metrics::Metrics;

/// How a message goes to its sessions.
#[derive(Clone, Copy)]
pub enum Pace<'a> {
    /// Nothing else is waiting: write each session's socket at once from this thread where it
    /// takes the message ([`Session::send_now`]), without waking its writer. Writing to many
    /// sessions takes a while, so `more_waiting` is asked every [`CHECK_EVERY`] sessions; once
    /// it says more messages have come, the rest are queued, as with [`Pace::Queued`], so that
    /// what came meanwhile does not wait for the whole round.
    Now {
        /// Whether more messages are waiting now.
        more_waiting: &'a dyn Fn() -> bool,
    },
    /// More messages are waiting: queue, so that each session's writer sends them together.
    Queued,
}

impl<'a> Pace<'a> {
    /// [`Pace::Now`] unless `more_waiting` says more messages are waiting already.
    pub fn given(more_waiting: &'a dyn Fn() -> bool) -> Pace<'a> {
        if more_waiting() {
            Pace::Queued
        } else {
            Pace::Now { more_waiting }
        }
    }
}

/// How many sessions a [`Pace::Now`] round writes between two looks for more messages.
pub const CHECK_EVERY: usize = 256;

/// Sends `message` to each of `sessions` that `keep` keeps, at `pace`; returns how many took
/// it (also added to the deliveries metric).
pub fn send(
    metrics: &Metrics,
    message: &Message,
    sessions: &[Session],
    keep: impl Fn(&Session) -> bool,
    pace: Pace<'_>,
) -> u64 {
    let mut delivered = 0;
    let mut now = match pace {
        Pace::Now { more_waiting } => Some(more_waiting),
        Pace::Queued => None,
    };
    let mut written = 0;
    for s in sessions.iter().filter(|s| keep(s)) {
        if let Some(more_waiting) = now {
            written += 1;
            if written % CHECK_EVERY == 0 && more_waiting() {
                now = None;
            }
        }
        let sent = match now {
            Some(_) => s.send_now(message.clone()),
            None => s.send(message.clone()),
        };
        delivered += counted(metrics, s, sent, 1);
    }
    metrics.deliveries.fetch_add(delivered, Ordering::Relaxed);
    delivered
}

/// What a send of `messages` messages to `session` delivered: all of them, or none when the
/// session was closed, as too slow (counted and logged here) or before.
pub fn counted(
    metrics: &Metrics,
    session: &Session,
    sent: Result<(), SendError>,
    messages: u64,
) -> u64 {
    match sent {
        Ok(()) => messages,
        Err(SendError::Full) => {
            metrics.slow_closed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(session = session.id(), "session too slow; closed");
            0
        }
        Err(SendError::Closed) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockjs::{CloseCode, QueueLimits};

    fn texts(s: &Session) -> Vec<String> {
        s.drain().0.iter().map(|m| m.as_json().to_owned()).collect()
    }

    #[test]
    fn a_round_of_direct_writes_looks_for_more_messages_and_then_queues_the_rest() {
        let metrics = Metrics::default();
        let sessions: Vec<Session> = (0..3 * CHECK_EVERY)
            .map(|_| Session::new(Default::default()))
            .collect();
        // Never more: asked once per CHECK_EVERY sessions, not per session, not never.
        let asked = std::cell::Cell::new(0);
        let never = || {
            asked.set(asked.get() + 1);
            false
        };
        let pace = Pace::Now {
            more_waiting: &never,
        };
        assert_eq!(
            send(&metrics, &Message::json("0"), &sessions, |_| true, pace),
            sessions.len() as u64
        );
        assert_eq!(asked.get(), 3);
        for s in &sessions {
            assert_eq!(texts(s), ["0"]);
        }
        // More at the second look: not asked again.
        asked.set(0);
        let more_waiting = || {
            asked.set(asked.get() + 1);
            asked.get() == 2
        };
        let pace = Pace::Now {
            more_waiting: &more_waiting,
        };
        send(&metrics, &Message::json("1"), &sessions, |_| true, pace);
        assert_eq!(
            asked.get(),
            2,
            "asked every {CHECK_EVERY} sessions until the answer was yes"
        );
        for s in &sessions {
            assert_eq!(texts(s), ["1"]);
        }
    }

    #[test]
    fn only_the_kept_sessions_get_it_and_a_slow_one_is_closed_alone() {
        let metrics = Metrics::default();
        let slow = Session::new(QueueLimits {
            max_messages: 2,
            max_bytes: 1 << 20,
        });
        let fine = Session::new(Default::default());
        let skipped = Session::new(Default::default());
        let all = [slow.clone(), fine.clone(), skipped.clone()];
        let keep = |s: &Session| s.id() != skipped.id();
        for _ in 0..3 {
            send(&metrics, &Message::json("0"), &all, keep, Pace::Queued);
        }
        assert_eq!(slow.drain(), (vec![], Some(CloseCode::SLOW)));
        assert_eq!(texts(&fine).len(), 3);
        assert!(texts(&skipped).is_empty());
        assert_eq!(metrics.slow_closed.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.deliveries.load(Ordering::Relaxed), 5);
    }
}
