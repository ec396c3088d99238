//! The Redis engine (`--broker redis://…`): topics' messages through Redis Pub/Sub, their
//! positions and history in Redis (PROTOCOL §2c), no forwarder.
//!
//! One RESP3 connection carries both: the server subscribes to the channels of the topics its
//! sessions are in, and asks a topic's history with pushnote's script on the same connection.
//! Redis runs one command at a time, so the script's reply comes after every message Redis
//! published on the topic before it and before every one after: the answer is ordered with the
//! topic's messages as a forwarder's is, and the bus thread's recovery works unchanged. Replies
//! are made into the frames a forwarder sends (a message's topic and stamp, then its body; an
//! answer's parts on this server's reply topic), read into the backlog like its.
//!
//! The connection is made on the bus thread, and made again when lost (every 100 ms, backing
//! off to a second), with the subscriptions; a connection that came back is a reconnection to
//! the bus thread, which asks for what each topic received meanwhile. While it is down,
//! `pushnote_bus_connected` is 0 and `/health` answers 503; sessions stay open. A connection
//! quiet for 2 s is sent a PING, and one whose reply takes over 5 s (a stalled Redis, a
//! network partitioned) is taken for lost.

use std::collections::{HashSet, VecDeque};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pushnote::recover::{self, Part};
use pushnote::redis_connection::{Connection, RedisError};
use pushnote::redis_endpoint::RedisEndpoint;
use pushnote::redis_script::{self, Keys, SCRIPT};
use pushnote::redis_tls::Transport;
use pushnote::resp::{self, Limits, Value};
use pushnote::wire::{self, Position, STAMP_BYTES};

use crate::broker::{Answer, Command, Engine, EngineError, HistoryRequest, Ready};
use crate::control::{self, BusControl, Commands};
use crate::log_every::LogEvery;
use crate::metrics::Metrics;
use crate::overload::Backlog;
use crate::zeromq::{answer, BusError};

/// How long making a connection (and its first commands) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The first wait before connecting again, doubled up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// How often an idle connection is checked with a PING.
const PING_EVERY: Duration = Duration::from_secs(2);
/// How long a reply may take before the connection is taken for lost (a Redis stalled, or
/// the network between partitioned), and made again.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Channels per SUBSCRIBE when subscribing again after a reconnection.
const SUBSCRIBE_BATCH: usize = 1000;

/// What the history is bounded by, written into Redis for the script (`config` hash).
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Messages kept per topic.
    pub size: usize,
    /// Seconds a message is kept.
    pub ttl_secs: u64,
    /// Seconds a topic's position is kept after its last use.
    pub idle_secs: u64,
}

/// How the Redis engine is set up.
pub struct Options {
    /// Where Redis is.
    pub endpoint: RedisEndpoint,
    /// The prefix of pushnote's keys and channels.
    pub prefix: String,
    /// The history's bounds.
    pub bounds: Bounds,
    /// The largest message taken, topic and body; a reply of Redis is bounded by it.
    pub max_message_bytes: usize,
    /// Where its errors are counted.
    pub metrics: Arc<Metrics>,
}

/// A history request, sent or to be.
struct Request {
    id: u64,
    topic: Vec<u8>,
    since: Option<Position>,
    max_bytes: u32,
}

/// A command sent, waiting for its reply.
enum Pending {
    History(Request),
    /// A command whose reply nothing waits on (PING, a presence message's PUBLISH).
    Other,
}

/// A connection in use.
struct Live {
    stream: Transport,
    /// Read and not yet parsed, from `start`.
    input: Vec<u8>,
    start: usize,
    /// To be written.
    output: Vec<u8>,
    sha: Vec<u8>,
    /// Commands sent, in order, each with when it was; each reply answers the first.
    pending: VecDeque<(Pending, Instant)>,
    /// When the last byte came from Redis.
    heard: Instant,
}

/// The Redis engine.
pub struct Redis {
    options: Options,
    keys: Keys,
    name: String,
    _ctx: zmq::Context,
    commands: Commands,
    live: Option<Live>,
    /// Bus topics (NUL included) subscribed, subscribed again on each connection.
    topics: HashSet<Vec<u8>>,
    reply_topic: Vec<u8>,
    limits: Limits,
    retry_at: Instant,
    backoff: Duration,
    connected_before: bool,
    /// The connection changed since the bus thread last took it in.
    changed: bool,
    /// It came back after it was lost, not yet taken in.
    back: bool,
    /// Whole replies may wait in `input` (reading stopped for the backlog's room).
    buffered: bool,
    errors: LogEvery,
    failures: LogEvery,
}

impl Redis {
    /// The engine for `options`, not yet connected (the bus thread connects); and its handle.
    pub fn new(options: Options) -> Result<(Redis, BusControl), BusError> {
        let ctx = zmq::Context::new();
        let (commands, control) = control::pair(&ctx).map_err(|source| BusError::Zmq {
            endpoint: options.endpoint.to_string(),
            source,
        })?;
        let server = pushnote_history::history::fresh_seed();
        let limits = Limits {
            // A history reply holds at most a session's allowance of bodies; a message at most
            // the largest taken. Twice that and room for framing covers either.
            string_bytes: options.max_message_bytes.saturating_mul(2).max(1 << 16),
            elements: 1 << 20,
        };
        let mut topics = HashSet::new();
        topics.insert(wire::BROADCAST_TOPIC.to_vec());
        // Presence messages between servers (PROTOCOL §2d), subscribed on every connection.
        topics.insert(pushnote_presence::TOPIC.to_vec());
        let redis = Redis {
            keys: Keys::new(&options.prefix),
            name: options.endpoint.to_string(),
            options,
            _ctx: ctx,
            commands,
            live: None,
            topics,
            reply_topic: recover::reply_topic(server),
            limits,
            retry_at: Instant::now(),
            backoff: RETRY_FIRST,
            connected_before: false,
            changed: false,
            back: false,
            buffered: false,
            errors: LogEvery::default(),
            failures: LogEvery::default(),
        };
        Ok((redis, control))
    }

    /// Counts and logs (at most once a second) a reply the engine could not use.
    fn error(&self, what: &str) {
        self.options
            .metrics
            .broker_errors
            .fetch_add(1, Ordering::Relaxed);
        if let Some(n) = self.errors.tick(Instant::now()) {
            tracing::warn!(redis = %self.name, errors = n, "{what}");
        }
    }

    /// Connects, says what the history keeps, loads the script and subscribes every topic.
    fn connect(&mut self) {
        let now = Instant::now();
        match self.open() {
            Ok(live) => {
                tracing::info!(redis = %self.name, "bus connected");
                self.live = Some(live);
                self.back = std::mem::replace(&mut self.connected_before, true);
                self.changed = true;
                self.backoff = RETRY_FIRST;
            }
            Err(e) => {
                self.options
                    .metrics
                    .broker_errors
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(n) = self.failures.tick(now) {
                    tracing::warn!(error = %e, tries = n, "bus cannot reach Redis; trying again");
                }
                self.retry_at = now + self.backoff;
                self.backoff = (self.backoff * 2).min(RETRY_MAX);
            }
        }
    }

    fn open(&self) -> Result<Live, RedisError> {
        let mut c = Connection::open(&self.options.endpoint, CONNECT_TIMEOUT, self.limits)?;
        let b = self.options.bounds;
        let (size, ttl, idle, max) = (
            b.size.to_string(),
            b.ttl_secs.to_string(),
            b.idle_secs.to_string(),
            self.options.max_message_bytes.to_string(),
        );
        c.ok(&[
            b"HSET",
            &self.keys.config(),
            b"history_size",
            size.as_bytes(),
            b"history_ttl",
            ttl.as_bytes(),
            b"topic_idle",
            idle.as_bytes(),
            b"max_message_bytes",
            max.as_bytes(),
        ])?;
        let sha = c.load_script()?;
        let channels: Vec<Vec<u8>> = self.topics.iter().map(|t| self.keys.channel(t)).collect();
        for batch in channels.chunks(SUBSCRIBE_BATCH) {
            let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
            args.extend(batch.iter().map(Vec::as_slice));
            // Confirmed by pushes, which the reader skips.
            c.send(&args)?;
        }
        let (stream, input) = c.into_parts();
        stream
            .tcp()
            .set_nonblocking(true)
            .map_err(|source| RedisError::Io {
                endpoint: self.name.clone(),
                source,
            })?;
        Ok(Live {
            stream,
            input,
            start: 0,
            output: Vec::new(),
            sha,
            pending: VecDeque::new(),
            heard: Instant::now(),
        })
    }

    /// Drops the connection after `why`; the bus thread is told, and it is made again.
    fn lose(&mut self, why: &str) {
        if self.live.take().is_some() {
            tracing::warn!(redis = %self.name, "bus disconnected ({why}); reconnecting");
            self.options
                .metrics
                .broker_errors
                .fetch_add(1, Ordering::Relaxed);
            self.changed = true;
            self.buffered = false;
            self.retry_at = Instant::now() + RETRY_FIRST;
            self.backoff = RETRY_FIRST;
        }
    }

    /// Queues a command on the connection, if there is one.
    fn queue(&mut self, args: &[&[u8]]) {
        if let Some(live) = &mut self.live {
            resp::encode(args, &mut live.output);
        }
    }

    /// Writes what is queued, as far as the socket takes it.
    fn flush(&mut self) {
        let Some(live) = &mut self.live else { return };
        let mut written = 0;
        let result = loop {
            if written == live.output.len() {
                // What TLS still holds for the socket goes out as the socket takes it.
                break live.stream.flush_ready().map_err(|_| "write failed");
            }
            match live.stream.write_ready(&live.output[written..]) {
                Ok(0) => break Err("closed"),
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break Err("write failed"),
            }
        };
        live.output.drain(..written);
        if let Err(why) = result {
            self.lose(why);
        }
    }

    /// Sends `request` with the script.
    fn send_request(&mut self, request: Request, text: bool) {
        let args = redis_script::history_args(
            &self.keys,
            &request.topic,
            request.since,
            request.max_bytes,
        );
        let Some(live) = &mut self.live else { return };
        let mut call: Vec<&[u8]> = Vec::with_capacity(args.len() + 2);
        if text {
            call.extend([&b"EVAL"[..], SCRIPT.as_bytes()]);
        } else {
            call.extend([&b"EVALSHA"[..], &live.sha]);
        }
        call.extend(args.iter().map(Vec::as_slice));
        resp::encode(&call, &mut live.output);
        live.pending
            .push_back((Pending::History(request), Instant::now()));
    }

    /// Checks the connection: a reply overdue loses it; a connection quiet for a while is
    /// sent a PING, whose reply must come in time like any other. When to check next.
    fn check(&mut self, now: Instant) -> Option<Instant> {
        let live = self.live.as_mut()?;
        if let Some((_, sent)) = live.pending.front() {
            if now.saturating_duration_since(*sent) > REPLY_TIMEOUT {
                self.lose("no reply in time");
                return None;
            }
            return Some(*sent + REPLY_TIMEOUT);
        }
        if now.saturating_duration_since(live.heard) >= PING_EVERY {
            resp::encode(&[b"PING"], &mut live.output);
            live.pending.push_back((Pending::Other, now));
            return Some(now + REPLY_TIMEOUT);
        }
        Some(live.heard + PING_EVERY)
    }

    /// Takes one reply or push into the backlog.
    fn take(&mut self, value: Value, now: Instant, backlog: &mut Backlog) {
        match value {
            Value::Push(items) => self.take_push(items, now, backlog),
            reply => {
                let Some((pending, _)) = self.live.as_mut().and_then(|l| l.pending.pop_front())
                else {
                    self.error("a reply of Redis that nothing asked for; ignored");
                    return;
                };
                let Pending::History(request) = pending else {
                    return;
                };
                if matches!(&reply, Value::Error(e) if e.starts_with("NOSCRIPT")) {
                    // Redis lost the script (SCRIPT FLUSH): send its text, which loads it.
                    self.send_request(request, true);
                    return;
                }
                match redis_script::history_reply(&reply) {
                    Ok(h) => {
                        let id = request.id;
                        for (position, body) in h.messages {
                            let part = Part::Message { id, position }.encode();
                            backlog.push(now, vec![self.reply_topic.clone(), part.to_vec(), body]);
                        }
                        let end = Part::End {
                            id,
                            position: h.last,
                            end: h.end,
                        };
                        backlog.push(now, vec![self.reply_topic.clone(), end.encode().to_vec()]);
                    }
                    Err(why) => self.error(&format!(
                        "Redis answered a history request with what is not one ({why}); the \
                         page is told the history is unavailable"
                    )),
                }
            }
        }
    }

    fn take_push(&mut self, items: Vec<Value>, now: Instant, backlog: &mut Backlog) {
        let [kind, channel, payload] = &items[..] else {
            return;
        };
        if kind.bytes() != Some(b"message") {
            // Confirmations of (un)subscriptions.
            return;
        }
        let (Some(channel), Some(payload)) = (channel.bytes(), payload.bytes()) else {
            self.error("a Pub/Sub message of Redis that is not strings; dropped");
            return;
        };
        let Some(mut topic) = self.keys.topic_of(channel) else {
            return;
        };
        if topic == pushnote_presence::TOPIC {
            backlog.push(now, vec![topic, payload.to_vec()]);
            return;
        }
        // The script puts the position before the body; what lacks one is not the script's,
        // and the bus thread rejects it as it is.
        let body = if payload.len() >= STAMP_BYTES {
            topic.extend_from_slice(&payload[..STAMP_BYTES]);
            payload[STAMP_BYTES..].to_vec()
        } else {
            payload.to_vec()
        };
        backlog.push(now, vec![topic, body]);
    }
}

impl Engine for Redis {
    fn endpoint(&self) -> &str {
        &self.name
    }

    fn numbers_messages(&self) -> bool {
        true
    }

    fn shares(&self) -> bool {
        true
    }

    fn start(&mut self, metrics: &Metrics) {
        metrics.bus_connected.store(0, Ordering::Relaxed);
    }

    fn wait(&mut self, timeout: Option<Duration>) -> Result<Ready, EngineError> {
        if self.changed {
            return Ok(Ready {
                connection: true,
                ..Ready::default()
            });
        }
        if self.buffered {
            return Ok(Ready {
                messages: true,
                ..Ready::default()
            });
        }
        if self.live.is_none() && Instant::now() >= self.retry_at {
            self.connect();
            if self.changed {
                return Ok(Ready {
                    connection: true,
                    ..Ready::default()
                });
            }
        }
        let now = Instant::now();
        let due = self.check(now);
        if self.changed {
            return Ok(Ready {
                connection: true,
                ..Ready::default()
            });
        }
        self.flush();
        let due = match &self.live {
            Some(_) => due,
            None => Some(self.retry_at),
        };
        let timeout = match due {
            Some(due) => {
                let left = due.saturating_duration_since(now);
                Some(timeout.map_or(left, |t| t.min(left)))
            }
            None => timeout,
        };
        let timeout = timeout.map_or(-1, |t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX));
        let commands = self.commands.socket().as_poll_item(zmq::POLLIN);
        let polled = match &self.live {
            Some(live) => {
                let mut events = zmq::POLLIN;
                if !live.output.is_empty() || live.stream.wants_write() {
                    events |= zmq::POLLOUT;
                }
                let mut items = [
                    commands,
                    zmq::PollItem::from_fd(live.stream.tcp().as_raw_fd(), events),
                ];
                zmq::poll(&mut items, timeout).map(|_| {
                    let ready = items[1].get_revents();
                    (
                        items[0].is_readable(),
                        ready.contains(zmq::POLLIN) || ready.contains(zmq::POLLERR),
                        ready.contains(zmq::POLLOUT),
                    )
                })
            }
            None => {
                let mut items = [commands];
                zmq::poll(&mut items, timeout).map(|_| (items[0].is_readable(), false, false))
            }
        };
        match polled {
            Ok((commands, messages, writable)) => {
                if writable {
                    self.flush();
                }
                Ok(Ready {
                    messages,
                    commands,
                    connection: self.changed,
                    confirms: false,
                })
            }
            Err(zmq::Error::EINTR) => Ok(Ready::default()),
            Err(e) => Err(EngineError(format!("bus poll failed: {e}"))),
        }
    }

    fn take_connection(&mut self, metrics: &Metrics) -> bool {
        self.changed = false;
        let connected = u64::from(self.live.is_some());
        metrics.bus_connected.store(connected, Ordering::Relaxed);
        std::mem::take(&mut self.back)
    }

    fn take_commands(&mut self, mut on: impl FnMut(Command<'_>)) -> bool {
        let mut changes = Vec::new();
        let mut shared = Vec::new();
        let go_on = self.commands.take(|command| {
            on(command);
            match command {
                Command::Subscribed(topic) => changes.push((true, topic.to_vec())),
                Command::Unsubscribed(topic) => changes.push((false, topic.to_vec())),
                Command::Asked(_) => {}
                Command::Share(body) => shared.push(body.to_vec()),
            }
        });
        let channel = self.keys.channel(pushnote_presence::TOPIC);
        for body in shared {
            self.queue(&[b"PUBLISH", &channel, &body]);
            if let Some(live) = &mut self.live {
                live.pending.push_back((Pending::Other, Instant::now()));
            }
        }
        for (subscribe, topic) in changes {
            let channel = self.keys.channel(&topic);
            if subscribe {
                self.queue(&[b"SUBSCRIBE", &channel]);
                self.topics.insert(topic);
            } else {
                self.queue(&[b"UNSUBSCRIBE", &channel]);
                self.topics.remove(&topic);
            }
        }
        self.flush();
        go_on
    }

    fn read(&mut self, backlog: &mut Backlog) {
        const TURN: Duration = Duration::from_millis(2);
        let now = Instant::now();
        self.buffered = false;
        while backlog.has_room() {
            let Some(live) = &mut self.live else { return };
            match resp::parse(&live.input[live.start..], &self.limits) {
                Ok(Some((value, used))) => {
                    live.start += used;
                    self.take(value, now, backlog);
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    self.error(&format!("Redis sent what is not RESP ({e})"));
                    self.lose("unreadable reply");
                    return;
                }
            }
            if now.elapsed() > TURN {
                // More may wait in the socket: the next wait says so.
                return;
            }
            if live.start > 0 {
                live.input.drain(..live.start);
                live.start = 0;
            }
            let mut chunk = [0u8; 64 * 1024];
            match live.stream.read_ready(&mut chunk) {
                Ok(0) => {
                    self.lose("closed by Redis");
                    return;
                }
                Ok(n) => {
                    live.input.extend_from_slice(&chunk[..n]);
                    live.heard = Instant::now();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.lose("read failed");
                    return;
                }
            }
        }
        // Stopped for the backlog's room: whole replies may be waiting already.
        self.buffered = self.live.as_ref().is_some_and(|l| l.start < l.input.len());
    }

    #[inline]
    fn answer<'f>(&self, frames: &'f [Vec<u8>]) -> Option<Answer<'f>> {
        answer(frames)
    }

    fn ask(&mut self, request: &HistoryRequest<'_>) {
        // Without a connection the request goes nowhere; the bus thread asks again when it
        // comes back.
        self.send_request(
            Request {
                id: request.id,
                topic: request.topic.to_vec(),
                since: request.since,
                max_bytes: request.max_bytes,
            },
            false,
        );
    }
}
