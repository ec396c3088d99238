//! The hub: who is connected to this server, and which user each session is.
//!
//! Broadcasts go to every session, through one shared list of everyone (made again only after
//! a session came or went) that the `fanout` module sweeps; a targeted message is a hash lookup
//! (user → sessions), never a scan. Locks are held only to copy session handles out; sending
//! happens after, and a send never waits (it queues a shared message on the session's bounded
//! queue or, when nothing more is waiting, hands the message's shared frame to a socket that
//! takes it at once, see [`Pace`]). The hub keeps the bus subscribed to exactly the users that
//! have a session here (one subscription per user, made when its first session subscribes and
//! dropped when its last leaves), so the forwarder sends a user's messages only to the servers
//! that hold that user.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use pushnote::wire;
use sockjs::{CloseCode, Message, SendError, Session};

use crate::bus::BusControl;
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

/// The registry of sessions and users of one server.
pub struct Hub {
    sessions: Mutex<Sessions>,
    users: Mutex<HashMap<Arc<str>, Vec<Session>>>,
    bus: Arc<BusControl>,
    metrics: Arc<Metrics>,
}

/// Every open session, and the list broadcasts go through.
#[derive(Default)]
struct Sessions {
    /// By session id, which is the order sessions were opened in: a broadcast writes their
    /// sockets in that order, which is also the order their memory was allocated in, the
    /// kernel's included. A broadcast to 10,000 sessions at light load costs about a tenth
    /// less CPU that way than in a hash map's order (docs/BENCHMARKS.md).
    by_id: BTreeMap<u64, Entry>,
    /// Every session, in id order, as the last broadcast found them. The first broadcast after
    /// a session came or went makes it again; the others copy no session handles at all.
    everyone: Option<Arc<[Session]>>,
}

struct Entry {
    session: Session,
    user: Option<Arc<str>>,
    /// Subscribe requests this session has made.
    attempts: u32,
}

/// What [`Hub::subscribe`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribed {
    /// The session receives the user's messages now.
    Yes,
    /// The user already has the maximum number of sessions here; nothing changed.
    UserFull,
    /// The session has closed meanwhile.
    Gone,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the maps consistent, so a poisoned lock is safe to reuse.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// An empty hub that subscribes users on `bus`.
    pub fn new(bus: Arc<BusControl>, metrics: Arc<Metrics>) -> Hub {
        Hub {
            sessions: Mutex::new(Sessions::default()),
            users: Mutex::new(HashMap::new()),
            bus,
            metrics,
        }
    }

    /// Registers a new session, unless `max_sessions` are open already; it receives
    /// broadcasts from now on. False (and nothing registered) when the server is full.
    pub fn add(&self, session: &Session, max_sessions: usize) -> bool {
        // The old list of everyone is let go after the lock: it may hold the last handles.
        let _stale = {
            let mut sessions = lock(&self.sessions);
            if sessions.by_id.len() >= max_sessions {
                return false;
            }
            sessions.by_id.insert(
                session.id(),
                Entry {
                    session: session.clone(),
                    user: None,
                    attempts: 0,
                },
            );
            sessions.everyone.take()
        };
        self.metrics.sessions.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Counts a subscribe request of `session` and returns how many it has made.
    pub fn count_attempt(&self, session: &Session) -> u32 {
        lock(&self.sessions)
            .by_id
            .get_mut(&session.id())
            .map_or(0, |e| {
                e.attempts = e.attempts.saturating_add(1);
                e.attempts
            })
    }

    /// Removes a session that has closed.
    pub fn remove(&self, session: &Session) {
        let (entry, _stale) = {
            let mut sessions = lock(&self.sessions);
            let entry = sessions.by_id.remove(&session.id());
            let stale = entry.as_ref().and_then(|_| sessions.everyone.take());
            (entry, stale)
        };
        if let Some(entry) = entry {
            self.metrics.sessions.fetch_sub(1, Ordering::Relaxed);
            if let Some(user) = entry.user {
                self.detach(&user, session);
            }
        }
    }

    /// Ties `session` to `user`: from now on it also receives the user's messages, unless the
    /// user has `max_per_user` sessions here already. A session already tied to another user
    /// leaves that user first.
    pub fn subscribe(&self, session: &Session, user: &str, max_per_user: usize) -> Subscribed {
        let Ok(topic) = wire::user_topic(user) else {
            return Subscribed::Gone;
        };
        match lock(&self.sessions).by_id.get(&session.id()) {
            None => return Subscribed::Gone,
            Some(entry) if entry.user.as_deref() == Some(user) => return Subscribed::Yes,
            Some(_) => {}
        }
        // Take the user's slot first, under the one lock that counts them.
        let first = {
            let mut users = lock(&self.users);
            let list = users.entry(Arc::from(user)).or_default();
            if list.len() >= max_per_user {
                if list.is_empty() {
                    users.remove(user);
                }
                return Subscribed::UserFull;
            }
            list.push(session.clone());
            let first = list.len() == 1;
            if first {
                // Under the lock, so subscribe and unsubscribe reach the bus in the order the
                // user's first session came and last one went.
                self.bus.subscribe(&topic);
            }
            first
        };
        let previous = match lock(&self.sessions).by_id.get_mut(&session.id()) {
            Some(entry) => entry.user.replace(Arc::from(user)),
            None => {
                // Closed meanwhile: give the slot back.
                let mut users = lock(&self.users);
                if let Some(list) = users.get_mut(user) {
                    list.retain(|s| s.id() != session.id());
                    if list.is_empty() {
                        users.remove(user);
                        self.bus.unsubscribe(&topic);
                    }
                }
                return Subscribed::Gone;
            }
        };
        if first {
            self.metrics.users.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(previous) = previous {
            self.detach(&previous, session);
        }
        Subscribed::Yes
    }

    /// Unties `session` from its user, if any: it goes back to broadcasts only.
    pub fn unsubscribe(&self, session: &Session) {
        let previous = lock(&self.sessions)
            .by_id
            .get_mut(&session.id())
            .and_then(|e| e.user.take());
        if let Some(previous) = previous {
            self.detach(&previous, session);
        }
    }

    fn detach(&self, user: &str, session: &Session) {
        let last = {
            let mut users = lock(&self.users);
            match users.get_mut(user) {
                Some(list) => {
                    list.retain(|s| s.id() != session.id());
                    let empty = list.is_empty();
                    if empty {
                        users.remove(user);
                        if let Ok(topic) = wire::user_topic(user) {
                            self.bus.unsubscribe(&topic);
                        }
                    }
                    empty
                }
                None => false,
            }
        };
        if last {
            self.metrics.users.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Every open session, in id order: the shared list, made again if a session came or went.
    pub fn everyone(&self) -> Arc<[Session]> {
        let mut sessions = lock(&self.sessions);
        let Sessions { by_id, everyone } = &mut *sessions;
        everyone
            .get_or_insert_with(|| by_id.values().map(|e| e.session.clone()).collect())
            .clone()
    }

    /// Puts the sessions of `user` on this server in `out`, which is cleared first (and reused
    /// between messages, to avoid allocating a list per message).
    pub fn sessions_of(&self, user: &str, out: &mut Vec<Session>) {
        out.clear();
        if let Some(list) = lock(&self.users).get(user) {
            out.extend(list.iter().cloned());
        }
        if out.is_empty() {
            self.metrics
                .bus_user_messages_unrouted
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends `message` to each of `sessions` (the sessions of a user, from
    /// [`Hub::sessions_of`]; broadcasts go through the `fanout` module).
    pub fn send(&self, message: &Message, sessions: &[Session], pace: Pace<'_>) {
        let mut delivered = 0;
        let mut now = match pace {
            Pace::Now { more_waiting } => Some(more_waiting),
            Pace::Queued => None,
        };
        for (i, s) in sessions.iter().enumerate() {
            if let Some(more_waiting) = now {
                if i % CHECK_EVERY == CHECK_EVERY - 1 && more_waiting() {
                    now = None;
                }
            }
            let sent = match now {
                Some(_) => s.send_now(message.clone()),
                None => s.send(message.clone()),
            };
            delivered += counted(&self.metrics, s, sent, 1);
        }
        self.metrics
            .deliveries
            .fetch_add(delivered, Ordering::Relaxed);
    }

    /// Closes every session with `code` (for example at shutdown).
    pub fn close_all(&self, code: CloseCode) {
        for s in self.everyone().iter() {
            s.close(code);
        }
    }

    /// How many sessions are open.
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).by_id.len()
    }
}

/// What a send of `messages` messages to `session` delivered: all of them, or none when the
/// session was closed, as too slow (counted and logged here) or before.
pub(crate) fn counted(
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
pub(crate) mod tests {
    use super::*;
    use crate::bus::{Bus, BusMode};

    /// A hub whose bus is opened but never run; keep the bus as long as the hub.
    pub(crate) fn hub() -> (Hub, Bus) {
        let (bus, control) =
            Bus::open("inproc://hub-test-unused", BusMode::Bind, 1000, 1 << 20).unwrap();
        (Hub::new(control, Arc::new(Metrics::default())), bus)
    }

    /// What `s` has queued, as the JSON of each message.
    pub(crate) fn texts(s: &Session) -> Vec<String> {
        s.drain().0.iter().map(|m| m.as_json().to_owned()).collect()
    }

    fn send_to_user(hub: &Hub, user: &str, message: &str, pace: Pace<'_>) {
        let mut sessions = Vec::new();
        hub.sessions_of(user, &mut sessions);
        hub.send(&Message::json(message), &sessions, pace);
    }

    #[test]
    fn targeted_messages_reach_only_their_user() {
        let (hub, _bus) = hub();
        let (a, b) = (
            Session::new(Default::default()),
            Session::new(Default::default()),
        );
        for s in [&a, &b] {
            assert!(hub.add(s, usize::MAX));
        }
        assert_eq!(hub.subscribe(&a, "1", usize::MAX), Subscribed::Yes);
        assert_eq!(hub.subscribe(&b, "10", usize::MAX), Subscribed::Yes);
        send_to_user(&hub, "1", "\"one\"", Pace::Queued);
        assert_eq!(texts(&a), ["\"one\""]);
        assert!(texts(&b).is_empty());
        send_to_user(&hub, "2", "\"nobody\"", Pace::Queued);
        assert_eq!(
            hub.metrics
                .bus_user_messages_unrouted
                .load(Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn the_list_of_everyone_is_shared_until_a_session_comes_or_goes() {
        let (hub, _bus) = hub();
        let (a, b) = (
            Session::new(Default::default()),
            Session::new(Default::default()),
        );
        assert!(hub.add(&a, usize::MAX));
        let first = hub.everyone();
        assert!(Arc::ptr_eq(&first, &hub.everyone()));
        assert!(hub.add(&b, usize::MAX));
        let second = hub.everyone();
        assert_eq!(second.len(), 2);
        hub.remove(&a);
        let third = hub.everyone();
        assert_eq!(third.iter().map(Session::id).collect::<Vec<_>>(), [b.id()]);
        assert!(!Arc::ptr_eq(&second, &third));
    }

    #[test]
    fn resubscribing_moves_the_session_and_leaving_cleans_up() {
        let (hub, _bus) = hub();
        let a = Session::new(Default::default());
        assert!(hub.add(&a, usize::MAX));
        assert_eq!(hub.subscribe(&a, "1", usize::MAX), Subscribed::Yes);
        assert_eq!(hub.subscribe(&a, "2", usize::MAX), Subscribed::Yes);
        send_to_user(&hub, "1", "1", Pace::Queued);
        send_to_user(&hub, "2", "2", Pace::Queued);
        assert_eq!(texts(&a), ["2"]);
        hub.unsubscribe(&a);
        send_to_user(&hub, "2", "2", Pace::Queued);
        assert!(texts(&a).is_empty());
        hub.remove(&a);
        assert_eq!(hub.session_count(), 0);
        assert!(lock(&hub.users).is_empty());
        assert_eq!(hub.metrics.users.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_round_of_direct_writes_looks_for_more_messages_and_then_queues_the_rest() {
        let (hub, _bus) = hub();
        let sessions: Vec<Session> = (0..3 * CHECK_EVERY)
            .map(|_| Session::new(Default::default()))
            .collect();
        for s in &sessions {
            assert!(hub.add(s, usize::MAX));
            assert_eq!(hub.subscribe(s, "many", usize::MAX), Subscribed::Yes);
        }
        let mut all = Vec::new();
        hub.sessions_of("many", &mut all);
        // Never more: asked once per CHECK_EVERY sessions, not per session, not never.
        let asked = std::cell::Cell::new(0);
        let never = || {
            asked.set(asked.get() + 1);
            false
        };
        hub.send(
            &Message::json("0"),
            &all,
            Pace::Now {
                more_waiting: &never,
            },
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
        hub.send(
            &Message::json("1"),
            &all,
            Pace::Now {
                more_waiting: &more_waiting,
            },
        );
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
    fn a_slow_session_is_closed_without_touching_the_others() {
        let (hub, _bus) = hub();
        let limits = sockjs::QueueLimits {
            max_messages: 2,
            max_bytes: 1 << 20,
        };
        let slow = Session::new(limits);
        let fine = Session::new(Default::default());
        for s in [&slow, &fine] {
            assert!(hub.add(s, usize::MAX));
            assert_eq!(hub.subscribe(s, "u", usize::MAX), Subscribed::Yes);
        }
        for _ in 0..3 {
            send_to_user(&hub, "u", "0", Pace::Queued);
        }
        assert_eq!(slow.drain(), (vec![], Some(CloseCode::SLOW)));
        assert_eq!(texts(&fine).len(), 3);
        assert_eq!(hub.metrics.slow_closed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn limits_on_sessions_and_sessions_per_user() {
        let (hub, _bus) = hub();
        let sessions: Vec<Session> = (0..3).map(|_| Session::new(Default::default())).collect();
        assert!(hub.add(&sessions[0], 2));
        assert!(hub.add(&sessions[1], 2));
        assert!(!hub.add(&sessions[2], 2), "the server is full");
        assert_eq!(hub.session_count(), 2);
        assert_eq!(hub.subscribe(&sessions[0], "u", 1), Subscribed::Yes);
        assert_eq!(hub.subscribe(&sessions[1], "u", 1), Subscribed::UserFull);
        assert_eq!(
            hub.subscribe(&sessions[0], "u", 1),
            Subscribed::Yes,
            "already there"
        );
        assert_eq!(hub.subscribe(&sessions[2], "v", 1), Subscribed::Gone);
        hub.remove(&sessions[0]);
        assert_eq!(
            hub.subscribe(&sessions[1], "u", 1),
            Subscribed::Yes,
            "a slot freed"
        );
        assert_eq!(hub.count_attempt(&sessions[1]), 1);
        assert_eq!(hub.count_attempt(&sessions[1]), 2);
    }
}
