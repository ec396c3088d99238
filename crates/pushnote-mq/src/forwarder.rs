//! The forwarder: takes every message apps publish and republishes it to the servers
//! subscribed to its topic.
//!
//! Its app-facing SUB socket binds `--sub` and subscribes to everything; its server-facing PUB
//! socket binds `--pub`. ZeroMQ's PUB filters by the subscriptions each server sent, so a
//! targeted message reaches only the servers holding that user. Bodies are moved without
//! copying or parsing; a message that is not `[topic, body]` with a NUL-terminated topic, or
//! whose topic or size is over its limit, is dropped and counted.
//!
//! ZeroMQ's PUB socket drops messages for a server whose queue is full (`--hwm`) without a word,
//! so the forwarder numbers the messages of each topic (a [`wire::Stamp`] after the topic's
//! NUL, see [`Numbering`]) and each server counts the numbers it never saw.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pushnote::wire;

use crate::config::ForwarderConfig;
use crate::metrics::{Dropped, Metrics};
use crate::numbering::Numbering;

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
}

/// How long the forwarder's thread waits for messages before it looks at its stop flag and
/// its housekeeping (idle topics, drop logs).
const TICK: Duration = Duration::from_millis(100);

/// How often drops are logged at most; the metrics count every one at once.
const DROP_LOG_EVERY: Duration = Duration::from_secs(1);

/// A running forwarder.
pub struct Forwarder {
    sub_endpoint: String,
    pub_endpoint: String,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    thread: Option<JoinHandle<()>>,
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
        let publisher = ctx.socket(zmq::PUB).map_err(err(&config.pub_endpoint))?;
        publisher
            .set_sndhwm(config.high_water_mark)
            .map_err(err(&config.pub_endpoint))?;
        publisher
            .set_linger(1000)
            .map_err(err(&config.pub_endpoint))?;
        publisher
            .bind(&config.pub_endpoint)
            .map_err(err(&config.pub_endpoint))?;
        let sub_endpoint = bound(&sub, &config.sub_endpoint);
        let pub_endpoint = bound(&publisher, &config.pub_endpoint);
        let stop = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(Metrics::default());
        let mut thread = Thread {
            sub,
            publisher,
            stop: stop.clone(),
            metrics: metrics.clone(),
            numbering: Numbering::new(config.topic_memory, config.topic_idle, Instant::now()),
            max_topic_bytes: config.max_topic_bytes,
            max_message_bytes: config.max_message_bytes,
            drops: DropLog::default(),
        };
        let thread = std::thread::Builder::new()
            .name("pushnote-mq".into())
            .spawn(move || thread.run())?;
        Ok(Forwarder {
            sub_endpoint,
            pub_endpoint,
            stop,
            metrics,
            thread: Some(thread),
            _ctx: ctx,
        })
    }

    /// The app-facing endpoint, as bound.
    pub fn sub_endpoint(&self) -> &str {
        &self.sub_endpoint
    }

    /// The server-facing endpoint, as bound.
    pub fn pub_endpoint(&self) -> &str {
        &self.pub_endpoint
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
        self.forwarded()
    }
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
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    numbering: Numbering,
    max_topic_bytes: usize,
    max_message_bytes: usize,
    drops: DropLog,
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
            let mut items = [self.sub.as_poll_item(zmq::POLLIN)];
            match zmq::poll(&mut items, TICK.as_millis() as i64) {
                Ok(_) => {}
                Err(zmq::Error::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "forwarder poll failed; stopping");
                    return;
                }
            }
            let mut batch = Batch::default();
            for _ in 0..BATCH {
                if !self.receive(&mut frames) {
                    break;
                }
                batch.received += 1;
                match self.check(&frames) {
                    Ok(topic_len) => self.send(&mut frames, topic_len, &mut batch),
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
            let now = Instant::now();
            self.numbering.tick(now);
            self.metrics
                .topics
                .store(self.numbering.topics() as u64, Ordering::Relaxed);
            self.metrics
                .topic_bytes
                .store(self.numbering.bytes() as u64, Ordering::Relaxed);
            self.metrics
                .topics_forgotten
                .store(self.numbering.forgotten(), Ordering::Relaxed);
            self.drops
                .report(now, self.max_topic_bytes, self.max_message_bytes);
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
        // A topic is followed by the publisher's room for a stamp, or by nothing.
        if !matches!(topic.len() - topic_len, 0 | wire::STAMP_BYTES) {
            return Err(Dropped::Malformed);
        }
        if topic.len() + body.len() > self.max_message_bytes {
            return Err(Dropped::TooLarge);
        }
        Ok(topic_len)
    }

    /// Stamps the topic and hands the message on; the body is moved, not copied.
    fn send(&mut self, frames: &mut Vec<zmq::Message>, topic_len: usize, batch: &mut Batch) {
        let bytes = frames.iter().map(|f| f.len()).sum::<usize>();
        let stamp = self.numbering.stamp(&frames[0][..topic_len]);
        let mut topic = zmq::Message::with_size(topic_len + wire::STAMP_BYTES);
        topic[..topic_len].copy_from_slice(&frames[0][..topic_len]);
        topic[topic_len..].copy_from_slice(&stamp.to_bytes());
        let body = frames.pop().expect("checked: two frames");
        let sent = self
            .publisher
            .send(topic, zmq::SNDMORE)
            .and_then(|()| self.publisher.send(body, 0));
        match sent {
            Ok(()) => {
                batch.forwarded += 1;
                batch.bytes += bytes as u64;
            }
            Err(e) => tracing::warn!(error = %e, "forwarder send failed"),
        }
    }
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
