//! The ZeroMQ engines: the forwarder ([`Forwarder`]) and the in-process one of `--single`
//! ([`Single`]), each an XSUB socket read by the bus thread.
//!
//! ZeroMQ sockets are not thread-safe and block, so the socket lives on the bus thread, which
//! waits on it and on the handle's commands (`control.rs`) at once. The hub subscribes a topic
//! (a user's, a channel's) when its first session here joins and unsubscribes it when the last
//! one leaves, so each subscription message upstream means a topic arrived at or left this
//! server.
//!
//! With a forwarder the socket connects to it (and reconnects by itself, re-sending its
//! subscriptions, when the forwarder restarts); history requests go up the same connection and
//! their answers come down on this server's reply topic. In single mode it binds for apps to
//! connect, and where the server keeps history it receives every topic's messages.

use pushnote_presence::TOPIC;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pushnote::recover::{self, Part, Request};
use pushnote::wire;

use crate::broker::{Answer, Command, Engine, EngineError, HistoryRequest, Ready};
use crate::control::{self, BusControl, Commands};
use crate::metrics::Metrics;
use crate::overload::Backlog;
use crate::waiter::Waiter;

/// Why the bus could not start.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// ZeroMQ refused the endpoint or a socket operation.
    #[error("bus endpoint {endpoint}: {source}")]
    Zmq {
        /// The endpoint in question.
        endpoint: String,
        /// ZeroMQ's error.
        source: zmq::Error,
    },
    /// The broker is not set up as it must be.
    #[error("bus broker: {0}")]
    Broker(String),
    /// The bus thread could not be started.
    #[error("cannot start the bus thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The bus thread could not wait on its sockets.
    #[error("cannot wait on the bus sockets: {0}")]
    Wait(std::io::Error),
}

/// `request` as the forwarder reads it, from server `server`.
fn encode(server: u64, request: &HistoryRequest<'_>) -> Vec<u8> {
    Request {
        server,
        id: request.id,
        since: request.since,
        max_bytes: request.max_bytes,
        topic: request.topic,
    }
    .encode()
}

/// The XSUB socket and the command pair both engines wait on.
struct Xsub {
    /// Kept so the context outlives the sockets.
    ctx: zmq::Context,
    sub: zmq::Socket,
    commands: Commands,
    endpoint: String,
    /// Whether presence messages go up the socket: to a forwarder, which sends them on to
    /// every server (not to the apps of `--single`).
    upstream: bool,
    /// Waits on the socket ([`SUB`]), the commands ([`COMMANDS`]) and the engine's other
    /// socket ([`OTHER`]), if it has one.
    waiter: Waiter,
}

/// The sockets' places in the waiter.
const SUB: usize = 0;
const COMMANDS: usize = 1;
const OTHER: usize = 2;

/// The first byte of a presence message sent up to the forwarder (PROTOCOL §2d).
pub const SHARE: u8 = 0x04;

/// The options both engines open their socket with.
pub struct Options {
    /// The most messages read ahead of delivery (the receive high-water mark).
    pub receive_hwm: i32,
}

impl Xsub {
    /// The socket, with the command pair's other end for the handle.
    fn open(endpoint: &str, options: &Options) -> Result<(Xsub, BusControl), BusError> {
        let err = |source| BusError::Zmq {
            endpoint: endpoint.to_owned(),
            source,
        };
        let ctx = zmq::Context::new();
        let sub = ctx.socket(zmq::XSUB).map_err(err)?;
        sub.set_rcvhwm(options.receive_hwm).map_err(err)?;
        // What a SUB socket sends are its subscriptions, one per user here, and it re-sends all
        // of them on every new connection (a restarted forwarder, an app connecting in single
        // mode). ZeroMQ drops those beyond the send high-water mark without a word, and the
        // users past the first thousand would silently stop receiving: no limit.
        sub.set_sndhwm(0).map_err(err)?;
        sub.set_linger(0).map_err(err)?;
        // Reconnect quickly after the forwarder restarts, backing off to one second.
        sub.set_reconnect_ivl(100).map_err(err)?;
        sub.set_reconnect_ivl_max(1000).map_err(err)?;
        subscribe(&sub, wire::BROADCAST_TOPIC).map_err(err)?;
        let (commands, control) = control::pair(&ctx).map_err(err)?;
        let mut waiter = Waiter::new().map_err(BusError::Wait)?;
        waiter.add(&sub).map_err(BusError::Wait)?;
        waiter.add(commands.socket()).map_err(BusError::Wait)?;
        let xsub = Xsub {
            ctx,
            sub,
            commands,
            endpoint: endpoint.to_owned(),
            upstream: false,
            waiter,
        };
        Ok((xsub, control))
    }

    /// Waits on `other` too, the engine's other socket (readable: [`Ready::connection`]).
    fn wait_also(&mut self, other: &zmq::Socket) -> Result<(), BusError> {
        let i = self.waiter.add(other).map_err(BusError::Wait)?;
        debug_assert_eq!(i, OTHER);
        Ok(())
    }

    fn error(&self, source: zmq::Error) -> BusError {
        BusError::Zmq {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    /// Waits on the socket, the commands and the engine's other socket (whose being readable
    /// is `connection`), or `timeout`. Whatever is reported ready is read until `EAGAIN`, or
    /// marked unsure again (the `Waiter`'s rule).
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Ready, EngineError> {
        match self.waiter.wait(timeout) {
            Ok(ready) => Ok(Ready {
                messages: ready[SUB],
                commands: ready[COMMANDS],
                connection: ready[OTHER],
                confirms: false,
            }),
            Err(e) => Err(EngineError(format!("bus poll failed: {e}"))),
        }
    }

    /// Applies every waiting command; false when told to stop.
    fn take_commands(&mut self, mut on: impl FnMut(Command<'_>)) -> bool {
        // A command sends on the socket, which may take in its signal of messages come.
        self.waiter.unsure(SUB);
        self.commands.take(|command| {
            on(command);
            let result = match command {
                Command::Subscribed(topic) => subscribe(&self.sub, topic),
                Command::Unsubscribed(topic) => subscription(&self.sub, 0, topic),
                Command::Asked(_) => Ok(()),
                Command::Share(body) if self.upstream => {
                    let mut frame = Vec::with_capacity(1 + TOPIC.len() + body.len());
                    frame.push(SHARE);
                    frame.extend_from_slice(TOPIC);
                    frame.extend_from_slice(body);
                    self.sub.send(frame, zmq::DONTWAIT)
                }
                Command::Share(_) => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "bus subscription change failed");
            }
        })
    }

    /// Reads what ZeroMQ holds into the backlog, as far as it has room, for a moment at most
    /// (so that delivery goes on while messages come faster than they can be read).
    fn read(&mut self, backlog: &mut Backlog) {
        const TURN: Duration = Duration::from_millis(2);
        let now = Instant::now();
        let mut read = 0u32;
        // Unless it ends with EAGAIN, more may be waiting with no signal to come.
        self.waiter.unsure(SUB);
        while backlog.has_room() {
            read = read.wrapping_add(1);
            if read & 63 == 0 && now.elapsed() > TURN {
                return;
            }
            match self.sub.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => backlog.push(now, frames),
                Err(zmq::Error::EAGAIN) => {
                    self.waiter.sure(SUB);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "bus receive failed");
                    return;
                }
            }
        }
    }
}

/// The ZeroMQ forwarder: it numbers each topic's messages and keeps their history, and answers
/// history requests on this server's reply topic.
pub struct Forwarder {
    xsub: Xsub,
    /// The socket's connection events.
    monitor: zmq::Socket,
    /// The forwarder was connected once (a connection after that is a reconnection).
    connected_before: bool,
    server: u64,
}

impl Forwarder {
    /// Connects to the forwarder at `endpoint`; returns the engine and its handle.
    pub fn connect(endpoint: &str, options: &Options) -> Result<(Forwarder, BusControl), BusError> {
        let (mut xsub, control) = Xsub::open(endpoint, options)?;
        let err = |source| BusError::Zmq {
            endpoint: endpoint.to_owned(),
            source,
        };
        let server = pushnote_history::history::fresh_seed();
        subscribe(&xsub.sub, &recover::reply_topic(server)).map_err(err)?;
        subscribe(&xsub.sub, TOPIC).map_err(err)?;
        xsub.upstream = true;
        const MONITOR: &str = "inproc://bus-monitor";
        let events = zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw()
            | zmq::SocketEvent::DISCONNECTED.to_raw();
        xsub.sub.monitor(MONITOR, i32::from(events)).map_err(err)?;
        let monitor = xsub.ctx.socket(zmq::PAIR).map_err(err)?;
        monitor.connect(MONITOR).map_err(err)?;
        xsub.sub.connect(endpoint).map_err(err)?;
        xsub.wait_also(&monitor)?;
        let forwarder = Forwarder {
            xsub,
            monitor,
            connected_before: false,
            server,
        };
        Ok((forwarder, control))
    }

    /// This server's id on the bus (its reply topic's name).
    pub fn server_id(&self) -> u64 {
        self.server
    }
}

impl Engine for Forwarder {
    fn endpoint(&self) -> &str {
        &self.xsub.endpoint
    }

    fn numbers_messages(&self) -> bool {
        true
    }

    fn shares(&self) -> bool {
        true
    }

    fn start(&mut self, _: &Metrics) {}

    fn wait(&mut self, timeout: Option<Duration>) -> Result<Ready, EngineError> {
        self.xsub.wait(timeout)
    }

    fn take_connection(&mut self, metrics: &Metrics) -> bool {
        let mut back = false;
        while let Ok(frames) = self.monitor.recv_multipart(zmq::DONTWAIT) {
            let Some(&[a, b, ..]) = frames.first().map(Vec::as_slice) else {
                continue;
            };
            let event = u16::from_le_bytes([a, b]);
            let connected = if event == zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw() {
                tracing::info!(endpoint = %self.xsub.endpoint, "bus connected");
                back |= std::mem::replace(&mut self.connected_before, true);
                1
            } else if event == zmq::SocketEvent::DISCONNECTED.to_raw() {
                tracing::warn!(endpoint = %self.xsub.endpoint, "bus disconnected; reconnecting");
                0
            } else {
                continue;
            };
            metrics.bus_connected.store(connected, Ordering::Relaxed);
        }
        if back {
            // Takes in the new connection, so that requests sent next go down it (and may take
            // in the socket's signal of messages come).
            let _ = self.xsub.sub.get_events();
            self.xsub.waiter.unsure(SUB);
        }
        back
    }

    fn take_commands(&mut self, on: impl FnMut(Command<'_>)) -> bool {
        self.xsub.take_commands(on)
    }

    #[inline]
    fn read(&mut self, backlog: &mut Backlog) {
        self.xsub.read(backlog);
    }

    #[inline]
    fn answer<'f>(&self, frames: &'f [Vec<u8>]) -> Option<Answer<'f>> {
        answer(frames)
    }

    fn ask(&mut self, request: &HistoryRequest<'_>) {
        // The send may take in the socket's signal of messages come.
        self.xsub.waiter.unsure(SUB);
        if let Err(e) = self.xsub.sub.send(encode(self.server, request), 0) {
            tracing::warn!(error = %e, "bus history request failed");
        }
    }
}

/// The in-process engine of `--single`: a socket apps publish into, bound here. Its topics'
/// messages are not numbered; the server keeps their history itself. With `--confirm`, also a
/// ROUTER socket of confirmed publishes (PROTOCOL §2b), which the bus thread answers once the
/// history holds the messages.
pub struct Single {
    xsub: Xsub,
    confirm: Option<zmq::Socket>,
    confirm_endpoint: Option<String>,
}

/// Where and how a `--single` server takes confirmed publishes.
pub struct ConfirmOptions<'a> {
    /// Where to bind the ROUTER socket.
    pub endpoint: &'a str,
    /// Requests held per app before its connection is not read, and replies held for it.
    pub hwm: i32,
    /// The largest request, every frame; a larger frame closes the app's connection.
    pub max_message_bytes: usize,
}

impl Single {
    /// Binds at `endpoint` (a port of `*` picks a free one: [`Engine::endpoint`] tells which);
    /// with `every_topic` (the server keeps history) it takes every topic's messages, those
    /// of users and channels with no session here too, so that a page that comes back is
    /// given what was published while it was away.
    pub fn bind(
        endpoint: &str,
        options: &Options,
        every_topic: bool,
        confirm: Option<&ConfirmOptions<'_>>,
    ) -> Result<(Single, BusControl), BusError> {
        let (mut xsub, control) = Xsub::open(endpoint, options)?;
        xsub.sub.bind(endpoint).map_err(|e| xsub.error(e))?;
        xsub.endpoint = xsub
            .sub
            .get_last_endpoint()
            .map_err(|e| xsub.error(e))?
            .unwrap_or_else(|_| endpoint.to_owned());
        if every_topic {
            subscribe(&xsub.sub, b"").map_err(|e| xsub.error(e))?;
        }
        let (confirm, confirm_endpoint) = match confirm {
            None => (None, None),
            Some(c) => {
                let err = |source| BusError::Zmq {
                    endpoint: c.endpoint.to_owned(),
                    source,
                };
                let socket = xsub.ctx.socket(zmq::ROUTER).map_err(err)?;
                socket.set_rcvhwm(c.hwm).map_err(err)?;
                socket.set_sndhwm(c.hwm).map_err(err)?;
                let max = i64::try_from(c.max_message_bytes).unwrap_or(i64::MAX);
                socket.set_maxmsgsize(max).map_err(err)?;
                // A reply to an app gone or holding too many is dropped and counted, never
                // waited for.
                socket.set_router_mandatory(true).map_err(err)?;
                socket.set_linger(0).map_err(err)?;
                socket.bind(c.endpoint).map_err(err)?;
                let bound = match socket.get_last_endpoint() {
                    Ok(Ok(e)) => e,
                    _ => c.endpoint.to_owned(),
                };
                xsub.wait_also(&socket)?;
                (Some(socket), Some(bound))
            }
        };
        let single = Single {
            xsub,
            confirm,
            confirm_endpoint,
        };
        Ok((single, control))
    }

    /// Where confirmed publishes are taken, as bound, if they are.
    pub fn confirm_endpoint(&self) -> Option<&str> {
        self.confirm_endpoint.as_deref()
    }
}

impl Engine for Single {
    fn endpoint(&self) -> &str {
        &self.xsub.endpoint
    }

    fn numbers_messages(&self) -> bool {
        false
    }

    fn start(&mut self, metrics: &Metrics) {
        // Apps connect to it: it is ready as soon as it is bound.
        metrics.bus_connected.store(1, Ordering::Relaxed);
    }

    fn wait(&mut self, timeout: Option<Duration>) -> Result<Ready, EngineError> {
        let ready = self.xsub.wait(timeout)?;
        Ok(Ready {
            confirms: ready.connection,
            connection: false,
            ..ready
        })
    }

    fn take_connection(&mut self, _: &Metrics) -> bool {
        false
    }

    fn confirm_requests(&mut self, most: usize) -> Vec<Vec<Vec<u8>>> {
        let Some(confirm) = &self.confirm else {
            return Vec::new();
        };
        let mut requests = Vec::new();
        // Unless it ends with EAGAIN, more may be waiting with no signal to come.
        self.xsub.waiter.unsure(OTHER);
        while requests.len() < most {
            match confirm.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => requests.push(frames),
                Err(zmq::Error::EAGAIN) => {
                    self.xsub.waiter.sure(OTHER);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "receive of confirmed publishes failed");
                    break;
                }
            }
        }
        requests
    }

    fn confirm_reply(&mut self, reply: [&[u8]; 4]) -> bool {
        // The send may take in the socket's signal of requests come.
        self.xsub.waiter.unsure(OTHER);
        self.confirm
            .as_ref()
            .is_some_and(|c| c.send_multipart(reply, zmq::DONTWAIT).is_ok())
    }

    fn take_commands(&mut self, on: impl FnMut(Command<'_>)) -> bool {
        self.xsub.take_commands(on)
    }

    #[inline]
    fn read(&mut self, backlog: &mut Backlog) {
        self.xsub.read(backlog);
    }

    #[inline]
    fn answer<'f>(&self, frames: &'f [Vec<u8>]) -> Option<Answer<'f>> {
        // No history requests go out: what an app publishes on a reply topic is no topic's
        // message, and the bus thread drops it.
        answer(frames)
    }

    fn ask(&mut self, _: &HistoryRequest<'_>) {}
}

/// The answer part `frames` are, if they came on a reply topic.
#[inline]
pub(crate) fn answer(frames: &[Vec<u8>]) -> Option<Answer<'_>> {
    if !frames[0].starts_with(recover::REPLY_TOPIC_PREFIX) {
        return None;
    }
    Some(match frames.get(1).and_then(|h| Part::decode(h)) {
        Some(part) => Answer::Part(part, frames.get(2).map_or(&[][..], Vec::as_slice)),
        None => Answer::Malformed,
    })
}

/// Subscribes `sub` (an XSUB) to `topic`.
fn subscribe(sub: &zmq::Socket, topic: &[u8]) -> zmq::Result<()> {
    subscription(sub, 1, topic)
}

/// Sends `sub`'s (un)subscription of `topic` upstream: first byte 1 subscribes, 0 cancels.
fn subscription(sub: &zmq::Socket, op: u8, topic: &[u8]) -> zmq::Result<()> {
    let mut m = Vec::with_capacity(topic.len() + 1);
    m.push(op);
    m.extend_from_slice(topic);
    sub.send(m, 0)
}
