//! The bus thread's recovery bookkeeping with an engine that keeps history (the forwarder), as
//! one state machine with no I/O: events in (a session's request, a part of an answer, the
//! server's subscriptions, the engine came back), live messages in ([`Machine::live`], the
//! per-message path, which allocates nothing), time passed in ([`Machine::handle_timeout`]),
//! actions out ([`Machine::poll_action`]: ask the engine, answer a session and let it take the
//! topic, deliver what a fill brought, count what was lost).
//!
//! What it keeps:
//! - the sessions' requests waiting for their answers, each with what its answer brought so
//!   far, within its byte allowance and the server-wide bound on what answers hold at once
//!   (past either, the request is answered [`Why::Busy`] and keeps nothing);
//! - after the engine came back, the topics waiting for what it had of them (a fill), each
//!   with its live messages held meanwhile, [`MAX_HELD`] at most;
//! - each topic's last position, to count the positions that never arrived.
//!
//! A session is held back from a topic by its own thread, before it enters it (only then are
//! none of the topic's messages on their way to it); the machine lets it go
//! ([`Action::Answer`]'s `held`) with its answer.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use pushnote::recover::End;
use pushnote_history::Position;

use crate::fanout::InOrder;
use crate::protocol::Why;

/// The most live messages of one topic held while the engine is asked what it had before
/// them; past it, the topic's messages go on at once.
pub const MAX_HELD: usize = 100_000;

/// The most messages one answer may bring; the rest are dropped and the answer is taken as
/// evicted (an engine keeps at most `--history-size` a topic).
pub const MAX_ANSWER_MESSAGES: usize = 100_000;

/// No position: epoch 0 is no topic's.
const NOWHERE: Position = Position {
    epoch: 0,
    offset: 0,
};

/// A session's request: it joins `topic` and asks what it missed.
#[derive(Debug)]
pub struct Join<P> {
    /// What the driver keeps with the request (the session, how to reply).
    pub request: P,
    pub topic: Vec<u8>,
    /// The position it asks from; `None` asks for the topic's position alone.
    pub since: Option<Position>,
    /// A `positions` request (the broadcasts, which the session is in already): its answer
    /// turns the session's positions on.
    pub start: bool,
    /// The session was held back from the topic: the answer lets it go.
    pub held: bool,
}

/// What comes in, besides live messages and time.
#[derive(Debug)]
pub enum Event<P, B> {
    /// A session's request.
    Join(Join<P>),
    /// The server subscribed to `topic` (its first session came).
    Subscribed(Vec<u8>),
    /// The server unsubscribed from `topic` (its last session went).
    Unsubscribed(Vec<u8>),
    /// One kept message of answer `id`, of `len` bytes.
    AnswerMessage {
        id: u64,
        position: Position,
        body: B,
        len: usize,
    },
    /// The end of answer `id`, with the topic's last position.
    AnswerEnd {
        id: u64,
        position: Position,
        end: End,
    },
    /// The connection to the engine was made again after it was lost.
    Reconnected,
}

/// What the driver does.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<P, B, L> {
    /// Ask the engine for `topic`'s position and what it holds after `since`, as answer `id`.
    Ask {
        id: u64,
        topic: Vec<u8>,
        since: Option<Position>,
        max_bytes: u32,
    },
    /// Give the request's session `messages`, then its reply (`outcome` at `at`), in `order`
    /// with the broadcasts; then, if `held`, let it take the topic's messages.
    Answer {
        request: P,
        topic: Vec<u8>,
        messages: Vec<(Position, B)>,
        outcome: Option<Result<(), Why>>,
        at: Position,
        order: InOrder,
        held: bool,
        /// When the session asked.
        asked: Instant,
    },
    /// Give `topic`'s message that a fill brought to its sessions.
    Deliver {
        topic: Vec<u8>,
        position: Position,
        body: B,
    },
    /// Give a live message that waited for its topic's fill to its sessions.
    DeliverHeld(L),
    /// Messages numbered by the engine that never arrived.
    Lost(u64),
}

/// What becomes of a live message.
#[derive(Debug, PartialEq, Eq)]
pub enum Live<L> {
    /// Deliver it now; `lost` positions of its topic never arrived just before it.
    Deliver { body: L, lost: u64 },
    /// Held until its topic's fill ends (it comes out then as an [`Action::DeliverHeld`]).
    Held,
}

/// What an answer is for.
#[derive(Debug, PartialEq, Eq)]
pub enum For<'a> {
    /// What the engine had of a topic when it came back.
    Fill,
    /// A session's request of a topic.
    Request(&'a [u8]),
    /// Nothing waiting (a request given up or asked again): the answer is ignored.
    Nothing,
}

/// A session's request waiting for its answer.
#[derive(Debug)]
struct Pending<P, B> {
    join: Join<P>,
    messages: Vec<(Position, B)>,
    /// The answer brought more messages than kept, or one the server refused.
    overflow: bool,
    /// The most bytes its answer may bring.
    allowance: usize,
    /// The bytes its answer brought so far.
    received: usize,
    /// Its answer brought more than its allowance or the server-wide bound: answered busy.
    busy: bool,
    asked: Instant,
    deadline: Instant,
}

/// A topic waiting, after a reconnection, for what the engine had of it.
#[derive(Debug)]
struct Filling<B> {
    topic: Vec<u8>,
    messages: Vec<(Position, B)>,
    deadline: Instant,
}

/// The bookkeeping: requests waiting, topics filling, and each topic's last position.
#[derive(Debug)]
pub struct Machine<P, B, L> {
    timeout: Duration,
    /// What the answers being received may hold at once, in all.
    memory: usize,
    /// What one answer may bring.
    per_answer: usize,
    /// The bytes the waiting requests' answers brought so far.
    held_bytes: usize,
    next_id: u64,
    pending: BTreeMap<u64, Pending<P, B>>,
    fills: HashMap<u64, Filling<B>>,
    /// The live messages of each filling topic, kept until its fill ends.
    waiting_live: HashMap<Vec<u8>, Vec<(Position, L)>>,
    subscribed: HashSet<Vec<u8>>,
    last: HashMap<Vec<u8>, Position>,
    /// Requests answered busy, for the driver to log.
    busy: u64,
    actions: VecDeque<Action<P, B, L>>,
}

impl<P, B, L> Machine<P, B, L> {
    /// A machine whose requests wait `timeout` for their answers, which may bring `memory`
    /// bytes at once in all and `per_answer` each.
    pub fn new(timeout: Duration, memory: usize, per_answer: usize) -> Machine<P, B, L> {
        Machine {
            timeout,
            memory,
            per_answer,
            held_bytes: 0,
            next_id: 1,
            pending: BTreeMap::new(),
            fills: HashMap::new(),
            waiting_live: HashMap::new(),
            subscribed: HashSet::new(),
            last: HashMap::new(),
            busy: 0,
            actions: VecDeque::new(),
        }
    }

    /// Takes in one event at `now`.
    pub fn handle(&mut self, event: Event<P, B>, now: Instant) {
        match event {
            Event::Join(join) => {
                let id = self.id();
                let allowance = self.per_answer.min(self.memory).min(u32::MAX as usize);
                self.actions.push_back(Action::Ask {
                    id,
                    topic: join.topic.clone(),
                    since: join.since,
                    max_bytes: u32::try_from(allowance).unwrap_or(u32::MAX),
                });
                self.pending.insert(
                    id,
                    Pending {
                        join,
                        messages: Vec::new(),
                        overflow: false,
                        allowance,
                        received: 0,
                        busy: false,
                        asked: now,
                        deadline: now + self.timeout,
                    },
                );
            }
            Event::Subscribed(topic) => {
                self.subscribed.insert(topic);
            }
            Event::Unsubscribed(topic) => {
                // Messages published while no one here listens are not ours to miss.
                self.last.remove(&topic);
                self.subscribed.remove(&topic);
                crate::room::give_back(&mut self.last);
                crate::room::give_back(&mut self.subscribed);
            }
            Event::AnswerMessage {
                id,
                position,
                body,
                len,
            } => self.answer_message(id, position, body, len),
            Event::AnswerEnd { id, position, end } => {
                if let Some(f) = self.fills.remove(&id) {
                    self.fill(f, Some(position));
                } else if let Some(p) = self.take_pending(id) {
                    let outcome = match end {
                        End::Position => None,
                        _ if p.busy => Some(Err(Why::Busy)),
                        _ if p.overflow => Some(Err(Why::Evicted)),
                        End::Busy => Some(Err(Why::Busy)),
                        End::Recovered => Some(Ok(())),
                        End::Epoch => Some(Err(Why::Epoch)),
                        End::Future => Some(Err(Why::Future)),
                        End::Evicted => Some(Err(Why::Evicted)),
                    };
                    self.answer(p, outcome, position);
                }
            }
            Event::Reconnected => self.reconnected(now),
        }
    }

    /// Takes in a live message `body` of the topic `topic_of` finds in it, at `position`
    /// (`None`: the engine gave none): held while its topic waits for a fill, or handed back
    /// to deliver now.
    #[inline]
    pub fn live(
        &mut self,
        position: Option<Position>,
        body: L,
        topic_of: fn(&L) -> &[u8],
    ) -> Live<L> {
        let Some(position) = position else {
            return Live::Deliver { body, lost: 0 };
        };
        if !self.waiting_live.is_empty() {
            if let Some(held) = self.waiting_live.get_mut(topic_of(&body)) {
                if held.len() < MAX_HELD {
                    held.push((position, body));
                    return Live::Held;
                }
            }
        }
        let lost = self.record(topic_of(&body), position);
        Live::Deliver { body, lost }
    }

    /// Gives up what waited past its deadline at `now`; returns how many requests and fills
    /// that was.
    pub fn handle_timeout(&mut self, now: Instant) -> (usize, usize) {
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        let requests = late.len();
        for id in late {
            let Some(mut p) = self.take_pending(id) else {
                continue;
            };
            let at = self.last.get(&p.join.topic).copied().unwrap_or(NOWHERE);
            p.messages.clear();
            self.answer(p, Some(Err(Why::Unavailable)), at);
        }
        let late: Vec<u64> = self
            .fills
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        let fills = late.len();
        for id in late {
            if let Some(mut f) = self.fills.remove(&id) {
                f.messages.clear();
                self.fill(f, None);
            }
        }
        (requests, fills)
    }

    /// What answer `id` is for.
    pub fn answer_for(&self, id: u64) -> For<'_> {
        if self.fills.contains_key(&id) {
            For::Fill
        } else if let Some(p) = self.pending.get(&id) {
            For::Request(&p.join.topic)
        } else {
            For::Nothing
        }
    }

    /// When [`Machine::handle_timeout`] has something to do next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let requests = self.pending.values().map(|p| p.deadline);
        let fills = self.fills.values().map(|f| f.deadline);
        requests.chain(fills).min()
    }

    /// The next action, in order.
    pub fn poll_action(&mut self) -> Option<Action<P, B, L>> {
        self.actions.pop_front()
    }

    /// The bytes the waiting requests' answers hold.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// The requests answered busy since last asked (to log).
    pub fn take_busy(&mut self) -> u64 {
        std::mem::take(&mut self.busy)
    }

    /// The last position seen of `topic`.
    #[cfg(test)]
    fn last(&self, topic: &[u8]) -> Option<Position> {
        self.last.get(topic).copied()
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn take_pending(&mut self, id: u64) -> Option<Pending<P, B>> {
        let p = self.pending.remove(&id)?;
        self.held_bytes -= p.received;
        Some(p)
    }

    fn answer_message(&mut self, id: u64, position: Position, body: B, len: usize) {
        if let Some(f) = self.fills.get_mut(&id) {
            if f.messages.len() < MAX_ANSWER_MESSAGES {
                f.messages.push((position, body));
            }
            return;
        }
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        if p.busy {
            return;
        }
        if p.received + len > p.allowance || self.held_bytes + len > self.memory {
            // More than it was allowed, or than the answers here may hold: none of it.
            p.busy = true;
            p.messages = Vec::new();
            self.held_bytes -= std::mem::take(&mut p.received);
            return;
        }
        p.received += len;
        self.held_bytes += len;
        if p.messages.len() >= MAX_ANSWER_MESSAGES {
            p.overflow = true;
            return;
        }
        p.messages.push((position, body));
    }

    /// Notes that a message of answer `id` could not be taken (a body the server refuses):
    /// it is missed as if it never came, and the answer is taken as evicted.
    pub fn refuse(&mut self, id: u64) {
        if let Some(p) = self.pending.get_mut(&id) {
            p.overflow = true;
        }
    }

    fn reconnected(&mut self, now: Instant) {
        let deadline = now + self.timeout;
        let mut topics: Vec<Vec<u8>> = self.subscribed.iter().cloned().collect();
        topics.sort_unstable();
        topics.insert(0, pushnote::wire::BROADCAST_TOPIC.to_vec());
        for topic in topics {
            let id = self.id();
            self.actions.push_back(Action::Ask {
                id,
                topic: topic.clone(),
                // Epoch 0 is no topic's: the answer is the current epoch's, from its first.
                since: Some(NOWHERE),
                // Not a page's: what the engine may replay bounds it.
                max_bytes: u32::MAX,
            });
            self.waiting_live.entry(topic.clone()).or_default();
            self.fills.insert(
                id,
                Filling {
                    topic,
                    messages: Vec::new(),
                    deadline,
                },
            );
        }
        // Requests waiting go again after the fills, under new ids, so that their answers come
        // after the fills' and nothing is given twice; an answer to an old id is ignored.
        let old = std::mem::take(&mut self.pending);
        for (_, mut p) in old {
            let id = self.id();
            self.held_bytes -= std::mem::take(&mut p.received);
            p.messages.clear();
            p.overflow = false;
            p.busy = false;
            p.deadline = deadline;
            self.actions.push_back(Action::Ask {
                id,
                topic: p.join.topic.clone(),
                since: p.join.since,
                max_bytes: u32::try_from(p.allowance).unwrap_or(u32::MAX),
            });
            self.pending.insert(id, p);
        }
    }

    fn answer(&mut self, p: Pending<P, B>, outcome: Option<Result<(), Why>>, at: Position) {
        if outcome == Some(Err(Why::Busy)) {
            self.busy += 1;
        }
        let Pending {
            join,
            mut messages,
            asked,
            ..
        } = p;
        // Messages come with an answer that recovered, or that gives another epoch's position
        // the current epoch's from its first; none with the others.
        if !matches!(outcome, Some(Ok(()) | Err(Why::Epoch))) {
            messages.clear();
        }
        self.actions.push_back(Action::Answer {
            request: join.request,
            topic: join.topic,
            messages,
            outcome,
            at,
            order: InOrder::of(join.start, outcome),
            held: join.held,
            asked,
        });
    }

    /// Notes `topic`'s position; returns how many positions were skipped just before it. The
    /// first position of a topic, or of a new epoch of it, starts its count.
    #[inline]
    fn record(&mut self, topic: &[u8], position: Position) -> u64 {
        let missed = match self.last.get_mut(topic) {
            Some(last) => {
                let missed = if last.epoch == position.epoch {
                    position.skipped_after(last.offset).unwrap_or(0)
                } else {
                    0
                };
                *last = position;
                u64::from(missed)
            }
            None => {
                self.last.insert(topic.to_vec(), position);
                0
            }
        };
        missed
    }

    /// Whether `topic` had `position` already.
    fn had(&self, topic: &[u8], position: Position) -> bool {
        self.last
            .get(topic)
            .is_some_and(|l| l.epoch == position.epoch && position.offset <= l.offset)
    }

    fn deliver(&mut self, topic: &[u8], position: Position, body: B) {
        let lost = self.record(topic, position);
        if lost > 0 {
            self.actions.push_back(Action::Lost(lost));
        }
        self.actions.push_back(Action::Deliver {
            topic: topic.to_vec(),
            position,
            body,
        });
    }

    /// Delivers what the engine had of a topic that this server had not, counts what it no
    /// longer kept, then what waited meanwhile.
    fn fill(&mut self, f: Filling<B>, position: Option<Position>) {
        let topic = f.topic;
        for (at, body) in f.messages {
            if !self.had(&topic, at) {
                self.deliver(&topic, at, body);
            }
        }
        if let Some(p) = position.filter(|p| p.offset > 0 && !self.had(&topic, *p)) {
            let missed = match self.last.get(&topic) {
                Some(l) if l.epoch == p.epoch => p.offset.saturating_sub(l.offset),
                _ => p.offset,
            };
            if missed > 0 {
                self.actions.push_back(Action::Lost(u64::from(missed)));
            }
            self.last.insert(topic.clone(), p);
        }
        for (at, body) in self.waiting_live.remove(&topic).unwrap_or_default() {
            if !self.had(&topic, at) {
                let lost = self.record(&topic, at);
                if lost > 0 {
                    self.actions.push_back(Action::Lost(lost));
                }
                self.actions.push_back(Action::DeliverHeld(body));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &[u8] = b"user:1\0";
    const TIMEOUT: Duration = Duration::from_secs(3);
    const MEMORY: usize = 1000;
    const PER_ANSWER: usize = 100;

    type M = Machine<u64, &'static str, &'static str>;
    type A = Action<u64, &'static str, &'static str>;

    /// Every live message in these tests is of `T`, unless it says otherwise as `"2:…"`.
    fn topic_of(body: &&'static str) -> &'static [u8] {
        if body.starts_with("2:") {
            b"user:2\0"
        } else {
            T
        }
    }

    fn at(epoch: u32, offset: u32) -> Position {
        Position { epoch, offset }
    }

    fn machine() -> M {
        Machine::new(TIMEOUT, MEMORY, PER_ANSWER)
    }

    fn drain(m: &mut M) -> Vec<A> {
        std::iter::from_fn(|| m.poll_action()).collect()
    }

    fn join(
        session: u64,
        since: Option<Position>,
        start: bool,
        held: bool,
    ) -> Event<u64, &'static str> {
        Event::Join(Join {
            request: session,
            topic: if start {
                pushnote::wire::BROADCAST_TOPIC.to_vec()
            } else {
                T.to_vec()
            },
            since,
            start,
            held,
        })
    }

    fn message(id: u64, offset: u32, body: &'static str) -> Event<u64, &'static str> {
        Event::AnswerMessage {
            id,
            position: at(7, offset),
            body,
            len: body.len(),
        }
    }

    fn end(id: u64, offset: u32, end: End) -> Event<u64, &'static str> {
        Event::AnswerEnd {
            id,
            position: at(7, offset),
            end,
        }
    }

    fn ask(id: u64, topic: &[u8], since: Option<Position>, max_bytes: u32) -> A {
        Action::Ask {
            id,
            topic: topic.to_vec(),
            since,
            max_bytes,
        }
    }

    /// The outcome, messages, order and `held` of the one answer in `actions`.
    fn answered(actions: &[A]) -> (Option<Result<(), Why>>, Vec<&'static str>, InOrder, bool) {
        match actions {
            [Action::Answer {
                messages,
                outcome,
                order,
                held,
                ..
            }] => (
                *outcome,
                messages.iter().map(|(_, b)| *b).collect(),
                *order,
                *held,
            ),
            other => panic!("not one answer: {other:?}"),
        }
    }

    #[test]
    fn a_join_asks_the_engine_within_its_allowance() {
        let now = Instant::now();
        let mut m = machine();
        m.handle(join(5, Some(at(7, 2)), false, true), now);
        assert_eq!(drain(&mut m), [ask(1, T, Some(at(7, 2)), 100)]);
        assert_eq!(m.poll_timeout(), Some(now + TIMEOUT));
        // The allowance is the smaller of one answer's and all answers' bound.
        let mut m: M = Machine::new(TIMEOUT, 40, PER_ANSWER);
        m.handle(join(5, None, false, true), now);
        assert_eq!(drain(&mut m), [ask(1, T, None, 40)]);
    }

    #[test]
    fn an_answer_gives_its_messages_then_releases_the_held_session() {
        let now = Instant::now();
        let mut m = machine();
        m.handle(join(5, Some(at(7, 2)), false, true), now);
        drain(&mut m);
        m.handle(message(1, 3, "c"), now);
        m.handle(message(1, 4, "d"), now);
        assert_eq!(m.held_bytes(), 2);
        m.handle(end(1, 4, End::Recovered), now);
        let actions = drain(&mut m);
        assert_eq!(
            actions,
            [Action::Answer {
                request: 5,
                topic: T.to_vec(),
                messages: vec![(at(7, 3), "c"), (at(7, 4), "d")],
                outcome: Some(Ok(())),
                at: at(7, 4),
                order: InOrder::After,
                held: true,
                asked: now,
            }]
        );
        assert_eq!(m.held_bytes(), 0);
        assert_eq!(m.poll_timeout(), None);
        // An answer to a request no longer waiting is ignored.
        m.handle(message(1, 5, "e"), now);
        m.handle(end(1, 4, End::Recovered), now);
        assert_eq!(drain(&mut m), []);
    }

    #[test]
    fn each_end_the_engine_gives_is_the_sessions_outcome_and_only_recovery_brings_messages() {
        let now = Instant::now();
        for (kind, outcome, given) in [
            (End::Recovered, Some(Ok(())), vec!["c"]),
            (End::Epoch, Some(Err(Why::Epoch)), vec!["c"]),
            (End::Future, Some(Err(Why::Future)), vec![]),
            (End::Evicted, Some(Err(Why::Evicted)), vec![]),
            (End::Busy, Some(Err(Why::Busy)), vec![]),
            (End::Position, None, vec![]),
        ] {
            let mut m = machine();
            m.handle(join(5, Some(at(7, 2)), false, false), now);
            m.handle(message(1, 3, "c"), now);
            drain(&mut m);
            m.handle(end(1, 3, kind), now);
            let (o, messages, order, held) = answered(&drain(&mut m));
            assert_eq!(
                (o, messages, order, held),
                (outcome, given, InOrder::After, false)
            );
            assert_eq!(m.take_busy(), u64::from(kind == End::Busy));
        }
    }

    #[test]
    fn a_positions_request_turns_positions_on_instead_of_or_after_the_broadcasts() {
        let now = Instant::now();
        for (kind, order) in [
            (End::Recovered, InOrder::InsteadWithPositions),
            (End::Epoch, InOrder::InsteadWithPositions),
            (End::Evicted, InOrder::AfterWithPositions),
            (End::Position, InOrder::AfterWithPositions),
        ] {
            let mut m = machine();
            m.handle(join(5, Some(at(7, 2)), true, false), now);
            assert_eq!(
                drain(&mut m),
                [ask(1, pushnote::wire::BROADCAST_TOPIC, Some(at(7, 2)), 100)]
            );
            m.handle(end(1, 3, kind), now);
            assert_eq!(answered(&drain(&mut m)).2, order);
        }
    }

    #[test]
    fn an_answer_past_its_allowance_is_busy_and_holds_nothing() {
        let now = Instant::now();
        let mut m = machine();
        m.handle(join(5, Some(at(7, 2)), false, true), now);
        drain(&mut m);
        m.handle(message(1, 3, "c"), now);
        m.handle(
            Event::AnswerMessage {
                id: 1,
                position: at(7, 4),
                body: "big",
                len: PER_ANSWER,
            },
            now,
        );
        assert_eq!(m.held_bytes(), 0);
        // What comes after is not taken either.
        m.handle(message(1, 5, "e"), now);
        assert_eq!(m.held_bytes(), 0);
        m.handle(end(1, 5, End::Recovered), now);
        let (outcome, messages, _, held) = answered(&drain(&mut m));
        assert_eq!(
            (outcome, messages, held),
            (Some(Err(Why::Busy)), vec![], true)
        );
        assert_eq!(m.take_busy(), 1);
        assert_eq!(m.take_busy(), 0);
    }

    #[test]
    fn answers_past_the_servers_memory_are_busy_and_the_others_go_on() {
        let now = Instant::now();
        let mut m: M = Machine::new(TIMEOUT, 150, PER_ANSWER);
        m.handle(join(5, Some(at(7, 2)), false, true), now);
        m.handle(join(6, Some(at(7, 2)), false, true), now);
        drain(&mut m);
        let big = |id| Event::AnswerMessage {
            id,
            position: at(7, 3),
            body: "x",
            len: 90,
        };
        m.handle(big(1), now);
        assert_eq!(m.held_bytes(), 90);
        // 90 more would pass 150 in all: the second answer is busy.
        m.handle(big(2), now);
        assert_eq!(m.held_bytes(), 90);
        m.handle(end(2, 3, End::Recovered), now);
        assert_eq!(answered(&drain(&mut m)).0, Some(Err(Why::Busy)));
        m.handle(end(1, 3, End::Recovered), now);
        assert_eq!(answered(&drain(&mut m)).0, Some(Ok(())));
        assert_eq!(m.held_bytes(), 0);
    }

    #[test]
    fn an_answer_with_a_refused_or_one_too_many_message_is_evicted() {
        let now = Instant::now();
        let mut m = machine();
        m.handle(join(5, Some(at(7, 2)), false, false), now);
        m.handle(message(1, 3, "c"), now);
        m.refuse(1);
        m.handle(end(1, 3, End::Recovered), now);
        let (outcome, messages, ..) = answered(&drain(&mut m)[1..]);
        assert_eq!((outcome, messages), (Some(Err(Why::Evicted)), vec![]));

        let mut m: M = Machine::new(TIMEOUT, usize::MAX, usize::MAX);
        m.handle(join(5, Some(at(7, 0)), false, false), now);
        for offset in 0..=MAX_ANSWER_MESSAGES as u32 {
            m.handle(
                Event::AnswerMessage {
                    id: 1,
                    position: at(7, offset + 1),
                    body: "",
                    len: 0,
                },
                now,
            );
        }
        m.handle(end(1, 3, End::Recovered), now);
        assert_eq!(answered(&drain(&mut m)[1..]).0, Some(Err(Why::Evicted)));
    }

    #[test]
    fn a_late_answer_is_given_up_as_unavailable_at_the_last_position_seen() {
        let now = Instant::now();
        let mut m = machine();
        assert_eq!(
            m.live(Some(at(7, 9)), "i", topic_of),
            Live::Deliver { body: "i", lost: 0 }
        );
        m.handle(join(5, Some(at(7, 2)), false, true), now);
        m.handle(message(1, 3, "c"), now);
        drain(&mut m);
        m.handle_timeout(now + TIMEOUT - Duration::from_millis(1));
        assert_eq!(drain(&mut m), []);
        m.handle_timeout(now + TIMEOUT);
        let actions = drain(&mut m);
        assert!(matches!(
            &actions[..],
            [Action::Answer { at: a, held: true, .. }] if *a == at(7, 9)
        ));
        assert_eq!(answered(&actions).0, Some(Err(Why::Unavailable)));
        assert_eq!(m.held_bytes(), 0);
        assert_eq!(m.poll_timeout(), None);
        // A topic never seen: epoch 0.
        m.handle(Event::Unsubscribed(T.to_vec()), now);
        m.handle(join(5, None, false, true), now);
        drain(&mut m);
        m.handle_timeout(now + 2 * TIMEOUT);
        assert!(matches!(
            &drain(&mut m)[..],
            [Action::Answer { at: a, .. }] if *a == NOWHERE
        ));
    }

    #[test]
    fn live_messages_count_the_offsets_that_never_came_until_unsubscribed() {
        let mut m = machine();
        assert_eq!(
            m.live(Some(at(7, 1)), "a", topic_of),
            Live::Deliver { body: "a", lost: 0 }
        );
        assert_eq!(
            m.live(Some(at(7, 4)), "d", topic_of),
            Live::Deliver { body: "d", lost: 2 }
        );
        // A new epoch starts the count again; no position counts nothing.
        assert_eq!(
            m.live(Some(at(8, 5)), "e", topic_of),
            Live::Deliver { body: "e", lost: 0 }
        );
        assert_eq!(
            m.live(None, "f", topic_of),
            Live::Deliver { body: "f", lost: 0 }
        );
        assert_eq!(m.last(T), Some(at(8, 5)));
        m.handle(Event::Unsubscribed(T.to_vec()), Instant::now());
        assert_eq!(m.last(T), None);
        assert_eq!(
            m.live(Some(at(8, 9)), "i", topic_of),
            Live::Deliver { body: "i", lost: 0 }
        );
        assert_eq!(drain(&mut m), []);
    }

    #[test]
    fn after_a_reconnection_a_topic_waits_for_its_fill_and_nothing_comes_twice() {
        let now = Instant::now();
        let mut m = machine();
        m.handle(Event::Subscribed(T.to_vec()), now);
        assert_eq!(
            m.live(Some(at(7, 1)), "a", topic_of),
            Live::Deliver { body: "a", lost: 0 }
        );
        m.handle(Event::Reconnected, now);
        let all = Some(NOWHERE);
        assert_eq!(
            drain(&mut m),
            [
                ask(1, pushnote::wire::BROADCAST_TOPIC, all, u32::MAX),
                ask(2, T, all, u32::MAX)
            ]
        );
        // Live messages wait for the fill.
        assert_eq!(m.live(Some(at(7, 4)), "d", topic_of), Live::Held);
        for (offset, body) in [(1, "a"), (2, "b")] {
            m.handle(message(2, offset, body), now);
        }
        m.handle(end(2, 3, End::Epoch), now);
        let delivered = |position, body| Action::Deliver {
            topic: T.to_vec(),
            position,
            body,
        };
        // "a" was had; "b" is given; 3 was no longer kept; then "d" that waited.
        assert_eq!(
            drain(&mut m),
            [
                delivered(at(7, 2), "b"),
                Action::Lost(1),
                Action::DeliverHeld("d"),
            ]
        );
        assert_eq!(
            m.live(Some(at(7, 5)), "e", topic_of),
            Live::Deliver { body: "e", lost: 0 }
        );
    }

    #[test]
    fn a_fill_that_never_comes_lets_the_waiting_messages_go_at_its_deadline() {
        let now = Instant::now();
        let mut m = machine();
        m.handle(Event::Subscribed(T.to_vec()), now);
        m.handle(Event::Reconnected, now);
        assert_eq!(m.live(Some(at(7, 1)), "a", topic_of), Live::Held);
        drain(&mut m);
        assert_eq!(m.poll_timeout(), Some(now + TIMEOUT));
        m.handle_timeout(now + TIMEOUT);
        assert_eq!(drain(&mut m), [Action::DeliverHeld("a")]);
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn a_filling_topic_holds_at_most_its_bound_and_the_rest_goes_on_at_once() {
        let now = Instant::now();
        let mut m = machine();
        m.handle(Event::Subscribed(T.to_vec()), now);
        m.handle(Event::Reconnected, now);
        for offset in 1..=MAX_HELD as u32 {
            assert_eq!(m.live(Some(at(7, offset)), "x", topic_of), Live::Held);
        }
        let past = MAX_HELD as u32 + 1;
        assert_eq!(
            m.live(Some(at(7, past)), "y", topic_of),
            Live::Deliver { body: "y", lost: 0 }
        );
        // Another topic is not held at all.
        assert_eq!(
            m.live(Some(at(7, 1)), "2:z", topic_of),
            Live::Deliver {
                body: "2:z",
                lost: 0
            }
        );
    }

    #[test]
    fn a_waiting_request_is_asked_again_after_the_fills_and_its_old_answer_ignored() {
        let now = Instant::now();
        let mut m = machine();
        m.handle(Event::Subscribed(T.to_vec()), now);
        m.handle(join(5, Some(at(7, 2)), false, true), now);
        m.handle(message(1, 3, "c"), now);
        drain(&mut m);
        assert_eq!(m.held_bytes(), 1);
        let later = now + Duration::from_secs(2);
        m.handle(Event::Reconnected, later);
        let all = Some(NOWHERE);
        assert_eq!(
            drain(&mut m),
            [
                ask(2, pushnote::wire::BROADCAST_TOPIC, all, u32::MAX),
                ask(3, T, all, u32::MAX),
                ask(4, T, Some(at(7, 2)), 100),
            ]
        );
        // What the old answer brought is let go.
        assert_eq!(m.held_bytes(), 0);
        m.handle(end(1, 2, End::Recovered), later);
        assert_eq!(drain(&mut m), []);
        // Its deadline moved with the new request.
        m.handle_timeout(now + TIMEOUT);
        assert_eq!(drain(&mut m), []);
        assert_eq!(m.poll_timeout(), Some(later + TIMEOUT));
        m.handle(message(4, 3, "c"), later);
        m.handle(end(4, 3, End::Recovered), later);
        let (outcome, messages, ..) = answered(&drain(&mut m));
        assert_eq!((outcome, messages), (Some(Ok(())), vec!["c"]));
    }
}
