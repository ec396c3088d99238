//! Positions and recovery with a forwarder: the forwarder keeps each topic's history, and a
//! session's request is answered from it.
//!
//! A request that puts a session in a topic holds the topic's messages back from the session
//! ([`Hub::hold`]), joins it (so the bus subscribes first), and hands the request to the bus
//! thread ([`Remote::join`], through the engine's handle), which asks the forwarder up the
//! same connection what the topic holds after the session's position. The bus thread's
//! bookkeeping of requests, answers and fills is the state machine of `recovery_state.rs`;
//! [`Recovering`] feeds it and carries out the answers it gives. The forwarder answers on its one forwarding thread, so its answer
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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pushnote::recover::Part;
use pushnote_history::Position;
use sockjs::{Message, Session};

use crate::broker::{Answer, Broker};
use crate::fanout::Fanout;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::protocol::Outcome;
use crate::recovery_state::{Action, Event, For, Join, Live, Machine};

/// How long a request waits for the forwarder's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// Makes the reply of a request from its outcome.
type Reply = Box<dyn FnOnce(Outcome) -> Message + Send>;

/// How often requests answered busy, or given up, are logged at most; the metrics count every
/// one at once.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// What the bus thread keeps with a session's request.
pub struct Asked {
    session: Session,
    reply: Reply,
}

/// A message of an answer as the bus thread keeps it.
pub enum Body {
    /// A fill's: the kept body, handed on as the bus message it was.
    Raw(Vec<u8>),
    /// A session's request's: made as sessions are sent it.
    Made(Message),
}

/// A bus message's frames.
pub type Frames = Vec<Vec<u8>>;

/// Sessions' requests on their way to the bus thread, each under its ticket.
pub struct Remote {
    next_ticket: AtomicU64,
    asked: Mutex<HashMap<u64, Join<Asked>>>,
    broker: Arc<dyn Broker>,
    hub: Arc<Hub>,
}

impl Remote {
    /// Requests handed to the bus thread through `broker`.
    pub fn new(broker: Arc<dyn Broker>, hub: Arc<Hub>) -> Remote {
        Remote {
            next_ticket: AtomicU64::new(1),
            asked: Mutex::new(HashMap::new()),
            broker,
            hub,
        }
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
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let request = Join {
            request: Asked {
                session: session.clone(),
                reply: Box::new(reply),
            },
            topic: topic.to_vec(),
            since,
            start,
            held,
        };
        self.asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ticket, request);
        // After the subscription `join` commanded: the bus thread takes it after that.
        self.broker.asked(ticket);
        Ok(())
    }

    fn take(&self, ticket: u64) -> Option<Join<Asked>> {
        let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        let join = asked.remove(&ticket);
        crate::room::give_back(&mut *asked);
        join
    }
}

/// The bus thread's side of recovery with a forwarder: the state machine, fed with what comes
/// in, and the answers it gives carried out.
pub struct Recovering {
    remote: Arc<Remote>,
    machine: Machine<Asked, Body, Frames>,
    hub: Arc<Hub>,
    fanout: Arc<Fanout>,
    metrics: Arc<Metrics>,
    /// What the answers being received may hold at once, in all (for the busy log).
    memory: usize,
    /// Requests answered busy, not logged yet, and when that was last logged.
    busy_log: (u64, Option<Instant>),
}

impl Recovering {
    /// Recovery of `remote`'s requests, whose answers may bring `memory` bytes at once in
    /// all, and `per_answer` each.
    pub fn new(
        remote: Arc<Remote>,
        fanout: Arc<Fanout>,
        metrics: Arc<Metrics>,
        memory: usize,
        per_answer: usize,
    ) -> Recovering {
        Recovering {
            hub: remote.hub.clone(),
            remote,
            machine: Machine::new(ANSWER_TIMEOUT, memory, per_answer),
            fanout,
            metrics,
            memory,
            busy_log: (0, None),
        }
    }

    /// Takes the request waiting under `ticket`.
    pub fn asked(&mut self, ticket: u64, now: Instant) {
        if let Some(join) = self.remote.take(ticket) {
            self.machine.handle(Event::Join(join), now);
        }
    }

    /// The server subscribed `topic`.
    pub fn subscribed(&mut self, topic: &[u8], now: Instant) {
        self.machine.handle(Event::Subscribed(topic.to_vec()), now);
    }

    /// The server unsubscribed `topic`.
    pub fn unsubscribed(&mut self, topic: &[u8], now: Instant) {
        self.machine
            .handle(Event::Unsubscribed(topic.to_vec()), now);
    }

    /// The forwarder came back.
    pub fn reconnected(&mut self, now: Instant) {
        self.machine.handle(Event::Reconnected, now);
        self.gauge();
    }

    /// Takes one part of an answer; `message` makes a kept body of a request's topic into
    /// what sessions are sent (`None`: the server refuses it, and it is missed).
    pub fn answer(
        &mut self,
        answer: Answer<'_>,
        now: Instant,
        message: impl FnOnce(&[u8], Position, &[u8]) -> Option<Message>,
    ) {
        let Answer::Part(part, body) = answer else {
            tracing::warn!("malformed recovery answer from the forwarder; dropped");
            return;
        };
        let event = match part {
            Part::Message { id, position } => {
                let kept = match self.machine.answer_for(id) {
                    For::Nothing => return,
                    For::Fill => Body::Raw(body.to_vec()),
                    For::Request(topic) => match message(topic, position, body) {
                        Some(m) => Body::Made(m),
                        None => {
                            self.machine.refuse(id);
                            return;
                        }
                    },
                };
                Event::AnswerMessage {
                    id,
                    position,
                    body: kept,
                    len: body.len(),
                }
            }
            Part::End { id, position, end } => Event::AnswerEnd { id, position, end },
        };
        self.machine.handle(event, now);
        self.gauge();
    }

    /// Takes in a live message of the forwarder at `position`: held while its topic waits for
    /// a fill, or handed back to deliver now.
    #[inline]
    pub fn live(&mut self, position: Option<Position>, frames: Frames) -> Live<Frames> {
        self.machine.live(position, frames, stamped_topic)
    }

    /// Whether requests or fills wait (the bus thread then looks at their deadlines).
    pub fn waiting(&self) -> bool {
        self.machine.poll_timeout().is_some()
    }

    /// Gives up the requests and fills whose answer is late: each session is let into its
    /// topic and told it was not recovered.
    pub fn expire(&mut self, now: Instant) {
        let (requests, fills) = self.machine.handle_timeout(now);
        if fills > 0 {
            tracing::warn!(
                topics = fills,
                "the forwarder did not answer in time what it had when it came back"
            );
        }
        if requests > 0 {
            // One line a turn of the bus thread (four a second at most), however many.
            tracing::warn!(
                requests,
                "the forwarder (or Redis) did not answer recovery requests in time"
            );
        }
        self.gauge();
    }

    /// The next action for the bus thread to carry out: ask the forwarder, deliver what a
    /// fill brought or held, count what was lost. Answers to sessions are carried out here.
    pub fn next(&mut self) -> Option<Action<Asked, Body, Frames>> {
        loop {
            match self.machine.poll_action()? {
                Action::Answer {
                    request: Asked { session, reply },
                    topic,
                    messages,
                    outcome,
                    at,
                    order,
                    held,
                    asked,
                } => {
                    self.metrics
                        .count_recovery(outcome, messages.len(), asked.elapsed());
                    let mut messages: Vec<Message> = messages
                        .into_iter()
                        .filter_map(|(_, body)| match body {
                            Body::Made(m) => Some(m),
                            Body::Raw(_) => None,
                        })
                        .collect();
                    messages.push(reply(Outcome {
                        position: at,
                        recovered: outcome,
                    }));
                    self.fanout.send_in_order(&session, messages, order);
                    if held {
                        self.hub.release(&topic, &session);
                    }
                    let busy = self.machine.take_busy();
                    if busy > 0 {
                        self.log_busy(busy);
                    }
                }
                action => return Some(action),
            }
        }
    }

    fn gauge(&self) {
        self.metrics
            .recovery_bytes_held
            .store(self.machine.held_bytes() as u64, Ordering::Relaxed);
    }

    /// Logs the requests answered busy, at most once every [`LOG_EVERY`].
    fn log_busy(&mut self, busy: u64) {
        let log = &mut self.busy_log;
        log.0 += busy;
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

/// The topic of a message the forwarder stamped: its first frame less the stamp.
fn stamped_topic(frames: &Frames) -> &[u8] {
    const STAMP: usize = 8;
    let first = &frames[0];
    &first[..first.len().saturating_sub(STAMP)]
}
