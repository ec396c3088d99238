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
//! The messages themselves are kept in one queue, oldest first, each at a number that never
//! changes while it is kept; a topic keeps the numbers of its messages. Taking the oldest
//! message out (for its age or for the budget) touches the queue alone: the topic's numbers
//! of messages gone that way are skipped, and taken out when the topic is next looked at. A
//! message is the only memory of its own that a publish reads or writes twice.
//!
//! Pure: no I/O, no clock of its own (every call that ages something is given `now`).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use crate::{Name, Position};

/// What a kept message costs beyond its value, by estimate: its number in its topic's queue,
/// its entry in the queue of all messages (the value's pointer and its time), and the
/// allocator's header and rounding. The queue of all messages may hold as many entries again
/// of messages that went before their turn (and one per topic, and [`COMPACT_SLACK`]) before
/// they are taken out.
pub const KEPT_OVERHEAD: usize = 80;

/// What a topic costs beyond its name, by estimate: its entry in the map of topics (its name
/// when short, epoch, offsets, empty queue and time), the map's spare entries (up to as many
/// again), and its share of the queue of all messages' entries of messages gone.
pub const TOPIC_OVERHEAD: usize = 192;

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

/// How many entries of messages gone before their turn the queue of all messages holds,
/// beyond as many as there are messages kept and topics, before they are taken out.
const COMPACT_SLACK: usize = 1024;

/// How many spare entries the map of topics may keep, beyond as many as it has topics, before
/// it gives their memory back (after many topics were forgotten).
const SPARE_TOPICS: usize = 1024;

/// Each topic's recent messages and positions.
pub struct History<V> {
    limits: Limits,
    topics: HashMap<Name, Topic>,
    queue: Queue<V>,
    /// The random key of the epochs of topics nobody published to.
    key: RandomState,
    /// Per bucket of topic names, how many of its topics were forgotten (wrapping).
    forgotten: Box<[u32]>,
    next_epoch: u32,
    /// When topics were last looked at for idleness.
    swept: Instant,
}

/// Every kept message, oldest first, and what the history takes.
struct Queue<V> {
    /// The messages, each numbered `first` and its index. The entry of a message that went
    /// before its turn (past its topic's count, or its topic's epoch ended) holds no value: it
    /// is skipped when it comes up, and the entries of such messages are taken out all at once
    /// when there are many ([`History::compact`]).
    entries: VecDeque<Entry<V>>,
    /// The number of the first entry.
    first: u64,
    /// What the topics and their messages take, by estimate.
    bytes: usize,
    /// Messages kept now.
    kept: usize,
    counts: Counts,
}

struct Entry<V> {
    value: Option<V>,
    at: Instant,
}

struct Topic {
    epoch: u32,
    /// The offset of the topic's last message in this epoch; 0 before the first.
    last: u32,
    /// The numbers of the topic's kept messages in the queue of all messages, oldest first.
    /// Numbers before the queue's first are of messages that went with the oldest of all;
    /// they are taken out ([`Topic::settle`]) before the queue grows, at the topic's count,
    /// and before it is read. Once settled, the numbers are those of offsets `last` - len + 1
    /// to `last`.
    numbers: VecDeque<u64>,
    /// When the topic last had a message, or was asked for.
    touched: Instant,
}

impl Topic {
    fn new(epoch: u32, now: Instant) -> Topic {
        Topic {
            epoch,
            last: 0,
            numbers: VecDeque::new(),
            touched: now,
        }
    }

    /// Takes out the numbers of messages that went with the oldest of all (before `first`):
    /// the topic's numbers are its kept messages' from then on.
    fn settle(&mut self, first: u64) {
        while self.numbers.front().is_some_and(|&n| n < first) {
            self.numbers.pop_front();
        }
    }

    /// The offset of the topic's first kept message (`last` + 1 when it keeps none), once
    /// settled.
    fn first_offset(&self) -> u64 {
        u64::from(self.last) + 1 - self.numbers.len() as u64
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

impl<V: Weigh> Queue<V> {
    /// Keeps `value`, which costs `cost`; its number.
    fn push(&mut self, value: V, cost: usize, now: Instant) -> u64 {
        let number = self.first + self.entries.len() as u64;
        self.entries.push_back(Entry {
            value: Some(value),
            at: now,
        });
        self.bytes += cost;
        self.kept += 1;
        number
    }

    /// The message numbered `number`, if it is kept.
    fn get(&self, number: u64) -> Option<&V> {
        let index = number.checked_sub(self.first)?;
        self.entries.get(index as usize)?.value.as_ref()
    }

    /// Drops the message numbered `number` before its turn, if it is kept.
    fn evict(&mut self, number: u64) {
        let Some(index) = number.checked_sub(self.first) else {
            return;
        };
        if let Some(gone) = self
            .entries
            .get_mut(index as usize)
            .and_then(|e| e.value.take())
        {
            self.release(&gone);
            self.counts.evicted += 1;
        }
    }

    /// Drops the oldest entry, and its message if it is still kept; true when it was.
    fn drop_oldest(&mut self) -> bool {
        let Some(entry) = self.entries.pop_front() else {
            return false;
        };
        self.first += 1;
        match entry.value {
            Some(gone) => {
                self.release(&gone);
                true
            }
            None => false,
        }
    }

    /// Takes a message that went out of the figures.
    fn release(&mut self, gone: &V) {
        self.bytes -= gone.weight() + KEPT_OVERHEAD;
        self.kept -= 1;
    }

    /// Drops the oldest messages, of any topic, until `needed` more bytes fit in `budget`, or
    /// none is left.
    fn make_room(&mut self, needed: usize, budget: usize) {
        while self.bytes + needed > budget && self.kept > 0 {
            if self.drop_oldest() {
                self.counts.evicted += 1;
            }
        }
    }
}

/// Drops every message `topic` keeps.
fn drop_kept<V: Weigh>(topic: &mut Topic, queue: &mut Queue<V>) {
    for number in std::mem::take(&mut topic.numbers) {
        queue.evict(number);
    }
}

/// The bucket `topic` is counted in when forgotten.
fn bucket(key: &RandomState, topic: &[u8]) -> usize {
    (key.hash_one((0u8, topic)) % FORGET_BUCKETS as u64) as usize
}

impl<V: Weigh> History<V> {
    /// An empty history whose epochs differ from any other history's, almost surely.
    pub fn new(limits: Limits, now: Instant) -> History<V> {
        History {
            limits,
            topics: HashMap::new(),
            queue: Queue {
                entries: VecDeque::new(),
                first: 0,
                bytes: 0,
                kept: 0,
                counts: Counts::default(),
            },
            key: RandomState::new(),
            forgotten: vec![0; FORGET_BUCKETS].into_boxed_slice(),
            next_epoch: fresh_seed() as u32,
            swept: now,
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
        // The topic is looked up once; its messages' memory is not read.
        let Some(mut t) = self.topics.get_mut(topic) else {
            if self.enter(topic, now) {
                return self.append(topic, make, now);
            }
            // A topic that could never be remembered: each message in an epoch of its own.
            let epoch = self.fresh_epoch();
            return Position { epoch, offset: 1 };
        };
        if t.last == u32::MAX {
            self.new_epoch(topic);
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
        let (limits, queue) = (self.limits, &mut self.queue);
        if limits.messages == 0 || cost + topic_cost(topic) > limits.bytes {
            drop_kept(t, queue);
            return position;
        }
        if t.numbers.len() >= limits.messages {
            t.settle(queue.first);
            if t.numbers.len() >= limits.messages {
                let oldest = t.numbers.pop_front().expect("at the limit, so not empty");
                queue.evict(oldest);
            }
        }
        // Most often the oldest messages make room, without this topic's borrow let go.
        queue.make_room(cost, limits.bytes);
        if queue.bytes + cost > limits.bytes {
            self.make_room(cost, Some(topic));
            t = self
                .topics
                .get_mut(topic)
                .expect("not forgotten: make_room keeps it");
        }
        if t.numbers.len() == t.numbers.capacity() {
            // Numbers of messages gone are taken out before the topic's queue grows for them.
            t.settle(self.queue.first);
        }
        let number = self.queue.push(value, cost, now);
        t.numbers.push_back(number);
        let queue = &self.queue;
        if queue.entries.len() > 2 * queue.kept + self.topics.len() + COMPACT_SLACK {
            self.compact();
        }
        position
    }

    /// Drops the oldest messages of any topic until `needed` more bytes fit in the budget;
    /// failing that (the topics alone fill it), forgets the topics that keep nothing, but for
    /// `keep`.
    fn make_room(&mut self, needed: usize, keep: Option<&[u8]>) {
        self.queue.make_room(needed, self.limits.bytes);
        if self.queue.bytes + needed > self.limits.bytes {
            self.forget_but(keep, |_| true);
        }
    }

    /// Takes the entries of messages that went before their turn out of the queue of all
    /// messages, and renumbers the messages kept.
    fn compact(&mut self) {
        let first = self.queue.first;
        // A kept message's new number is its old one less the entries gone before it.
        let mut gone_before = Vec::with_capacity(self.queue.entries.len());
        let mut gone = 0u64;
        for entry in &self.queue.entries {
            gone_before.push(gone);
            gone += u64::from(entry.value.is_none());
        }
        self.queue.entries.retain(|e| e.value.is_some());
        for t in self.topics.values_mut() {
            t.settle(first);
            for number in &mut t.numbers {
                *number -= gone_before[(*number - first) as usize];
            }
        }
    }

    /// The position of `topic`'s last message. A topic nobody published to (or forgotten) is
    /// not remembered for being asked: it stands at offset 0 of the epoch its next message
    /// starts ([`History::unpublished_epoch`]).
    pub fn position(&mut self, topic: &[u8], now: Instant) -> Position {
        self.expire(now);
        match self.topics.get_mut(topic) {
            Some(t) => {
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

    /// The epoch the next message of `topic`, which the history does not remember, starts:
    /// the same until a topic of its bucket is forgotten, never 0.
    fn unpublished_epoch(&self, topic: &[u8]) -> u32 {
        let forgotten = self.forgotten[bucket(&self.key, topic)];
        let epoch = self.key.hash_one((1u8, topic, forgotten)) as u32;
        epoch.max(1)
    }

    /// Makes `topic`, which is not remembered, known (in the epoch pages were told it would
    /// start, room made for it), touched at `now`; false for a topic too long to remember
    /// within the budget.
    fn enter(&mut self, topic: &[u8], now: Instant) -> bool {
        let cost = topic_cost(topic);
        if cost > self.limits.bytes {
            return false;
        }
        self.make_room(cost, None);
        // The epoch pages asking before the first message were told.
        let epoch = self.unpublished_epoch(topic);
        self.queue.bytes += cost;
        self.topics.insert(Name::new(topic), Topic::new(epoch, now));
        true
    }

    /// The messages of `topic` after `seen`, oldest first, or why they cannot all be given.
    pub fn after(
        &mut self,
        topic: &[u8],
        seen: Position,
        now: Instant,
    ) -> Result<impl Iterator<Item = (Position, &V)>, NotRecovered> {
        self.expire(now);
        if let Some(t) = self.topics.get_mut(topic) {
            t.settle(self.queue.first);
        }
        let (numbers, skip, epoch, first) = match self.topics.get(topic) {
            // Nobody published to it (since it was forgotten): a page that stands before the
            // first message of the epoch it will start has missed nothing.
            None if seen.epoch != self.unpublished_epoch(topic) => return Err(NotRecovered::Epoch),
            None if seen.offset > 0 => return Err(NotRecovered::Future),
            None => (None, 0, seen.epoch, 0),
            Some(t) if t.epoch != seen.epoch => return Err(NotRecovered::Epoch),
            Some(t) if seen.offset > t.last => return Err(NotRecovered::Future),
            Some(t) => {
                let first = t.first_offset();
                let next = u64::from(seen.offset) + 1;
                if next < first {
                    return Err(NotRecovered::Evicted);
                }
                (Some(&t.numbers), (next - first) as usize, t.epoch, first)
            }
        };
        let queue = &self.queue;
        let kept = numbers.into_iter().flatten().enumerate().skip(skip);
        Ok(kept.map(move |(i, &number)| {
            let offset = (first + i as u64) as u32;
            let value = queue
                .get(number)
                .expect("a settled topic's messages are kept");
            (Position { epoch, offset }, value)
        }))
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
        let queue = &mut self.queue;
        while let Some(oldest) = queue.entries.front() {
            if now.saturating_duration_since(oldest.at) < self.limits.age {
                break;
            }
            if queue.drop_oldest() {
                queue.counts.expired += 1;
            }
        }
        if now.saturating_duration_since(self.swept) >= self.limits.idle {
            self.swept = now;
            let idle = self.limits.idle;
            self.forget_but(None, |t| now.saturating_duration_since(t.touched) >= idle);
        }
    }

    /// What the topics and their messages take, by estimate.
    pub fn bytes(&self) -> usize {
        self.queue.bytes
    }

    /// Messages kept now.
    pub fn messages(&self) -> usize {
        self.queue.kept
    }

    /// Topics remembered now.
    pub fn topics(&self) -> usize {
        self.topics.len()
    }

    pub fn counts(&self) -> Counts {
        self.queue.counts
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Starts a new epoch for `topic`, dropping what it kept.
    fn new_epoch(&mut self, topic: &[u8]) {
        let epoch = self.fresh_epoch();
        if let Some(t) = self.topics.get_mut(topic) {
            drop_kept(t, &mut self.queue);
            t.epoch = epoch;
            t.last = 0;
        }
    }

    fn fresh_epoch(&mut self) -> u32 {
        self.next_epoch = self.next_epoch.wrapping_add(1).max(1);
        self.next_epoch
    }

    /// Forgets the topics that keep nothing and that `forget` picks, but for `but`; gives the
    /// map's spare memory back when many went.
    fn forget_but(&mut self, but: Option<&[u8]>, forget: impl Fn(&Topic) -> bool) {
        let (first, key, forgotten) = (self.queue.first, &self.key, &mut self.forgotten);
        let mut gone_bytes = 0;
        let mut gone = 0;
        self.topics.retain(|name, t| {
            t.settle(first);
            if t.numbers.is_empty() {
                // A topic that keeps nothing keeps no memory for it.
                t.numbers = VecDeque::new();
            }
            let go = t.numbers.is_empty() && Some(&name[..]) != but && forget(t);
            if go {
                // The epoch a forgotten topic's next message starts is not the one it had.
                let bucket = bucket(key, name);
                forgotten[bucket] = forgotten[bucket].wrapping_add(1);
                gone_bytes += topic_cost(name);
                gone += 1;
            }
            !go
        });
        self.queue.bytes -= gone_bytes;
        self.queue.counts.forgotten += gone;
        if self.topics.capacity() > 2 * self.topics.len() + SPARE_TOPICS {
            self.topics.shrink_to_fit();
        }
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
    fn topics_forgotten_by_the_thousand_give_their_memory_back_and_the_rest_stay_found() {
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
        assert_eq!(h.topics(), 5_010);
        assert!(h.topics.capacity() >= 5_010);
        // Idle for `idle`: the old topics are forgotten, and the map's memory given back.
        let idle = start + 2 * HOUR;
        h.expire(idle);
        assert_eq!(h.topics(), 10);
        assert!(h.topics.capacity() < 100, "{}", h.topics.capacity());
        // The kept topics are found by name, and their messages in the queue of all messages:
        // they go when their age comes.
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
    fn a_topics_numbers_of_messages_gone_with_the_oldest_take_no_memory_for_long() {
        let now = Instant::now();
        let one = 1 + KEPT_OVERHEAD;
        // The budget holds three messages: each next one takes the oldest out.
        let mut h = History::new(limits(100, topic_cost(b"t") + 3 * one), now);
        for i in 0..1_000 {
            h.append(b"t", |_| value(&(i % 10).to_string()), now);
        }
        assert_eq!(h.messages(), 3);
        let t = h.topics.get(&b"t"[..]).unwrap();
        assert!(t.numbers.capacity() <= 8, "{}", t.numbers.capacity());
        let last = h.position(b"t", now);
        let from = Position {
            offset: last.offset - 3,
            ..last
        };
        assert_eq!(after(&mut h, b"t", from, now), ["7", "8", "9"]);
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
        assert!(h.queue.entries.len() <= 3_000);
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
        // The quiet topics' messages stay first in the queue for their whole age; each busy
        // topic's messages past its count go before their turn.
        h.append(b"quiet", |_| value("q"), now);
        let busy: [&[u8]; 3] = [b"busy-1", b"busy-2", b"busy-3"];
        for i in 0..100_000u32 {
            let topic = busy[(i % 7 % 3) as usize];
            h.append(topic, |_| value(&i.to_string()), now);
            if i % 10_000 == 0 {
                h.append(b"quiet", |_| value("q"), now);
            }
        }
        assert_eq!(h.messages(), 1 + 10 + 300);
        assert!(
            h.queue.entries.len() <= 2 * h.messages() + h.topics() + COMPACT_SLACK,
            "{}",
            h.queue.entries.len()
        );
        let quiet = Position {
            epoch: h.position(b"quiet", now).epoch,
            offset: 0,
        };
        assert_eq!(after(&mut h, b"quiet", quiet, now), ["q"; 11]);
        // Each busy topic's last hundred, in order, with their positions, after the queue was
        // taken in many times.
        for (b, topic) in busy.iter().enumerate() {
            let published: Vec<String> = (0..100_000u32)
                .filter(|i| (i % 7 % 3) as usize == b)
                .map(|i| i.to_string())
                .collect();
            let last = h.position(topic, now);
            let from = Position {
                offset: last.offset - 100,
                ..last
            };
            let got: Vec<(u32, String)> = h
                .after(topic, from, now)
                .unwrap()
                .map(|(p, v)| (p.offset, String::from_utf8(v.to_vec()).unwrap()))
                .collect();
            let offsets: Vec<u32> = (last.offset - 99..=last.offset).collect();
            assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), offsets);
            assert_eq!(
                got.into_iter().map(|g| g.1).collect::<Vec<_>>(),
                published[published.len() - 100..]
            );
            let gone = Position {
                offset: last.offset - 101,
                ..last
            };
            assert_eq!(after(&mut h, topic, gone, now), ["Evicted"]);
        }
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
        h.topics.get_mut(&b"t"[..]).unwrap().last = u32::MAX - 1;
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
