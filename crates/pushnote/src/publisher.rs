//! Publishing notifications onto the bus: to everyone, to users, and to channels.
//!
//! A [`Publisher`] connects an XPUB socket to the forwarder's app-facing side (or to a
//! `--single` server). ZeroMQ drops what a publisher sends before the peer's subscription has
//! arrived, so a process that connects and notifies at once would lose its first messages. An
//! XPUB socket sees subscriptions arrive: the first send waits for one, up to
//! [`PublisherBuilder::ready_timeout`], and then sends. On drop, the socket lingers so that a
//! process that notifies and exits still delivers.
//!
//! While the peer is gone (the forwarder was stopped or crashed), the socket sees its
//! connection close (ZeroMQ's socket monitor) and its subscriptions go: from the first call
//! after the close (or at most a millisecond later for a publisher sending without pause,
//! which reads the monitor once a millisecond: each reading is a system call), sends fail at once with [`PublishError::NotConnected`] and nothing is
//! buffered, so the application never blocks and decides itself what a lost notification
//! means. (The subscriptions alone would tell it a call late: ZeroMQ removes a lost
//! connection's subscriptions in two steps, each taken on a call to the socket.) ZeroMQ
//! reconnects in the background; sends succeed again as soon as the restarted peer has
//! subscribed.
//!
//! What a send promises, then: an error means nothing of the call was sent; `Ok` means the
//! messages were handed to ZeroMQ for a peer connected as far as the socket has seen, not that
//! the peer took them. Messages sent in the instant between the peer's death and the socket's
//! noticing it (a TCP reset, usually well under a millisecond), and those queued toward the
//! peer when it died, are lost without an error. A message that must not be lost without the
//! application knowing is published confirmed ([`PublisherBuilder::confirm`], the
//! `*_confirmed` methods, `docs/PROTOCOL.md` §2b): the call returns its position once the
//! forwarder holds it, or an error. While connected, up to the send high-water mark (100,000 messages by default) wait
//! for a slow peer; past it, ZeroMQ drops new ones, without a word. A `notify` for more users
//! than the mark would be cut short that way: it is refused whole
//! ([`PublishError::TooManyUsers`]). ZeroMQ learns what the peer has read in steps (about every
//! half mark), so a burst near the mark can lose messages too: keep bursts well below it (HTTP
//! publishing allows a tenth of it per request).
//!
//! A message larger than the bus takes ([`PublisherBuilder::max_message_bytes`], by default
//! the forwarder's and a server's default limit) is refused with [`PublishError::TooLarge`]
//! instead of being sent for the peer to drop.
//!
//! With a `redis://` endpoint, a publisher publishes through Redis instead, for servers
//! started with `--broker redis://…` (`redis_publisher.rs`, `docs/PROTOCOL.md` §2c): every
//! publish is confirmed there. A call returns `Ok` only once Redis has answered with the
//! messages' positions (they are in its history and were handed to every server
//! subscribed), the `*_confirmed` methods return those positions without
//! [`PublisherBuilder::confirm`], and a `notify` to several users is one atomic call (all of
//! them published, or none). Redis not reachable is [`PublishError::NotConnected`] at once,
//! nothing sent; a later call connects again by itself. No reply within
//! [`PublisherBuilder::confirm_timeout`] is [`PublishError::Unconfirmed`]; Redis answering
//! with an error is [`PublishError::Refused`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::confirmed::{Confirmer, DEFAULT_CONFIRM_TIMEOUT};
use crate::redis_endpoint::{self, RedisEndpoint};
use crate::redis_publisher::RedisPublisher;
use crate::redis_script;
use crate::wire::{self, Position, Target, WireError};

/// Why a notification was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// `data` could not be serialized to JSON.
    #[error("cannot serialize data: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A recipient is not a valid user id.
    #[error(transparent)]
    UserId(#[from] WireError),
    /// A channel or event name breaks its rule (`docs/PROTOCOL.md` §2).
    #[error(transparent)]
    Channel(WireError),
    /// No forwarder or server is subscribed: it is not running or not reachable at the
    /// endpoint (the first send waits up to the ready timeout for it); or, publishing through
    /// Redis, Redis could not be reached (the string says why). Nothing was sent or buffered.
    #[error("no forwarder, server or Redis is connected at {0}")]
    NotConnected(String),
    /// ZeroMQ failed.
    #[error("zeromq: {0}")]
    Zmq(#[from] zmq::Error),
    /// The message, topic and body, is larger than the bus takes
    /// ([`PublisherBuilder::max_message_bytes`]): the forwarder or server would drop it.
    /// Nothing was sent.
    #[error(
        "the message is {bytes} bytes (topic and body), over the {limit} the bus takes; \
         nothing was sent"
    )]
    TooLarge { bytes: usize, limit: usize },
    /// More users in one `notify` than the publisher's socket holds
    /// ([`PublisherBuilder::send_high_water_mark`]): ZeroMQ would drop the ones past it.
    /// Nothing was sent; notify them in several calls.
    #[error(
        "{users} users in one notify, over the {limit} messages the publisher holds (its send \
         high-water mark); nothing was sent: notify them in several calls"
    )]
    TooManyUsers { users: usize, limit: usize },
    /// A token of [`Publisher::notify_tokens`] is not one a server takes (the message says
    /// why, never the token). Nothing was sent.
    #[error("a token cannot be notified: {0}; nothing was sent")]
    Token(#[from] crate::TokenError),
    /// A confirmed publish got no confirmation: no reply within the confirm timeout
    /// ([`PublisherBuilder::confirm_timeout`]), or one that could not be read. The forwarder
    /// may or may not have taken the messages: publish again if they must arrive (a page may
    /// then receive them twice), or treat them as lost.
    #[error(
        "no confirmation from {endpoint} ({why}): the messages may or may not have been \
         published"
    )]
    Unconfirmed { endpoint: String, why: String },
    /// The forwarder refused a confirmed publish (`reason` is its code, `docs/PROTOCOL.md`
    /// §2b), or Redis answered a publish with an error (`reason` is
    /// [`crate::redis_publisher::REFUSED_BY_REDIS`], `detail` Redis' sentence). Nothing was
    /// published.
    #[error("the bus refused the publish ({reason}): {detail}; nothing was published")]
    Refused {
        reason: &'static str,
        detail: String,
    },
    /// A confirmed publish on a publisher made without [`PublisherBuilder::confirm`].
    #[error("no confirm endpoint: connect the publisher with PublisherBuilder::confirm")]
    NoConfirm,
    /// The endpoint cannot be published to: a malformed `redis://` endpoint, or one this
    /// cannot be used as it is (`rediss://` with a CA file that cannot be read). Nothing was
    /// sent.
    #[error("{0}")]
    Endpoint(String),
}

/// The largest bus message, topic and body, a publisher sends by default: what a forwarder
/// (`--max-message-bytes`) and a server (`--max-bus-message-bytes`) take by default.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Messages a publisher's socket holds by default before ZeroMQ drops new ones.
pub const DEFAULT_SEND_HWM: i32 = 100_000;

/// Settings of a [`Publisher`].
#[derive(Clone, Debug)]
pub struct PublisherBuilder {
    endpoint: String,
    ready_timeout: Duration,
    linger: Duration,
    send_hwm: i32,
    max_message_bytes: usize,
    confirm: Option<String>,
    confirm_timeout: Duration,
    broker_prefix: String,
    replicas: u32,
}

impl PublisherBuilder {
    /// How long the first send waits for the peer's subscription (default 2 s); publishing
    /// through Redis, how long connecting to it may take.
    pub fn ready_timeout(mut self, t: Duration) -> Self {
        self.ready_timeout = t;
        self
    }

    /// How long dropping the publisher waits for unsent messages to go out (default 2 s).
    pub fn linger(mut self, t: Duration) -> Self {
        self.linger = t;
        self
    }

    /// How many messages may wait for the network before ZeroMQ drops new ones
    /// (default 100,000); also the most users one `notify` takes. 0 is no limit.
    pub fn send_high_water_mark(mut self, messages: i32) -> Self {
        self.send_hwm = messages;
        self
    }

    /// The largest message the bus takes, topic and body, in bytes (default
    /// [`DEFAULT_MAX_MESSAGE_BYTES`]): set it to the forwarder's `--max-message-bytes` (or the
    /// server's `--max-bus-message-bytes`). Larger messages are refused with
    /// [`PublishError::TooLarge`].
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Also connects to the forwarder's `--confirm` socket at `endpoint` (for example
    /// `tcp://127.0.0.1:8004`), for the `*_confirmed` methods. Not needed (and not used)
    /// publishing through Redis, where every publish is confirmed.
    pub fn confirm(mut self, endpoint: &str) -> Self {
        self.confirm = Some(endpoint.to_owned());
        self
    }

    /// How long a confirmed publish waits for its confirmation before it returns
    /// [`PublishError::Unconfirmed`] (default [`DEFAULT_CONFIRM_TIMEOUT`], 5 s); publishing
    /// through Redis, how long any publish waits for Redis' reply.
    pub fn confirm_timeout(mut self, t: Duration) -> Self {
        self.confirm_timeout = t;
        self
    }

    /// The prefix of pushnote's keys and channels in Redis (default
    /// [`redis_script::DEFAULT_PREFIX`], `pushnote:`): the servers' `--broker-prefix`. Used
    /// only publishing through Redis.
    pub fn broker_prefix(mut self, prefix: &str) -> Self {
        self.broker_prefix = prefix.to_owned();
        self
    }

    /// Through Redis: a publish returns its positions only once at least `replicas` of
    /// Redis' replicas hold it too (Redis' `WAIT`, within three quarters of the confirm
    /// time-out), and is [`PublishError::Unconfirmed`] otherwise. With Sentinel, a failover
    /// then loses no publish that returned (DEPLOY.md, "Redis with Sentinel"); without it
    /// (the default, 0), a publish that returned may be lost with a primary that dies before
    /// its replica copied it. Used only publishing through Redis.
    pub fn replicas(mut self, replicas: u32) -> Self {
        self.replicas = replicas;
        self
    }

    /// Connects. Through ZeroMQ, the connection itself is made in the background; this fails
    /// only for a malformed endpoint. Through Redis (`redis://…`), it connects at once if Redis
    /// is there, and otherwise on the first publish; it fails for a malformed endpoint or one
    /// cannot be used as it is (`rediss://` with a CA file that cannot be read).
    pub fn connect(self) -> Result<Publisher, PublishError> {
        if redis_endpoint::is_redis(&self.endpoint) {
            let endpoint = RedisEndpoint::parse(&self.endpoint)
                .map_err(|e| PublishError::Endpoint(e.to_string()))?;
            let limits = self.limits();
            let bus = RedisPublisher::connect(
                endpoint,
                &self.broker_prefix,
                self.ready_timeout,
                self.confirm_timeout,
                limits.max_messages,
                self.replicas,
            )?;
            return Ok(Publisher {
                limits,
                bus: Bus::Redis(bus),
            });
        }
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::XPUB)?;
        socket.set_linger(i32::try_from(self.linger.as_millis()).unwrap_or(i32::MAX))?;
        socket.set_sndhwm(self.send_hwm)?;
        // Queue only on live connections: when the peer goes, its pipe (and subscriptions)
        // go with it, so the socket reports the loss instead of silently queueing for a peer
        // that, once restarted, would drop the backlog before anyone subscribed to it.
        socket.set_immediate(true)?;
        // The connection's events, straight from ZeroMQ's I/O thread: its loss is known from
        // the first call after it, where the subscriptions it held go only a call later.
        let monitor_endpoint = format!(
            "inproc://pushnote-publisher-{}",
            MONITORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        socket.monitor(
            &monitor_endpoint,
            (zmq::SocketEvent::DISCONNECTED as i32)
                | (zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32),
        )?;
        let monitor = ctx.socket(zmq::PAIR)?;
        monitor.set_linger(0)?;
        monitor.connect(&monitor_endpoint)?;
        socket.connect(&self.endpoint)?;
        let confirmer = match &self.confirm {
            Some(endpoint) => Some(Confirmer::connect(
                &ctx,
                endpoint,
                self.confirm_timeout,
                self.ready_timeout,
                self.max_message_bytes,
            )?),
            None => None,
        };
        Ok(Publisher {
            limits: self.limits(),
            bus: Bus::Zmq(ZmqBus {
                endpoint: self.endpoint,
                confirmer,
                ready_timeout: self.ready_timeout,
                inner: Mutex::new(Inner {
                    socket,
                    monitor,
                    gone: false,
                    events_read: None,
                    topics: 0,
                    waited: false,
                }),
                _ctx: ctx,
            }),
        })
    }

    /// What a publisher made with these settings refuses to send.
    fn limits(&self) -> Limits {
        Limits {
            max_message_bytes: self.max_message_bytes,
            max_messages: usize::try_from(self.send_hwm)
                .ok()
                .filter(|&n| n > 0)
                .unwrap_or(usize::MAX),
        }
    }
}

/// Publishes notifications. Safe to share between threads; each call sends atomically.
pub struct Publisher {
    limits: Limits,
    bus: Bus,
}

/// What a publisher publishes through.
enum Bus {
    /// ZeroMQ: a forwarder or a single server.
    Zmq(ZmqBus),
    /// Redis, through pushnote's script.
    Redis(RedisPublisher),
}

/// A ZeroMQ publisher: its socket, and the forwarder's confirm socket if asked.
struct ZmqBus {
    endpoint: String,
    confirmer: Option<Confirmer>,
    ready_timeout: Duration,
    inner: Mutex<Inner>,
    // Dropped after the socket (fields drop in order), which makes the drop wait for linger.
    _ctx: zmq::Context,
}

/// How often a publisher that sends without pause reads its connection's events: a send
/// within this time of the last reading does not read them again, so a loss is seen at most
/// this much later than ZeroMQ saw it, and sends in between go out unreported.
const EVENTS_EVERY: Duration = Duration::from_millis(1);

/// Numbers the publishers' monitor endpoints, unique within the process.
static MONITORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct Inner {
    socket: zmq::Socket,
    /// The socket's connection events (ZeroMQ's socket monitor).
    monitor: zmq::Socket,
    /// The connection to the peer was lost and its subscriptions have not all gone yet, nor
    /// has a new connection been made: the peer is gone whatever `topics` still says. ZeroMQ
    /// removes a lost connection's subscriptions in two steps, each taken on a call to the
    /// socket, so without this the first send after a loss still counts them and is lost.
    gone: bool,
    /// When the monitor's events were last read. Reading them costs a system call even when
    /// none waits, so a publisher sending fast reads them once every [`EVENTS_EVERY`].
    events_read: Option<Instant>,
    /// Topics the peer is subscribed to (ZeroMQ reports each topic's first subscription and
    /// last unsubscription, also when the peer disconnects): above zero, the peer is there.
    topics: usize,
    /// A send has found the peer, or waited the full ready timeout for it: later sends do
    /// not wait again.
    waited: bool,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("endpoint", &self.endpoint())
            .finish()
    }
}

impl Publisher {
    /// Connects to the bus at `endpoint` with defaults: a forwarder's (or single server's)
    /// ZeroMQ endpoint, for example `tcp://127.0.0.1:8002`, or a Redis, `redis://host:port`
    /// (`redis://:password@host:port/db`), that servers started with `--broker` use.
    pub fn connect(endpoint: &str) -> Result<Publisher, PublishError> {
        Publisher::builder(endpoint).connect()
    }

    /// Settings for a publisher of `endpoint`.
    pub fn builder(endpoint: &str) -> PublisherBuilder {
        PublisherBuilder {
            endpoint: endpoint.to_owned(),
            ready_timeout: Duration::from_secs(2),
            linger: Duration::from_secs(2),
            send_hwm: DEFAULT_SEND_HWM,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            confirm: None,
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
            broker_prefix: redis_script::DEFAULT_PREFIX.to_owned(),
            replicas: 0,
        }
    }

    /// Whether a forwarder (or single-mode server) is subscribed now, as far as the socket
    /// has seen. A send made while this is false fails with [`PublishError::NotConnected`].
    pub fn is_connected(&self) -> bool {
        match &self.bus {
            Bus::Zmq(bus) => bus.is_connected(),
            Bus::Redis(bus) => bus.is_connected(),
        }
    }

    /// Where it publishes (without a password).
    pub fn endpoint(&self) -> &str {
        match &self.bus {
            Bus::Zmq(bus) => &bus.endpoint,
            Bus::Redis(bus) => bus.name(),
        }
    }

    /// Sends `data` to every connected session.
    pub fn notify_all<T: Serialize + ?Sized>(&self, data: &T) -> Result<(), PublishError> {
        self.send(&self.limits.check(Outgoing::all(data)?)?)
    }

    /// Sends `data` to every session of each user in `users` (one bus message per user): to
    /// all of them, or, refused whole, to none.
    pub fn notify<T, I, U>(&self, data: &T, users: I) -> Result<(), PublishError>
    where
        T: Serialize + ?Sized,
        I: IntoIterator<Item = U>,
        U: std::fmt::Display,
    {
        self.send(&self.limits.check(Outgoing::users(data, users)?)?)
    }

    /// Sends `data` to every session subscribed with one of `tokens`, as the original pushnote
    /// did: opaque tokens the app made (a server started with `--opaque-tokens` takes them),
    /// or signed ones. Each token is turned into its user with `signer`
    /// ([`crate::Signer::user_of_token`]), which holds the servers' secret and salt: the
    /// tokens themselves never travel the bus. All of them, or, refused whole, none.
    pub fn notify_tokens<T, I, S>(
        &self,
        data: &T,
        tokens: I,
        signer: &crate::Signer,
    ) -> Result<(), PublishError>
    where
        T: Serialize + ?Sized,
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let users = tokens
            .into_iter()
            .map(|t| signer.user_of_token(t.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        self.notify(data, &users)
    }

    /// Sends `data` as `event` to every session subscribed to `channel`; pages receive
    /// `{"channel": channel, "event": event, "data": data}`. Within a channel, messages
    /// arrive in the order they were published.
    pub fn publish<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        event: &str,
        data: &T,
    ) -> Result<(), PublishError> {
        self.send(
            &self
                .limits
                .check(Outgoing::channel(channel, event, data)?)?,
        )
    }

    /// Sends `data` to every connected session once the forwarder has it, and returns its
    /// position in the broadcasts' topic. Needs [`PublisherBuilder::confirm`], or a Redis
    /// endpoint. An error other than [`PublishError::Unconfirmed`] means it was not published.
    pub fn notify_all_confirmed<T: Serialize + ?Sized>(
        &self,
        data: &T,
    ) -> Result<Position, PublishError> {
        let positions = self.confirmed(&Outgoing::all(data)?)?;
        positions.first().copied().ok_or(PublishError::NoConfirm)
    }

    /// Sends `data` to every session of each user in `users`, as [`Publisher::notify`], in
    /// one request the forwarder takes whole or not at all (topics and body at most
    /// [`PublisherBuilder::max_message_bytes`] together), and returns each user's position,
    /// in the order given.
    pub fn notify_confirmed<T, I, U>(
        &self,
        data: &T,
        users: I,
    ) -> Result<Vec<Position>, PublishError>
    where
        T: Serialize + ?Sized,
        I: IntoIterator<Item = U>,
        U: std::fmt::Display,
    {
        self.confirmed(&Outgoing::users(data, users)?)
    }

    /// Sends `data` as `event` to every session subscribed to `channel`, as
    /// [`Publisher::publish`], and returns its position in the channel.
    pub fn publish_confirmed<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        event: &str,
        data: &T,
    ) -> Result<Position, PublishError> {
        let positions = self.confirmed(&Outgoing::channel(channel, event, data)?)?;
        positions.first().copied().ok_or(PublishError::NoConfirm)
    }

    /// Whether this publisher publishes confirmed ([`PublisherBuilder::confirm`], or through
    /// Redis).
    pub fn confirms(&self) -> bool {
        match &self.bus {
            Bus::Zmq(bus) => bus.confirmer.is_some(),
            Bus::Redis(_) => true,
        }
    }

    /// Publishes `out` through the confirm socket, checked as one request.
    pub(crate) fn confirmed(&self, out: &Outgoing) -> Result<Vec<Position>, PublishError> {
        match &self.bus {
            Bus::Zmq(bus) => {
                let confirmer = bus.confirmer.as_ref().ok_or(PublishError::NoConfirm)?;
                if out.topics.is_empty() {
                    return Ok(Vec::new());
                }
                self.check_confirmed(out)?;
                confirmer.publish(out)
            }
            Bus::Redis(bus) => {
                self.check_confirmed(out)?;
                bus.publish(out)
            }
        }
    }

    /// Whether `out` fits in one confirm request: its id, its topics and its body within
    /// `max_message_bytes` (`TooLarge` if not).
    pub(crate) fn check_confirmed(&self, out: &Outgoing) -> Result<(), PublishError> {
        if let Bus::Redis(_) = self.bus {
            // One script call, each message as the servers receive it: checked one by one.
            return self.limits.check_each(out);
        }
        let bytes = std::mem::size_of::<u64>()
            + out.topics.iter().map(Vec::len).sum::<usize>()
            + out.body.len();
        if bytes > self.limits.max_message_bytes {
            return Err(PublishError::TooLarge {
                bytes,
                limit: self.limits.max_message_bytes,
            });
        }
        Ok(())
    }

    /// What this publisher refuses to send.
    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// Sends bus messages made and checked.
    pub(crate) fn send(&self, out: &Outgoing) -> Result<(), PublishError> {
        match &self.bus {
            Bus::Zmq(bus) => bus.send(out),
            Bus::Redis(bus) => bus.publish(out).map(drop),
        }
    }
}

impl ZmqBus {
    /// Whether the peer is subscribed now, as far as the socket has seen.
    fn is_connected(&self) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // A socket error here leaves the count as it was; the next send reports the error.
        let _ = inner.take_subscriptions();
        inner.topics > 0 && !inner.gone
    }

    /// Sends bus messages made and checked.
    fn send(&self, out: &Outgoing) -> Result<(), PublishError> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.take_subscriptions()?;
        if inner.gone {
            return Err(PublishError::NotConnected(self.endpoint.clone()));
        }
        if inner.topics == 0 {
            let wait = if inner.waited {
                Duration::ZERO
            } else {
                self.ready_timeout
            };
            inner.wait_ready(wait)?;
            inner.waited = true;
            if inner.topics == 0 {
                return Err(PublishError::NotConnected(self.endpoint.clone()));
            }
        }
        // Only a fresh publisher waits: once the peer has been seen, a lost peer is reported
        // at once.
        inner.waited = true;
        for topic in &out.topics {
            inner.socket.send(&topic[..], zmq::SNDMORE)?;
            inner.socket.send(&out.body[..], 0)?;
        }
        Ok(())
    }
}

/// Bus messages made but not sent yet: one body under each of one or more topics (each with
/// room for the forwarder's stamp).
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) topics: Vec<Vec<u8>>,
    pub(crate) body: Vec<u8>,
}

impl Outgoing {
    /// A broadcast of `data`.
    pub(crate) fn all<T: Serialize + ?Sized>(data: &T) -> Result<Outgoing, PublishError> {
        Ok(Outgoing {
            topics: vec![wire::topic_with_stamp_room(Target::All)?],
            body: wire::encode_body(Target::All, data)?,
        })
    }

    /// `data` for each of `users`.
    pub(crate) fn users<T, I, U>(data: &T, users: I) -> Result<Outgoing, PublishError>
    where
        T: Serialize + ?Sized,
        I: IntoIterator<Item = U>,
        U: std::fmt::Display,
    {
        let topics = users
            .into_iter()
            .map(|u| wire::topic_with_stamp_room(Target::User(&u.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let body = wire::encode_body(Target::User(""), data)?;
        Ok(Outgoing { topics, body })
    }

    /// `data` as `event` on `channel`.
    pub(crate) fn channel<T: Serialize + ?Sized>(
        channel: &str,
        event: &str,
        data: &T,
    ) -> Result<Outgoing, PublishError> {
        let topic =
            wire::topic_with_stamp_room(Target::Channel(channel)).map_err(PublishError::Channel)?;
        let body = wire::encode_channel_body(event, data).map_err(|e| match e {
            wire::BodyError::Wire(e) => PublishError::Channel(e),
            wire::BodyError::Json(e) => PublishError::Serialize(e),
        })?;
        Ok(Outgoing {
            topics: vec![topic],
            body,
        })
    }

    /// How many bus messages these are.
    pub(crate) fn len(&self) -> usize {
        self.topics.len()
    }

    /// The body they share.
    #[cfg(test)]
    pub(crate) fn body(&self) -> &[u8] {
        &self.body
    }

    /// The size of the largest of them, topic and body, as the bus measures it.
    fn largest(&self) -> usize {
        self.topics.iter().map(Vec::len).max().unwrap_or(0) + self.body.len()
    }
}

/// What a publisher refuses to send, so that nothing it sends is dropped for its size or cut
/// short by its own socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The largest bus message, topic and body.
    pub max_message_bytes: usize,
    /// The most bus messages one call sends: the socket's send high-water mark.
    pub max_messages: usize,
}

impl Limits {
    /// `out`, or why it is not sent.
    pub(crate) fn check(self, out: Outgoing) -> Result<Outgoing, PublishError> {
        self.check_each(&out)?;
        Ok(out)
    }

    /// Whether `out` is sent, or why not.
    pub(crate) fn check_each(self, out: &Outgoing) -> Result<(), PublishError> {
        if out.len() > self.max_messages {
            return Err(PublishError::TooManyUsers {
                users: out.len(),
                limit: self.max_messages,
            });
        }
        let bytes = out.largest();
        if bytes > self.max_message_bytes {
            return Err(PublishError::TooLarge {
                bytes,
                limit: self.max_message_bytes,
            });
        }
        Ok(())
    }
}

impl Inner {
    /// Reads every subscription message waiting, without blocking. Reading them keeps the
    /// socket's inbound queue from growing on a long-lived publisher.
    fn take_subscriptions(&mut self) -> Result<(), zmq::Error> {
        let now = Instant::now();
        if self
            .events_read
            .is_none_or(|at| now.saturating_duration_since(at) >= EVENTS_EVERY)
        {
            self.take_events()?;
            self.events_read = Some(now);
        }
        loop {
            match self.socket.recv_bytes(zmq::DONTWAIT) {
                Ok(msg) => match msg.first() {
                    Some(1) => self.topics += 1,
                    Some(0) => self.topics = self.topics.saturating_sub(1),
                    _ => {}
                },
                Err(zmq::Error::EAGAIN) => break,
                Err(e) => return Err(e),
            }
        }
        if self.topics == 0 {
            self.gone = false;
        }
        Ok(())
    }

    /// Reads the connection events waiting, without blocking: a lost connection makes the
    /// peer gone, a new one (its handshake done) makes it there again once it subscribes.
    fn take_events(&mut self) -> Result<(), zmq::Error> {
        loop {
            // An event is two frames: 2 bytes of event, 4 of value, then the endpoint.
            match self.monitor.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => {
                    let event = frames
                        .first()
                        .and_then(|f| f.get(..2))
                        .map(|b| u16::from_ne_bytes([b[0], b[1]]));
                    match event.map(zmq::SocketEvent::from_raw) {
                        Some(zmq::SocketEvent::DISCONNECTED) => self.gone = true,
                        Some(zmq::SocketEvent::HANDSHAKE_SUCCEEDED) => self.gone = false,
                        _ => {}
                    }
                }
                Err(zmq::Error::EAGAIN) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), zmq::Error> {
        let deadline = Instant::now() + timeout;
        while self.topics == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let ms = i64::try_from(left.as_millis()).unwrap_or(i64::MAX).max(1);
            if self.socket.poll(zmq::POLLIN, ms)? > 0 {
                self.take_subscriptions()?;
            }
        }
        Ok(())
    }
}
