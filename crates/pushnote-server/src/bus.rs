//! The bus: the ZeroMQ subscriber a server reads notifications from.
//!
//! ZeroMQ sockets are not thread-safe and block, so the SUB socket lives on a thread of its
//! own. The hub tells that thread which topics to subscribe to through [`BusControl`] (its
//! [`Subscriptions`]), which writes one-line commands into an in-process ZeroMQ pair: the
//! thread waits on both sockets at once, so a subscription takes effect without polling
//! delays. The hub subscribes a topic (a user's, a channel's) when its first session here
//! joins and unsubscribes it when the last one leaves, so each subscription message upstream
//! means a topic arrived at or left this server.
//!
//! The socket, an XSUB, connects to the forwarder (and reconnects by itself, re-sending its
//! subscriptions, when the forwarder restarts), or in single mode binds for apps to connect.
//! With a forwarder it also carries recovery requests up (`Remote`) and their answers down, on
//! this server's reply topic.
//!
//! The thread decodes and checks what it reads, frames it as pages receive it (a broadcast's
//! and a user's message as the bare data, a channel's in its envelope; where the server keeps
//! history, also with its position, numbered and kept by `Recovery`), and hands it to the
//! `Fanout` (the `fanout` module), whose sweeper threads (one per core) deliver broadcasts to
//! every session and a topic's messages to the topic's sessions. A server that keeps history
//! receives every topic's messages, those of users and channels with no session here too, so
//! that a page that comes back is given what was published while it was away.
//!
//! The forwarder gives each topic's messages their positions ([`wire::stamp_bytes`]), which sessions
//! with positions on are given with each message; `Gaps` counts the positions that never
//! arrived, the messages ZeroMQ dropped on the way here.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pushnote::recover;
use pushnote::wire::{self, BusMessage, Target};
use pushnote_history::Position;
use serde_json::value::RawValue;
use sockjs::Message;

use crate::config::{BusMode, BUS_BACKLOG_BYTES};
use crate::fanout::Fanout;
use crate::hub::Hub;
use crate::inproc;
use crate::metrics::Metrics;
use crate::overload::Backlog;
use crate::protocol::{self, Kind};
use crate::recovery::Recovery;
use crate::remote::{Filled, Remote, Upstream};
use crate::subscriptions::Subscriptions;

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
    /// The bus thread could not be started.
    #[error("cannot start the bus thread: {0}")]
    Thread(#[from] std::io::Error),
}

const CMD_SUBSCRIBE: u8 = b'+';
const CMD_UNSUBSCRIBE: u8 = b'-';
const CMD_STOP: u8 = b'.';
const CMD_RECOVER: u8 = b'?';

/// Sends subscription commands to the bus thread. Cheap to call from any thread.
pub struct BusControl {
    socket: Mutex<zmq::Socket>,
}

impl BusControl {
    fn command(&self, cmd: u8, topic: &[u8]) {
        let mut msg = Vec::with_capacity(topic.len() + 1);
        msg.push(cmd);
        msg.extend_from_slice(topic);
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        // An inproc pair with an unlimited queue: a send fails only once the thread is gone,
        // when subscriptions no longer matter.
        if let Err(e) = socket.send(msg, 0) {
            tracing::debug!(error = %e, "bus thread gone; command dropped");
        }
    }

    fn stop(&self) {
        self.command(CMD_STOP, b"");
    }
}

impl Upstream for BusControl {
    /// Sends the request up to the forwarder, after every subscription commanded before it.
    fn recover(&self, request: &[u8]) {
        self.command(CMD_RECOVER, request);
    }
}

impl Subscriptions for BusControl {
    fn subscribe(&self, topic: &[u8]) {
        self.command(CMD_SUBSCRIBE, topic);
    }

    fn unsubscribe(&self, topic: &[u8]) {
        self.command(CMD_UNSUBSCRIBE, topic);
    }
}

/// The bus, opened but not yet running: its sockets are bound or connected.
pub struct Bus {
    ctx: zmq::Context,
    sub: zmq::Socket,
    commands: zmq::Socket,
    /// The SUB socket's connection events, with a forwarder (`None` in single mode).
    monitor: Option<zmq::Socket>,
    endpoint: String,
    mode: BusMode,
    max_message_bytes: usize,
    /// The most messages read ahead of delivery (the receive high-water mark).
    receive_hwm: i32,
    /// How long a message may wait for delivery before it is shed.
    max_lag: Option<Duration>,
    /// This server's id among the forwarder's servers: it names the reply topic.
    server: u64,
}

/// A running bus thread.
pub struct BusThread {
    control: Arc<BusControl>,
    thread: Option<JoinHandle<()>>,
    // Kept so the context outlives the thread's sockets.
    _ctx: zmq::Context,
}

impl Bus {
    /// Opens the SUB socket at `endpoint` and the command pair. In [`BusMode::Bind`] a port of
    /// `*` picks a free port; [`Bus::endpoint`] tells which. Messages that wait for delivery
    /// longer than `max_lag` are shed.
    pub fn open(
        endpoint: &str,
        mode: BusMode,
        receive_hwm: i32,
        max_message_bytes: usize,
        max_lag: Option<Duration>,
    ) -> Result<(Bus, Arc<BusControl>), BusError> {
        let err = |source| BusError::Zmq {
            endpoint: endpoint.to_owned(),
            source,
        };
        let ctx = zmq::Context::new();
        let sub = ctx.socket(zmq::XSUB).map_err(err)?;
        sub.set_rcvhwm(receive_hwm).map_err(err)?;
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
        let server = pushnote_history::history::fresh_seed();
        if mode == BusMode::Connect {
            subscribe(&sub, &recover::reply_topic(server)).map_err(err)?;
        }
        let mut monitor = None;
        let resolved = match mode {
            BusMode::Connect => {
                const MONITOR: &str = "inproc://bus-monitor";
                let events = zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw()
                    | zmq::SocketEvent::DISCONNECTED.to_raw();
                sub.monitor(MONITOR, i32::from(events)).map_err(err)?;
                let events = ctx.socket(zmq::PAIR).map_err(err)?;
                events.connect(MONITOR).map_err(err)?;
                monitor = Some(events);
                sub.connect(endpoint).map_err(err)?;
                endpoint.to_owned()
            }
            BusMode::Bind => {
                sub.bind(endpoint).map_err(err)?;
                sub.get_last_endpoint()
                    .map_err(err)?
                    .unwrap_or_else(|_| endpoint.to_owned())
            }
        };
        let (commands, control) = inproc::pair(&ctx, "bus").map_err(err)?;
        let bus = Bus {
            ctx,
            sub,
            commands,
            monitor,
            endpoint: resolved,
            mode,
            max_message_bytes,
            receive_hwm,
            max_lag,
            server,
        };
        Ok((
            bus,
            Arc::new(BusControl {
                socket: Mutex::new(control),
            }),
        ))
    }

    /// The endpoint the SUB socket is bound or connected to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// This server's id on the bus (its reply topic's name).
    pub fn server_id(&self) -> u64 {
        self.server
    }

    /// Starts the thread that reads the bus and delivers to `hub` through `fanout`, or,
    /// where the server keeps history, through `recovery`; with a forwarder, recovery
    /// requests' answers go to `remote`.
    pub fn spawn(
        self,
        control: Arc<BusControl>,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        fanout: Arc<Fanout>,
        recovery: Option<Arc<Recovery>>,
        remote: Option<Arc<Remote>>,
    ) -> Result<BusThread, BusError> {
        let ctx = self.ctx.clone();
        if recovery.is_some() {
            subscribe(&self.sub, b"").map_err(|source| BusError::Zmq {
                endpoint: self.endpoint.clone(),
                source,
            })?;
        }
        let state = State {
            fanout,
            recovery,
            remote,
            gaps: Gaps::default(),
            subscribed: HashSet::new(),
            filling: HashMap::new(),
            connected_before: false,
            backlog: Backlog::new(
                self.max_lag,
                usize::try_from(self.receive_hwm).unwrap_or(0),
                BUS_BACKLOG_BYTES,
            ),
        };
        let thread = std::thread::Builder::new()
            .name("pushnote-bus".into())
            .spawn(move || self.run(&hub, &metrics, state))?;
        Ok(BusThread {
            control,
            thread: Some(thread),
            _ctx: ctx,
        })
    }

    fn run(self, hub: &Hub, metrics: &Metrics, mut state: State) {
        if self.mode == BusMode::Bind {
            // Apps connect to it: it is ready as soon as it is bound.
            metrics.bus_connected.store(1, Ordering::Relaxed);
        }
        loop {
            // The connection events' socket where there is one (no allocation per turn).
            let mut items = [
                self.sub.as_poll_item(zmq::POLLIN),
                self.commands.as_poll_item(zmq::POLLIN),
                self.monitor
                    .as_ref()
                    .unwrap_or(&self.commands)
                    .as_poll_item(zmq::POLLIN),
            ];
            let polled = if self.monitor.is_some() { 3 } else { 2 };
            let items = &mut items[..polled];
            // Losses not logged yet are logged within a second even when nothing else comes;
            // late recovery answers are given up within a quarter of one.
            let waiting = state.remote.as_ref().is_some_and(|r| r.waiting());
            let timeout = if !state.backlog.is_empty() {
                0
            } else if waiting {
                250
            } else if state.gaps.unreported > 0 || metrics.overloaded.load(Ordering::Relaxed) == 1 {
                1000
            } else {
                -1
            };
            if let Err(e) = zmq::poll(items, timeout) {
                if e == zmq::Error::EINTR {
                    continue;
                }
                tracing::error!(error = %e, "bus poll failed; the bus thread stops");
                return;
            }
            let (sub_ready, cmd_ready) = (items[0].is_readable(), items[1].is_readable());
            if items.get(2).is_some_and(|i| i.is_readable())
                && self.take_connection_events(metrics, &mut state)
            {
                self.ask_for_fill(&mut state);
            }
            if cmd_ready && !self.take_commands(&mut state) {
                state.gaps.report(true);
                return;
            }
            if sub_ready || !state.backlog.is_empty() {
                self.take_messages(hub, metrics, &mut state);
            }
            if waiting {
                let late = match &state.remote {
                    Some(remote) => remote.expire(Instant::now(), |topic| state.gaps.last(topic)),
                    None => Vec::new(),
                };
                for filled in late {
                    self.fill(filled, hub, metrics, &mut state);
                }
            }
            state.gaps.report(false);
            state.backlog.report(Instant::now(), metrics);
        }
    }

    /// Notes whether the forwarder is connected, from the socket's events; true when it came
    /// back after a disconnection.
    fn take_connection_events(&self, metrics: &Metrics, state: &mut State) -> bool {
        let Some(monitor) = &self.monitor else {
            return false;
        };
        let mut back = false;
        while let Ok(frames) = monitor.recv_multipart(zmq::DONTWAIT) {
            let Some(&[a, b, ..]) = frames.first().map(Vec::as_slice) else {
                continue;
            };
            let event = u16::from_le_bytes([a, b]);
            let connected = if event == zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw() {
                tracing::info!(endpoint = %self.endpoint, "bus connected");
                back |= std::mem::replace(&mut state.connected_before, true);
                1
            } else if event == zmq::SocketEvent::DISCONNECTED.to_raw() {
                tracing::warn!(endpoint = %self.endpoint, "bus disconnected; reconnecting");
                0
            } else {
                continue;
            };
            metrics.bus_connected.store(connected, Ordering::Relaxed);
        }
        back
    }

    /// Applies every waiting command; false when told to stop.
    fn take_commands(&self, state: &mut State) -> bool {
        while let Ok(cmd) = self.commands.recv_bytes(zmq::DONTWAIT) {
            let Some((&op, topic)) = cmd.split_first() else {
                continue;
            };
            let result = match op {
                CMD_SUBSCRIBE => {
                    if self.mode == BusMode::Connect {
                        state.subscribed.insert(topic.to_vec());
                    }
                    subscribe(&self.sub, topic)
                }
                CMD_UNSUBSCRIBE => {
                    // Messages published while no one here listens are not ours to miss.
                    state.gaps.forget(topic);
                    state.subscribed.remove(topic);
                    crate::room::give_back(&mut state.subscribed);
                    subscription(&self.sub, 0, topic)
                }
                CMD_RECOVER => self.sub.send(topic, 0),
                CMD_STOP => return false,
                _ => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "bus subscription change failed");
            }
        }
        true
    }

    /// Counts the messages of a topic that the forwarder numbered and that never arrived
    /// before this one. Every message the forwarder stamped counts, whether the server then
    /// takes or rejects it: a rejected message did arrive. Only a forwarder stamps: in single
    /// mode, what publishers put after the topic is no stamp, and cannot move the count.
    fn count_gaps(&self, frames: &[Vec<u8>], gaps: &mut Gaps, metrics: &Metrics) {
        if self.mode != BusMode::Connect {
            return;
        }
        let Some(Ok((topic, Some(stamp)))) = frames.first().map(|t| wire::split_stamp(t)) else {
            return;
        };
        let missed = gaps.record(topic, stamp);
        if missed > 0 {
            metrics.bus_lost.fetch_add(missed, Ordering::Relaxed);
        }
    }

    /// Reads what ZeroMQ holds into the backlog, as far as it has room, for a moment at most
    /// (so that delivery goes on while messages come faster than they can be read).
    fn read_ahead(&self, backlog: &mut Backlog) {
        const TURN: Duration = Duration::from_millis(2);
        let now = Instant::now();
        let mut read = 0u32;
        while backlog.has_room() {
            read = read.wrapping_add(1);
            if read & 63 == 0 && now.elapsed() > TURN {
                return;
            }
            match self.sub.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => backlog.push(now, frames),
                Err(zmq::Error::EAGAIN) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "bus receive failed");
                    return;
                }
            }
        }
    }

    /// Reads ahead, then delivers the oldest messages waiting, up to a batch, so commands are
    /// not starved; sheds those that waited past the bound.
    fn take_messages(&self, hub: &Hub, metrics: &Metrics, state: &mut State) {
        const BATCH: usize = 1024;
        self.read_ahead(&mut state.backlog);
        let mut now = Instant::now();
        for i in 0..BATCH {
            // The clock read again now and then: a batch can take long on a starved machine,
            // and what waited past the bound meanwhile is shed, not delivered late.
            if i % 64 == 63 {
                now = Instant::now();
            }
            let Some((frames, late)) = state.backlog.pop(now, metrics) else {
                return;
            };
            if frames[0].starts_with(recover::REPLY_TOPIC_PREFIX) {
                let filled = state.remote.as_ref().and_then(|remote| {
                    remote.take(&frames, |topic, position, body| {
                        self.recovered(topic, position, body)
                    })
                });
                if let Some(filled) = filled {
                    self.fill(filled, hub, metrics, state);
                }
                continue;
            }
            if !state.filling.is_empty() {
                // A topic waiting for what the restarted forwarder had before: after it.
                let topic = wire::split_stamp(&frames[0]).ok().map(|(t, _)| t);
                if let Some(held) = topic.and_then(|t| state.filling.get_mut(t)) {
                    if held.len() < MAX_HELD {
                        held.push(frames);
                        continue;
                    }
                }
            }
            if late {
                self.shed(frames, now, metrics, state);
            } else {
                self.handle(frames, hub, metrics, state);
                now = state.backlog.delivered(metrics);
            }
        }
    }

    /// Counts a message that waited past the bound, and does not deliver it. Where the
    /// server keeps history, it is kept there all the same, for the pages that ask.
    fn shed(&self, frames: Vec<Vec<u8>>, now: Instant, metrics: &Metrics, state: &mut State) {
        metrics.bus_received.fetch_add(1, Ordering::Relaxed);
        self.count_gaps(&frames, &mut state.gaps, metrics);
        state.backlog.count_shed(&frames[0], now, metrics);
        let Some(recovery) = &state.recovery else {
            return;
        };
        if frames.iter().map(Vec::len).sum::<usize>() > self.max_message_bytes {
            return;
        }
        if let Ok(m) = wire::decode(&frames) {
            let (kind, bare) = bare_form(&m);
            recovery.publish(
                m.topic,
                |position| with_position(bare, kind, position, &m),
                |_: &Fanout, _: &Message| {},
            );
        }
    }

    /// Checks, counts and delivers one bus message.
    fn handle(&self, frames: Vec<Vec<u8>>, hub: &Hub, metrics: &Metrics, state: &mut State) {
        metrics.bus_received.fetch_add(1, Ordering::Relaxed);
        self.count_gaps(&frames, &mut state.gaps, metrics);
        let size: usize = frames.iter().map(Vec::len).sum();
        if size > self.max_message_bytes {
            metrics.bus_rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                size,
                limit = self.max_message_bytes,
                "bus message over the size limit; dropped"
            );
            return;
        }
        let m = match wire::decode(&frames) {
            Ok(m) => m,
            Err(e) => {
                metrics.bus_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "malformed bus message; dropped");
                return;
            }
        };
        // This thread is behind: writes can wait for the sessions' writers, which put a
        // session's messages together, so that it catches up. Not when more messages are
        // merely waiting: a targeted message's session rarely has another one coming, and
        // waking its writer would cost a thread switch per message.
        let backlog = &state.backlog;
        let more_waiting = || backlog.lag(Instant::now()) > BEHIND;
        let unrouted = match m.target {
            Target::All => {
                metrics.bus_broadcasts.fetch_add(1, Ordering::Relaxed);
                None
            }
            Target::User(_) => {
                metrics.bus_user_messages.fetch_add(1, Ordering::Relaxed);
                Some(&metrics.bus_user_messages_unrouted)
            }
            Target::Channel(_) => {
                metrics.bus_channel_messages.fetch_add(1, Ordering::Relaxed);
                Some(&metrics.bus_channel_messages_unrouted)
            }
        };
        let (kind, bare) = bare_form(&m);
        let deliver = |fanout: &Fanout, message: &Message| match unrouted {
            None => fanout.broadcast(message, hub),
            Some(unrouted) => {
                if !fanout.send_to_topic(m.topic, message, hub, metrics, &more_waiting) {
                    unrouted.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        match (&state.recovery, m.stamp) {
            (Some(recovery), _) => recovery.publish(
                m.topic,
                |position| with_position(bare, kind, position, &m),
                deliver,
            ),
            // The forwarder's stamp is the message's position.
            (None, Some(stamp)) if self.mode == BusMode::Connect => {
                deliver(&state.fanout, &with_position(bare, kind, stamp, &m));
            }
            (None, _) => deliver(&state.fanout, &bare),
        }
    }

    /// After the forwarder came back, asks it for what it has of every topic this server is
    /// in: what it accepted before this server's subscriptions reached it went nowhere. Each
    /// topic's messages wait meanwhile, so they come after.
    fn ask_for_fill(&self, state: &mut State) {
        let Some(remote) = &state.remote else {
            return;
        };
        // Takes in the new connection first, so that the requests go down it.
        let _ = self.sub.get_events();
        let topics: Vec<Vec<u8>> = std::iter::once(wire::BROADCAST_TOPIC.to_vec())
            .chain(state.subscribed.iter().cloned())
            .collect();
        for topic in topics {
            let request = remote.fill(&topic);
            match self.sub.send(request, 0) {
                Ok(()) => {
                    state.filling.entry(topic).or_default();
                }
                Err(e) => tracing::warn!(error = %e, "bus fill request failed"),
            }
        }
        // Sessions' requests waiting for an answer go again after the fills, so that their
        // answers come after the fills' and nothing is given twice.
        for request in remote.ask_again() {
            if let Err(e) = self.sub.send(request, 0) {
                tracing::warn!(error = %e, "bus recovery request failed");
            }
        }
    }

    /// Delivers what the forwarder had of a topic when it came back (what this server had
    /// not had), then what of the topic waited for it, then counts what neither gave.
    fn fill(&self, filled: Filled, hub: &Hub, metrics: &Metrics, state: &mut State) {
        let Filled {
            topic,
            messages,
            position,
        } = filled;
        let held = state.filling.remove(&topic).unwrap_or_default();
        let had = |stamp: Position, last: Option<Position>| {
            last.is_some_and(|l| l.epoch == stamp.epoch && stamp.offset <= l.offset)
        };
        for (stamp, body) in messages {
            if had(stamp, state.gaps.last(&topic)) {
                continue;
            }
            let mut t = topic.clone();
            t.extend_from_slice(&wire::stamp_bytes(stamp));
            self.handle(vec![t, body], hub, metrics, state);
        }
        // What the forwarder had but no longer kept is lost.
        if let Some(position) = position {
            if !had(position, state.gaps.last(&topic)) && position.offset > 0 {
                let missed = state.gaps.advance(&topic, position);
                metrics.bus_lost.fetch_add(missed, Ordering::Relaxed);
            }
        }
        for frames in held {
            let stamp = wire::split_stamp(&frames[0]).ok().and_then(|(_, s)| s);
            if stamp.is_some_and(|s| had(s, state.gaps.last(&topic))) {
                continue;
            }
            self.handle(frames, hub, metrics, state);
        }
    }
}

/// How long the oldest message read ahead may have waited before this thread stops writing
/// to sessions itself and hands the writes to the sessions' writers.
const BEHIND: Duration = Duration::from_millis(5);

/// The most messages of one topic held while the forwarder is asked what it had before them;
/// past it, the topic's messages go on at once.
const MAX_HELD: usize = 100_000;

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

/// A message as pages without positions receive it: a broadcast's and a user's as the bare
/// data, a channel's in its envelope; with its kind.
fn bare_form<'a>(m: &'a BusMessage<'a>) -> (Kind<'a>, Message) {
    match m.target {
        Target::All => (Kind::Broadcast, Message::json(m.data.get())),
        Target::User(_) => (Kind::User, Message::json(m.data.get())),
        Target::Channel(channel) => {
            let event = m.event.as_deref().unwrap_or_default();
            let envelope = wire::channel_envelope(channel, event, m.data);
            (Kind::Channel { channel, event }, Message::json(&envelope))
        }
    }
}

/// `bare` with its second form: with its position, as pages with positions receive it. The
/// second form is made when a session first takes it (most messages only ever go to pages
/// without positions); a user's or a broadcast's data is the bare form itself.
fn with_position(bare: Message, kind: Kind<'_>, position: Position, m: &BusMessage) -> Message {
    match kind {
        Kind::Broadcast => bare.with_second_form_by(move |first| {
            positioned(Kind::Broadcast, position, first.as_json())
        }),
        Kind::User => {
            bare.with_second_form_by(move |first| positioned(Kind::User, position, first.as_json()))
        }
        Kind::Channel { channel, event } => {
            let (channel, event): (Box<str>, Box<str>) = (channel.into(), event.into());
            let data: Box<str> = m.data.get().into();
            bare.with_second_form_by(move |_| {
                let kind = Kind::Channel {
                    channel: &channel,
                    event: &event,
                };
                positioned(kind, position, &data)
            })
        }
    }
}

/// The message of `kind` whose data is the JSON text `data` (a bus message's data, or a
/// message's first form: JSON either way), with its position.
fn positioned(kind: Kind<'_>, position: Position, data: &str) -> Message {
    let data: &RawValue = serde_json::from_str(data).unwrap_or_else(|_| null());
    Message::json(&protocol::positioned(kind, position, data))
}

fn null() -> &'static RawValue {
    serde_json::from_str("null").expect("null is JSON")
}

impl Bus {
    /// A kept message of `topic` the forwarder gave in a recovery answer, as sessions are
    /// sent it; `None` if it breaks the bus format or the size limit.
    fn recovered(&self, topic: &[u8], position: Position, body: &[u8]) -> Option<Message> {
        if topic.len() + body.len() > self.max_message_bytes {
            return None;
        }
        let frames = [topic.to_vec(), body.to_vec()];
        let m = wire::decode(&frames).ok()?;
        let (kind, bare) = bare_form(&m);
        Some(with_position(bare, kind, position, &m))
    }
}

/// What the bus thread keeps from one batch of messages to the next.
struct State {
    /// The broadcasts on their way to every session.
    fanout: Arc<Fanout>,
    /// The history, where the server keeps one: every message goes through it.
    recovery: Option<Arc<Recovery>>,
    /// Recovery requests waiting for the forwarder's answers, with a forwarder.
    remote: Option<Arc<Remote>>,
    gaps: Gaps,
    /// The topics this server is subscribed to besides the broadcasts (with a forwarder).
    subscribed: HashSet<Vec<u8>>,
    /// After the forwarder came back: the topics waiting for what it had of them, each with
    /// its messages that came meanwhile.
    filling: HashMap<Vec<u8>, Vec<Vec<Vec<u8>>>>,
    /// The forwarder was connected once (a connection after that is a reconnection).
    connected_before: bool,
    /// Messages read and not yet delivered.
    backlog: Backlog,
}

/// How often losses are logged at most; the metric counts every one at once.
const LOSS_LOG_EVERY: Duration = Duration::from_secs(1);

/// The forwarder's last position on each topic this server listens to, to count the messages
/// that never arrived (ZeroMQ dropped them past a high-water mark, or while disconnected).
#[derive(Default)]
struct Gaps {
    last: HashMap<Vec<u8>, Position>,
    /// Lost messages not logged yet.
    unreported: u64,
    logged: Option<Instant>,
}

impl Gaps {
    /// Notes a message's stamp; returns how many messages of its topic were missed just before
    /// it. The first message of a topic, or of a new epoch of it (the forwarder restarted, or
    /// forgot the topic), starts its count.
    fn record(&mut self, topic: &[u8], stamp: Position) -> u64 {
        let missed = match self.last.get_mut(topic) {
            Some(last) => {
                let missed = if last.epoch == stamp.epoch {
                    stamp.skipped_after(last.offset).unwrap_or(0)
                } else {
                    tracing::debug!("a topic's epoch changed (the forwarder restarted?)");
                    0
                };
                *last = stamp;
                u64::from(missed)
            }
            None => {
                self.last.insert(topic.to_vec(), stamp);
                0
            }
        };
        self.unreported += missed;
        missed
    }

    /// The last position seen of `topic`.
    fn last(&self, topic: &[u8]) -> Option<Position> {
        self.last.get(topic).copied()
    }

    /// Moves `topic` on to `position`, which did not arrive; returns how many messages that
    /// skips (all of its epoch up to it, for an epoch not seen here).
    fn advance(&mut self, topic: &[u8], position: Position) -> u64 {
        let missed = match self.last(topic) {
            Some(last) if last.epoch == position.epoch => {
                u64::from(position.offset.saturating_sub(last.offset))
            }
            _ => u64::from(position.offset),
        };
        self.last.insert(topic.to_vec(), position);
        self.unreported += missed;
        missed
    }

    /// Stops counting `topic` (nothing of it is received any more).
    fn forget(&mut self, topic: &[u8]) {
        self.last.remove(topic);
        crate::room::give_back(&mut self.last);
    }

    /// Logs the losses not logged yet, at most once every [`LOSS_LOG_EVERY`] unless `force`.
    fn report(&mut self, force: bool) {
        if self.unreported == 0
            || !force && self.logged.is_some_and(|t| t.elapsed() < LOSS_LOG_EVERY)
        {
            return;
        }
        tracing::warn!(
            lost = self.unreported,
            "bus messages from the forwarder never arrived: dropped past a high-water mark \
             (pushnote-mq --hwm) or while disconnected"
        );
        self.unreported = 0;
        self.logged = Some(Instant::now());
    }
}

impl BusThread {
    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.control.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
