//! The forwarder: takes every message apps publish and republishes it to the servers
//! subscribed to its topic, keeping each topic's last messages for the servers that ask.
//!
//! Its app-facing SUB socket binds `--sub` and subscribes to everything; its server-facing XPUB
//! socket binds `--pub`. ZeroMQ filters by the subscriptions each server sent, so a targeted
//! message reaches only the servers holding that user. Bodies are moved without parsing; a
//! message that is not `[topic, body]` with a NUL-terminated topic, whose topic is a reply
//! topic, or whose topic or size is over its limit, is dropped and counted.
//!
//! Every message gets its topic's next position from the [`History`] (a [`wire::stamp_bytes`] after
//! the topic's NUL), which keeps a copy of its body within the history's limits. ZeroMQ drops
//! messages for a server whose queue is full (`--hwm`) without a word; each server counts the
//! positions it never saw. A server's recovery request ([`recover::Request`], sent up the same
//! connection) is answered on the one thread that forwards, so the answer goes down that
//! server's connection exactly between the messages forwarded before it and those after.

use std::sync::{Mutex, MutexGuard};

use pushnote_presence::{Action, Message, View, FORWARDER, TOPIC};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pushnote::confirm::{self, Refusal};
use pushnote::recover::{self, End, Part, Request};
use pushnote::wire;
use pushnote_history::history::NotRecovered;
use pushnote_history::{History, Position};

use crate::config::ForwarderConfig;
use crate::metrics::{Dropped, Metrics};
use crate::replay::Replay;

/// Why the forwarder could not start.
#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    /// ZeroMQ refused an endpoint (malformed, or the address is in use).
    #[error("{endpoint}: {source}")]
    Zmq {
        /// The endpoint in question.
        endpoint: String,
        /// ZeroMQ's error.
        source: zmq::Error,
    },
    /// The thread could not be started.
    #[error("cannot start the forwarder thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The bridge into Redis (`--broker`) could not be started.
    #[error("{0}")]
    Broker(String),
}

/// How long the forwarder's thread waits for messages before it looks at its stop flag and
/// its housekeeping (aged messages, idle topics, drop logs).
const TICK: Duration = Duration::from_millis(100);

/// How often drops are logged at most; the metrics count every one at once.
const DROP_LOG_EVERY: Duration = Duration::from_secs(1);

/// A running forwarder.
pub struct Forwarder {
    sub_endpoint: String,
    pub_endpoint: String,
    confirm_endpoint: Option<String>,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    thread: Option<JoinHandle<()>>,
    /// The bridge into Redis' thread (`--broker`), if on.
    bridge: Option<JoinHandle<()>>,
    /// Presence channels' members, as the servers' presence messages say.
    presence: Arc<Mutex<View>>,
    _ctx: zmq::Context,
}

impl Forwarder {
    /// Binds both endpoints and starts forwarding on a thread of its own. A port of `*` picks
    /// a free port; the `*_endpoint` methods tell which.
    pub fn start(config: &ForwarderConfig) -> Result<Forwarder, ForwarderError> {
        let ctx = zmq::Context::new();
        let err = |endpoint: &str| {
            let endpoint = endpoint.to_owned();
            move |source| ForwarderError::Zmq { endpoint, source }
        };
        let sub = ctx.socket(zmq::SUB).map_err(err(&config.sub_endpoint))?;
        sub.set_rcvhwm(config.high_water_mark)
            .map_err(err(&config.sub_endpoint))?;
        sub.set_subscribe(b"").map_err(err(&config.sub_endpoint))?;
        sub.set_linger(0).map_err(err(&config.sub_endpoint))?;
        sub.bind(&config.sub_endpoint)
            .map_err(err(&config.sub_endpoint))?;
        let publisher = ctx.socket(zmq::XPUB).map_err(err(&config.pub_endpoint))?;
        publisher
            .set_sndhwm(config.high_water_mark)
            .map_err(err(&config.pub_endpoint))?;
        publisher
            .set_linger(1000)
            .map_err(err(&config.pub_endpoint))?;
        publisher
            .bind(&config.pub_endpoint)
            .map_err(err(&config.pub_endpoint))?;
        let confirm = match &config.confirm_endpoint {
            Some(endpoint) => Some(confirm_socket(&ctx, endpoint, config).map_err(err(endpoint))?),
            None => None,
        };
        let sub_endpoint = bound(&sub, &config.sub_endpoint);
        let pub_endpoint = bound(&publisher, &config.pub_endpoint);
        let confirm_endpoint = confirm
            .as_ref()
            .zip(config.confirm_endpoint.as_deref())
            .map(|(socket, asked)| bound(socket, asked));
        let stop = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(Metrics::default());
        let (bridge, bridge_thread) = match &config.broker {
            Some(endpoint) => {
                let (side, thread) = crate::bridge::start(
                    &ctx,
                    endpoint.clone(),
                    &config.broker_prefix,
                    metrics.clone(),
                )
                .map_err(ForwarderError::Broker)?;
                (Some(side), Some(thread))
            }
            None => (None, None),
        };
        let presence = Arc::new(Mutex::new(View::new(
            FORWARDER,
            config.presence_max_known,
            false,
        )));
        let mut thread = Thread {
            presence: presence.clone(),
            presence_timeout: config.presence_timeout,
            bridge,
            sub,
            publisher,
            confirm,
            stop: stop.clone(),
            metrics: metrics.clone(),
            history: History::new(config.history, Instant::now()),
            replay: Replay::new(config.recovery_rate, Instant::now()),
            keep: config.history.messages > 0,
            max_topic_bytes: config.max_topic_bytes,
            max_message_bytes: config.max_message_bytes,
            drops: DropLog::default(),
            refusals: RefusalLog::default(),
        };
        let thread = std::thread::Builder::new()
            .name("pushnote-mq".into())
            .spawn(move || thread.run())?;
        Ok(Forwarder {
            sub_endpoint,
            pub_endpoint,
            confirm_endpoint,
            stop,
            metrics,
            thread: Some(thread),
            bridge: bridge_thread,
            presence,
            _ctx: ctx,
        })
    }

    /// Presence channels' members, as the servers' presence messages say (PROTOCOL §2d).
    pub fn presence(&self) -> Arc<Mutex<View>> {
        self.presence.clone()
    }

    /// The app-facing endpoint, as bound.
    pub fn sub_endpoint(&self) -> &str {
        &self.sub_endpoint
    }

    /// The server-facing endpoint, as bound.
    pub fn pub_endpoint(&self) -> &str {
        &self.pub_endpoint
    }

    /// The confirm endpoint, as bound, if any.
    pub fn confirm_endpoint(&self) -> Option<&str> {
        self.confirm_endpoint.as_deref()
    }

    /// The forwarder's figures, live.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// How many messages have been forwarded.
    pub fn forwarded(&self) -> u64 {
        self.metrics.forwarded.load(Ordering::Relaxed)
    }

    /// Stops forwarding (what was already handed to the server-facing socket still goes out
    /// for up to a second) and waits for the thread. Returns the number of messages forwarded.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Its queue closed with the forwarder's thread: it ends once what it held is published.
        if let Some(t) = self.bridge.take() {
            let _ = t.join();
        }
        self.forwarded()
    }
}

/// The ROUTER socket of confirmed publishes, bound at `endpoint`: each connected app's requests
/// and replies held up to `--confirm-hwm`; a frame over `--max-message-bytes` closes the app's
/// connection (ZeroMQ's own check, before the request is whole); a reply to an app gone or
/// holding too many is dropped and counted rather than waited for.
fn confirm_socket(
    ctx: &zmq::Context,
    endpoint: &str,
    config: &ForwarderConfig,
) -> Result<zmq::Socket, zmq::Error> {
    let socket = ctx.socket(zmq::ROUTER)?;
    socket.set_rcvhwm(config.confirm_hwm)?;
    socket.set_sndhwm(config.confirm_hwm)?;
    socket.set_maxmsgsize(i64::try_from(config.max_message_bytes).unwrap_or(i64::MAX))?;
    socket.set_router_mandatory(true)?;
    socket.set_linger(0)?;
    socket.bind(endpoint)?;
    Ok(socket)
}

fn bound(socket: &zmq::Socket, asked: &str) -> String {
    match socket.get_last_endpoint() {
        Ok(Ok(e)) => e,
        _ => asked.to_owned(),
    }
}

/// The forwarder's thread and all it owns.
struct Thread {
    sub: zmq::Socket,
    publisher: zmq::Socket,
    /// Confirmed publishes (`--confirm`), if on.
    confirm: Option<zmq::Socket>,
    /// The bridge into Redis (`--broker`), if on: messages go there instead of to servers.
    bridge: Option<crate::bridge::Side>,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    history: History<Box<[u8]>>,
    /// What recovery answers may still replay.
    replay: Replay,
    /// Whether bodies are kept at all (`--history-size` above 0).
    keep: bool,
    max_topic_bytes: usize,
    max_message_bytes: usize,
    drops: DropLog,
    refusals: RefusalLog,
    presence: Arc<Mutex<View>>,
    presence_timeout: Duration,
}

impl Thread {
    fn run(&mut self) {
        self.metrics.running.store(1, Ordering::Relaxed);
        self.forward();
        self.metrics.running.store(0, Ordering::Relaxed);
    }

    fn forward(&mut self) {
        const BATCH: usize = 4096;
        let mut frames = Vec::with_capacity(2);
        while !self.stop.load(Ordering::Relaxed) {
            let mut items = vec![
                self.sub.as_poll_item(zmq::POLLIN),
                self.publisher.as_poll_item(zmq::POLLIN),
            ];
            let confirm_at = self.confirm.as_ref().map(|confirm| {
                items.push(confirm.as_poll_item(zmq::POLLIN));
                items.len() - 1
            });
            let bridge_at = self.bridge.as_ref().map(|bridge| {
                items.push(bridge.replies.as_poll_item(zmq::POLLIN));
                items.len() - 1
            });
            match zmq::poll(&mut items, TICK.as_millis() as i64) {
                Ok(_) => {}
                Err(zmq::Error::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "forwarder poll failed; stopping");
                    return;
                }
            }
            let now = Instant::now();
            let readable = |at: Option<usize>| at.is_some_and(|i| items[i].is_readable());
            let confirms = readable(confirm_at);
            let bridge_replies = readable(bridge_at);
            let requests = items[1].is_readable();
            drop(items);
            if bridge_replies {
                self.take_bridge_replies();
            }
            if requests {
                self.take_requests(now);
            }
            let mut batch = Batch::default();
            if confirms {
                self.take_confirms(now, &mut batch);
            }
            for _ in 0..BATCH {
                if !self.receive(&mut frames) {
                    break;
                }
                batch.received += 1;
                match self.check(&frames) {
                    Ok(topic_len) => self.send(&mut frames, topic_len, now, &mut batch),
                    Err(why) => {
                        self.metrics.count_drop(why);
                        self.drops.note(why);
                    }
                }
                frames.clear();
            }
            let m = &self.metrics;
            m.received.fetch_add(batch.received, Ordering::Relaxed);
            m.forwarded.fetch_add(batch.forwarded, Ordering::Relaxed);
            m.forwarded_bytes.fetch_add(batch.bytes, Ordering::Relaxed);
            self.history.expire(now);
            {
                let mut presence = lock(&self.presence);
                presence.expire(now, self.presence_timeout);
                self.metrics
                    .presence_members
                    .store(presence.known() as u64, Ordering::Relaxed);
            }
            self.gauges();
            self.drops
                .report(now, self.max_topic_bytes, self.max_message_bytes);
            self.refusals.report(now, self.confirm_limits());
            self.replay.report(now);
        }
    }

    /// Reads one whole multipart message into `frames`; false when none is waiting.
    fn receive(&self, frames: &mut Vec<zmq::Message>) -> bool {
        loop {
            let mut frame = zmq::Message::new();
            match self.sub.recv(&mut frame, zmq::DONTWAIT) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) if frames.is_empty() => return false,
                // The rest of a multipart message is always there once its first frame is.
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "forwarder receive failed");
                    frames.clear();
                    return false;
                }
            }
            let more = frame.get_more();
            frames.push(frame);
            if !more {
                return true;
            }
        }
    }

    fn gauges(&self) {
        let (m, h) = (&self.metrics, &self.history);
        m.history.store(h);
        m.topics_forgotten
            .store(h.counts().forgotten, Ordering::Relaxed);
    }

    /// Reads what servers sent up: their subscriptions (ZeroMQ applies those itself) and
    /// their recovery requests, each answered at once.
    fn take_requests(&mut self, now: Instant) {
        loop {
            let frames = match self.publisher.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(zmq::Error::EAGAIN) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "forwarder receive from servers failed");
                    return;
                }
            };
            match frames.as_slice() {
                [frame] if matches!(frame.first(), Some(0 | 1)) => {}
                [frame] if frame.first() == Some(&SHARE) => self.share(&frame[1..], now),
                [frame] => match Request::decode(frame) {
                    Some(request) => self.answer(&request, now),
                    None => {
                        self.metrics
                            .requests_malformed
                            .fetch_add(1, Ordering::Relaxed);
                    }
                },
                _ => {
                    self.metrics
                        .requests_malformed
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Sends a server's presence message (PROTOCOL §2d) on to every server, and takes it into
    /// the forwarder's view; asks a server whose messages were lost for its state.
    fn share(&mut self, message: &[u8], now: Instant) {
        let body = match message.strip_prefix(TOPIC) {
            Some(body) if message.len() <= self.max_message_bytes => body,
            _ => {
                self.metrics
                    .requests_malformed
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let sent = self
            .publisher
            .send(TOPIC, zmq::SNDMORE)
            .and_then(|()| self.publisher.send(body, 0));
        if let Err(e) = sent {
            tracing::warn!(error = %e, "forwarder send of a presence message failed");
        }
        self.metrics
            .presence_messages
            .fetch_add(1, Ordering::Relaxed);
        let Ok(message) = Message::decode(body) else {
            return;
        };
        let action = lock(&self.presence).receive(message, now);
        if let Some(Action::Ask(server)) = action {
            self.ask(Some(server));
        }
    }

    /// Asks `server` (`None`: every server) for its whole presence state.
    fn ask(&mut self, server: Option<u64>) {
        let query = Message::Query {
            server: FORWARDER,
            n: 0,
            to: server,
        };
        let sent = self
            .publisher
            .send(TOPIC, zmq::SNDMORE)
            .and_then(|()| self.publisher.send(&query.encode()[..], 0));
        if let Err(e) = sent {
            tracing::warn!(error = %e, "forwarder send of a presence query failed");
        }
    }

    /// Answers `request` on its server's reply topic: the kept messages after its position
    /// (or, the position being of another epoch, the current epoch's from its first), then
    /// the end with the topic's position. Messages that would pass the request's allowance,
    /// or what answers may replay for now (`--recovery-rate`), are not given: the answer ends
    /// busy.
    fn answer(&mut self, request: &Request<'_>, now: Instant) {
        let reply_topic = recover::reply_topic(request.server);
        let id = request.id;
        let topic = request.topic;
        let position = self.history.position(topic, now);
        let mut given = (0, 0);
        let end = match request.since {
            None => End::Position,
            Some(since) => {
                let (recovered, from) = self.history.resume(topic, since, now);
                let bytes: u64 = match from.map(|from| self.history.after(topic, from, now)) {
                    Some(Ok(kept)) => kept.map(|(_, body)| body.len() as u64).sum(),
                    _ => 0,
                };
                if bytes > u64::from(request.max_bytes) || !self.replay.spend(bytes, now) {
                    self.replay.refused();
                    self.metrics.recoveries_busy.fetch_add(1, Ordering::Relaxed);
                    End::Busy
                } else {
                    let Thread {
                        history, publisher, ..
                    } = self;
                    if let Some(Ok(kept)) = from.map(|from| history.after(topic, from, now)) {
                        given = give(publisher, &reply_topic, id, kept);
                    }
                    match recovered {
                        Ok(()) => End::Recovered,
                        Err(NotRecovered::Epoch) => End::Epoch,
                        Err(NotRecovered::Future) => End::Future,
                        Err(NotRecovered::Evicted) => End::Evicted,
                    }
                }
            }
        };
        let part = Part::End { id, position, end };
        let sent = self
            .publisher
            .send(&reply_topic[..], zmq::SNDMORE)
            .and_then(|()| self.publisher.send(&part.encode()[..], 0));
        if let Err(e) = sent {
            tracing::warn!(error = %e, "forwarder send of a recovery answer failed");
        }
        let m = &self.metrics;
        m.recoveries.fetch_add(1, Ordering::Relaxed);
        m.recovered_messages.fetch_add(given.0, Ordering::Relaxed);
        m.recovered_bytes.fetch_add(given.1, Ordering::Relaxed);
    }

    /// The length of the message's topic (up to and including its NUL), or why it is dropped.
    fn check(&self, frames: &[zmq::Message]) -> Result<usize, Dropped> {
        let [topic, body] = frames else {
            return Err(Dropped::Malformed);
        };
        let topic_len = wire::topic_len(topic);
        if topic_len.unwrap_or(topic.len()) > self.max_topic_bytes {
            return Err(Dropped::TopicTooLong);
        }
        let topic_len = topic_len.ok_or(Dropped::Malformed)?;
        // Only the forwarder answers on reply topics; only servers send presence messages.
        if topic.starts_with(recover::REPLY_TOPIC_PREFIX) || topic.starts_with(TOPIC) {
            return Err(Dropped::Malformed);
        }
        // A topic is followed by the publisher's room for a stamp, or by nothing.
        if !matches!(topic.len() - topic_len, 0 | wire::STAMP_BYTES) {
            return Err(Dropped::Malformed);
        }
        if topic.len() + body.len() > self.max_message_bytes {
            return Err(Dropped::TooLarge);
        }
        Ok(topic_len)
    }

    /// Gives the message its position, keeps a copy of its body, stamps the topic and hands
    /// the message on (the body itself is moved, not copied).
    fn send(
        &mut self,
        frames: &mut Vec<zmq::Message>,
        topic_len: usize,
        now: Instant,
        batch: &mut Batch,
    ) {
        let bytes = frames.iter().map(|f| f.len()).sum::<usize>();
        let body = frames.pop().expect("checked: two frames");
        if let Some(bridge) = &self.bridge {
            bridge.publish(crate::bridge::Job {
                topics: vec![frames[0][..topic_len].to_vec()],
                body: body.to_vec(),
                reply: None,
            });
            return;
        }
        self.publish(&frames[0][..topic_len], body, bytes, now, batch);
    }

    /// Replies to the confirmed publishes the bridge into Redis published: `[peer, id,
    /// status, detail]` each, sent on to the app.
    fn take_bridge_replies(&mut self) {
        let (Some(bridge), Some(confirm)) = (&self.bridge, &self.confirm) else {
            return;
        };
        loop {
            let frames = match bridge.replies.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(_) => return,
            };
            let [peer, id, status, detail] = frames.as_slice() else {
                continue;
            };
            let id: &[u8] = if id.len() <= confirm::MAX_ID_BYTES {
                id
            } else {
                &[]
            };
            let sent = confirm.send_multipart([&peer[..], id, status, detail], zmq::DONTWAIT);
            if sent.is_err() {
                self.metrics
                    .confirm_replies_dropped
                    .fetch_add(1, Ordering::Relaxed);
            } else if let Some(positions) = confirm::decode_positions(detail) {
                self.metrics
                    .confirmed
                    .fetch_add(positions.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Gives a message of `topic` (up to and including its NUL) its position, keeps a copy of
    /// its body, and hands it on stamped; `bytes` is its size as received. Returns the
    /// position.
    fn publish(
        &mut self,
        topic: &[u8],
        body: zmq::Message,
        bytes: usize,
        now: Instant,
        batch: &mut Batch,
    ) -> Position {
        let keep = self.keep;
        let position = self.history.append(
            topic,
            |_| {
                if keep {
                    Box::from(&body[..])
                } else {
                    Box::default()
                }
            },
            now,
        );
        let mut stamped = zmq::Message::with_size(topic.len() + wire::STAMP_BYTES);
        stamped[..topic.len()].copy_from_slice(topic);
        stamped[topic.len()..].copy_from_slice(&wire::stamp_bytes(position));
        let sent = self
            .publisher
            .send(stamped, zmq::SNDMORE)
            .and_then(|()| self.publisher.send(body, 0));
        match sent {
            Ok(()) => {
                batch.forwarded += 1;
                batch.bytes += bytes as u64;
            }
            Err(e) => tracing::warn!(error = %e, "forwarder send failed"),
        }
        position
    }

    fn confirm_limits(&self) -> confirm::Limits {
        confirm::Limits {
            max_topic_bytes: self.max_topic_bytes,
            max_message_bytes: self.max_message_bytes,
        }
    }

    /// Reads the confirm requests waiting (up to a batch), publishes each whole or refuses it
    /// whole, and replies with the positions or the refusal.
    fn take_confirms(&mut self, now: Instant, batch: &mut Batch) {
        const BATCH: usize = 1024;
        for _ in 0..BATCH {
            let Some(confirm) = &self.confirm else { return };
            let frames = match confirm.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(zmq::Error::EAGAIN) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "forwarder receive of confirm requests failed");
                    return;
                }
            };
            self.metrics
                .confirm_requests
                .fetch_add(1, Ordering::Relaxed);
            // The app's identity (ZeroMQ's ROUTER puts it first), then the request.
            let [peer, id, rest @ ..] = frames.as_slice() else {
                continue; // not even an id: nothing to reply to
            };
            let limits = self.confirm_limits();
            let reply: [Vec<u8>; 2] = match confirm::check(id, rest, limits) {
                Ok(checked) if self.bridge.is_some() => {
                    // Published into Redis; the bridge's thread replies with its positions.
                    let body = &rest[rest.len() - 1];
                    let topics = rest
                        .iter()
                        .zip(&checked.topic_lens)
                        .map(|(topic, &len)| topic[..len].to_vec())
                        .collect();
                    batch.received += checked.topic_lens.len() as u64;
                    if let Some(bridge) = &self.bridge {
                        bridge.publish(crate::bridge::Job {
                            topics,
                            body: body.to_vec(),
                            reply: Some((peer.clone(), id.clone())),
                        });
                    }
                    continue;
                }
                Ok(checked) => {
                    let body = &rest[rest.len() - 1];
                    let positions: Vec<Position> = rest
                        .iter()
                        .zip(&checked.topic_lens)
                        .map(|(topic, &len)| {
                            let bytes = topic.len() + body.len();
                            let body = zmq::Message::from(&body[..]);
                            self.publish(&topic[..len], body, bytes, now, batch)
                        })
                        .collect();
                    self.metrics
                        .confirmed
                        .fetch_add(positions.len() as u64, Ordering::Relaxed);
                    batch.received += positions.len() as u64;
                    let detail = confirm::encode_positions(&positions);
                    [confirm::OK.to_vec(), detail]
                }
                Err(refusal) => {
                    self.metrics.confirm_refused[refusal as usize].fetch_add(1, Ordering::Relaxed);
                    self.refusals.note(refusal);
                    let detail = confirm::explain(refusal, limits).into_bytes();
                    [refusal.as_str().as_bytes().to_vec(), detail]
                }
            };
            let id: &[u8] = if id.len() <= confirm::MAX_ID_BYTES {
                id
            } else {
                &[]
            };
            let Some(confirm) = &self.confirm else { return };
            let sent = confirm.send_multipart([&peer[..], id, &reply[0], &reply[1]], zmq::DONTWAIT);
            if sent.is_err() {
                self.metrics
                    .confirm_replies_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Sends the kept messages `kept` as parts of answer `id` on `reply_topic`; how many, and
/// their bodies' bytes.
fn lock(view: &Mutex<View>) -> MutexGuard<'_, View> {
    view.lock().unwrap_or_else(|e| e.into_inner())
}

/// The first byte of a server's presence message sent up to the forwarder (PROTOCOL §2d).
const SHARE: u8 = 0x04;

fn give<'a>(
    publisher: &zmq::Socket,
    reply_topic: &[u8],
    id: u64,
    kept: impl Iterator<Item = (Position, &'a Box<[u8]>)>,
) -> (u64, u64) {
    let (mut count, mut bytes) = (0, 0);
    for (at, body) in kept {
        let part = Part::Message { id, position: at };
        let sent = publisher
            .send(reply_topic, zmq::SNDMORE)
            .and_then(|()| publisher.send(&part.encode()[..], zmq::SNDMORE))
            .and_then(|()| publisher.send(&body[..], 0));
        if let Err(e) = sent {
            tracing::warn!(error = %e, "forwarder send of a recovered message failed");
        }
        count += 1;
        bytes += body.len() as u64;
    }
    (count, bytes)
}

/// What one batch of messages did, added to the metrics once per batch.
#[derive(Default)]
struct Batch {
    received: u64,
    forwarded: u64,
    bytes: u64,
}

/// Drops not logged yet, by reason, so a flood of bad messages logs a line a second at most.
#[derive(Default)]
struct DropLog {
    unreported: [u64; 3],
    logged: Option<Instant>,
}

impl DropLog {
    fn note(&mut self, why: Dropped) {
        self.unreported[why as usize] += 1;
    }

    fn report(&mut self, now: Instant, max_topic_bytes: usize, max_message_bytes: usize) {
        if self.unreported == [0; 3]
            || self
                .logged
                .is_some_and(|t| now.saturating_duration_since(t) < DROP_LOG_EVERY)
        {
            return;
        }
        let [topic_too_long, too_large, malformed] = std::mem::take(&mut self.unreported);
        tracing::warn!(
            topic_too_long,
            too_large,
            malformed,
            max_topic_bytes,
            max_message_bytes,
            "messages from apps dropped: topic over --max-topic-bytes, message over \
             --max-message-bytes, or not [topic, body] with a NUL-terminated topic"
        );
        self.logged = Some(now);
    }
}

/// Confirm requests refused and not logged yet, by reason: a line a second at most.
#[derive(Default)]
struct RefusalLog {
    unreported: [u64; 3],
    logged: Option<Instant>,
}

impl RefusalLog {
    fn note(&mut self, why: Refusal) {
        self.unreported[why as usize] += 1;
    }

    fn report(&mut self, now: Instant, limits: confirm::Limits) {
        if self.unreported == [0; 3]
            || self
                .logged
                .is_some_and(|t| now.saturating_duration_since(t) < DROP_LOG_EVERY)
        {
            return;
        }
        let [too_large, topic_too_long, malformed] = std::mem::take(&mut self.unreported);
        tracing::warn!(
            too_large,
            topic_too_long,
            malformed,
            max_topic_bytes = limits.max_topic_bytes,
            max_message_bytes = limits.max_message_bytes,
            "confirmed publishes refused: request over --max-message-bytes, topic over \
             --max-topic-bytes, or not [id, topic..., body]"
        );
        self.logged = Some(now);
    }
}
