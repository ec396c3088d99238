//! The bus thread: what comes in from the engine (`broker.rs`), checked, framed and handed on.
//!
//! The thread waits on the engine ([`Engine`]): the ZeroMQ forwarder, or the in-process engine
//! of `--single` (`zeromq.rs`). The hub tells the engine which topics to subscribe to through
//! its handle ([`Broker`]); with a forwarder, recovery requests go up through the same handle
//! (`Remote`) and their answers come in here.
//!
//! The thread decodes and checks what it reads, frames it as pages receive it (a broadcast's
//! and a user's message as the bare data, a channel's in its envelope; where the server keeps
//! history, also with its position, numbered and kept by `Recovery`), and hands it to the
//! `Fanout` (the `fanout` module), whose sweeper threads (one per core) deliver broadcasts to
//! every session and a topic's messages to the topic's sessions.
//!
//! An engine that numbers messages (the forwarder) gives each topic's messages their
//! positions, which sessions with positions on are given with each message. With the
//! forwarder, the bookkeeping of recovery (sessions' requests, the fill after it came back,
//! each topic's last position, to count the positions that never arrived) is the state
//! machine of `recovery_state.rs`, fed and carried out here through `Recovering`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pushnote::confirm::{self, Refusal};
use pushnote::wire::{self, BusMessage, Target};
use pushnote_history::Position;
use serde_json::value::RawValue;
use sockjs::Message;

use crate::broker::{Broker, Command, Engine, HistoryRequest};
use crate::config::{BusMode, ServerConfig, BUS_BACKLOG_BYTES, CONFIRM_MAX_TOPIC_BYTES};
use crate::control::BusControl;
use crate::fanout::Fanout;
use crate::hub::Hub;
use crate::log_every::LogEvery;
use crate::metrics::Metrics;
use crate::overload::Backlog;
use crate::presence::Presence;
use crate::protocol::{self, Kind};
use crate::recovery::Recovery;
use crate::recovery_state::{Action, Live};
use crate::redis::{self as redis_engine, Bounds, Redis};
use crate::remote::{Body, Recovering};
use crate::zeromq::{BusError, ConfirmOptions, Forwarder, Options, Single};

/// Today's engines, each driven by the bus thread's code made for it.
enum Engines {
    Forwarder(Forwarder),
    Single(Single),
    Redis(Box<Redis>),
}

/// The bus, opened but not yet running: its engine is bound or connected.
pub struct Bus {
    engine: Engines,
    max_message_bytes: usize,
    /// The most messages read ahead of delivery (the receive high-water mark).
    receive_hwm: i32,
    /// How long a message may wait for delivery before it is shed.
    max_lag: Option<Duration>,
}

/// A running bus thread.
pub struct BusThread {
    control: Arc<BusControl>,
    thread: Option<JoinHandle<()>>,
}

impl Bus {
    /// Opens the engine `config` names: connects to the forwarder ([`BusMode::Connect`]) or
    /// binds for apps ([`BusMode::Bind`], where a port of `*` picks a free port;
    /// [`Bus::endpoint`] tells which; where the server keeps history, every topic's messages
    /// are taken in, and with `config.confirm` confirmed publishes too), or takes messages
    /// from Redis ([`BusMode::Redis`], counting its errors in `metrics`).
    pub fn open(
        config: &ServerConfig,
        metrics: &Arc<Metrics>,
    ) -> Result<(Bus, Arc<BusControl>), BusError> {
        let receive_hwm = config.bus_high_water_mark;
        let max_message_bytes = config.max_bus_message_bytes;
        let options = Options { receive_hwm };
        let endpoint = config.bus_endpoint.as_str();
        let (engine, control) = match config.bus_mode {
            BusMode::Redis => {
                let broker = config
                    .broker
                    .as_ref()
                    .ok_or_else(|| BusError::Broker("no Redis given".into()))?;
                let (engine, control) = Redis::new(redis_engine::Options {
                    endpoint: broker.endpoint.clone(),
                    prefix: broker.prefix.clone(),
                    bounds: Bounds {
                        size: broker.history_size,
                        ttl_secs: broker.history_ttl,
                        idle_secs: broker.topic_idle,
                    },
                    max_message_bytes,
                    metrics: metrics.clone(),
                })?;
                (Engines::Redis(Box::new(engine)), control)
            }
            BusMode::Connect => {
                let (engine, control) = Forwarder::connect(endpoint, &options)?;
                (Engines::Forwarder(engine), control)
            }
            BusMode::Bind => {
                let confirm = config.confirm.as_ref().map(|c| ConfirmOptions {
                    endpoint: &c.endpoint,
                    hwm: c.hwm,
                    max_message_bytes,
                });
                let keeps_history = config.history.is_some();
                let (engine, control) =
                    Single::bind(endpoint, &options, keeps_history, confirm.as_ref())?;
                (Engines::Single(engine), control)
            }
        };
        let bus = Bus {
            engine,
            max_message_bytes,
            receive_hwm,
            max_lag: config.max_lag,
        };
        Ok((bus, Arc::new(control)))
    }

    /// Where confirmed publishes are taken, as bound (`--single --confirm`).
    pub fn confirm_endpoint(&self) -> Option<&str> {
        match &self.engine {
            Engines::Single(e) => e.confirm_endpoint(),
            _ => None,
        }
    }

    /// The endpoint the engine is bound or connected to.
    pub fn endpoint(&self) -> &str {
        match &self.engine {
            Engines::Forwarder(e) => e.endpoint(),
            Engines::Single(e) => e.endpoint(),
            Engines::Redis(e) => e.endpoint(),
        }
    }

    /// This server's id on the bus (its reply topic's name), with a forwarder.
    pub fn server_id(&self) -> Option<u64> {
        match &self.engine {
            Engines::Forwarder(e) => Some(e.server_id()),
            Engines::Single(_) | Engines::Redis(_) => None,
        }
    }

    /// Starts the thread that reads the bus and delivers to `hub` through `fanout`, or,
    /// where the server keeps history, through `recovery`; with a forwarder, `recovering`
    /// takes the sessions' requests and their answers; `presence` is told of the other
    /// servers' presence messages.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        self,
        control: Arc<BusControl>,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        fanout: Arc<Fanout>,
        recovery: Option<Arc<Recovery>>,
        recovering: Option<Recovering>,
        presence: Arc<Presence>,
    ) -> Result<BusThread, BusError> {
        let state = State {
            fanout,
            recovery,
            recovering,
            presence,
            losses: Losses::default(),
            refusals: LogEvery::default(),
            backlog: Backlog::new(
                self.max_lag,
                usize::try_from(self.receive_hwm).unwrap_or(0),
                BUS_BACKLOG_BYTES,
            ),
        };
        let max_message_bytes = self.max_message_bytes;
        let builder = std::thread::Builder::new().name("pushnote-bus".into());
        let thread = match self.engine {
            Engines::Forwarder(engine) => builder.spawn(move || {
                Reader {
                    engine,
                    max_message_bytes,
                }
                .run(&hub, &metrics, state)
            })?,
            Engines::Single(engine) => builder.spawn(move || {
                Reader {
                    engine,
                    max_message_bytes,
                }
                .run(&hub, &metrics, state)
            })?,
            Engines::Redis(engine) => builder.spawn(move || {
                Reader {
                    engine: *engine,
                    max_message_bytes,
                }
                .run(&hub, &metrics, state)
            })?,
        };
        Ok(BusThread {
            control,
            thread: Some(thread),
        })
    }
}

/// The bus thread's reading of one engine.
struct Reader<E> {
    engine: E,
    max_message_bytes: usize,
}

impl<E: Engine> Reader<E> {
    fn run(mut self, hub: &Hub, metrics: &Metrics, mut state: State) {
        self.engine.start(metrics);
        loop {
            // Losses not logged yet are logged within a second even when nothing else comes;
            // late recovery answers are given up within a quarter of one.
            let waiting = state.recovering.as_ref().is_some_and(Recovering::waiting);
            let timeout = if !state.backlog.is_empty() {
                Some(Duration::ZERO)
            } else if waiting {
                Some(Duration::from_millis(250))
            } else if state.losses.unreported > 0 || metrics.overloaded.load(Ordering::Relaxed) == 1
            {
                Some(Duration::from_secs(1))
            } else {
                None
            };
            let ready = match self.engine.wait(timeout) {
                Ok(ready) => ready,
                Err(e) => {
                    tracing::error!(error = %e, "the bus thread stops");
                    return;
                }
            };
            if ready.connection && self.engine.take_connection(metrics) {
                state.presence.reconnected();
                // What the forwarder accepted before this server's subscriptions reached it
                // went nowhere: each topic waits for what it has of it.
                if let Some(recovering) = &mut state.recovering {
                    recovering.reconnected(Instant::now());
                }
                self.carry_out(hub, metrics, &mut state);
            }
            if ready.commands {
                let go_on = self.take_commands(&mut state);
                self.carry_out(hub, metrics, &mut state);
                if !go_on {
                    state.losses.report(true);
                    return;
                }
            }
            if ready.messages || !state.backlog.is_empty() {
                self.take_messages(hub, metrics, &mut state);
            }
            if ready.confirms {
                self.take_confirms(hub, metrics, &mut state);
            }
            if waiting {
                if let Some(recovering) = &mut state.recovering {
                    recovering.expire(Instant::now());
                }
                self.carry_out(hub, metrics, &mut state);
            }
            state.losses.report(false);
            state.backlog.report(Instant::now(), metrics);
        }
    }

    /// Carries out every waiting command; false when told to stop.
    fn take_commands(&mut self, state: &mut State) -> bool {
        let Some(recovering) = &mut state.recovering else {
            return self.engine.take_commands(|_| {});
        };
        let now = Instant::now();
        self.engine.take_commands(|command| match command {
            Command::Subscribed(topic) => recovering.subscribed(topic, now),
            Command::Unsubscribed(topic) => recovering.unsubscribed(topic, now),
            Command::Asked(ticket) => recovering.asked(ticket, now),
            Command::Share(_) => {}
        })
    }

    /// Carries out what recovery asks of this thread: requests to the engine, what a fill
    /// brought or held back delivered, losses counted.
    fn carry_out(&mut self, hub: &Hub, metrics: &Metrics, state: &mut State) {
        while let Some(action) = state.recovering.as_mut().and_then(Recovering::next) {
            match action {
                Action::Ask {
                    id,
                    topic,
                    since,
                    max_bytes,
                } => self.engine.ask(&HistoryRequest {
                    id,
                    since,
                    max_bytes,
                    topic: &topic,
                }),
                Action::Deliver {
                    mut topic,
                    position,
                    body,
                } => {
                    if let Body::Raw(body) = body {
                        topic.extend_from_slice(&wire::stamp_bytes(position));
                        self.handle(vec![topic, body], hub, metrics, state);
                    }
                }
                Action::DeliverHeld(frames) => {
                    self.handle(frames, hub, metrics, state);
                }
                Action::Lost(lost) => state.losses.count(lost, metrics),
                Action::Answer { .. } => {}
            }
        }
    }

    /// Reads ahead, then delivers the oldest messages waiting, up to a batch, so commands are
    /// not starved; sheds those that waited past the bound.
    fn take_messages(&mut self, hub: &Hub, metrics: &Metrics, state: &mut State) {
        const BATCH: usize = 1024;
        self.engine.read(&mut state.backlog);
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
            if self.engine.shares() && frames.len() == 2 && frames[0] == pushnote_presence::TOPIC {
                // Another server's presence message (PROTOCOL §2d), not a page's.
                state.presence.receive(&frames[1]);
                continue;
            }
            if let Some(answer) = self.engine.answer(&frames) {
                if let Some(recovering) = &mut state.recovering {
                    let max = self.max_message_bytes;
                    recovering.answer(answer, now, |topic, position, body| {
                        recovered(max, topic, position, body)
                    });
                    self.carry_out(hub, metrics, state);
                }
                continue;
            }
            // With a forwarder: its positions counted, and a topic waiting for what the
            // restarted forwarder had before held until after it. Every message the forwarder
            // stamped counts, whether the server then takes or rejects it: a rejected message
            // did arrive.
            let frames = match &mut state.recovering {
                None => frames,
                Some(recovering) => {
                    let stamp = wire::split_stamp(&frames[0]).ok().and_then(|(_, s)| s);
                    match recovering.live(stamp, frames) {
                        Live::Held => continue,
                        Live::Deliver { body, lost } => {
                            state.losses.count(lost, metrics);
                            body
                        }
                    }
                }
            };
            if late {
                self.shed(frames, now, metrics, state);
            } else {
                self.handle(frames, hub, metrics, state);
                now = state.backlog.delivered(metrics);
            }
        }
    }

    /// Publishes the confirmed publishes waiting (up to a batch), each whole or refused whole,
    /// and replies with the positions the history gave them, or why not (PROTOCOL §2b). A
    /// request any of whose messages the server would reject is refused `malformed`.
    fn take_confirms(&mut self, hub: &Hub, metrics: &Metrics, state: &mut State) {
        const BATCH: usize = 1024;
        let limits = confirm::Limits {
            max_topic_bytes: CONFIRM_MAX_TOPIC_BYTES,
            max_message_bytes: self.max_message_bytes,
        };
        for request in self.engine.confirm_requests(BATCH) {
            metrics.confirm_requests.fetch_add(1, Ordering::Relaxed);
            // The app's identity (ZeroMQ's ROUTER puts it first), then the request.
            let [peer, id, rest @ ..] = request.as_slice() else {
                continue; // not even an id: nothing to reply to
            };
            let checked = confirm::check(id, rest, limits).and_then(|checked| {
                let body = &rest[rest.len() - 1];
                let messages: Vec<Vec<Vec<u8>>> = rest
                    .iter()
                    .zip(&checked.topic_lens)
                    .map(|(topic, &len)| vec![topic[..len].to_vec(), body.clone()])
                    .collect();
                match messages.iter().all(|m| wire::decode(m).is_ok()) {
                    true => Ok(messages),
                    false => Err(Refusal::Malformed),
                }
            });
            let reply: [Vec<u8>; 2] = match checked {
                Ok(messages) => {
                    let positions: Vec<Position> = messages
                        .into_iter()
                        .filter_map(|m| self.handle(m, hub, metrics, state))
                        .collect();
                    metrics
                        .confirmed
                        .fetch_add(positions.len() as u64, Ordering::Relaxed);
                    [confirm::OK.to_vec(), confirm::encode_positions(&positions)]
                }
                Err(refusal) => {
                    metrics.confirm_refused[refusal as usize].fetch_add(1, Ordering::Relaxed);
                    if let Some(n) = state.refusals.tick(Instant::now()) {
                        tracing::warn!(
                            refused = n,
                            reason = refusal.as_str(),
                            "confirmed publishes refused: {}",
                            confirm::explain(refusal, limits)
                        );
                    }
                    let detail = confirm::explain(refusal, limits).into_bytes();
                    [refusal.as_str().as_bytes().to_vec(), detail]
                }
            };
            let id: &[u8] = if id.len() <= confirm::MAX_ID_BYTES {
                id
            } else {
                &[]
            };
            if !self.engine.confirm_reply([peer, id, &reply[0], &reply[1]]) {
                metrics
                    .confirm_replies_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts a message that waited past the bound, and does not deliver it. Where the
    /// server keeps history, it is kept there all the same, for the pages that ask.
    fn shed(&mut self, frames: Vec<Vec<u8>>, now: Instant, metrics: &Metrics, state: &mut State) {
        metrics.bus_received.fetch_add(1, Ordering::Relaxed);
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
                |position| with_position(bare, kind, position),
                |_: &Fanout, _: &Message| {},
            );
        }
    }

    /// Checks, counts and delivers one bus message; the position the server's history gave
    /// it, if it keeps one.
    fn handle(
        &mut self,
        frames: Vec<Vec<u8>>,
        hub: &Hub,
        metrics: &Metrics,
        state: &mut State,
    ) -> Option<Position> {
        metrics.bus_received.fetch_add(1, Ordering::Relaxed);
        let size: usize = frames.iter().map(Vec::len).sum();
        if size > self.max_message_bytes {
            metrics.bus_rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                size,
                limit = self.max_message_bytes,
                "bus message over the size limit; dropped"
            );
            return None;
        }
        let m = match wire::decode(&frames) {
            Ok(m) => m,
            Err(e) => {
                metrics.bus_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "malformed bus message; dropped");
                return None;
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
            (Some(recovery), _) => {
                let mut kept = None;
                recovery.publish(
                    m.topic,
                    |position| {
                        kept = Some(position);
                        with_position(bare, kind, position)
                    },
                    deliver,
                );
                kept
            }
            // The forwarder's stamp is the message's position.
            (None, Some(stamp)) if self.engine.numbers_messages() => {
                deliver(&state.fanout, &with_position(bare, kind, stamp));
                None
            }
            (None, _) => {
                deliver(&state.fanout, &bare);
                None
            }
        }
    }
}

/// How long the oldest message read ahead may have waited before this thread stops writing
/// to sessions itself and hands the writes to the sessions' writers.
const BEHIND: Duration = Duration::from_millis(5);

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
/// without positions), from the bare form and the position alone: a user's or a broadcast's
/// data is the bare form itself, a channel's is in its envelope.
fn with_position(bare: Message, kind: Kind<'_>, position: Position) -> Message {
    let make = match kind {
        Kind::Broadcast => broadcast_positioned,
        Kind::User => user_positioned,
        Kind::Channel { .. } => channel_positioned,
    };
    bare.with_second_form_by(make, packed(position))
}

fn packed(position: Position) -> u64 {
    u64::from(position.epoch) << 32 | u64::from(position.offset)
}

fn unpacked(packed: u64) -> Position {
    Position {
        epoch: (packed >> 32) as u32,
        offset: packed as u32,
    }
}

fn broadcast_positioned(bare: &Message, position: u64) -> Message {
    positioned(Kind::Broadcast, unpacked(position), bare.as_json())
}

fn user_positioned(bare: &Message, position: u64) -> Message {
    positioned(Kind::User, unpacked(position), bare.as_json())
}

/// A channel's message with its position, from its envelope (the bare form, which this
/// server made with [`wire::channel_envelope`]).
fn channel_positioned(bare: &Message, position: u64) -> Message {
    let Some(envelope) = wire::read_channel_envelope(bare.as_json()) else {
        // Never: the envelope is this server's own JSON.
        return bare.clone();
    };
    let kind = Kind::Channel {
        channel: &envelope.channel,
        event: &envelope.event,
    };
    Message::json(&protocol::positioned(
        kind,
        unpacked(position),
        envelope.data,
    ))
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

/// A kept message of `topic` the forwarder gave in a recovery answer, as sessions are sent
/// it; `None` if it breaks the bus format or the size limit (`max_message_bytes`).
fn recovered(
    max_message_bytes: usize,
    topic: &[u8],
    position: Position,
    body: &[u8],
) -> Option<Message> {
    if topic.len() + body.len() > max_message_bytes {
        return None;
    }
    let frames = [topic.to_vec(), body.to_vec()];
    let m = wire::decode(&frames).ok()?;
    let (kind, bare) = bare_form(&m);
    Some(with_position(bare, kind, position))
}

/// What the bus thread keeps from one batch of messages to the next.
struct State {
    /// The broadcasts on their way to every session.
    fanout: Arc<Fanout>,
    /// The history, where the server keeps one: every message goes through it.
    recovery: Option<Arc<Recovery>>,
    /// Recovery with a forwarder: requests waiting for its answers, the fill after it came
    /// back, each topic's last position.
    recovering: Option<Recovering>,
    losses: Losses,
    /// Messages read and not yet delivered.
    backlog: Backlog,
    /// Confirmed publishes refused, logged at most once a second.
    refusals: LogEvery,
    /// Presence, told of the other servers' presence messages and of the bus coming back.
    presence: Arc<Presence>,
}

/// How often losses are logged at most; the metric counts every one at once.
const LOSS_LOG_EVERY: Duration = Duration::from_secs(1);

/// The messages the forwarder numbered that never arrived (ZeroMQ dropped them past a
/// high-water mark, or while disconnected), not logged yet.
#[derive(Default)]
struct Losses {
    unreported: u64,
    logged: Option<Instant>,
}

impl Losses {
    /// Counts `lost` more.
    #[inline]
    fn count(&mut self, lost: u64, metrics: &Metrics) {
        if lost > 0 {
            metrics.bus_lost.fetch_add(lost, Ordering::Relaxed);
            self.unreported += lost;
        }
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
