//! Presence channels on this server: who is in them (its own sessions' members, and every
//! other server's as they announce them over the bus), what pages are told as members come and
//! go, and what this server tells the others (PROTOCOL §2d and §6, "Presence").
//!
//! One lock holds it all: the sessions' joins and leaves, the messages of other servers (taken
//! in by the bus thread), and a thread of its own that, every `--presence-interval`, sends out
//! what changed, put together: one `pushnote:presence` message per channel to its sessions
//! here, one presence message per channel to the other servers; and heartbeats, the whole
//! state when asked for it, and the forgetting of servers gone silent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pushnote::member::Member;
use pushnote_presence::message::{self, Message};
use pushnote_presence::query::members_json;
use pushnote_presence::{Action, Info, Local, Pending, ServerId, View};
use sockjs::Session;

use crate::broker::Broker;
use crate::config::PresenceConfig;
use crate::metrics::Metrics;
use crate::protocol::{self, Outcome};

/// How often the whole state is sent at most, however often asked.
const DUMP_EVERY: Duration = Duration::from_secs(1);

/// Why a join of a presence channel was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The channel has `--presence-max-members` members, and this would be one more.
    Full,
    /// The member's info is over `--presence-max-info` bytes.
    InfoTooLarge,
    /// The session is in `--presence-max-channels` presence channels already.
    TooManyChannels,
}

/// Presence on this server.
pub struct Presence {
    config: PresenceConfig,
    /// Whether there are other servers to tell (a forwarder or Redis; not `--single`).
    shares: bool,
    broker: Arc<dyn Broker>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    wake: Condvar,
    stop: AtomicBool,
}

/// A session's presence channels, each with the user it is in it as.
type Joined = Vec<(Arc<str>, Arc<str>)>;

struct State {
    me: ServerId,
    view: View,
    local: Local,
    /// This server's changes not yet told to the others.
    told: Pending,
    /// Each session's presence channels, and the user it is in each as.
    sessions: HashMap<u64, Joined>,
    /// Each channel's sessions here, which are told of its changes.
    watchers: HashMap<Arc<str>, Vec<Session>>,
    /// The last number this server gave a message.
    n: u64,
    /// Someone asked for the whole state (or this server started or came back).
    dump_due: bool,
    dumped: Option<Instant>,
    /// Servers to ask for their whole state.
    asks: Vec<ServerId>,
    /// Ask every server for theirs.
    ask_all: bool,
    beat: Option<Instant>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Presence {
    /// Presence for a server whose engine is reached through `broker`; `shares` when the
    /// engine carries presence messages to other servers.
    pub fn new(
        config: PresenceConfig,
        shares: bool,
        broker: Arc<dyn Broker>,
        metrics: Arc<Metrics>,
    ) -> Presence {
        // Any id but the forwarder's.
        let me = pushnote_history::history::fresh_seed().max(1);
        Presence {
            config,
            shares,
            broker,
            metrics,
            state: Mutex::new(State {
                me,
                view: View::new(me, config.max_known, true),
                local: Local::default(),
                told: Pending::default(),
                sessions: HashMap::new(),
                watchers: HashMap::new(),
                n: 0,
                dump_due: true,
                dumped: None,
                asks: Vec::new(),
                ask_all: true,
                beat: None,
            }),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        }
    }

    /// The bounds presence channels are kept within.
    pub fn limits(&self) -> PresenceConfig {
        self.config
    }

    /// Puts `session` in presence channel `channel` as `member`, unless a bound refuses it.
    pub fn join(&self, session: &Session, channel: &str, member: &Member) -> Result<(), Refused> {
        let refuse = |why: Refused| {
            self.metrics.presence_refused[why as usize].fetch_add(1, Ordering::Relaxed);
            Err(why)
        };
        if member.info.len() > self.config.max_info_bytes {
            return refuse(Refused::InfoTooLarge);
        }
        let mut state = lock(&self.state);
        let state = &mut *state;
        let joined = state.sessions.get(&session.id());
        match joined.and_then(|j| j.iter().find(|(c, _)| &**c == channel)) {
            Some((_, user)) if **user == *member.user => return Ok(()), // in it already
            // In it as another member: it is that one no longer.
            Some(_) => state.leave(session.id(), channel),
            None => {}
        }
        let joined = state.sessions.get(&session.id());
        if joined.map_or(0, Vec::len) >= self.config.max_channels {
            return refuse(Refused::TooManyChannels);
        }
        if state.view.info(channel, &member.user).is_none()
            && state.view.count(channel) >= self.config.max_members
        {
            return refuse(Refused::Full);
        }
        self.metrics.presence_joins.fetch_add(1, Ordering::Relaxed);
        let channel: Arc<str> = Arc::from(channel);
        let user: Arc<str> = Arc::from(member.user.as_str());
        state.set_local(&channel, &user, |local| {
            local.join(
                &channel,
                &user,
                session.id(),
                Arc::from(member.info.as_str()),
            )
        });
        state
            .sessions
            .entry(session.id())
            .or_default()
            .push((channel.clone(), user));
        state
            .watchers
            .entry(channel)
            .or_default()
            .push(session.clone());
        Ok(())
    }

    /// The reply to `session`'s join of `channel` as `member`, with the channel's members now.
    pub fn joined(
        &self,
        channel: &str,
        member: &Member,
        outcome: Option<Outcome>,
    ) -> sockjs::Message {
        // A copy of the list under the lock; encoded after it, so that joins, leaves and the
        // bus are not held up by a large channel's list.
        let members = lock(&self.state).view.snapshot(channel);
        let members = members_json(members.iter().map(|(u, i)| (&**u, &**i)));
        protocol::joined_presence(channel, outcome, &member.to_json(), &members)
    }

    /// Takes `session` out of presence channel `channel`, if it is in it.
    pub fn leave(&self, session: &Session, channel: &str) {
        let mut state = lock(&self.state);
        state.leave(session.id(), channel);
    }

    /// Takes `session` out of every presence channel (it closed).
    pub fn remove(&self, session: &Session) {
        let mut state = lock(&self.state);
        let channels: Vec<Arc<str>> = match state.sessions.get(&session.id()) {
            Some(joined) => joined.iter().map(|(c, _)| c.clone()).collect(),
            None => return,
        };
        for channel in channels {
            state.leave(session.id(), &channel);
        }
    }

    /// Takes `session` out of the presence channels it is in as another user than `user`
    /// (it subscribed as `user`); the channels it left.
    pub fn leave_other_users(&self, session: &Session, user: &str) -> Vec<Arc<str>> {
        let mut state = lock(&self.state);
        let others: Vec<Arc<str>> = match state.sessions.get(&session.id()) {
            Some(joined) => joined
                .iter()
                .filter(|(_, u)| &**u != user)
                .map(|(c, _)| c.clone())
                .collect(),
            None => return Vec::new(),
        };
        for channel in &others {
            state.leave(session.id(), channel);
        }
        others
    }

    /// `channel`'s members (user, info), in no order: what `GET /presence` answers with.
    pub fn members(&self, channel: &str) -> Vec<(Arc<str>, Info)> {
        lock(&self.state).view.snapshot(channel)
    }

    /// Takes in a presence message of another server (the bus thread).
    pub fn receive(&self, body: &[u8]) {
        self.metrics
            .presence_received
            .fetch_add(1, Ordering::Relaxed);
        let Ok(m) = Message::decode(body) else {
            self.metrics
                .presence_malformed
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut state = lock(&self.state);
        match state.view.receive(m, Instant::now()) {
            Some(Action::Ask(server)) => {
                self.metrics.presence_asked.fetch_add(1, Ordering::Relaxed);
                state.asks.push(server);
            }
            Some(Action::Dump) => state.dump_due = true,
            None => {}
        }
    }

    /// The bus came back after it was lost: what was sent meanwhile went nowhere, so this
    /// server tells its whole state again and asks every other server for theirs.
    pub fn reconnected(&self) {
        let mut state = lock(&self.state);
        // Unheard while this server was away from the bus: given the timeout again.
        state.view.heard_all(Instant::now());
        state.dump_due = true;
        state.dumped = None;
        state.ask_all = true;
        drop(state);
        self.wake.notify_one();
    }

    /// Starts the thread that sends changes out every `--presence-interval`.
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<JoinHandle<()>> {
        let presence = self.clone();
        std::thread::Builder::new()
            .name("pushnote-presence".into())
            .spawn(move || presence.run())
    }

    /// Stops the thread.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    fn run(&self) {
        let heartbeat = pushnote_presence::heartbeat_every(self.config.timeout);
        let tick = self.config.interval.min(heartbeat);
        let mut state = lock(&self.state);
        while !self.stop.load(Ordering::Relaxed) {
            let out = self.turn(&mut state, Instant::now(), heartbeat);
            drop(state);
            for body in &out {
                self.broker.share(body);
            }
            self.metrics
                .presence_sent
                .fetch_add(out.len() as u64, Ordering::Relaxed);
            let bytes: usize = out.iter().map(Vec::len).sum();
            self.metrics
                .presence_sent_bytes
                .fetch_add(bytes as u64, Ordering::Relaxed);
            state = lock(&self.state);
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            state = self
                .wake
                .wait_timeout(state, tick)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// One turn: pages told what changed, and what is to go to the other servers.
    fn turn(&self, state: &mut State, now: Instant, heartbeat: Duration) -> Vec<Vec<u8>> {
        // While this server is away from the bus it hears no one: no one is taken for dead.
        if self.shares && self.metrics.bus_connected.load(Ordering::Relaxed) == 0 {
            state.view.heard_all(now);
        }
        let expired = state.view.expire(now, self.config.timeout);
        self.metrics
            .presence_expired
            .fetch_add(expired as u64, Ordering::Relaxed);
        for changes in state.view.take_changes() {
            let Some(sessions) = state.watchers.get(&changes.channel) else {
                continue;
            };
            let added = members_json(changes.added.iter().map(|(u, i)| (&**u, &**i)));
            let message = protocol::presence_changed(&changes.channel, &added, &changes.removed);
            for session in sessions {
                // A full queue closes the session; its leave comes with its close.
                let _ = session.send(message.clone());
            }
            self.metrics
                .presence_events
                .fetch_add(sessions.len() as u64, Ordering::Relaxed);
        }
        let m = &self.metrics;
        m.presence_members
            .store(state.view.known() as u64, Ordering::Relaxed);
        m.presence_channels
            .store(state.view.channels() as u64, Ordering::Relaxed);
        m.presence_servers
            .store(state.view.servers() as u64, Ordering::Relaxed);
        m.presence_dropped
            .store(state.view.dropped(), Ordering::Relaxed);
        if !self.shares {
            state.told = Pending::default();
            return Vec::new();
        }
        state.outgoing(now, heartbeat)
    }
}

impl State {
    /// Changes this server's own holding of `user` in `channel` with `change`, and notes it
    /// for the view and the other servers.
    fn set_local(&mut self, channel: &Arc<str>, user: &Arc<str>, change: impl FnOnce(&mut Local)) {
        let before = self.local.info(channel, user);
        change(&mut self.local);
        let after = self.local.info(channel, user);
        if before != after {
            self.told.note(channel, user, before.as_ref());
            self.view.set(self.me, channel, user, after);
        }
    }

    fn leave(&mut self, session: u64, channel: &str) {
        let Some(joined) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(i) = joined.iter().position(|(c, _)| &**c == channel) else {
            return;
        };
        let (channel, user) = joined.swap_remove(i);
        if joined.is_empty() {
            self.sessions.remove(&session);
        }
        self.set_local(&channel, &user, |local| {
            local.leave(&channel, &user, session)
        });
        if let Some(sessions) = self.watchers.get_mut(&channel) {
            sessions.retain(|s| s.id() != session);
            if sessions.is_empty() {
                self.watchers.remove(&channel);
            }
        }
    }

    /// What goes to the other servers now: this server's changes, its whole state if due,
    /// its requests, a heartbeat if due.
    fn outgoing(&mut self, now: Instant, heartbeat: Duration) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let me = self.me;
        let local = &self.local;
        for changes in self.told.take(|c, u| local.info(c, u)) {
            let added = changes
                .added
                .iter()
                .map(|(u, i)| (u.to_string(), i.to_string()))
                .collect();
            let removed = changes.removed.iter().map(|u| u.to_string()).collect();
            for m in message::members(me, &mut self.n, &changes.channel, added, removed) {
                out.push(m.encode());
            }
        }
        let may_dump = self
            .dumped
            .is_none_or(|t| now.saturating_duration_since(t) >= DUMP_EVERY);
        if self.dump_due && may_dump {
            self.dump_due = false;
            self.dumped = Some(now);
            self.n += 1;
            out.push(
                Message::Reset {
                    server: me,
                    n: self.n,
                }
                .encode(),
            );
            for (channel, members) in self.local.state() {
                for m in message::members(me, &mut self.n, channel, members, Vec::new()) {
                    out.push(m.encode());
                }
            }
            // The heartbeat after the state says it came whole.
            self.beat = None;
        }
        if std::mem::take(&mut self.ask_all) {
            self.asks.clear();
            self.n += 1;
            out.push(
                Message::Query {
                    server: me,
                    n: self.n,
                    to: None,
                }
                .encode(),
            );
        }
        for server in std::mem::take(&mut self.asks) {
            self.n += 1;
            out.push(
                Message::Query {
                    server: me,
                    n: self.n,
                    to: Some(server),
                }
                .encode(),
            );
        }
        if self
            .beat
            .is_some_and(|t| now.saturating_duration_since(t) < heartbeat)
        {
            return out;
        }
        self.beat = Some(now);
        out.push(
            Message::Heartbeat {
                server: me,
                n: self.n,
            }
            .encode(),
        );
        out
    }
}
