//! Positions and recovery with a forwarder: the forwarder keeps each topic's history, and a
//! session's request is answered from it.
//!
//! A request that puts a session in a topic holds the topic's messages back from the session
//! ([`Hub::hold`]), joins it (so the bus subscribes first), and asks the forwarder, through the
//! bus thread and up the same connection, what the topic holds after the session's position
//! ([`recover::Request`]). The forwarder answers on its one forwarding thread, so its answer
//! comes down between the topic's messages it forwarded before and those after: every
//! message up to the answer's position is in the answer or was held back, every later one
//! comes after it. The bus thread gives the session the answer's messages and the reply
//! ([`Fanout::send_in_order`]), then lets the topic's messages reach it. Broadcasts, which a
//! session is in from the start, are given again from the history instead of those on their
//! way, as with a server's own history (`recovery.rs`).
//!
//! An answer that does not come within [`ANSWER_TIMEOUT`] (the forwarder is down, or dropped
//! it past its high-water mark) is given up: the session is let into the topic and told that
//! it was not recovered, `"unavailable"`.
//!
//! What answers may bring is bounded. Each request is allowed a session's queue bytes (more
//! would close the session as slow anyway): the forwarder gives nothing past a request's
//! allowance, nor past what it may replay a second over all its servers (its
//! `--recovery-rate`), and says so. The answers being received hold at most
//! `--recovery-memory` in all here: an answer that would pass it is dropped as it comes. The
//! session is then told `"busy"`. So pages asking again and again for a topic of large
//! messages cost this server and the forwarder at most that, however many sessions ask.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pushnote::recover::{End, Part};
use pushnote_history::Position;
use sockjs::{Message, Session};

use crate::broker::{Answer, Broker, HistoryRequest};
use crate::fanout::{Fanout, InOrder};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::protocol::{Outcome, Why};

/// How long a request waits for the forwarder's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// The most messages one answer may bring; the rest are dropped and the answer is taken as
/// "evicted" (a forwarder keeps at most `--history-size` a topic).
const MAX_ANSWER_MESSAGES: usize = 100_000;

/// Makes the reply of a request from its outcome.
type Reply = Box<dyn FnOnce(Outcome) -> Message + Send>;

/// How often requests answered busy, or given up, are logged at most; the metrics count every
/// one at once.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// The requests waiting for their answers, and what their answers brought so far in all.
#[derive(Default)]
struct Waiting {
    requests: HashMap<u64, Pending>,
    /// The bytes of kept bodies the waiting requests' answers brought so far.
    held: usize,
}

/// A request waiting for its answer.
struct Pending {
    session: Session,
    topic: Vec<u8>,
    /// The position it asked from.
    since: Option<Position>,
    /// A `positions` request (the broadcasts, which the session is in already).
    start: bool,
    /// The topic's messages are held back from the session until the answer.
    held: bool,
    /// The messages of the answer so far, in both forms.
    messages: Vec<Message>,
    overflow: bool,
    /// The most bytes of kept bodies its answer may bring.
    allowance: usize,
    /// The bytes of kept bodies its answer brought so far.
    received: usize,
    /// The answer brought more than its allowance, or than the server's answers may hold: it
    /// is answered busy.
    busy: bool,
    reply: Reply,
    /// When the session asked.
    asked: Instant,
    deadline: Instant,
}

/// What the forwarder had of a topic when it came back (`Remote::fill`).
pub struct Filled {
    pub topic: Vec<u8>,
    /// Its kept messages, from its epoch's first: each one's position and body.
    pub messages: Vec<(Position, Vec<u8>)>,
    /// The topic's last position there; `None` when no answer came in time.
    pub position: Option<Position>,
}

/// A fill request waiting for its answer.
struct Fill {
    filled: Filled,
    deadline: Instant,
}

/// The requests waiting for the forwarder.
pub struct Remote {
    next_id: AtomicU64,
    pending: Mutex<Waiting>,
    /// What the answers being received may hold at once, in all.
    memory: usize,
    /// What one answer may bring.
    per_answer: usize,
    /// Requests answered busy, not logged yet, and when that was last logged.
    busy_log: Mutex<(u64, Option<Instant>)>,
    /// Fill requests, asked and answered on the bus thread alone.
    fills: Mutex<HashMap<u64, Fill>>,
    broker: Arc<dyn Broker>,
    hub: Arc<Hub>,
    fanout: Arc<Fanout>,
    metrics: Arc<Metrics>,
}

impl Remote {
    /// Requests to `broker`, whose answers may bring `memory` bytes at once in all, and
    /// `per_answer` each.
    pub fn new(
        broker: Arc<dyn Broker>,
        hub: Arc<Hub>,
        fanout: Arc<Fanout>,
        metrics: Arc<Metrics>,
        memory: usize,
        per_answer: usize,
    ) -> Remote {
        Remote {
            next_id: AtomicU64::new(1),
            pending: Mutex::new(Waiting::default()),
            memory,
            per_answer,
            busy_log: Mutex::new((0, None)),
            fills: Mutex::new(HashMap::new()),
            broker,
            hub,
            fanout,
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes request `id` out of the waiting ones, and what its answer brought out of what
    /// they hold.
    fn take_pending(&self, id: u64) -> Option<Pending> {
        let mut waiting = self.lock();
        let p = waiting.requests.remove(&id)?;
        waiting.held -= p.received;
        self.gauge(&waiting);
        Some(p)
    }

    fn gauge(&self, waiting: &Waiting) {
        self.metrics
            .recovery_bytes_held
            .store(waiting.held as u64, Ordering::Relaxed);
    }

    /// Puts `session` in `topic` with `join` (with `start`, a `positions` request: it is in the
    /// broadcasts already), then asks the forwarder for what it missed since `since` (or the
    /// topic's position alone); the session is given that, then `reply`'s message. With
    /// `held` (the session was not in the topic), the topic's messages reach it only after.
    #[allow(clippy::too_many_arguments)]
    pub fn join<E>(
        &self,
        session: &Session,
        topic: &[u8],
        since: Option<Position>,
        start: bool,
        held: bool,
        join: impl FnOnce() -> Result<(), E>,
        reply: impl FnOnce(Outcome) -> Message + Send + 'static,
    ) -> Result<(), E> {
        if held {
            self.hub.hold(topic, session);
        }
        if let Err(e) = join() {
            if held {
                self.hub.release(topic, session);
            }
            return Err(e);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let allowance = self.per_answer.min(self.memory).min(u32::MAX as usize);
        {
            let mut waiting = self.lock();
            waiting.requests.insert(
                id,
                Pending {
                    session: session.clone(),
                    topic: topic.to_vec(),
                    since,
                    start,
                    held,
                    messages: Vec::new(),
                    overflow: false,
                    allowance,
                    received: 0,
                    busy: false,
                    reply: Box::new(reply),
                    asked: Instant::now(),
                    deadline: Instant::now() + ANSWER_TIMEOUT,
                },
            );
        }
        self.broker.history(&HistoryRequest {
            id,
            since,
            max_bytes: u32::try_from(allowance).unwrap_or(u32::MAX),
            topic,
        });
        Ok(())
    }

    /// Whether requests are waiting (the bus thread then looks at their deadlines).
    pub fn waiting(&self) -> bool {
        !self.lock().requests.is_empty() || !self.lock_fills().is_empty()
    }

    fn lock_fills(&self) -> MutexGuard<'_, HashMap<u64, Fill>> {
        self.fills.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request, for the bus thread to send, for everything the forwarder keeps of `topic`'s
    /// current epoch: after the forwarder came back, what it accepted before this server's
    /// subscriptions reached it.
    pub fn fill<'t>(&self, topic: &'t [u8]) -> HistoryRequest<'t> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock_fills().insert(
            id,
            Fill {
                filled: Filled {
                    topic: topic.to_vec(),
                    messages: Vec::new(),
                    position: None,
                },
                deadline: Instant::now() + ANSWER_TIMEOUT,
            },
        );
        // Epoch 0 is no topic's: the answer is the current epoch's, from its first.
        let since = Some(Position {
            epoch: 0,
            offset: 0,
        });
        HistoryRequest {
            id,
            since,
            // Not a page's: what the forwarder may replay bounds it.
            max_bytes: u32::MAX,
            topic,
        }
    }

    /// After the forwarder came back: every waiting request asked again under a new id, sent
    /// by the bus thread with `send` after its fill requests ([`Remote::fill`]). A request sent
    /// while the forwarder was away, or before the bus thread knew it was back, may have
    /// reached the new run ahead of the fills, and its answer would give the session the new
    /// epoch's messages that the fill then gives every session of the topic again; asked
    /// again after the fills, its answer comes after theirs (the session being held back
    /// from the topic, or taking broadcasts without positions, until it), and an answer to
    /// the old id is ignored.
    pub fn ask_again(&self, mut send: impl FnMut(&HistoryRequest<'_>)) {
        let mut guard = self.lock();
        let waiting = &mut *guard;
        let mut ids: Vec<u64> = waiting.requests.keys().copied().collect();
        // In the order they were asked: a session's requests are answered in order.
        ids.sort_unstable();
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        for id in ids {
            let Some(mut p) = waiting.requests.remove(&id) else {
                continue;
            };
            waiting.held -= std::mem::take(&mut p.received);
            p.messages = Vec::new();
            p.overflow = false;
            p.busy = false;
            p.deadline = deadline;
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            send(&HistoryRequest {
                id,
                since: p.since,
                max_bytes: u32::try_from(p.allowance).unwrap_or(u32::MAX),
                topic: &p.topic,
            });
            waiting.requests.insert(id, p);
        }
        self.gauge(waiting);
    }

    /// Takes one part of an answer (on the bus thread); `message` makes a kept body of the
    /// request's topic into what sessions are sent. The end of a fill's answer returns what
    /// it brought, for the bus thread to deliver.
    pub fn take(
        &self,
        answer: Answer<'_>,
        message: impl FnOnce(&[u8], Position, &[u8]) -> Option<Message>,
    ) -> Option<Filled> {
        let Answer::Part(part, body) = answer else {
            tracing::warn!("malformed recovery answer from the forwarder; dropped");
            return None;
        };
        let id = match part {
            Part::Message { id, .. } | Part::End { id, .. } => id,
        };
        {
            let mut fills = self.lock_fills();
            if let Some(fill) = fills.get_mut(&id) {
                match part {
                    Part::Message { position, .. } => {
                        if fill.filled.messages.len() < MAX_ANSWER_MESSAGES {
                            fill.filled.messages.push((position, body.to_vec()));
                        }
                        return None;
                    }
                    Part::End { position, .. } => {
                        let mut fill = fills.remove(&id).expect("found above");
                        fill.filled.position = Some(position);
                        return Some(fill.filled);
                    }
                }
            }
        }
        match part {
            Part::Message { id, position: at } => {
                let mut guard = self.lock();
                let waiting = &mut *guard;
                let p = waiting.requests.get_mut(&id)?;
                if p.busy {
                    return None;
                }
                let len = body.len();
                if p.received + len > p.allowance || waiting.held + len > self.memory {
                    // More than it was allowed (a forwarder of an earlier release), or than
                    // the answers here may hold: none of it.
                    p.busy = true;
                    p.messages = Vec::new();
                    waiting.held -= std::mem::take(&mut p.received);
                    self.gauge(waiting);
                    return None;
                }
                p.received += len;
                waiting.held += len;
                self.metrics
                    .recovery_bytes_held
                    .store(waiting.held as u64, Ordering::Relaxed);
                if p.messages.len() >= MAX_ANSWER_MESSAGES {
                    p.overflow = true;
                    return None;
                }
                let made = message(&p.topic, at, body);
                match made {
                    Some(m) => p.messages.push(m),
                    // A body the server refuses is missed as if it never came.
                    None => p.overflow = true,
                }
            }
            Part::End {
                id,
                position: at,
                end,
            } => {
                let p = self.take_pending(id)?;
                let recovered = match end {
                    End::Position => None,
                    _ if p.busy => Some(Err(Why::Busy)),
                    _ if p.overflow => Some(Err(Why::Evicted)),
                    End::Busy => Some(Err(Why::Busy)),
                    End::Recovered => Some(Ok(())),
                    End::Epoch => Some(Err(Why::Epoch)),
                    End::Future => Some(Err(Why::Future)),
                    End::Evicted => Some(Err(Why::Evicted)),
                };
                self.answer(p, at, recovered);
            }
        }
        None
    }

    /// Gives up the requests whose answer is late: each session is let into its topic and
    /// told it was not recovered; `last` is the last position this server saw of a topic.
    /// Returns the fills given up, with nothing in them.
    pub fn expire(&self, now: Instant, last: impl Fn(&[u8]) -> Option<Position>) -> Vec<Filled> {
        let late_fills: Vec<Filled> = take_late(&mut self.lock_fills(), now, |f| f.deadline)
            .into_iter()
            .map(|f| Filled {
                topic: f.filled.topic,
                messages: Vec::new(),
                position: None,
            })
            .collect();
        if !late_fills.is_empty() {
            tracing::warn!(
                topics = late_fills.len(),
                "the forwarder did not answer in time what it had when it came back"
            );
        }
        let late = {
            let mut waiting = self.lock();
            let late = take_late(&mut waiting.requests, now, |p| p.deadline);
            waiting.held -= late.iter().map(|p| p.received).sum::<usize>();
            self.gauge(&waiting);
            late
        };
        if !late.is_empty() {
            // One line a turn of the bus thread (four a second at most), however many.
            tracing::warn!(
                requests = late.len(),
                "the forwarder did not answer recovery requests in time"
            );
        }
        for p in late {
            let at = last(&p.topic).unwrap_or(Position {
                epoch: 0,
                offset: 0,
            });
            self.answer(p, at, Some(Err(Why::Unavailable)));
        }
        late_fills
    }

    fn answer(&self, p: Pending, at: Position, recovered: Option<Result<(), Why>>) {
        self.metrics
            .count_recovery(recovered, p.messages.len(), p.asked.elapsed());
        if recovered == Some(Err(Why::Busy)) {
            self.log_busy();
        }
        let Pending {
            session,
            topic,
            start,
            held,
            mut messages,
            reply,
            ..
        } = p;
        // Messages come with an answer that recovered, or that gives another epoch's position
        // the current epoch's from its first; none with the others.
        if !matches!(recovered, Some(Ok(()) | Err(Why::Epoch))) {
            messages.clear();
        }
        messages.push(reply(Outcome {
            position: at,
            recovered,
        }));
        self.fanout
            .send_in_order(&session, messages, InOrder::of(start, recovered));
        if held {
            self.hub.release(&topic, &session);
        }
    }
}

impl Remote {
    /// Logs the requests answered busy, at most once every [`LOG_EVERY`].
    fn log_busy(&self) {
        let mut log = self.busy_log.lock().unwrap_or_else(|e| e.into_inner());
        log.0 += 1;
        if log.1.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            return;
        }
        tracing::warn!(
            requests = std::mem::take(&mut log.0),
            memory = self.memory,
            "recovery requests answered busy: what they missed would pass --recovery-memory \
             here or the forwarder's --recovery-rate"
        );
        log.1 = Some(Instant::now());
    }
}

/// Takes out of `waiting` the requests whose `deadline` has come.
fn take_late<T>(
    waiting: &mut HashMap<u64, T>,
    now: Instant,
    deadline: impl Fn(&T) -> Instant,
) -> Vec<T> {
    let ids: Vec<u64> = waiting
        .iter()
        .filter(|(_, t)| deadline(t) <= now)
        .map(|(&id, _)| id)
        .collect();
    ids.iter().filter_map(|id| waiting.remove(id)).collect()
}
