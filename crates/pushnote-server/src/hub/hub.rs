//! The hub: who is connected to this server, and which topics each session is in.
//!
//! A topic is what the bus routes by, named as the bus names it (`user:42\0`, `chan:news\0`):
//! a session is in its user's topic once it has subscribed with a token, and in each channel it
//! has subscribed to. The hub keeps the bus subscribed to exactly the topics that have a
//! session here, telling it through [`Subscriptions`] when a topic gains its first session and
//! when it loses its last, so the forwarder sends a topic's messages only to the servers that
//! hold one of its sessions. What a topic's messages look like to a page is the bus's and the
//! fan-out's business, not the hub's.
//!
//! Broadcasts go to every session, through one shared list of everyone (made again only after
//! a session came or went); a topic's message goes to the topic's shared list of members (made
//! again only after one came or went; a topic of one session, most users', hands out the
//! session itself), never a scan of all sessions. Locks are held only to
//! change the registry or to copy a shared list out; sending happens after.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use pushnote::wire;
use pushnote_history::Name;
use sockjs::{CloseCode, Session};

use crate::budget::Budget;
use crate::metrics::Metrics;
use crate::room::give_back;
use crate::subscriptions::Subscriptions;

/// The registry of sessions and topics of one server.
pub struct Hub {
    sessions: Mutex<Sessions>,
    topics: Mutex<HashMap<Name, Members>>,
    bus: Arc<dyn Subscriptions>,
    metrics: Arc<Metrics>,
    /// Distinct channels with a session here, at most.
    max_channels: usize,
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
    /// The user the session subscribed as.
    user: Option<Arc<str>>,
    /// The channels the session is in, in the order it joined them, each with the user its
    /// grant was bound to (a private channel's token may admit one user's sessions only).
    channels: Vec<(Arc<str>, Option<Arc<str>>)>,
    /// Subscribe requests with a token this session has made.
    attempts: u32,
    /// What is left of the session's allowance of channel requests.
    requests: Budget,
    /// The session asked for positions.
    positions: bool,
    /// The session turned its replies on.
    replies: bool,
}

/// The sessions of one topic.
#[derive(Default)]
struct Members {
    /// In the order they joined.
    list: Vec<Session>,
    /// Sessions held back from the topic's messages (by id) until what they missed arrives.
    held: Vec<u64>,
    /// `list` in id order, less the held, as the last message found it: made again after one
    /// came, went, was held or let go.
    shared: Option<TopicSessions>,
}

/// A topic's sessions as [`Hub::members`] gives them: a user's one session as itself (handing
/// it out touches no memory but the session's), more in a shared list.
#[derive(Clone)]
pub enum TopicSessions {
    One(Session),
    Many(Arc<[Session]>),
}

impl TopicSessions {
    fn of(mut sessions: Vec<Session>) -> TopicSessions {
        match sessions.len() {
            1 => TopicSessions::One(sessions.pop().expect("one")),
            _ => TopicSessions::Many(sessions.into()),
        }
    }

    /// The sessions as a shared list.
    pub fn into_shared(self) -> Arc<[Session]> {
        match self {
            TopicSessions::One(session) => Arc::new([session]),
            TopicSessions::Many(list) => list,
        }
    }
}

impl std::ops::Deref for TopicSessions {
    type Target = [Session];

    fn deref(&self) -> &[Session] {
        match self {
            TopicSessions::One(session) => std::slice::from_ref(session),
            TopicSessions::Many(list) => list,
        }
    }
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

/// What [`Hub::join_channel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// The session receives the channel's messages now (it may have already).
    Yes,
    /// The session is in the maximum number of channels already; nothing changed.
    TooMany,
    /// The channel is new here and the server holds the maximum number of channels already;
    /// nothing changed.
    ServerFull,
    /// The session has closed meanwhile.
    Gone,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the maps consistent, so a poisoned lock is safe to reuse.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The topic of `user`; user ids are checked before they get here (tokens hold valid ones).
fn user_topic(user: &str) -> Option<Vec<u8>> {
    wire::user_topic(user).ok()
}

fn channel_topic(channel: &str) -> Option<Vec<u8>> {
    wire::channel_topic(channel).ok()
}

impl Hub {
    /// An empty hub that tells `bus` which topics it has sessions in.
    pub fn new(bus: Arc<dyn Subscriptions>, metrics: Arc<Metrics>) -> Hub {
        Hub {
            sessions: Mutex::new(Sessions::default()),
            topics: Mutex::new(HashMap::new()),
            bus,
            metrics,
            max_channels: usize::MAX,
        }
    }

    /// The same hub, holding at most `max` distinct channels: a join that would be a new
    /// channel's first session past them is refused ([`Joined::ServerFull`]).
    pub fn with_max_channels(mut self, max: usize) -> Hub {
        self.max_channels = max;
        self
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
                    channels: Vec::new(),
                    attempts: 0,
                    requests: Budget::default(),
                    positions: false,
                    replies: false,
                },
            );
            sessions.everyone.take()
        };
        self.metrics.sessions.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Counts a subscribe request with a token of `session` and returns how many it has made.
    pub fn count_attempt(&self, session: &Session) -> u32 {
        lock(&self.sessions)
            .by_id
            .get_mut(&session.id())
            .map_or(0, |e| {
                e.attempts = e.attempts.saturating_add(1);
                e.attempts
            })
    }

    /// Spends one of `session`'s channel requests, from an allowance of `burst` that grows
    /// back by `per_second`; false when none is left (or the session is gone).
    pub fn spend_request(&self, session: &Session, burst: u32, per_second: u32) -> bool {
        lock(&self.sessions)
            .by_id
            .get_mut(&session.id())
            .is_some_and(|e| {
                e.requests
                    .spend(std::time::Instant::now(), burst, per_second)
            })
    }

    /// The user `session` subscribed as, if any.
    pub fn user_of(&self, session: &Session) -> Option<Arc<str>> {
        lock(&self.sessions)
            .by_id
            .get(&session.id())
            .and_then(|e| e.user.clone())
    }

    /// Removes a session that has closed, from every topic it was in.
    pub fn remove(&self, session: &Session) {
        let (entry, _stale) = {
            let mut sessions = lock(&self.sessions);
            let entry = sessions.by_id.remove(&session.id());
            let stale = entry.as_ref().and_then(|_| sessions.everyone.take());
            (entry, stale)
        };
        let Some(entry) = entry else {
            return;
        };
        self.metrics.sessions.fetch_sub(1, Ordering::Relaxed);
        if let Some(user) = entry.user {
            self.leave_user(&user, session);
        }
        for (channel, _) in &entry.channels {
            self.leave_channel_topic(channel, session);
        }
    }

    /// Adds `session` to `topic` unless the topic has `max` sessions here already, or it has
    /// none and `gauge`, which counts topics of this kind, is at `max_topics`; false then.
    /// Subscribes the bus when it is the topic's first.
    fn join(
        &self,
        topic: &[u8],
        session: &Session,
        max: usize,
        max_topics: usize,
        gauge: &AtomicU64,
    ) -> bool {
        let mut topics = lock(&self.topics);
        let members = topics.entry(topic.into()).or_default();
        let full = members.list.is_empty() && gauge.load(Ordering::Relaxed) >= max_topics as u64;
        if full || members.list.len() >= max {
            if members.list.is_empty() && members.held.is_empty() {
                topics.remove(topic);
                give_back(&mut *topics);
            }
            return false;
        }
        members.list.push(session.clone());
        members.shared = None;
        if members.list.len() == 1 {
            // Under the lock, so subscribe and unsubscribe reach the bus in the order the
            // topic's first session came and last one went.
            self.bus.subscribe(topic);
            gauge.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Takes `session` out of `topic`; unsubscribes the bus when it was the last. False if
    /// the session was not in it.
    fn leave(&self, topic: &[u8], session: &Session, gauge: &AtomicU64) -> bool {
        let mut topics = lock(&self.topics);
        let Some(members) = topics.get_mut(topic) else {
            return false;
        };
        let before = members.list.len();
        members.list.retain(|s| s.id() != session.id());
        if members.list.len() == before {
            return false;
        }
        members.shared = None;
        if members.list.is_empty() {
            if members.held.is_empty() {
                topics.remove(topic);
                give_back(&mut *topics);
            }
            self.bus.unsubscribe(topic);
            gauge.fetch_sub(1, Ordering::Relaxed);
        }
        true
    }

    /// Holds `topic`'s messages back from `session` until [`Hub::release`]: the session joins
    /// the topic as usual (and the bus subscribes), but is left out of [`Hub::members`]
    /// meanwhile, while what it missed is fetched.
    pub fn hold(&self, topic: &[u8], session: &Session) {
        let mut topics = lock(&self.topics);
        let members = topics.entry(topic.into()).or_default();
        members.held.push(session.id());
        members.shared = None;
    }

    /// Lets `topic`'s messages reach `session` again, if it is in the topic.
    pub fn release(&self, topic: &[u8], session: &Session) {
        let mut topics = lock(&self.topics);
        let Some(members) = topics.get_mut(topic) else {
            return;
        };
        members.held.retain(|&id| id != session.id());
        members.shared = None;
        if members.list.is_empty() && members.held.is_empty() {
            topics.remove(topic);
            give_back(&mut *topics);
        }
    }

    /// Ties `session` to `user`: from now on it also receives the user's messages, unless the
    /// user has `max_per_user` sessions here already. A session already tied to another user
    /// leaves that user first.
    pub fn subscribe(&self, session: &Session, user: &str, max_per_user: usize) -> Subscribed {
        let Some(topic) = user_topic(user) else {
            return Subscribed::Gone;
        };
        match lock(&self.sessions).by_id.get(&session.id()) {
            None => return Subscribed::Gone,
            Some(entry) if entry.user.as_deref() == Some(user) => return Subscribed::Yes,
            Some(_) => {}
        }
        if !self.join(
            &topic,
            session,
            max_per_user,
            usize::MAX,
            &self.metrics.users,
        ) {
            return Subscribed::UserFull;
        }
        let previous = match lock(&self.sessions).by_id.get_mut(&session.id()) {
            Some(entry) => entry.user.replace(Arc::from(user)),
            None => {
                // Closed meanwhile: give the slot back.
                self.leave(&topic, session, &self.metrics.users);
                return Subscribed::Gone;
            }
        };
        if let Some(previous) = previous {
            self.leave_user(&previous, session);
        }
        Subscribed::Yes
    }

    /// Unties `session` from its user, if any: it keeps broadcasts and its channels.
    pub fn unsubscribe(&self, session: &Session) {
        let previous = lock(&self.sessions)
            .by_id
            .get_mut(&session.id())
            .and_then(|e| e.user.take());
        if let Some(previous) = previous {
            self.leave_user(&previous, session);
        }
    }

    fn leave_user(&self, user: &str, session: &Session) {
        if let Some(topic) = user_topic(user) {
            self.leave(&topic, session, &self.metrics.users);
        }
    }

    /// Puts `session` in `channel` (a valid name), unless it is in `max_channels` already, or
    /// the channel is new here and the server is at its channels' bound; `bound_to` is the
    /// user the session's grant admits, if the grant admits one user only. A session in the
    /// channel already stays in it once.
    pub fn join_channel(
        &self,
        session: &Session,
        channel: &str,
        max_channels: usize,
        bound_to: Option<&str>,
    ) -> Joined {
        let Some(topic) = channel_topic(channel) else {
            return Joined::Gone;
        };
        let name: Arc<str> = {
            let mut sessions = lock(&self.sessions);
            let Some(entry) = sessions.by_id.get_mut(&session.id()) else {
                return Joined::Gone;
            };
            let bound_to: Option<Arc<str>> = bound_to.map(Arc::from);
            if let Some((_, bound)) = entry.channels.iter_mut().find(|(c, _)| &**c == channel) {
                // Already in it: the newer grant holds.
                *bound = bound_to;
                return Joined::Yes;
            }
            if entry.channels.len() >= max_channels {
                return Joined::TooMany;
            }
            let name = Arc::from(channel);
            entry.channels.push((Arc::clone(&name), bound_to));
            name
        };
        let metrics = &self.metrics;
        if !self.join(
            &topic,
            session,
            usize::MAX,
            self.max_channels,
            &metrics.channels,
        ) {
            if let Some(entry) = lock(&self.sessions).by_id.get_mut(&session.id()) {
                entry.channels.retain(|(c, _)| !Arc::ptr_eq(c, &name));
            }
            return Joined::ServerFull;
        }
        metrics
            .channel_subscriptions
            .fetch_add(1, Ordering::Relaxed);
        // Closed meanwhile: `remove` may have run before the session was in the topic.
        if !lock(&self.sessions).by_id.contains_key(&session.id()) {
            self.leave_channel_topic(&name, session);
            return Joined::Gone;
        }
        Joined::Yes
    }

    /// Takes `session` out of `channel`; false if it was not in it.
    pub fn leave_channel(&self, session: &Session, channel: &str) -> bool {
        let was_in = {
            let mut sessions = lock(&self.sessions);
            let Some(entry) = sessions.by_id.get_mut(&session.id()) else {
                return false;
            };
            let before = entry.channels.len();
            entry.channels.retain(|(c, _)| &**c != channel);
            entry.channels.len() < before
        };
        if was_in {
            self.leave_channel_topic(channel, session);
        }
        was_in
    }

    fn leave_channel_topic(&self, channel: &str, session: &Session) {
        if let Some(topic) = channel_topic(channel) {
            if self.leave(&topic, session, &self.metrics.channels) {
                self.metrics
                    .channel_subscriptions
                    .fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Takes `session` out of the channels its grant admitted as another user than the one it
    /// is subscribed as now (after it changed users or unsubscribed); returns them.
    pub fn leave_channels_of_other_users(&self, session: &Session) -> Vec<Arc<str>> {
        let left: Vec<Arc<str>> = {
            let mut sessions = lock(&self.sessions);
            let Some(entry) = sessions.by_id.get_mut(&session.id()) else {
                return Vec::new();
            };
            let user = entry.user.clone();
            let mut left = Vec::new();
            entry.channels.retain(|(channel, bound)| {
                let keep = bound.is_none() || *bound == user;
                if !keep {
                    left.push(channel.clone());
                }
                keep
            });
            left
        };
        for channel in &left {
            self.leave_channel_topic(channel, session);
        }
        left
    }

    /// Notes that `session` asked for positions.
    pub fn ask_positions(&self, session: &Session) {
        if let Some(e) = lock(&self.sessions).by_id.get_mut(&session.id()) {
            e.positions = true;
        }
    }

    /// Whether `session` asked for positions (they may not have come yet).
    pub fn positions_asked(&self, session: &Session) -> bool {
        lock(&self.sessions)
            .by_id
            .get(&session.id())
            .is_some_and(|e| e.positions)
    }

    /// Turns `session`'s replies on when `asked`, and tells whether they are on: once on, they
    /// stay on (false for a session gone).
    pub fn replies(&self, session: &Session, asked: bool) -> bool {
        lock(&self.sessions)
            .by_id
            .get_mut(&session.id())
            .is_some_and(|e| {
                e.replies |= asked;
                e.replies
            })
    }

    /// Whether `session` is subscribed as a user or in a channel.
    pub fn holds_topics(&self, session: &Session) -> bool {
        lock(&self.sessions)
            .by_id
            .get(&session.id())
            .is_some_and(|e| e.user.is_some() || !e.channels.is_empty())
    }

    /// Whether `session` is in `channel`.
    pub fn in_channel(&self, session: &Session, channel: &str) -> bool {
        lock(&self.sessions)
            .by_id
            .get(&session.id())
            .is_some_and(|e| e.channels.iter().any(|(c, _)| &**c == channel))
    }

    /// The channels `session` is in.
    #[cfg(test)]
    pub fn channels_of(&self, session: &Session) -> Vec<Arc<str>> {
        lock(&self.sessions)
            .by_id
            .get(&session.id())
            .map(|e| e.channels.iter().map(|(c, _)| c.clone()).collect())
            .unwrap_or_default()
    }

    /// Every open session, in id order: the shared list, made again if a session came or went.
    pub fn everyone(&self) -> Arc<[Session]> {
        let mut sessions = lock(&self.sessions);
        let Sessions { by_id, everyone } = &mut *sessions;
        everyone
            .get_or_insert_with(|| by_id.values().map(|e| e.session.clone()).collect())
            .clone()
    }

    /// The sessions of `topic` here, in id order (the shared list, made again if one came or
    /// went); `None` when it has none.
    pub fn members(&self, topic: &[u8]) -> Option<TopicSessions> {
        let mut topics = lock(&self.topics);
        let members = topics.get_mut(topic)?;
        let (list, held) = (&members.list, &members.held);
        let shared = members
            .shared
            .get_or_insert_with(|| {
                let mut sorted: Vec<Session> = list
                    .iter()
                    .filter(|s| !held.contains(&s.id()))
                    .cloned()
                    .collect();
                sorted.sort_unstable_by_key(Session::id);
                TopicSessions::of(sorted)
            })
            .clone();
        (!shared.is_empty()).then_some(shared)
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

    /// How many topics the hub has room for without growing its map.
    #[cfg(test)]
    fn topic_room(&self) -> usize {
        lock(&self.topics).capacity()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Subscription changes as the bus would get them: `+topic` and `-topic`.
    #[derive(Default)]
    pub(crate) struct Recorder(Mutex<Vec<String>>);

    impl Recorder {
        pub(crate) fn take(&self) -> Vec<String> {
            std::mem::take(&mut *lock(&self.0))
        }
    }

    fn show(op: char, topic: &[u8]) -> String {
        format!(
            "{op}{}",
            String::from_utf8_lossy(topic).trim_end_matches('\0')
        )
    }

    impl Subscriptions for Recorder {
        fn subscribe(&self, topic: &[u8]) {
            lock(&self.0).push(show('+', topic));
        }
        fn unsubscribe(&self, topic: &[u8]) {
            lock(&self.0).push(show('-', topic));
        }
    }

    /// A hub whose subscription changes are recorded.
    pub(crate) fn hub() -> (Hub, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        let hub = Hub::new(recorder.clone(), Arc::new(Metrics::default()));
        (hub, recorder)
    }

    /// What `s` has queued, as the JSON of each message.
    pub(crate) fn texts(s: &Session) -> Vec<String> {
        s.drain().0.iter().map(|m| m.as_json().to_owned()).collect()
    }

    fn session(hub: &Hub) -> Session {
        let s = Session::new(Default::default());
        assert!(hub.add(&s, usize::MAX));
        s
    }

    fn ids(list: Option<TopicSessions>) -> Vec<u64> {
        list.map(|l| l.iter().map(Session::id).collect())
            .unwrap_or_default()
    }

    #[test]
    fn one_bus_subscription_per_topic_dropped_with_its_last_session() {
        let (hub, bus) = hub();
        let (a, b) = (session(&hub), session(&hub));
        assert_eq!(hub.subscribe(&a, "1", usize::MAX), Subscribed::Yes);
        assert_eq!(hub.subscribe(&b, "1", usize::MAX), Subscribed::Yes);
        assert_eq!(hub.join_channel(&a, "news", 10, None), Joined::Yes);
        assert_eq!(hub.join_channel(&b, "news", 10, None), Joined::Yes);
        assert_eq!(
            hub.join_channel(&b, "news", 10, None),
            Joined::Yes,
            "twice: once"
        );
        assert_eq!(bus.take(), ["+user:1", "+chan:news"]);
        assert_eq!(ids(hub.members(b"chan:news\0")), [a.id(), b.id()]);
        hub.remove(&a);
        assert!(bus.take().is_empty(), "b is still in both");
        assert!(hub.leave_channel(&b, "news"));
        assert!(!hub.leave_channel(&b, "news"));
        hub.unsubscribe(&b);
        assert_eq!(bus.take(), ["-chan:news", "-user:1"]);
        assert!(hub.members(b"chan:news\0").is_none());
        assert!(lock(&hub.topics).is_empty());
        let m = &hub.metrics;
        for gauge in [&m.users, &m.channels, &m.channel_subscriptions] {
            assert_eq!(gauge.load(Ordering::Relaxed), 0);
        }
    }

    #[test]
    fn a_held_session_is_in_its_topic_but_given_none_of_its_messages_until_let_go() {
        let (hub, bus) = hub();
        let (a, b) = (session(&hub), session(&hub));
        hub.join_channel(&a, "c", 10, None);
        hub.hold(b"chan:c\0", &b);
        hub.join_channel(&b, "c", 10, None);
        assert_eq!(ids(hub.members(b"chan:c\0")), [a.id()]);
        hub.release(b"chan:c\0", &b);
        assert_eq!(ids(hub.members(b"chan:c\0")), [a.id(), b.id()]);
        // Held alone: the bus is subscribed, and no one is given the topic's messages.
        hub.hold(b"user:2\0", &a);
        assert_eq!(hub.subscribe(&a, "2", usize::MAX), Subscribed::Yes);
        assert_eq!(bus.take(), ["+chan:c", "+user:2"]);
        assert!(hub.members(b"user:2\0").is_none());
        // Gone while held: the bus unsubscribes at once; letting go forgets the topic.
        hub.remove(&a);
        assert_eq!(bus.take(), ["-user:2"]);
        hub.release(b"user:2\0", &a);
        hub.remove(&b);
        assert!(lock(&hub.topics).is_empty());
    }

    #[test]
    fn users_and_channels_of_the_same_name_are_different_topics() {
        let (hub, bus) = hub();
        let (a, b) = (session(&hub), session(&hub));
        assert_eq!(hub.subscribe(&a, "x", usize::MAX), Subscribed::Yes);
        assert_eq!(hub.join_channel(&b, "x", 10, None), Joined::Yes);
        assert_eq!(hub.join_channel(&b, "xy", 10, None), Joined::Yes);
        assert_eq!(bus.take(), ["+user:x", "+chan:x", "+chan:xy"]);
        assert_eq!(ids(hub.members(b"user:x\0")), [a.id()]);
        assert_eq!(ids(hub.members(b"chan:x\0")), [b.id()]);
    }

    #[test]
    fn the_shared_lists_are_made_again_only_when_someone_comes_or_goes() {
        let (hub, _bus) = hub();
        let a = session(&hub);
        let first = hub.everyone();
        assert!(Arc::ptr_eq(&first, &hub.everyone()));
        let b = session(&hub);
        assert_eq!(hub.everyone().len(), 2);
        hub.join_channel(&b, "c", 10, None);
        hub.join_channel(&a, "c", 10, None);
        let members = hub.members(b"chan:c\0").unwrap();
        assert_eq!(ids(Some(members.clone())), [a.id(), b.id()], "id order");
        assert!(Arc::ptr_eq(
            &members.into_shared(),
            &hub.members(b"chan:c\0").unwrap().into_shared()
        ));
        hub.remove(&a);
        assert_eq!(ids(hub.members(b"chan:c\0")), [b.id()]);
        // One session is handed out as itself, no list made.
        assert!(matches!(
            hub.members(b"chan:c\0"),
            Some(TopicSessions::One(s)) if s.id() == b.id()
        ));
        assert_eq!(
            hub.everyone().iter().map(Session::id).collect::<Vec<_>>(),
            [b.id()]
        );
    }

    #[test]
    fn resubscribing_moves_the_session_and_leaving_cleans_up() {
        let (hub, bus) = hub();
        let a = session(&hub);
        assert_eq!(hub.subscribe(&a, "1", usize::MAX), Subscribed::Yes);
        assert_eq!(hub.subscribe(&a, "2", usize::MAX), Subscribed::Yes);
        assert_eq!(hub.user_of(&a).as_deref(), Some("2"));
        assert_eq!(bus.take(), ["+user:1", "+user:2", "-user:1"]);
        hub.remove(&a);
        assert_eq!(bus.take(), ["-user:2"]);
        assert_eq!(hub.session_count(), 0);
        assert_eq!(hub.metrics.users.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn limits_on_sessions_sessions_per_user_and_channels_per_session() {
        let (hub, bus) = hub();
        let sessions: Vec<Session> = (0..3).map(|_| Session::new(Default::default())).collect();
        assert!(hub.add(&sessions[0], 2));
        assert!(hub.add(&sessions[1], 2));
        assert!(!hub.add(&sessions[2], 2), "the server is full");
        assert_eq!(hub.session_count(), 2);
        assert_eq!(hub.subscribe(&sessions[0], "u", 1), Subscribed::Yes);
        assert_eq!(hub.subscribe(&sessions[1], "u", 1), Subscribed::UserFull);
        assert_eq!(hub.subscribe(&sessions[0], "u", 1), Subscribed::Yes);
        assert_eq!(hub.subscribe(&sessions[2], "v", 1), Subscribed::Gone);
        hub.remove(&sessions[0]);
        assert_eq!(
            hub.subscribe(&sessions[1], "u", 1),
            Subscribed::Yes,
            "a slot freed"
        );
        assert_eq!(hub.count_attempt(&sessions[1]), 1);
        assert_eq!(hub.count_attempt(&sessions[1]), 2);
        bus.take();
        let s = &sessions[1];
        assert_eq!(hub.join_channel(s, "a", 2, None), Joined::Yes);
        assert_eq!(hub.join_channel(s, "b", 2, None), Joined::Yes);
        assert_eq!(hub.join_channel(s, "c", 2, None), Joined::TooMany);
        assert_eq!(
            hub.join_channel(s, "a", 2, None),
            Joined::Yes,
            "already in it"
        );
        assert_eq!(
            bus.take(),
            ["+chan:a", "+chan:b"],
            "the refused one left no trace"
        );
        assert_eq!(&*hub.channels_of(s), [Arc::from("a"), Arc::from("b")]);
        assert_eq!(hub.join_channel(&sessions[2], "a", 2, None), Joined::Gone);
    }

    #[test]
    fn a_server_holds_at_most_its_bound_of_channels_and_gives_their_room_back() {
        let recorder = Arc::new(Recorder::default());
        let hub = Hub::new(recorder.clone(), Arc::new(Metrics::default())).with_max_channels(2);
        let (a, b) = (session(&hub), session(&hub));
        assert_eq!(hub.join_channel(&a, "x", 10, None), Joined::Yes);
        assert_eq!(hub.join_channel(&a, "y", 10, None), Joined::Yes);
        assert_eq!(hub.join_channel(&b, "z", 10, None), Joined::ServerFull);
        assert!(
            hub.channels_of(&b).is_empty(),
            "the refused one left no trace"
        );
        assert_eq!(
            hub.join_channel(&b, "x", 10, None),
            Joined::Yes,
            "one that exists"
        );
        assert_eq!(recorder.take(), ["+chan:x", "+chan:y"]);
        hub.leave_channel(&a, "y");
        assert_eq!(
            hub.join_channel(&b, "z", 10, None),
            Joined::Yes,
            "room again"
        );
        assert_eq!(hub.metrics.channels.load(Ordering::Relaxed), 2);
        hub.remove(&a);
        hub.remove(&b);

        // Thousands of channels, all left: the map's room goes back.
        let hub = Hub::new(recorder.clone(), Arc::new(Metrics::default()));
        let c = session(&hub);
        for i in 0..10_000 {
            assert_eq!(
                hub.join_channel(&c, &format!("c{i}"), 10_000, None),
                Joined::Yes
            );
        }
        assert!(hub.topic_room() >= 10_000);
        hub.remove(&c);
        assert_eq!(hub.metrics.channels.load(Ordering::Relaxed), 0);
        assert!(
            hub.topic_room() <= crate::room::MIN_ROOM,
            "room for {} left",
            hub.topic_room()
        );
    }

    #[test]
    fn channels_granted_to_one_user_go_when_the_session_is_no_longer_that_user() {
        let (hub, bus) = hub();
        let a = session(&hub);
        assert_eq!(hub.subscribe(&a, "1", usize::MAX), Subscribed::Yes);
        assert_eq!(
            hub.join_channel(&a, "private-1", 10, Some("1")),
            Joined::Yes
        );
        assert_eq!(hub.join_channel(&a, "private-all", 10, None), Joined::Yes);
        assert!(hub.leave_channels_of_other_users(&a).is_empty());
        assert_eq!(hub.subscribe(&a, "2", usize::MAX), Subscribed::Yes);
        assert_eq!(
            &*hub.leave_channels_of_other_users(&a),
            [Arc::from("private-1")]
        );
        assert_eq!(&*hub.channels_of(&a), [Arc::from("private-all")]);
        assert_eq!(
            bus.take(),
            [
                "+user:1",
                "+chan:private-1",
                "+chan:private-all",
                "+user:2",
                "-user:1",
                "-chan:private-1"
            ]
        );
    }
}
