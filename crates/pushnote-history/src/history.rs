//! The topics, their kept messages, and their limits.
//!
//! Each topic keeps its last messages, at most [`Limits::messages`] of them and none older
//! than [`Limits::age`]. All topics together take at most [`Limits::bytes`], by estimate (each
//! message its value's [`Weigh::weight`] and [`KEPT_OVERHEAD`], each topic its name and
//! [`TOPIC_OVERHEAD`]): past that, the oldest messages of any topic go first. A topic that has
//! kept nothing for [`Limits::idle`] is forgotten, and so is every topic that keeps nothing
//! when the budget is spent on topics alone; a forgotten topic's next message starts a new
//! epoch.
//!
//! A topic nobody published to costs nothing: asking its position remembers nothing. Its
//! position is offset 0 of the epoch its first message will start ([`History::position`]), an
//! epoch drawn from the topic's name, the history's random key and how many topics of its
//! bucket were forgotten, so that a page told that position before the first message is
//! given every message from the first, and a page of a forgotten epoch is told it lost some.
//!
//! Pure: no I/O, no clock of its own (every call that ages something is given `now`).

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use crate::topics::{Id, Topics};
use crate::Position;

/// What a kept message costs beyond its value, by estimate: its place in its topic's queue
/// (offset, the value's pointer and length), its place in the queue of all messages (the
/// topic's id, epoch, offset and time), and the allocator's header and rounding. The
/// queue of all messages may hold as many entries again of messages already gone (and
/// [`COMPACT_SLACK`]) before they are taken out.
pub const KEPT_OVERHEAD: usize = 80;

/// What a topic costs beyond its name, by estimate: its name's map entry and allocator's
/// header, its slot in the table (epoch, offsets, empty queue), and the table's spare slots.
pub const TOPIC_OVERHEAD: usize = 128;

/// What a stored value takes, in bytes, beyond what [`KEPT_OVERHEAD`] counts.
pub trait Weigh {
    fn weight(&self) -> usize;
}

impl Weigh for Box<[u8]> {
    fn weight(&self) -> usize {
        self.len()
    }
}

/// The most messages of one topic kept, by default.
pub const DEFAULT_MESSAGES: usize = 100;
/// How long a message is kept, by default, in seconds.
pub const DEFAULT_AGE_SECS: u64 = 300;
/// What the history may take in all, by default, in MiB.
pub const DEFAULT_MEMORY_MIB: usize = 64;
/// How long a topic with no message kept is remembered, by default, in seconds.
pub const DEFAULT_IDLE_SECS: u64 = 3600;

/// How much history is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most messages kept per topic.
    pub messages: usize,
    /// How long a message is kept.
    pub age: Duration,
    /// What all topics and their messages may take together, by estimate.
    pub bytes: usize,
    /// How long a topic that keeps no message is remembered (its epoch and last offset), so
    /// that a page that saw its last message is told it missed nothing.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            messages: DEFAULT_MESSAGES,
            age: Duration::from_secs(DEFAULT_AGE_SECS),
            bytes: DEFAULT_MEMORY_MIB << 20,
            idle: Duration::from_secs(DEFAULT_IDLE_SECS),
        }
    }
}

/// Why a page's position cannot be brought up to date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotRecovered {
    /// The topic's epoch is another: its history was lost since (or the position is not one
    /// this history gave).
    Epoch,
    /// The position is past the topic's last message.
    Future,
    /// Messages after the position were dropped already (too many, too old, or the budget).
    Evicted,
}

/// Counters since the history was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Messages dropped before their time: past a topic's count or the byte budget.
    pub evicted: u64,
    /// Messages dropped for their age.
    pub expired: u64,
    /// Topics forgotten (idle, or for the budget).
    pub forgotten: u64,
}

/// How many buckets the topics are counted in when forgotten: a topic nobody published to has
/// an epoch that changes when a topic of its bucket is forgotten.
const FORGET_BUCKETS: usize = 4096;

/// Each topic's recent messages and positions.
pub struct History<V> {
    limits: Limits,
    topics: Topics<Topic<V>>,
    /// The random key of the epochs of topics nobody published to.
    key: RandomState,
    /// Per bucket of topic names, how many of its topics were forgotten (wrapping).
    forgotten: Box<[u32]>,
    /// Every kept message's place, oldest first. Entries whose message went already (past its
    /// topic's count, or its topic's epoch ended) are skipped when they come up, and taken out
    /// all at once when they are more than the messages kept and [`COMPACT_SLACK`].
    order: VecDeque<Queued>,
    /// What the topics and their messages take, by estimate.
    bytes: usize,
    /// Messages kept now.
    kept: usize,
    next_epoch: u32,
    /// When topics were last looked at for idleness.
    swept: Instant,
    counts: Counts,
}

/// A kept message's place in the queue of all messages.
struct Queued {
    topic: Id,
    epoch: u32,
    offset: u32,
    at: Instant,
}

/// How many entries of messages already gone the queue of all messages holds, beyond as many
/// as there are messages kept, before they are taken out.
const COMPACT_SLACK: usize = 1024;

struct Topic<V> {
    epoch: u32,
    /// The offset of the topic's last message in this epoch; 0 before the first.
    last: u32,
    kept: VecDeque<Kept<V>>,
    /// When the topic last had a message, or was asked for.
    touched: Instant,
}

struct Kept<V> {
    offset: u32,
    value: V,
}

/// A kept message of epoch `epoch` with its position.
fn positioned<V>(epoch: u32) -> impl Fn(&Kept<V>) -> (Position, &V) {
    move |k| {
        let offset = k.offset;
        (Position { epoch, offset }, &k.value)
    }
}

fn topic_cost(name: &[u8]) -> usize {
    name.len() + TOPIC_OVERHEAD
}

/// A number another process's is almost surely not (the time and the process id through a
/// randomly keyed hash): the first of a history's epochs, or a server's id on the bus.
pub fn fresh_seed() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

impl<V: Weigh> History<V> {
    /// An empty history whose epochs differ from any other history's, almost surely.
    pub fn new(limits: Limits, now: Instant) -> History<V> {
        History {
            limits,
            topics: Topics::new(),
            key: RandomState::new(),
            forgotten: vec![0; FORGET_BUCKETS].into_boxed_slice(),
            order: VecDeque::new(),
            bytes: 0,
            kept: 0,
            next_epoch: fresh_seed() as u32,
            swept: now,
            counts: Counts::default(),
        }
    }

    /// Adds the next message of `topic`, made by `make` from its position; returns the
    /// position. A message too large for the budget is numbered but not kept, and what its
    /// topic kept before goes with it: a page can then not be brought past it.
    pub fn append(
        &mut self,
        topic: &[u8],
        make: impl FnOnce(Position) -> V,
        now: Instant,
    ) -> Position {
        self.expire(now);
        // The topic is looked up by name once; after that, and in the queue of all messages,
        // by its id.
        let id = match self.topics.find(topic) {
            Some(id) => id,
            None => match self.enter(topic, now) {
                Some(id) => id,
                None => {
                    // A topic that could never be remembered: each message in an epoch of its
                    // own.
                    let epoch = self.fresh_epoch();
                    return Position { epoch, offset: 1 };
                }
            },
        };
        let t = self.topics.get_mut(id).expect("found or entered just now");
        if t.last == u32::MAX {
            self.new_epoch(id);
            return self.append(topic, make, now);
        }
        t.touched = now;
        t.last += 1;
        let position = Position {
            epoch: t.epoch,
            offset: t.last,
        };
        let value = make(position);
        let cost = value.weight() + KEPT_OVERHEAD;
        if self.limits.messages == 0 || cost + topic_cost(topic) > self.limits.bytes {
            self.drop_kept(id);
            return position;
        }
        if t.kept.len() >= self.limits.messages {
            let gone = t.kept.pop_front().expect("at the limit, so not empty");
            self.bytes -= gone.value.weight() + KEPT_OVERHEAD;
            self.kept -= 1;
            self.counts.evicted += 1;
        }
        let kept = Kept {
            offset: position.offset,
            value,
        };
        if self.bytes + cost <= self.limits.bytes {
            t.kept.push_back(kept);
        } else {
            self.make_room(cost, 0, Some(id));
            let t = self.topics.get_mut(id).expect("make_room keeps it");
            t.kept.push_back(kept);
        }
        self.order.push_back(Queued {
            topic: id,
            epoch: position.epoch,
            offset: position.offset,
            at: now,
        });
        self.bytes += cost;
        self.kept += 1;
        if self.order.len() > 2 * self.kept + COMPACT_SLACK {
            self.compact();
        }
        position
    }

    /// Takes the entries of messages already gone out of the queue of all messages.
    fn compact(&mut self) {
        let topics = &self.topics;
        self.order.retain(|q| {
            // A topic's kept messages are a run of offsets: those in it are live.
            topics
                .get(q.topic)
                .filter(|t| t.epoch == q.epoch)
                .is_some_and(|t| match (t.kept.front(), t.kept.back()) {
                    (Some(first), Some(last)) => (first.offset..=last.offset).contains(&q.offset),
                    _ => false,
                })
        });
    }

    /// The position of `topic`'s last message. A topic nobody published to (or forgotten) is
    /// not remembered for being asked: it stands at offset 0 of the epoch its next message
    /// starts ([`History::unpublished_epoch`]).
    pub fn position(&mut self, topic: &[u8], now: Instant) -> Position {
        self.expire(now);
        match self.topics.find_mut(topic) {
            Some((_, t)) => {
                t.touched = now;
                Position {
                    epoch: t.epoch,
                    offset: t.last,
                }
            }
            None => Position {
                epoch: self.unpublished_epoch(topic),
                offset: 0,
            },
        }
    }

    /// The bucket `topic` is counted in when forgotten.
    fn bucket(&self, topic: &[u8]) -> usize {
        (self.key.hash_one((0u8, topic)) % FORGET_BUCKETS as u64) as usize
    }

    /// The epoch the next message of `topic`, which the history does not remember, starts:
    /// the same until a topic of its bucket is forgotten, never 0.
    fn unpublished_epoch(&self, topic: &[u8]) -> u32 {
        let forgotten = self.forgotten[self.bucket(topic)];
        let epoch = self.key.hash_one((1u8, topic, forgotten)) as u32;
        epoch.max(1)
    }

    /// Ages what is kept, then makes `topic` known (in the epoch pages were told it would
    /// start, room made for it) if it was not, touched at `now`; its id, or `None` for a topic
    /// too long to remember within the budget.
    fn enter(&mut self, topic: &[u8], now: Instant) -> Option<Id> {
        self.expire(now);
        if topic_cost(topic) > self.limits.bytes {
            return None;
        }
        if let Some((id, t)) = self.topics.find_mut(topic) {
            t.touched = now;
            return Some(id);
        }
        self.make_room(0, topic_cost(topic), None);
        // The epoch pages asking before the first message were told.
        let epoch = self.unpublished_epoch(topic);
        self.bytes += topic_cost(topic);
        let t = Topic {
            epoch,
            last: 0,
            kept: VecDeque::new(),
            touched: now,
        };
        Some(self.topics.insert(topic, t))
    }

    /// The messages of `topic` after `seen`, oldest first, or why they cannot all be given.
    pub fn after(
        &mut self,
        topic: &[u8],
        seen: Position,
        now: Instant,
    ) -> Result<impl Iterator<Item = (Position, &V)>, NotRecovered> {
        self.expire(now);
        let (kept, skip, epoch) = match self.topics.named(topic) {
            // Nobody published to it (since it was forgotten): a page that stands before the
            // first message of the epoch it will start has missed nothing.
            None if seen.epoch != self.unpublished_epoch(topic) => return Err(NotRecovered::Epoch),
            None if seen.offset > 0 => return Err(NotRecovered::Future),
            None => (None, 0, seen.epoch),
            Some(t) if t.epoch != seen.epoch => return Err(NotRecovered::Epoch),
            Some(t) if seen.offset > t.last => return Err(NotRecovered::Future),
            Some(t) => {
                let first = t.kept.front().map_or(t.last + 1, |k| k.offset);
                if seen.offset + 1 < first {
                    return Err(NotRecovered::Evicted);
                }
                let skip = (seen.offset + 1 - first) as usize;
                (Some(&t.kept), skip, t.epoch)
            }
        };
        Ok(kept.into_iter().flatten().skip(skip).map(positioned(epoch)))
    }

    /// Where a page that saw `seen` of `topic` is given messages from ([`History::after`]), and
    /// whether that is all it missed: after `seen`; or, `seen` being of another epoch (the
    /// history was lost since), from the current epoch's start if the history still holds its
    /// first message, the page being told it may have lost others; otherwise from nowhere.
    pub fn resume(
        &mut self,
        topic: &[u8],
        seen: Position,
        now: Instant,
    ) -> (Result<(), NotRecovered>, Option<Position>) {
        let why = match self.after(topic, seen, now) {
            Ok(_) => return (Ok(()), Some(seen)),
            Err(why) => why,
        };
        if why != NotRecovered::Epoch {
            return (Err(why), None);
        }
        let start = self.position(topic, now).start();
        let from = self.after(topic, start, now).is_ok().then_some(start);
        (Err(why), from)
    }

    /// Drops the messages older than [`Limits::age`], and, once every [`Limits::idle`], the
    /// topics idle that long with nothing kept. Cheap to call often.
    pub fn expire(&mut self, now: Instant) {
        while let Some(q) = self.order.front() {
            if now.saturating_duration_since(q.at) < self.limits.age {
                break;
            }
            if self.drop_oldest() {
                self.counts.expired += 1;
            }
        }
        if now.saturating_duration_since(self.swept) >= self.limits.idle {
            self.swept = now;
            let idle = self.limits.idle;
            self.forget_but(None, |t| now.saturating_duration_since(t.touched) >= idle);
        }
        if self.topics.sparse() {
            self.make_dense();
        }
    }

    /// Gives up the table's slots no topic holds (many topics were forgotten), and the
    /// entries of forgotten topics in the queue of all messages. No other call holds an id
    /// across this one: it runs in [`History::expire`] only.
    fn make_dense(&mut self) {
        let moved = self.topics.make_dense();
        self.order.retain_mut(|q| match moved(q.topic) {
            Some(id) => {
                q.topic = id;
                true
            }
            None => false,
        });
    }

    /// What the topics and their messages take, by estimate.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Messages kept now.
    pub fn messages(&self) -> usize {
        self.kept
    }

    /// Topics remembered now.
    pub fn topics(&self) -> usize {
        self.topics.len()
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Starts a new epoch for the topic, dropping what it kept.
    fn new_epoch(&mut self, id: Id) {
        let epoch = self.fresh_epoch();
        self.drop_kept(id);
        if let Some(t) = self.topics.get_mut(id) {
            t.epoch = epoch;
            t.last = 0;
        }
    }

    /// Drops every message the topic keeps.
    fn drop_kept(&mut self, id: Id) {
        let Some(t) = self.topics.get_mut(id) else {
            return;
        };
        let gone = std::mem::take(&mut t.kept);
        for k in &gone {
            self.release(k);
        }
        self.counts.evicted += gone.len() as u64;
    }

    fn fresh_epoch(&mut self) -> u32 {
        self.next_epoch = self.next_epoch.wrapping_add(1).max(1);
        self.next_epoch
    }

    /// Drops the oldest kept messages until `needed` more bytes, and `new_topic` more for a
    /// topic not remembered yet, fit in the budget; failing that, forgets the topics other
    /// than `keep` that keep nothing.
    fn make_room(&mut self, needed: usize, new_topic: usize, keep: Option<Id>) {
        let fits = |h: &Self| h.bytes + needed + new_topic <= h.limits.bytes;
        while !fits(self) && self.kept > 0 {
            if self.drop_oldest() {
                self.counts.evicted += 1;
            }
        }
        if !fits(self) {
            self.forget_but(keep, |_| true);
        }
    }

    /// Drops the oldest entry of the queue of all messages, and its message if it is still
    /// kept; true when it was.
    fn drop_oldest(&mut self) -> bool {
        let Some(q) = self.order.pop_front() else {
            return false;
        };
        let Some(t) = self.topics.get_mut(q.topic).filter(|t| t.epoch == q.epoch) else {
            return false;
        };
        if t.kept.front().is_none_or(|k| k.offset != q.offset) {
            return false;
        }
        let gone = t.kept.pop_front().expect("looked at above");
        self.release(&gone);
        true
    }

    /// Takes a message that went out of the figures.
    fn release(&mut self, gone: &Kept<V>) {
        self.bytes -= gone.value.weight() + KEPT_OVERHEAD;
        self.kept -= 1;
    }

    /// Forgets the topics that keep nothing and that `forget` picks, but for `but`.
    fn forget_but(&mut self, but: Option<Id>, forget: impl Fn(&Topic<V>) -> bool) {
        let gone = self
            .topics
            .forget(|id, t| t.kept.is_empty() && Some(id) != but && forget(t));
        // The epoch a forgotten topic's next message starts is not the one it had.
        for name in &gone {
            let bucket = self.bucket(name);
            self.forgotten[bucket] = self.forgotten[bucket].wrapping_add(1);
            self.bytes -= topic_cost(name);
        }
        self.counts.forgotten += gone.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn limits(messages: usize, bytes: usize) -> Limits {
        Limits {
            messages,
            age: HOUR,
            bytes,
            idle: 2 * HOUR,
        }
    }

    fn value(s: &str) -> Box<[u8]> {
        s.as_bytes().into()
    }

    fn after(
        h: &mut History<Box<[u8]>>,
        topic: &[u8],
        seen: Position,
        now: Instant,
    ) -> Vec<String> {
        match h.after(topic, seen, now) {
            Ok(m) => m
                .map(|(_, v)| String::from_utf8(v.to_vec()).unwrap())
                .collect(),
            Err(e) => vec![format!("{e:?}")],
        }
    }

    #[test]
    fn each_topic_numbers_its_messages_from_one_in_an_epoch_of_its_own() {
        let now = Instant::now();
        let mut h = History::new(limits(10, 1 << 20), now);
        let a1 = h.append(b"a", |_| value("1"), now);
        let b1 = h.append(b"b", |_| value("1"), now);
        let a2 = h.append(b"a", |_| value("2"), now);
        assert_eq!((a1.offset, b1.offset, a2.offset), (1, 1, 2));
        assert_eq!(a1.epoch, a2.epoch);
        assert_ne!(a1.epoch, b1.epoch);
        assert_ne!(a1.epoch, 0);
        assert_eq!(h.position(b"a", now), a2);
        let other: History<Box<[u8]>> = History::new(limits(10, 1 << 20), now);
        assert_ne!(
            other.next_epoch, h.next_epoch,
            "another history, other epochs"
        );
    }

    #[test]
    fn a_page_is_given_what_came_after_its_position_or_told_why_not() {
        let now = Instant::now();
        let mut h = History::new(limits(3, 1 << 20), now);
        let start = h.position(b"t", now);
        assert_eq!(start.offset, 0);
        for m in ["1", "2", "3"] {
            h.append(b"t", |_| value(m), now);
        }
        assert_eq!(after(&mut h, b"t", start, now), ["1", "2", "3"]);
        let at2 = Position { offset: 2, ..start };
        assert_eq!(after(&mut h, b"t", at2, now), ["3"]);
        let at3 = Position { offset: 3, ..start };
        assert!(after(&mut h, b"t", at3, now).is_empty(), "nothing missed");
        let future = Position { offset: 4, ..start };
        assert_eq!(after(&mut h, b"t", future, now), ["Future"]);
        let other = Position {
            epoch: start.epoch ^ 1,
            ..start
        };
        assert_eq!(after(&mut h, b"t", other, now), ["Epoch"]);
        assert_eq!(after(&mut h, b"unknown", start, now), ["Epoch"]);
        // A fourth message pushes the first out: offset 0 can no longer be brought up to date.
        h.append(b"t", |_| value("4"), now);
        assert_eq!(after(&mut h, b"t", start, now), ["Evicted"]);
        let at1 = Position { offset: 1, ..start };
        assert_eq!(after(&mut h, b"t", at1, now), ["2", "3", "4"]);
        assert_eq!(h.messages(), 3);
        assert_eq!(h.counts().evicted, 1);
    }

    #[test]
    fn messages_older_than_the_age_go_and_a_quiet_topic_still_answers_nothing_missed() {
        let start = Instant::now();
        let mut h = History::new(limits(10, 1 << 20), start);
        let p = h.append(b"t", |_| value("old"), start);
        let later = start + HOUR;
        assert_eq!(h.messages(), 1);
        h.expire(later);
        assert_eq!((h.messages(), h.counts().expired), (0, 1));
        assert!(after(&mut h, b"t", p, later).is_empty(), "saw the last one");
        let before = Position { offset: 0, ..p };
        assert_eq!(after(&mut h, b"t", before, later), ["Evicted"]);
        // Idle for `idle` with nothing kept: forgotten, and a new epoch when it comes back.
        h.expire(start + 2 * HOUR);
        assert_eq!(h.topics(), 0);
        assert_eq!(h.bytes(), 0);
        assert_eq!(after(&mut h, b"t", p, start + 2 * HOUR), ["Epoch"]);
        assert_ne!(
            h.append(b"t", |_| value("new"), start + 2 * HOUR).epoch,
            p.epoch
        );
    }

    #[test]
    fn topics_forgotten_by_the_thousand_give_their_slots_back_and_the_rest_stay_found() {
        let start = Instant::now();
        let mut h = History::new(limits(10, 64 << 20), start);
        let value = || Box::from(&b"v"[..]);
        for i in 0..5_000u32 {
            h.append(format!("old-{i}").as_bytes(), |_| value(), start);
        }
        // Later, ten topics whose messages outlive the old ones'.
        let later = start + HOUR + HOUR / 2;
        let kept: Vec<(String, Position)> = (0..10)
            .map(|i| {
                let name = format!("kept-{i}");
                let p = h.append(name.as_bytes(), |_| value(), later);
                (name, p)
            })
            .collect();
        assert_eq!((h.topics(), h.topics.slots()), (5_010, 5_010));
        // Idle for `idle`: the old topics are forgotten, and their slots given back.
        let idle = start + 2 * HOUR;
        h.expire(idle);
        assert_eq!(h.topics(), 10);
        assert_eq!(h.topics.slots(), 10, "the table made dense");
        // The kept topics are found by name, and through the queue of all messages: their
        // messages go when their age comes.
        for (name, p) in &kept {
            let before = Position { offset: 0, ..*p };
            assert_eq!(after(&mut h, name.as_bytes(), before, idle), ["v"]);
        }
        let expired = h.counts().expired;
        h.expire(later + HOUR);
        assert_eq!(h.counts().expired, expired + 10);
        assert_eq!(h.messages(), 0);
    }

    #[test]
    fn the_byte_budget_drops_the_oldest_messages_of_any_topic_first() {
        let now = Instant::now();
        let one = 100 + KEPT_OVERHEAD;
        let topics = 2 * topic_cost(b"a");
        let mut h = History::new(limits(100, topics + 3 * one), now);
        let big = || vec![b'x'; 100].into_boxed_slice();
        let a = h.append(b"a", |_| big(), now);
        h.append(b"b", |_| big(), now);
        h.append(b"a", |_| big(), now);
        assert_eq!(h.bytes(), topics + 3 * one);
        // The fourth drops the oldest: a's first.
        h.append(b"b", |_| big(), now);
        assert_eq!(h.bytes(), topics + 3 * one);
        assert_eq!(h.messages(), 3);
        assert_eq!(
            h.after(b"a", Position { offset: 0, ..a }, now).err(),
            Some(NotRecovered::Evicted)
        );
        assert_eq!(h.after(b"a", a, now).unwrap().count(), 1);
        assert_eq!(h.counts().evicted, 1);
    }

    #[test]
    fn memory_stays_within_the_budget_whatever_the_topics_and_messages() {
        let now = Instant::now();
        let budget = 1 << 20;
        let mut h = History::new(limits(50, budget), now);
        for i in 0..3_000u32 {
            let mut topic = vec![b'x'; (i as usize * 7919) % 30_000];
            topic.extend_from_slice(&i.to_be_bytes());
            let v = vec![b'v'; (i as usize * 104_729) % 70_000].into_boxed_slice();
            h.append(&topic[..topic.len() % 40], |_| v, now);
            h.position(&topic, now);
            assert!(h.bytes() <= budget, "{} at {i}", h.bytes());
        }
        // The queue of all messages holds one entry per kept message, give or take the ones
        // already gone that have not come up yet: never more than the messages appended.
        assert!(h.order.len() <= 3_000);
    }

    #[test]
    fn another_epochs_page_resumes_from_the_current_epochs_first_while_it_is_kept() {
        let now = Instant::now();
        let mut h = History::new(limits(3, 1 << 20), now);
        for _ in 0..3 {
            h.append(b"t", |_| Box::from(&b"m"[..]), now);
        }
        let here = h.position(b"t", now);
        assert_eq!(h.resume(b"t", here, now), (Ok(()), Some(here)));
        let other = Position {
            epoch: here.epoch ^ 1,
            offset: 2,
        };
        assert_eq!(
            h.resume(b"t", other, now),
            (Err(NotRecovered::Epoch), Some(here.start()))
        );
        // A fourth message pushes the epoch's first out: nothing of it is given.
        h.append(b"t", |_| Box::from(&b"m"[..]), now);
        assert_eq!(h.resume(b"t", other, now), (Err(NotRecovered::Epoch), None));
        let future = Position { offset: 9, ..here };
        assert_eq!(
            h.resume(b"t", future, now),
            (Err(NotRecovered::Future), None)
        );
    }

    #[test]
    fn a_busy_topic_behind_a_quiet_one_does_not_grow_the_queue_of_all_messages() {
        let now = Instant::now();
        let mut h = History::new(limits(100, 64 << 20), now);
        // The quiet topic's one message stays first in the queue for its whole age.
        h.append(b"quiet", |_| Box::from(&b"q"[..]), now);
        for _ in 0..100_000 {
            h.append(b"busy", |_| Box::from(&b"b"[..]), now);
        }
        assert_eq!(h.messages(), 101);
        assert!(
            h.order.len() <= 2 * 101 + COMPACT_SLACK,
            "{}",
            h.order.len()
        );
        let quiet = Position {
            epoch: h.position(b"quiet", now).epoch,
            offset: 0,
        };
        assert_eq!(h.after(b"quiet", quiet, now).unwrap().count(), 1);
        let busy = h.position(b"busy", now);
        let from = Position {
            offset: busy.offset - 100,
            ..busy
        };
        assert_eq!(h.after(b"busy", from, now).unwrap().count(), 100);
    }

    #[test]
    fn a_topic_nobody_published_to_costs_nothing_and_its_first_message_is_recovered() {
        let now = Instant::now();
        let mut h = History::new(limits(10, 1 << 20), now);
        let asked: Vec<Position> = (0..10_000u32)
            .map(|i| h.position(format!("never-{i}").as_bytes(), now))
            .collect();
        assert_eq!((h.topics(), h.bytes()), (0, 0), "asking remembers nothing");
        assert!(asked.iter().all(|p| p.offset == 0 && p.epoch != 0));
        let before = h.position(b"t", now);
        assert_eq!(h.position(b"t", now), before, "the same answer every time");
        assert!(
            after(&mut h, b"t", before, now).is_empty(),
            "nothing missed"
        );
        let ahead = Position {
            offset: 1,
            ..before
        };
        assert_eq!(after(&mut h, b"t", ahead, now), ["Future"]);
        let other = Position {
            epoch: before.epoch ^ 1,
            offset: 0,
        };
        assert_eq!(after(&mut h, b"t", other, now), ["Epoch"]);
        // The first message starts the epoch the page was told: it is given from the first.
        let first = h.append(b"t", |_| value("1"), now);
        assert_eq!(
            first,
            Position {
                offset: 1,
                ..before
            }
        );
        h.append(b"t", |_| value("2"), now);
        assert_eq!(after(&mut h, b"t", before, now), ["1", "2"]);
        assert_eq!(h.resume(b"t", before, now), (Ok(()), Some(before)));
    }

    #[test]
    fn a_forgotten_topic_starts_an_epoch_no_page_was_told() {
        let start = Instant::now();
        let mut h = History::new(limits(10, 1 << 20), start);
        let before = h.position(b"t", start);
        let p = h.append(b"t", |_| value("1"), start);
        assert_eq!(p.epoch, before.epoch);
        // Kept nothing for `idle`: forgotten.
        let later = start + 2 * HOUR;
        h.expire(later);
        assert_eq!(h.topics(), 0);
        let now_before = h.position(b"t", later);
        assert_ne!(now_before.epoch, before.epoch, "not the forgotten epoch");
        assert_eq!(after(&mut h, b"t", before, later), ["Epoch"]);
        assert_eq!(after(&mut h, b"t", p, later), ["Epoch"]);
        let next = h.append(b"t", |_| value("2"), later);
        assert_eq!(
            next,
            Position {
                offset: 1,
                ..now_before
            }
        );
        assert_eq!(after(&mut h, b"t", p, later), ["Epoch"]);
        assert_eq!(
            h.resume(b"t", p, later),
            (Err(NotRecovered::Epoch), Some(now_before)),
            "given the new epoch from its first"
        );
    }

    #[test]
    fn asking_about_topics_nobody_published_to_never_evicts_what_is_kept() {
        let now = Instant::now();
        let budget = 64 * 1024;
        let mut h = History::new(limits(100, budget), now);
        for i in 0..20 {
            h.append(b"real", |_| value(&format!("{i:0>1000}")), now);
        }
        let since = Position {
            offset: 0,
            ..h.position(b"real", now)
        };
        for i in 0..100_000u32 {
            let name = format!("{i:x}-{}", "x".repeat(150));
            let p = h.position(name.as_bytes(), now);
            assert!(h.after(name.as_bytes(), p, now).is_ok());
        }
        assert_eq!(after(&mut h, b"real", since, now).len(), 20);
        assert_eq!((h.topics(), h.counts().evicted), (1, 0));
    }

    #[test]
    fn offsets_running_out_start_a_new_epoch() {
        let now = Instant::now();
        let mut h = History::new(limits(10, 1 << 20), now);
        let first = h.append(b"t", |_| value("1"), now);
        h.topics.find_mut(b"t").unwrap().1.last = u32::MAX - 1;
        assert_eq!(h.append(b"t", |_| value("2"), now).offset, u32::MAX);
        let next = h.append(b"t", |_| value("3"), now);
        assert_ne!(next.epoch, first.epoch);
        assert_eq!(next.offset, 1);
        assert_eq!(h.messages(), 1);
    }

    /// A small deterministic generator, for the property test.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn any_interleaving_within_the_bounds_gives_each_reader_exactly_what_was_published() {
        // Readers come and go on random topics while messages are appended; each reader keeps
        // the position of the last message it got and, when it comes back, is given what came
        // after. Within the history's bounds every reader ends with exactly its topic's
        // sequence, once and in order; past them it is told, and starts again from the topic's
        // position (as a page would).
        for seed in 1..=200u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let now = Instant::now();
            let per_topic = 1 + rng.below(20) as usize;
            let mut h: History<Box<[u8]>> = History::new(limits(per_topic, 1 << 20), now);
            let topics: [&[u8]; 3] = [b"all", b"user:1", b"chan:x"];
            let mut published: Vec<Vec<u32>> = vec![Vec::new(); 3];
            // Per reader: topic, position, what it got, whether it is connected, and the
            // index in `published` from which it must have everything.
            struct Reader {
                topic: usize,
                at: Position,
                got: Vec<u32>,
                online: bool,
                from: usize,
            }
            let mut readers: Vec<Reader> = (0..6)
                .map(|i| {
                    let topic = i % 3;
                    Reader {
                        topic,
                        at: h.position(topics[topic], now),
                        got: Vec::new(),
                        online: true,
                        from: 0,
                    }
                })
                .collect();
            let mut n = 0u32;
            for _ in 0..400 {
                match rng.below(4) {
                    0 | 1 => {
                        let topic = rng.below(3) as usize;
                        n += 1;
                        let p = h.append(topics[topic], |_| n.to_be_bytes().to_vec().into(), now);
                        published[topic].push(n);
                        for r in readers.iter_mut().filter(|r| r.online && r.topic == topic) {
                            assert_eq!(p.offset, r.at.offset + 1, "live, in order");
                            r.at = p;
                            r.got.push(n);
                        }
                    }
                    2 => {
                        let r = &mut readers[rng.below(6) as usize];
                        r.online = false;
                    }
                    _ => {
                        let r = &mut readers[rng.below(6) as usize];
                        if r.online {
                            continue;
                        }
                        r.online = true;
                        let missed = h.after(topics[r.topic], r.at, now).map(|missed| {
                            missed
                                .map(|(p, v)| (p, u32::from_be_bytes(v[..].try_into().unwrap())))
                                .collect::<Vec<_>>()
                        });
                        match missed {
                            Ok(missed) => {
                                for (p, n) in missed {
                                    assert_eq!(p.offset, r.at.offset + 1, "no gap");
                                    r.at = p;
                                    r.got.push(n);
                                }
                            }
                            Err(why) => {
                                assert_eq!(why, NotRecovered::Evicted, "seed {seed}");
                                let missed = published[r.topic].len() - r.from - r.got.len();
                                assert!(missed > per_topic, "told only past the bound");
                                r.at = h.position(topics[r.topic], now);
                                r.from = published[r.topic].len();
                                r.got.clear();
                            }
                        }
                    }
                }
            }
            for r in &readers {
                if r.online {
                    assert_eq!(r.got, published[r.topic][r.from..], "seed {seed}");
                }
            }
        }
    }
}
