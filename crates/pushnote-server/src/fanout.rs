//! Broadcasts: one log of them, which every session reads through a cursor of its own.
//!
//! A broadcast goes to every session here. Queuing it on each session would cost a lock and a
//! queue push per session per broadcast, and under load most sessions get several broadcasts
//! in the time it takes to write to all of them once. Instead the bus thread appends each
//! broadcast to a log, and sweeps the sessions in the order they were opened (the order their
//! memory, the kernel's included, was allocated in). Each session is given everything it has
//! not had yet as one [`Burst`]: one frame, built once and shared by every session that is as
//! far behind, written to a WebSocket session's socket at once when the socket takes it, and
//! queued for the session's writer otherwise ([`Session::send_burst_now`]).
//!
//! The bus thread looks at the bus again every [`SWEEP_STEP`] sessions, so a broadcast that
//! comes during a sweep reaches the sessions ahead in this sweep and the ones behind in the
//! next, which starts at once: a message waits about one sweep at most, however many came
//! meanwhile. Sessions that join during a sweep have had nothing yet and start at the log's
//! end.
//!
//! A targeted message first brings its sessions up to date ([`Fanout::catch_up`]), so a user
//! receives broadcasts and its own messages in the order they were published.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sockjs::{Burst, Message, SendError, Session};

use crate::hub::Hub;
use crate::metrics::Metrics;

/// How many sessions one [`Fanout::sweep`] call visits before the bus is looked at again.
pub const SWEEP_STEP: usize = 256;

/// The largest burst of several messages written to a socket from the bus thread (one message
/// is, whatever its size). Larger ones go through the session's queue, whose writer waits for a
/// slow socket and whose limits then apply: what a socket does not take at once is kept for
/// its writer outside those limits, so that much is bounded by one message or this.
const DIRECT_BURST_BYTES: usize = 64 * 1024;

/// The broadcasts not yet given to every session, and where each session is in them.
pub struct Fanout {
    /// Broadcasts, numbered from `base` on.
    log: VecDeque<Message>,
    /// The number of `log[0]`.
    base: u64,
    /// The sessions being swept, in id order, as the hub listed them. Empty when no sweep is
    /// on: every session has had every broadcast then, and none is held here.
    sessions: Arc<[Session]>,
    /// For each of `sessions`, the number of the first broadcast it has not had.
    cursors: Vec<u64>,
    /// Where the sweep is, when one is on.
    pass: Option<Pass>,
    /// The burst from one broadcast number to the log's end, for the sessions that are there.
    burst: Option<(u64, Burst)>,
}

/// One pass over every session.
#[derive(Clone, Copy)]
struct Pass {
    /// The index in `sessions` of the next session to visit.
    next: usize,
    /// The log's end when the pass began: every session visited has had at least that much.
    began_at: u64,
}

impl Default for Fanout {
    fn default() -> Self {
        Fanout {
            log: VecDeque::new(),
            base: 0,
            sessions: Arc::from([]),
            cursors: Vec::new(),
            pass: None,
            burst: None,
        }
    }
}

impl Fanout {
    /// The number the next broadcast gets.
    fn end(&self) -> u64 {
        self.base + self.log.len() as u64
    }

    /// Whether a sweep is on: [`Fanout::sweep`] has sessions to visit.
    pub fn is_sweeping(&self) -> bool {
        self.pass.is_some()
    }

    /// Adds a broadcast for every session open now, and starts a sweep if none is on.
    pub fn push(&mut self, message: Message, hub: &Hub) {
        self.follow(hub);
        self.log.push_back(message);
        self.burst = None;
        if self.pass.is_none() {
            self.pass = Some(Pass {
                next: 0,
                began_at: self.end(),
            });
        }
    }

    /// Takes up the hub's current list of sessions, keeping the cursors of those still there.
    fn follow(&mut self, hub: &Hub) {
        let everyone = hub.everyone();
        if Arc::ptr_eq(&everyone, &self.sessions) {
            return;
        }
        let end = self.end();
        let mut cursors = Vec::with_capacity(everyone.len());
        // Both lists are in id order: walk them together.
        let mut old = self.sessions.iter().zip(&self.cursors).peekable();
        for s in everyone.iter() {
            while old.next_if(|(o, _)| o.id() < s.id()).is_some() {}
            cursors.push(match old.peek() {
                Some((o, &at)) if o.id() == s.id() => at,
                _ => end,
            });
        }
        if let Some(pass) = &mut self.pass {
            // Go on from the same session, or the first after it if it has gone.
            pass.next = match self.sessions.get(pass.next) {
                Some(s) => everyone.partition_point(|e| e.id() < s.id()),
                None => everyone.len(),
            };
        }
        self.sessions = everyone;
        self.cursors = cursors;
    }

    /// Visits the next [`SWEEP_STEP`] sessions of the sweep, giving each what it has not had.
    pub fn sweep(&mut self, metrics: &Metrics) {
        let Some(pass) = self.pass else {
            return;
        };
        let stop = (pass.next + SWEEP_STEP).min(self.sessions.len());
        let mut delivered = 0;
        for i in pass.next..stop {
            delivered += self.give(i, metrics);
        }
        metrics.deliveries.fetch_add(delivered, Ordering::Relaxed);
        if stop < self.sessions.len() {
            self.pass = Some(Pass { next: stop, ..pass });
            return;
        }
        // Every session has had at least what the log held when the pass began.
        let end = self.end();
        let done = usize::try_from(pass.began_at.saturating_sub(self.base)).unwrap_or(usize::MAX);
        self.log.drain(..done.min(self.log.len()));
        self.base = pass.began_at;
        if end > pass.began_at {
            // Broadcasts came during the pass: the sessions visited before them need another.
            self.pass = Some(Pass {
                next: 0,
                began_at: end,
            });
        } else {
            // Everyone has everything: hold no sessions until the next broadcast.
            self.pass = None;
            self.burst = None;
            self.sessions = Arc::from([]);
            self.cursors.clear();
        }
    }

    /// Gives `session` the broadcasts it has not had yet, before something else is sent to it.
    pub fn catch_up(&mut self, session: &Session, metrics: &Metrics) {
        if self.pass.is_none() {
            return;
        }
        // A session not in the list joined after the last broadcast: it has nothing to catch.
        if let Ok(i) = self
            .sessions
            .binary_search_by_key(&session.id(), Session::id)
        {
            let delivered = self.give(i, metrics);
            metrics.deliveries.fetch_add(delivered, Ordering::Relaxed);
        }
    }

    /// Gives session `i` everything from its cursor to the log's end; returns how many
    /// messages it was given.
    fn give(&mut self, i: usize, metrics: &Metrics) -> u64 {
        let end = self.end();
        let from = self.cursors[i];
        if from >= end {
            return 0;
        }
        self.cursors[i] = end;
        let burst = match &self.burst {
            Some((at, burst)) if *at == from => burst,
            _ => {
                // Cursors never fall behind the log's start (see `sweep`); were one to, it
                // would get the whole log rather than a panic.
                let skip = usize::try_from(from.saturating_sub(self.base)).unwrap_or(0);
                let messages = self.log.iter().skip(skip).cloned().collect();
                &self.burst.insert((from, Burst::new(messages))).1
            }
        };
        let session = &self.sessions[i];
        let sent = if burst.messages().len() == 1 || burst.ws_frame_len() <= DIRECT_BURST_BYTES {
            session.send_burst_now(burst)
        } else {
            session.send_burst(burst)
        };
        match sent {
            Ok(()) => burst.messages().len() as u64,
            Err(SendError::Full) => {
                metrics.slow_closed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(session = session.id(), "session too slow; closed");
                0
            }
            Err(SendError::Closed) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::tests::{hub, texts};
    use crate::hub::{Pace, Subscribed};
    use sockjs::{CloseCode, QueueLimits};

    fn sessions(hub: &Hub, n: usize) -> Vec<Session> {
        (0..n)
            .map(|_| {
                let s = Session::new(QueueLimits::default());
                assert!(hub.add(&s, usize::MAX));
                s
            })
            .collect()
    }

    /// Sweeps until every session has everything; returns how many steps it took.
    fn finish(fanout: &mut Fanout, metrics: &Metrics) -> usize {
        let mut steps = 0;
        while fanout.is_sweeping() {
            fanout.sweep(metrics);
            steps += 1;
            assert!(steps < 1000, "the sweep ends");
        }
        steps
    }

    #[test]
    fn every_session_gets_every_broadcast_once_in_order_and_nothing_is_held_after() {
        let (hub, _bus) = hub();
        let metrics = Metrics::default();
        let all = sessions(&hub, 3 * SWEEP_STEP + 5);
        let mut fanout = Fanout::default();
        fanout.push(Message::json("1"), &hub);
        fanout.sweep(&metrics);
        // The first step's sessions have the first broadcast; the second comes mid-sweep.
        assert_eq!(texts(&all[0]), ["1"]);
        fanout.push(Message::json("2"), &hub);
        fanout.push(Message::json("3"), &hub);
        // The rest of this pass, then a second pass for the first step's sessions.
        assert_eq!(finish(&mut fanout, &metrics), 3 + 4);
        assert_eq!(texts(&all[0]), ["2", "3"]);
        for s in &all[1..] {
            assert_eq!(texts(s), ["1", "2", "3"]);
        }
        assert_eq!(
            metrics.deliveries.load(Ordering::Relaxed),
            3 * all.len() as u64
        );
        assert!(fanout.log.is_empty() && fanout.sessions.is_empty() && fanout.burst.is_none());
        assert_eq!(fanout.base, 3);
    }

    #[test]
    fn sessions_get_the_broadcasts_that_come_while_they_are_open() {
        let (hub, _bus) = hub();
        let metrics = Metrics::default();
        let mut fanout = Fanout::default();
        let a = sessions(&hub, 1).remove(0);
        fanout.push(Message::json("1"), &hub);
        let b = sessions(&hub, 1).remove(0);
        // b joined during the sweep: it starts at the log's end.
        fanout.push(Message::json("2"), &hub);
        finish(&mut fanout, &metrics);
        hub.remove(&a);
        fanout.push(Message::json("3"), &hub);
        finish(&mut fanout, &metrics);
        assert_eq!(texts(&a), ["1", "2"]);
        assert_eq!(texts(&b), ["2", "3"]);
    }

    #[test]
    fn a_session_that_goes_mid_sweep_is_skipped_and_the_sweep_goes_on() {
        let (hub, _bus) = hub();
        let metrics = Metrics::default();
        let all = sessions(&hub, 2 * SWEEP_STEP);
        let mut fanout = Fanout::default();
        fanout.push(Message::json("1"), &hub);
        fanout.sweep(&metrics);
        // The session the sweep would visit next leaves, and a broadcast comes.
        hub.remove(&all[SWEEP_STEP]);
        fanout.push(Message::json("2"), &hub);
        finish(&mut fanout, &metrics);
        assert!(texts(&all[SWEEP_STEP]).is_empty());
        assert_eq!(texts(&all[0]), ["1", "2"]);
        assert_eq!(texts(&all[SWEEP_STEP + 1]), ["1", "2"]);
    }

    #[test]
    fn a_targeted_message_comes_after_the_broadcasts_published_before_it() {
        let (hub, _bus) = hub();
        let metrics = Metrics::default();
        let all = sessions(&hub, 2);
        assert_eq!(hub.subscribe(&all[1], "u", usize::MAX), Subscribed::Yes);
        let mut fanout = Fanout::default();
        fanout.push(Message::json("\"all\""), &hub);
        let mut of_user = Vec::new();
        hub.sessions_of("u", &mut of_user);
        for s in &of_user {
            fanout.catch_up(s, &metrics);
        }
        hub.send(&Message::json("\"u\""), &of_user, Pace::Queued);
        finish(&mut fanout, &metrics);
        assert_eq!(
            texts(&all[1]),
            ["\"all\"", "\"u\""],
            "and no broadcast twice"
        );
        assert_eq!(texts(&all[0]), ["\"all\""]);
    }

    #[test]
    fn a_slow_session_is_closed_without_touching_the_others() {
        let (hub, _bus) = hub();
        let metrics = Metrics::default();
        let slow = Session::new(QueueLimits {
            max_messages: 2,
            max_bytes: 1 << 20,
        });
        assert!(hub.add(&slow, usize::MAX));
        let fine = sessions(&hub, 1).remove(0);
        let mut fanout = Fanout::default();
        for _ in 0..3 {
            fanout.push(Message::json("0"), &hub);
        }
        finish(&mut fanout, &metrics);
        assert_eq!(slow.drain(), (vec![], Some(CloseCode::SLOW)));
        assert_eq!(texts(&fine).len(), 3);
        assert_eq!(metrics.slow_closed.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.deliveries.load(Ordering::Relaxed), 3);
    }
}
