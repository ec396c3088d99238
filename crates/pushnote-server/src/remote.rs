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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pushnote::recover::{End, Part, Request};
use pushnote::wire::Stamp;
use pushnote_history::Position;
use sockjs::{Message, Session};

use crate::fanout::{Fanout, InOrder};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::protocol::{Outcome, Why};

/// Where requests go up to the forwarder: the bus, after every subscription sent before.
pub trait Upstream: Send + Sync {
    /// Sends an encoded [`Request`].
    fn recover(&self, request: &[u8]);
}

/// How long a request waits for the forwarder's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// The most messages one answer may bring; the rest are dropped and the answer is taken as
/// "evicted" (a forwarder keeps at most `--history-size` a topic).
const MAX_ANSWER_MESSAGES: usize = 100_000;

/// Makes the reply of a request from its outcome.
type Reply = Box<dyn FnOnce(Outcome) -> Message + Send>;

/// A request waiting for its answer.
struct Pending {
    session: Session,
    topic: Vec<u8>,
    /// A `positions` request (the broadcasts, which the session is in already).
    start: bool,
    /// The topic's messages are held back from the session until the answer.
    held: bool,
    /// The messages of the answer so far, in both forms.
    messages: Vec<Message>,
    overflow: bool,
    reply: Reply,
    deadline: Instant,
}

/// What the forwarder had of a topic when it came back (`Remote::fill`).
pub struct Filled {
    pub topic: Vec<u8>,
    /// Its kept messages, from its epoch's first: each one's position and body.
    pub messages: Vec<(Stamp, Vec<u8>)>,
    /// The topic's last position there; `None` when no answer came in time.
    pub position: Option<Stamp>,
}

/// A fill request waiting for its answer.
struct Fill {
    filled: Filled,
    deadline: Instant,
}

/// The requests waiting for the forwarder.
pub struct Remote {
    server: u64,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
    /// Fill requests, asked and answered on the bus thread alone.
    fills: Mutex<HashMap<u64, Fill>>,
    upstream: Arc<dyn Upstream>,
    hub: Arc<Hub>,
    fanout: Arc<Fanout>,
    metrics: Arc<Metrics>,
}

impl Remote {
    /// Requests of server `server` (the id its reply topic is named by).
    pub fn new(
        server: u64,
        upstream: Arc<dyn Upstream>,
        hub: Arc<Hub>,
        fanout: Arc<Fanout>,
        metrics: Arc<Metrics>,
    ) -> Remote {
        Remote {
            server,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            fills: Mutex::new(HashMap::new()),
            upstream,
            hub,
            fanout,
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
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
        self.lock().insert(
            id,
            Pending {
                session: session.clone(),
                topic: topic.to_vec(),
                start,
                held,
                messages: Vec::new(),
                overflow: false,
                reply: Box::new(reply),
                deadline: Instant::now() + ANSWER_TIMEOUT,
            },
        );
        let request = Request {
            server: self.server,
            id,
            since: since.map(Stamp::from),
            topic,
        };
        self.upstream.recover(&request.encode());
        Ok(())
    }

    /// Whether requests are waiting (the bus thread then looks at their deadlines).
    pub fn waiting(&self) -> bool {
        !self.lock().is_empty() || !self.lock_fills().is_empty()
    }

    fn lock_fills(&self) -> MutexGuard<'_, HashMap<u64, Fill>> {
        self.fills.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request, for the bus thread to send, for everything the forwarder keeps of `topic`'s
    /// current epoch: after the forwarder came back, what it accepted before this server's
    /// subscriptions reached it.
    pub fn fill(&self, topic: &[u8]) -> Vec<u8> {
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
        let since = Some(Stamp { run: 0, number: 0 });
        Request {
            server: self.server,
            id,
            since,
            topic,
        }
        .encode()
    }

    /// Takes one part of an answer (`[reply topic, header, body…]`, on the bus thread);
    /// `message` makes a kept body of the request's topic into what sessions are sent. The
    /// end of a fill's answer returns what it brought, for the bus thread to deliver.
    pub fn take(
        &self,
        frames: &[Vec<u8>],
        message: impl FnOnce(&[u8], Position, &[u8]) -> Option<Message>,
    ) -> Option<Filled> {
        let Some(part) = frames.get(1).and_then(|h| Part::decode(h)) else {
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
                            let body = frames.get(2).cloned().unwrap_or_default();
                            fill.filled.messages.push((position, body));
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
                let mut pending = self.lock();
                let p = pending.get_mut(&id)?;
                if p.messages.len() >= MAX_ANSWER_MESSAGES {
                    p.overflow = true;
                    return None;
                }
                let made = frames
                    .get(2)
                    .and_then(|body| message(&p.topic, at.into(), body));
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
                let p = self.lock().remove(&id)?;
                let recovered = match end {
                    End::Position => None,
                    _ if p.overflow => Some(Err(Why::Evicted)),
                    End::Recovered => Some(Ok(())),
                    End::Epoch => Some(Err(Why::Epoch)),
                    End::Future => Some(Err(Why::Future)),
                    End::Evicted => Some(Err(Why::Evicted)),
                };
                self.answer(p, at.into(), recovered);
            }
        }
        None
    }

    /// Gives up the requests whose answer is late: each session is let into its topic and
    /// told it was not recovered; `last` is the last position this server saw of a topic.
    /// Returns the fills given up, with nothing in them.
    pub fn expire(&self, now: Instant, last: impl Fn(&[u8]) -> Option<Stamp>) -> Vec<Filled> {
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
        let late = take_late(&mut self.lock(), now, |p| p.deadline);
        for p in late {
            tracing::warn!(
                topic = %String::from_utf8_lossy(&p.topic).trim_end_matches('\0'),
                "the forwarder did not answer a recovery request in time"
            );
            let at = last(&p.topic).map_or(
                Position {
                    epoch: 0,
                    offset: 0,
                },
                Position::from,
            );
            self.answer(p, at, Some(Err(Why::Unavailable)));
        }
        late_fills
    }

    fn answer(&self, p: Pending, at: Position, recovered: Option<Result<(), Why>>) {
        self.metrics.count_recovery(recovered, p.messages.len());
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
