//! Broadcasts: one log of them, which every session reads through a cursor of its own.
//!
//! A broadcast goes to every session here. Queuing it on each session would cost a lock and a
//! queue push per session per broadcast, and under load most sessions get several broadcasts
//! in the time it takes to write to all of them once. Instead the sessions are split into
//! shards, one per core (a session's shard is its id modulo their number), each with a
//! sweeper thread of its own and a log of the broadcasts its sessions have not all had. The
//! bus thread only hands each message to the shards' inboxes, which takes it a moment; the
//! socket writes happen on the sweepers, in parallel.
//!
//! A sweeper goes through its sessions in the order they were opened (the order their memory,
//! the kernel's included, was allocated in). Each session is given everything it has not had
//! yet as one [`Burst`]: one frame, built once and shared by every session that is as far
//! behind, written to a WebSocket session's socket at once when the socket takes it, and
//! queued for the session's writer otherwise ([`Session::send_burst_now`]). Between two
//! sessions the sweeper looks at its inbox, so a broadcast that comes during a sweep reaches
//! the sessions ahead in this sweep and the ones behind in the next, which starts at once: a
//! message waits about one sweep at most, however many came meanwhile. Sessions that join
//! during a sweep have had nothing yet and start at the log's end.
//!
//! A topic's message (a user's, a channel's) must come after the broadcasts published before
//! it. A large topic's message, one for more than [`DIRECT_MEMBERS`] sessions and for at least
//! one in [`SWEPT_SHARE`] of them all, joins the broadcasts in the log, marked with the
//! topic's sessions: a sweep gives each session what of the log is for it, put together in
//! one frame shared by the sessions given the same, as broadcasts are. A smaller topic's
//! message is written where a sweep would visit many sessions for few: by the bus thread
//! itself when the shard's sweeper is idle (its sessions have had everything in the log then);
//! otherwise through the shard's inbox, the sweeper first queueing what each of the topic's
//! sessions has not had of the log ([`Sweep::catch_up`]), then the message.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use sockjs::{Burst, Form, Message, Session};

use crate::delivery::{self, counted, Pace};
use crate::hub::{Hub, TopicSessions};
use crate::metrics::Metrics;
use crate::protocol::Why;

/// How many sessions a sweeper visits at most before it looks at its inbox, when nothing
/// has told it to look sooner.
pub const SWEEP_STEP: usize = 256;

/// The largest burst of several messages written to a socket from a sweeper (one message is,
/// whatever its size). Larger ones go through the session's queue, whose writer waits for a
/// slow socket and whose limits then apply: what a socket does not take at once is kept for
/// its writer outside those limits, so that much is bounded by one message or this.
const DIRECT_BURST_BYTES: usize = 64 * 1024;

/// The most sessions of one topic the bus thread writes itself when their shard's sweeper is
/// idle; a topic with more is handed to the sweepers, which write it in parallel.
pub const DIRECT_MEMBERS: usize = 64;

/// A large topic's message is swept, as broadcasts are, when at least one session in this
/// many is the topic's: a sweep visits every session of its shard, and a visit to a session
/// the message is not for costs a lookup in the topic's list, far less than a write.
pub const SWEPT_SHARE: usize = 8;

/// The shards of the sessions, and their sweeper threads.
pub struct Fanout {
    shards: Vec<Arc<Shard>>,
    sweepers: Vec<JoinHandle<()>>,
}

/// What the bus thread hands a sweeper.
enum Item {
    /// A message for the log, with `everyone` open when it was read from the bus.
    Swept(Entry, Arc<[Session]>),
    /// A topic's message to the topic's sessions (those of this shard among them).
    ToMembers(Message, TopicSessions),
    /// Messages for one session, in order with the broadcasts before them.
    ToSession {
        session: Session,
        messages: Vec<Message>,
        order: InOrder,
    },
}

/// How messages for one session go with the broadcasts handed on before them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InOrder {
    /// After them.
    After,
    /// After them, the session taking every message in its second form (with its position)
    /// from the first of them on that it has not had yet.
    AfterWithPositions,
    /// Instead of those the session has not had yet (the messages give them again, from
    /// history), the session taking every message in its second form from these on.
    InsteadWithPositions,
}

impl InOrder {
    /// The order of a request's answer: `start` (a `positions` request) turns positions on,
    /// after the broadcasts on their way or, where the history gave them again (`recovered`,
    /// or another epoch's position answered from the current epoch's first), instead of them.
    pub fn of(start: bool, recovered: Option<Result<(), Why>>) -> InOrder {
        let from_history = matches!(recovered, Some(Ok(()) | Err(Why::Epoch)));
        match (start, from_history) {
            (false, _) => InOrder::After,
            (true, true) => InOrder::InsteadWithPositions,
            (true, false) => InOrder::AfterWithPositions,
        }
    }

    /// Turns positions on for `session` where this order says so.
    fn set_form_of(self, session: &Session) {
        if self != InOrder::After {
            session.set_form(Form::Second);
        }
    }
}

/// One shard: its inbox, and how its sweeper is woken.
struct Shard {
    /// This shard's number, and how many there are.
    place: Place,
    inbox: Mutex<Inbox>,
    /// Wakes the sweeper: something came, or the server stops.
    wake: Condvar,
    /// The inbox has something: the sweeper looks at it between two sessions.
    pending: AtomicBool,
    /// The sweeper has done everything it was handed and sleeps: every session of the shard
    /// has had every broadcast, and nothing is written to them until the bus thread hands
    /// the shard something again. A user's message can then be written by the bus thread
    /// itself, without the hop to the sweeper.
    idle: AtomicBool,
}

#[derive(Default)]
struct Inbox {
    items: Vec<Item>,
    /// The server is stopping: the sweeper ends.
    stopping: bool,
}

/// Which sessions a shard holds: those whose id is `index` modulo `of`.
#[derive(Clone, Copy, Debug)]
pub struct Place {
    pub index: usize,
    pub of: usize,
}

impl Place {
    /// The only shard there is.
    #[cfg(test)]
    pub const WHOLE: Place = Place { index: 0, of: 1 };

    fn holds(self, session: &Session) -> bool {
        self.of == 1 || session.id() % self.of as u64 == self.index as u64
    }
}

fn lock(m: &Mutex<Inbox>) -> MutexGuard<'_, Inbox> {
    // Every critical section is a push or a swap, so a poisoned lock is safe to reuse.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fanout {
    /// Starts `sweepers` sweeper threads (at least one), each over its own shard of the
    /// sessions.
    pub fn start(sweepers: usize, metrics: Arc<Metrics>) -> std::io::Result<Fanout> {
        let of = sweepers.max(1);
        let mut fanout = Fanout {
            shards: Vec::with_capacity(of),
            sweepers: Vec::with_capacity(of),
        };
        for index in 0..of {
            let shard = Arc::new(Shard {
                place: Place { index, of },
                inbox: Mutex::new(Inbox::default()),
                wake: Condvar::new(),
                pending: AtomicBool::new(false),
                idle: AtomicBool::new(true),
            });
            fanout.shards.push(shard.clone());
            let metrics = metrics.clone();
            let thread = std::thread::Builder::new()
                .name(format!("pushnote-sweep-{index}"))
                .spawn(move || shard.run(&metrics))?;
            // On an error, dropping `fanout` stops the sweepers started so far.
            fanout.sweepers.push(thread);
        }
        Ok(fanout)
    }

    /// Hands a broadcast to every shard, for the sessions open now.
    pub fn broadcast(&self, message: &Message, hub: &Hub) {
        let everyone = hub.everyone();
        for shard in &self.shards {
            let entry = Entry {
                message: message.clone(),
                only: None,
            };
            shard.hand(Item::Swept(entry, everyone.clone()));
        }
    }

    /// Sends a message of `topic` to the topic's sessions here: at once, from this thread, to
    /// a small topic's sessions in a shard whose sweeper is idle (`more_waiting` as for
    /// [`Pace::Now`]); swept with the broadcasts for a large topic; through the inbox of the
    /// shard otherwise, so the message comes after the broadcasts on their way. False when the
    /// topic has no session here.
    pub fn send_to_topic(
        &self,
        topic: &[u8],
        message: &Message,
        hub: &Hub,
        metrics: &Metrics,
        more_waiting: &dyn Fn() -> bool,
    ) -> bool {
        let Some(members) = hub.members(topic) else {
            return false;
        };
        let small = members.len() <= DIRECT_MEMBERS;
        // Taken after `members`: every session of the topic was open before it joined.
        let swept = (!small)
            .then(|| hub.everyone())
            .filter(|everyone| members.len().saturating_mul(SWEPT_SHARE) >= everyone.len());
        for shard in &self.shards {
            let place = shard.place;
            if small && shard.idle.load(Ordering::Acquire) {
                let pace = Pace::given(more_waiting);
                delivery::send(metrics, message, &members, |s| place.holds(s), pace);
            } else if !members.iter().any(|s| place.holds(s)) {
                continue;
            } else if let Some(everyone) = &swept {
                let entry = Entry {
                    message: message.clone(),
                    only: Some(members.clone().into_shared()),
                };
                shard.hand(Item::Swept(entry, everyone.clone()));
            } else {
                shard.hand(Item::ToMembers(message.clone(), members.clone()));
            }
        }
        true
    }

    /// Sends `messages` to `session` in `order` with the broadcasts handed on before this
    /// call, and before anything handed on after it.
    pub fn send_in_order(&self, session: &Session, messages: Vec<Message>, order: InOrder) {
        let Some(shard) = self.shards.iter().find(|s| s.place.holds(session)) else {
            return;
        };
        if shard.idle.load(Ordering::Acquire) {
            // The shard's sessions have had every broadcast: nothing to wait for or skip.
            order.set_form_of(session);
            let _ = session.send_all(&messages);
        } else {
            shard.hand(Item::ToSession {
                session: session.clone(),
                messages,
                order,
            });
        }
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        for shard in &self.shards {
            lock(&shard.inbox).stopping = true;
            shard.wake.notify_one();
        }
        for thread in self.sweepers.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Shard {
    fn hand(&self, item: Item) {
        let mut inbox = lock(&self.inbox);
        inbox.items.push(item);
        self.idle.store(false, Ordering::Release);
        drop(inbox);
        self.pending.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// The sweeper thread: takes what the inbox has, sweeps while there is something to
    /// deliver, and sleeps when there is nothing.
    fn run(&self, metrics: &Metrics) {
        let mut sweep = Sweep::default();
        let mut items = Vec::new();
        let more_waiting = || self.pending.load(Ordering::Acquire);
        loop {
            {
                let mut inbox = lock(&self.inbox);
                while inbox.items.is_empty() && !inbox.stopping && !sweep.is_sweeping() {
                    self.idle.store(true, Ordering::Release);
                    inbox = self.wake.wait(inbox).unwrap_or_else(|e| e.into_inner());
                }
                if inbox.stopping {
                    return;
                }
                std::mem::swap(&mut items, &mut inbox.items);
                self.pending.store(false, Ordering::Release);
            }
            for item in items.drain(..) {
                match item {
                    Item::Swept(entry, everyone) => {
                        sweep.push_entry(entry, &everyone, self.place);
                    }
                    Item::ToMembers(message, members) => {
                        let place = self.place;
                        for s in members.iter().filter(|s| place.holds(s)) {
                            sweep.catch_up(s, metrics);
                        }
                        // Written at once unless more is waiting: then queued, for the
                        // sessions' writers to put together.
                        let pace = Pace::given(&more_waiting);
                        delivery::send(metrics, &message, &members, |s| place.holds(s), pace);
                    }
                    Item::ToSession {
                        session,
                        messages,
                        order,
                    } => {
                        order.set_form_of(&session);
                        if order == InOrder::InsteadWithPositions {
                            sweep.skip_broadcasts(&session, metrics);
                        } else {
                            sweep.catch_up(&session, metrics);
                        }
                        let _ = session.send_all(&messages);
                    }
                }
            }
            sweep.step(metrics, &more_waiting);
        }
    }
}

/// One shard's broadcasts (and large topics' messages) not yet given to all its sessions, and
/// where each session is in them.
pub struct Sweep {
    /// Broadcasts and large topics' messages, numbered from `base` on.
    log: VecDeque<Entry>,
    /// The number of `log[0]`.
    base: u64,
    /// How many of `log` are for some sessions only: while none is, every session is given
    /// everything from its cursor on, with no look at the entries.
    narrowed: usize,
    /// The hub's list of everyone that `sessions` was taken from.
    source: Arc<[Session]>,
    /// The shard's sessions being swept, in id order. Empty when no sweep is on: every session
    /// has had every broadcast then, and none is held here.
    sessions: Arc<[Session]>,
    /// For each of `sessions`, the number of the first broadcast it has not had.
    cursors: Vec<u64>,
    /// Where the sweep is, when one is on.
    pass: Option<Pass>,
    /// The burst last built, for the sessions given the same as the one it was built for.
    burst: Option<Cached>,
    /// The numbers of the entries a session is given, while some are for some sessions only.
    picked: Vec<u64>,
}

/// A message of the log, and whom it is for.
pub struct Entry {
    pub message: Message,
    /// The sessions of the message's topic, in id order; `None` for a broadcast.
    pub only: Option<Arc<[Session]>>,
}

impl Entry {
    fn is_for(&self, session: &Session) -> bool {
        match &self.only {
            None => true,
            Some(members) => members
                .binary_search_by_key(&session.id(), Session::id)
                .is_ok(),
        }
    }
}

/// A burst, and what it holds: the log from entry `from` to the end, or only the entries
/// `picked` of it.
struct Cached {
    from: u64,
    picked: Option<Vec<u64>>,
    burst: Burst,
}

/// One pass over every session.
#[derive(Clone, Copy)]
struct Pass {
    /// The index in `sessions` of the next session to visit.
    next: usize,
    /// The log's end when the pass began: every session visited has had at least that much.
    began_at: u64,
}

impl Default for Sweep {
    fn default() -> Self {
        Sweep {
            log: VecDeque::new(),
            base: 0,
            narrowed: 0,
            source: Arc::from([]),
            sessions: Arc::from([]),
            cursors: Vec::new(),
            pass: None,
            burst: None,
            picked: Vec::new(),
        }
    }
}

impl Sweep {
    /// The number the next broadcast gets.
    fn end(&self) -> u64 {
        self.base + self.log.len() as u64
    }

    /// Whether a sweep is on: [`Sweep::step`] has sessions to visit.
    pub fn is_sweeping(&self) -> bool {
        self.pass.is_some()
    }

    /// Adds a broadcast for the sessions of `everyone` in shard `place`, and starts a sweep if
    /// none is on.
    #[cfg(test)]
    pub fn push(&mut self, message: Message, everyone: &Arc<[Session]>, place: Place) {
        let only = None;
        self.push_entry(Entry { message, only }, everyone, place);
    }

    /// Adds a message for the sessions of `everyone` in shard `place` (those of them it is
    /// for), and starts a sweep if none is on.
    pub fn push_entry(&mut self, entry: Entry, everyone: &Arc<[Session]>, place: Place) {
        self.follow(everyone, place);
        self.narrowed += usize::from(entry.only.is_some());
        self.log.push_back(entry);
        self.burst = None;
        if self.pass.is_none() {
            self.pass = Some(Pass {
                next: 0,
                began_at: self.end(),
            });
        }
    }

    /// Takes up the hub's current list of sessions, keeping the cursors of those still there.
    fn follow(&mut self, everyone: &Arc<[Session]>, place: Place) {
        if Arc::ptr_eq(everyone, &self.source) {
            return;
        }
        let mine: Arc<[Session]> = if place.of == 1 {
            everyone.clone()
        } else {
            everyone
                .iter()
                .filter(|s| place.holds(s))
                .cloned()
                .collect()
        };
        let end = self.end();
        let mut cursors = Vec::with_capacity(mine.len());
        // Both lists are in id order: walk them together.
        let mut old = self.sessions.iter().zip(&self.cursors).peekable();
        for s in mine.iter() {
            while old.next_if(|(o, _)| o.id() < s.id()).is_some() {}
            cursors.push(match old.peek() {
                Some((o, &at)) if o.id() == s.id() => at,
                _ => end,
            });
        }
        if let Some(pass) = &mut self.pass {
            // Go on from the same session, or the first after it if it has gone.
            pass.next = match self.sessions.get(pass.next) {
                Some(s) => mine.partition_point(|e| e.id() < s.id()),
                None => mine.len(),
            };
        }
        self.source = everyone.clone();
        self.sessions = mine;
        self.cursors = cursors;
    }

    /// Visits the next sessions of the sweep, giving each what it has not had: [`SWEEP_STEP`]
    /// of them, or fewer when `interrupt` says, after one, that something else came.
    pub fn step(&mut self, metrics: &Metrics, interrupt: &dyn Fn() -> bool) {
        let Some(pass) = self.pass else {
            return;
        };
        let last = (pass.next + SWEEP_STEP).min(self.sessions.len());
        let mut stop = pass.next;
        let mut delivered = 0;
        while stop < last {
            delivered += self.give(stop, true, true, metrics);
            stop += 1;
            if interrupt() {
                break;
            }
        }
        metrics.deliveries.fetch_add(delivered, Ordering::Relaxed);
        if stop < self.sessions.len() {
            self.pass = Some(Pass { next: stop, ..pass });
            return;
        }
        // Every session has had at least what the log held when the pass began.
        let end = self.end();
        let done = usize::try_from(pass.began_at.saturating_sub(self.base)).unwrap_or(usize::MAX);
        for gone in self.log.drain(..done.min(self.log.len())) {
            self.narrowed -= usize::from(gone.only.is_some());
        }
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
            self.source = Arc::from([]);
            self.sessions = Arc::from([]);
            self.cursors.clear();
        }
    }

    /// Queues for `session` the broadcasts it has not had yet. Queued, not written: the
    /// message that follows joins them in the same frame.
    pub fn catch_up(&mut self, session: &Session, metrics: &Metrics) {
        self.queue_for(session, true, metrics);
    }

    /// Gives `session` none of the broadcasts it has not had yet, but queues the rest of what
    /// it has not had (large topics' messages).
    pub fn skip_broadcasts(&mut self, session: &Session, metrics: &Metrics) {
        self.queue_for(session, false, metrics);
    }

    /// Queues for `session` what it has not had yet (without the broadcasts unless
    /// `broadcasts`), and moves its cursor past it all.
    fn queue_for(&mut self, session: &Session, broadcasts: bool, metrics: &Metrics) {
        if self.pass.is_none() {
            return;
        }
        // A session not in the list joined after the last broadcast: it has nothing to catch.
        if let Ok(i) = self
            .sessions
            .binary_search_by_key(&session.id(), Session::id)
        {
            let delivered = self.give(i, false, broadcasts, metrics);
            metrics.deliveries.fetch_add(delivered, Ordering::Relaxed);
        }
    }

    /// Gives session `i` what is for it from its cursor to the log's end (without the
    /// broadcasts unless `broadcasts`), written at once where `now` allows; returns how many
    /// messages it was given.
    fn give(&mut self, i: usize, now: bool, broadcasts: bool, metrics: &Metrics) -> u64 {
        let end = self.end();
        let from = self.cursors[i];
        if from >= end {
            return 0;
        }
        self.cursors[i] = end;
        let Sweep {
            log,
            base,
            narrowed,
            sessions,
            burst,
            picked,
            ..
        } = self;
        // Cursors never fall behind the log's start (see `step`); were one to, it would get
        // the whole log rather than a panic.
        let skip = usize::try_from(from.saturating_sub(*base)).unwrap_or(0);
        let session = &sessions[i];
        let everything = *narrowed == 0 && broadcasts;
        if !everything {
            picked.clear();
            let mine = log
                .iter()
                .enumerate()
                .skip(skip)
                .filter(|(_, e)| e.is_for(session) && (broadcasts || e.only.is_some()));
            picked.extend(mine.map(|(n, _)| *base + n as u64));
            if picked.is_empty() {
                return 0;
            }
        }
        let given = if everything {
            end - from
        } else {
            picked.len() as u64
        };
        let messages = || -> Vec<Message> {
            if everything {
                log.iter().skip(skip).map(|e| e.message.clone()).collect()
            } else {
                let at = |n: u64| &log[usize::try_from(n - *base).unwrap_or(usize::MAX)];
                picked.iter().map(|&n| at(n).message.clone()).collect()
            }
        };
        let sent = if now {
            let fits = |c: &Cached| {
                c.from == from && c.picked.as_deref() == (!everything).then_some(&picked[..])
            };
            let form = session.form();
            let burst = match burst {
                Some(c) if fits(c) && c.burst.form() == form => &c.burst,
                _ => {
                    let fresh = Cached {
                        from,
                        picked: (!everything).then(|| picked.clone()),
                        burst: Burst::in_form(messages(), form),
                    };
                    &burst.insert(fresh).burst
                }
            };
            if burst.messages().len() == 1 || burst.ws_frame_len() <= DIRECT_BURST_BYTES {
                session.send_burst_now(burst)
            } else {
                session.send_all(burst.messages())
            }
        } else {
            session.send_all(&messages())
        };
        counted(metrics, session, sent, given)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::tests::{hub, texts};
    use crate::hub::Subscribed;
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

    /// What each of `all` is given by the sweepers, read until session `i` has `expected(i)`
    /// messages (within a deadline).
    fn received(all: &[Session], expected: impl Fn(usize) -> usize) -> Vec<Vec<String>> {
        let mut got: Vec<Vec<String>> = vec![Vec::new(); all.len()];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while got.iter().enumerate().any(|(i, g)| g.len() < expected(i)) {
            assert!(std::time::Instant::now() < deadline, "delivered in time");
            for (g, s) in got.iter_mut().zip(all) {
                g.extend(texts(s));
            }
            std::thread::yield_now();
        }
        got
    }

    /// Sweeps until every session has everything; returns how many steps it took.
    fn finish(sweep: &mut Sweep, metrics: &Metrics) -> usize {
        let mut steps = 0;
        while sweep.is_sweeping() {
            sweep.step(metrics, &|| false);
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
        let mut sweep = Sweep::default();
        sweep.push(Message::json("1"), &hub.everyone(), Place::WHOLE);
        sweep.step(&metrics, &|| false);
        // The first step's sessions have the first broadcast; the second comes mid-sweep.
        assert_eq!(texts(&all[0]), ["1"]);
        sweep.push(Message::json("2"), &hub.everyone(), Place::WHOLE);
        sweep.push(Message::json("3"), &hub.everyone(), Place::WHOLE);
        // The rest of this pass, then a second pass for the first step's sessions.
        assert_eq!(finish(&mut sweep, &metrics), 3 + 4);
        assert_eq!(texts(&all[0]), ["2", "3"]);
        for s in &all[1..] {
            assert_eq!(texts(s), ["1", "2", "3"]);
        }
        assert_eq!(
            metrics.deliveries.load(Ordering::Relaxed),
            3 * all.len() as u64
        );
        assert!(sweep.log.is_empty() && sweep.sessions.is_empty() && sweep.burst.is_none());
        assert_eq!(sweep.base, 3);
    }

    #[test]
    fn sessions_get_the_broadcasts_that_come_while_they_are_open() {
        let (hub, _bus) = hub();
        let metrics = Metrics::default();
        let mut sweep = Sweep::default();
        let a = sessions(&hub, 1).remove(0);
        sweep.push(Message::json("1"), &hub.everyone(), Place::WHOLE);
        let b = sessions(&hub, 1).remove(0);
        // b joined during the sweep: it starts at the log's end.
        sweep.push(Message::json("2"), &hub.everyone(), Place::WHOLE);
        finish(&mut sweep, &metrics);
        hub.remove(&a);
        sweep.push(Message::json("3"), &hub.everyone(), Place::WHOLE);
        finish(&mut sweep, &metrics);
        assert_eq!(texts(&a), ["1", "2"]);
        assert_eq!(texts(&b), ["2", "3"]);
    }

    #[test]
    fn a_session_that_goes_mid_sweep_is_skipped_and_the_sweep_goes_on() {
        let (hub, _bus) = hub();
        let metrics = Metrics::default();
        let all = sessions(&hub, 2 * SWEEP_STEP);
        let mut sweep = Sweep::default();
        sweep.push(Message::json("1"), &hub.everyone(), Place::WHOLE);
        sweep.step(&metrics, &|| false);
        // The session the sweep would visit next leaves, and a broadcast comes.
        hub.remove(&all[SWEEP_STEP]);
        sweep.push(Message::json("2"), &hub.everyone(), Place::WHOLE);
        finish(&mut sweep, &metrics);
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
        let mut sweep = Sweep::default();
        sweep.push(Message::json("\"all\""), &hub.everyone(), Place::WHOLE);
        let of_user = hub.members(b"user:u\0").unwrap();
        for s in of_user.iter() {
            sweep.catch_up(s, &metrics);
        }
        delivery::send(
            &metrics,
            &Message::json("\"u\""),
            &of_user,
            |_| true,
            Pace::Queued,
        );
        finish(&mut sweep, &metrics);
        assert_eq!(
            texts(&all[1]),
            ["\"all\"", "\"u\""],
            "and no broadcast twice"
        );
        assert_eq!(texts(&all[0]), ["\"all\""]);
    }

    #[test]
    fn a_large_topic_is_written_by_the_sweepers_after_the_broadcasts_before_it() {
        let (hub, _bus) = hub();
        let hub = Arc::new(hub);
        let metrics = Arc::new(Metrics::default());
        let all = sessions(&hub, DIRECT_MEMBERS * 3);
        for s in &all[1..] {
            hub.join_channel(s, "big", usize::MAX, None);
        }
        let fanout = Fanout::start(2, metrics.clone()).unwrap();
        fanout.broadcast(&Message::json("1"), &hub);
        let topic = b"chan:big\0";
        assert!(fanout.send_to_topic(topic, &Message::json("\"c\""), &hub, &metrics, &|| false));
        assert!(!fanout.send_to_topic(
            b"chan:none\0",
            &Message::json("0"),
            &hub,
            &metrics,
            &|| false
        ));
        let got = received(&all, |i| if i == 0 { 1 } else { 2 });
        drop(fanout);
        assert_eq!(got[0], ["1"]);
        for g in &got[1..] {
            assert_eq!(g, &["1", "\"c\""]);
        }
    }

    #[test]
    fn a_large_topics_messages_are_swept_in_order_with_the_broadcasts_to_its_sessions_alone() {
        let (hub, _bus) = hub();
        let metrics = Metrics::default();
        let all = sessions(&hub, 3 * SWEEP_STEP);
        // Every third session is in the channel.
        for s in all.iter().step_by(3) {
            hub.join_channel(s, "big", usize::MAX, None);
        }
        let members = hub.members(b"chan:big\0").unwrap();
        let to_channel = |m: &str| Entry {
            message: Message::json(m),
            only: Some(members.clone().into_shared()),
        };
        let mut sweep = Sweep::default();
        sweep.push(Message::json("1"), &hub.everyone(), Place::WHOLE);
        sweep.push_entry(to_channel("\"a\""), &hub.everyone(), Place::WHOLE);
        sweep.step(&metrics, &|| false);
        sweep.push(Message::json("2"), &hub.everyone(), Place::WHOLE);
        sweep.push_entry(to_channel("\"b\""), &hub.everyone(), Place::WHOLE);
        finish(&mut sweep, &metrics);
        for (i, s) in all.iter().enumerate() {
            if i % 3 == 0 {
                assert_eq!(texts(s), ["1", "\"a\"", "2", "\"b\""], "member {i}");
            } else {
                assert_eq!(texts(s), ["1", "2"], "not a member: {i}");
            }
        }
        assert_eq!(
            metrics.deliveries.load(Ordering::Relaxed),
            2 * all.len() as u64 + 2 * members.len() as u64
        );
        assert!(sweep.log.is_empty() && sweep.narrowed == 0 && sweep.burst.is_none());
    }

    #[test]
    fn a_topic_of_few_among_many_goes_to_its_sessions_after_the_broadcasts_before_it() {
        let (hub, _bus) = hub();
        let hub = Arc::new(hub);
        let metrics = Arc::new(Metrics::default());
        let all = sessions(&hub, (DIRECT_MEMBERS + 1) * SWEPT_SHARE + 1);
        let in_channel = &all[..DIRECT_MEMBERS + 1];
        for s in in_channel {
            hub.join_channel(s, "mid", usize::MAX, None);
        }
        let fanout = Fanout::start(2, metrics.clone()).unwrap();
        fanout.broadcast(&Message::json("1"), &hub);
        let topic = b"chan:mid\0";
        assert!(fanout.send_to_topic(topic, &Message::json("\"c\""), &hub, &metrics, &|| false));
        fanout.broadcast(&Message::json("2"), &hub);
        let got = received(&all, |i| if i <= DIRECT_MEMBERS { 3 } else { 2 });
        drop(fanout);
        for (i, g) in got.iter().enumerate() {
            if i <= DIRECT_MEMBERS {
                assert_eq!(g, &["1", "\"c\"", "2"], "member {i}");
            } else {
                assert_eq!(g, &["1", "2"], "not a member: {i}");
            }
        }
    }

    #[test]
    fn a_session_given_broadcasts_from_history_skips_those_on_their_way_but_not_the_rest() {
        let (hub, _bus) = hub();
        let metrics = Metrics::default();
        let all = sessions(&hub, 2 * SWEEP_STEP);
        for s in &all {
            hub.join_channel(s, "big", usize::MAX, None);
        }
        let members = hub.members(b"chan:big\0").unwrap();
        let mut sweep = Sweep::default();
        sweep.push(Message::json("1"), &hub.everyone(), Place::WHOLE);
        let channel = Entry {
            message: Message::json("\"c\""),
            only: Some(members.into_shared()),
        };
        sweep.push_entry(channel, &hub.everyone(), Place::WHOLE);
        sweep.push(Message::json("2"), &hub.everyone(), Place::WHOLE);
        // The last session is given the broadcasts again from history; the first catches up.
        let (first, last) = (&all[0], &all[all.len() - 1]);
        sweep.skip_broadcasts(last, &metrics);
        sweep.catch_up(first, &metrics);
        finish(&mut sweep, &metrics);
        assert_eq!(
            texts(last),
            ["\"c\""],
            "the channel's message, no broadcast"
        );
        assert_eq!(texts(first), ["1", "\"c\"", "2"]);
        assert_eq!(texts(&all[1]), ["1", "\"c\"", "2"]);
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
        let mut sweep = Sweep::default();
        for _ in 0..3 {
            sweep.push(Message::json("0"), &hub.everyone(), Place::WHOLE);
        }
        finish(&mut sweep, &metrics);
        assert_eq!(slow.drain(), (vec![], Some(CloseCode::SLOW)));
        assert_eq!(texts(&fine).len(), 3);
        assert_eq!(metrics.slow_closed.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.deliveries.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn shards_split_the_sessions_and_each_gets_every_broadcast_once() {
        let (hub, _bus) = hub();
        let metrics = Metrics::default();
        let all = sessions(&hub, 7);
        let mut shards: Vec<_> = (0..3).map(|_| Sweep::default()).collect();
        for m in ["1", "2"] {
            let everyone = hub.everyone();
            for (index, sweep) in shards.iter_mut().enumerate() {
                sweep.push(Message::json(m), &everyone, Place { index, of: 3 });
            }
        }
        for sweep in &mut shards {
            finish(sweep, &metrics);
        }
        for s in &all {
            assert_eq!(texts(s), ["1", "2"]);
        }
        assert_eq!(metrics.deliveries.load(Ordering::Relaxed), 14);
    }

    #[test]
    fn the_sweepers_deliver_broadcasts_and_users_messages_in_order_and_stop_with_the_fanout() {
        let (hub, _bus) = hub();
        let hub = Arc::new(hub);
        let metrics = Arc::new(Metrics::default());
        let all = sessions(&hub, 2 * SWEEP_STEP + 3);
        let user = &all[all.len() - 1];
        assert_eq!(hub.subscribe(user, "u", usize::MAX), Subscribed::Yes);
        let fanout = Fanout::start(2, metrics.clone()).unwrap();
        for m in ["1", "2", "3"] {
            fanout.broadcast(&Message::json(m), &hub);
        }
        let user_topic = b"user:u\0";
        assert!(
            fanout.send_to_topic(user_topic, &Message::json("\"u\""), &hub, &metrics, &|| {
                false
            })
        );
        let got = received(&all, |i| if i == all.len() - 1 { 4 } else { 3 });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // Once every sweeper is idle, a user's message is written by the caller, at once.
        while fanout
            .shards
            .iter()
            .any(|s| !s.idle.load(Ordering::Acquire))
        {
            assert!(std::time::Instant::now() < deadline, "the sweepers go idle");
            std::thread::yield_now();
        }
        fanout.send_to_topic(
            user_topic,
            &Message::json("\"again\""),
            &hub,
            &metrics,
            &|| false,
        );
        assert_eq!(texts(user), ["\"again\""]);
        drop(fanout);
        for g in &got[..all.len() - 1] {
            assert_eq!(g, &["1", "2", "3"]);
        }
        assert_eq!(got[all.len() - 1], ["1", "2", "3", "\"u\""]);
        // The broadcasts' deliveries and the user's two.
        assert_eq!(
            metrics.deliveries.load(Ordering::Relaxed),
            3 * all.len() as u64 + 2
        );
    }
}
