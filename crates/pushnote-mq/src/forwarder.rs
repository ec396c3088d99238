//! The forwarder (pushnote-mq): takes every message apps publish and republishes it to the
//! servers subscribed to its topic.
//!
//! Its app-facing SUB socket binds `--sub` and subscribes to everything; its server-facing PUB
//! socket binds `--pub`. ZeroMQ's PUB filters by the subscriptions each server sent, so a
//! targeted message reaches only the servers holding that user. Bodies are moved without
//! copying or parsing.
//!
//! ZeroMQ's PUB socket drops messages for a server whose queue is full (`--hwm`) without a word,
//! so the forwarder numbers the messages of each topic (a [`wire::Stamp`] after the topic's
//! NUL) and each server counts the numbers it never saw.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use pushnote::wire::{self, Stamp};

use crate::inproc;

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

/// Settings of a forwarder.
#[derive(Clone, Debug)]
pub struct ForwarderConfig {
    /// Where apps publish (bound).
    pub sub_endpoint: String,
    /// Where servers subscribe (bound).
    pub pub_endpoint: String,
    /// Messages held per connected peer and direction before ZeroMQ drops new ones.
    pub high_water_mark: i32,
}

/// A running forwarder.
pub struct Forwarder {
    sub_endpoint: String,
    pub_endpoint: String,
    stop: Mutex<zmq::Socket>,
    forwarded: Arc<AtomicU64>,
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
        let (control, stop) = inproc::pair(&ctx, "forwarder").map_err(err("inproc"))?;
        let forwarded = Arc::new(AtomicU64::new(0));
        let counter = forwarded.clone();
        let thread = std::thread::Builder::new()
            .name("pushnote-mq".into())
            .spawn(move || forward(&sub, &publisher, &control, &counter))?;
        Ok(Forwarder {
            sub_endpoint,
            pub_endpoint,
            stop: Mutex::new(stop),
            forwarded,
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

    /// How many messages have been forwarded.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// Stops forwarding (what was already handed to the server-facing socket still goes out
    /// for up to a second) and waits for the thread. Returns the number of messages forwarded.
    pub fn stop(mut self) -> u64 {
        if let Ok(s) = self.stop.lock() {
            let _ = s.send(&b"."[..], 0);
        }
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

fn forward(sub: &zmq::Socket, publisher: &zmq::Socket, control: &zmq::Socket, counter: &AtomicU64) {
    const BATCH: usize = 4096;
    let mut numbering = Numbering::new();
    loop {
        let mut items = [
            sub.as_poll_item(zmq::POLLIN),
            control.as_poll_item(zmq::POLLIN),
        ];
        match zmq::poll(&mut items, -1) {
            Ok(_) => {}
            Err(zmq::Error::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "forwarder poll failed; stopping");
                return;
            }
        }
        if items[1].is_readable() {
            return;
        }
        let mut count = 0;
        'batch: while count < BATCH {
            // One whole multipart message, frame by frame; only the topic is copied.
            let mut first = true;
            loop {
                let mut frame = zmq::Message::new();
                match sub.recv(&mut frame, zmq::DONTWAIT) {
                    Ok(()) => {}
                    Err(zmq::Error::EAGAIN) => break 'batch,
                    Err(e) => {
                        tracing::warn!(error = %e, "forwarder receive failed");
                        break 'batch;
                    }
                }
                let more = frame.get_more();
                if std::mem::take(&mut first) {
                    if let Some(stamped) = numbering.stamp(&frame) {
                        frame = stamped;
                    }
                }
                if let Err(e) = publisher.send(frame, if more { zmq::SNDMORE } else { 0 }) {
                    tracing::warn!(error = %e, "forwarder send failed");
                }
                if !more {
                    break;
                }
            }
            count += 1;
        }
        counter.fetch_add(count as u64, Ordering::Relaxed);
    }
}

/// Topics numbered at once. Past this the numbering starts again, in a new run. With user ids
/// of 19 bytes (25-byte topics), this many took 35 MiB of the forwarder's RSS.
const MAX_TOPICS: usize = 1 << 18;

/// The last number given on each topic, for [`wire::Stamp`]s.
struct Numbering {
    run: u32,
    last: HashMap<Box<[u8]>, u32>,
}

impl Numbering {
    /// Starts a run whose id differs from any earlier forwarder's, almost surely.
    fn new() -> Numbering {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        h.write_u32(std::process::id());
        Numbering {
            // Run 0 is the publishers' room for a stamp, never a run.
            run: (h.finish() as u32).max(1),
            last: HashMap::new(),
        }
    }

    /// `topic` (up to its NUL, without whatever followed) with the next number of that topic
    /// after it; `None` for a frame without a NUL, which is no topic and is passed on as it is.
    fn stamp(&mut self, topic: &[u8]) -> Option<zmq::Message> {
        let len = wire::topic_len(topic)?;
        let topic = &topic[..len];
        let number = match self.last.get_mut(topic) {
            Some(n) => {
                *n = n.wrapping_add(1);
                *n
            }
            None => {
                if self.last.len() >= MAX_TOPICS {
                    self.last = HashMap::new();
                    self.run = self.run.wrapping_add(1).max(1);
                    tracing::debug!(run = self.run, "topic numbering starts again");
                }
                self.last.insert(topic.into(), 1);
                1
            }
        };
        let stamp = Stamp {
            run: self.run,
            number,
        };
        let mut out = zmq::Message::with_size(len + wire::STAMP_BYTES);
        out[..len].copy_from_slice(topic);
        out[len..].copy_from_slice(&stamp.to_bytes());
        Some(out)
    }
}
