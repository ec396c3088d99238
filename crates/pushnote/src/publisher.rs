//! Publishing notifications onto the bus.
//!
//! A [`Publisher`] connects an XPUB socket to the forwarder's app-facing side (or to a
//! `--single` server). ZeroMQ drops what a publisher sends before the peer's subscription has
//! arrived, so a process that connects and notifies at once would lose its first messages. An
//! XPUB socket sees subscriptions arrive: the first send waits for one, up to
//! [`PublisherBuilder::ready_timeout`], and then sends. On drop, the socket lingers so that a
//! process that notifies and exits still delivers.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::wire::{self, Target, WireError};

/// Why a notification was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// `data` could not be serialized to JSON.
    #[error("cannot serialize data: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A recipient is not a valid user id.
    #[error(transparent)]
    UserId(#[from] WireError),
    /// No forwarder or server has subscribed within the ready timeout: it is not running or
    /// not reachable at the endpoint. Nothing was sent.
    #[error("no forwarder or server is connected at {0}")]
    NotConnected(String),
    /// ZeroMQ failed.
    #[error("zeromq: {0}")]
    Zmq(#[from] zmq::Error),
}

/// Settings of a [`Publisher`].
#[derive(Clone, Debug)]
pub struct PublisherBuilder {
    endpoint: String,
    ready_timeout: Duration,
    linger: Duration,
    send_hwm: i32,
}

impl PublisherBuilder {
    /// How long the first send waits for the peer's subscription (default 2 s).
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
    /// (default 100,000).
    pub fn send_high_water_mark(mut self, messages: i32) -> Self {
        self.send_hwm = messages;
        self
    }

    /// Connects. The connection itself is made in the background; this fails only for a
    /// malformed endpoint.
    pub fn connect(self) -> Result<Publisher, PublishError> {
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::XPUB)?;
        socket.set_linger(i32::try_from(self.linger.as_millis()).unwrap_or(i32::MAX))?;
        socket.set_sndhwm(self.send_hwm)?;
        socket.connect(&self.endpoint)?;
        Ok(Publisher {
            endpoint: self.endpoint,
            ready_timeout: self.ready_timeout,
            inner: Mutex::new(Inner {
                socket,
                ready: false,
                waited: false,
            }),
            _ctx: ctx,
        })
    }
}

/// Publishes notifications. Safe to share between threads; each call sends atomically.
pub struct Publisher {
    endpoint: String,
    ready_timeout: Duration,
    inner: Mutex<Inner>,
    // Dropped after the socket (fields drop in order), which makes the drop wait for linger.
    _ctx: zmq::Context,
}

struct Inner {
    socket: zmq::Socket,
    /// A subscription has arrived: the peer is there.
    ready: bool,
    /// The full ready timeout has been spent once already; later sends do not wait again.
    waited: bool,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl Publisher {
    /// Connects to the bus at `endpoint` (for example `tcp://127.0.0.1:8002`) with defaults.
    pub fn connect(endpoint: &str) -> Result<Publisher, PublishError> {
        Publisher::builder(endpoint).connect()
    }

    /// Settings for a publisher of `endpoint`.
    pub fn builder(endpoint: &str) -> PublisherBuilder {
        PublisherBuilder {
            endpoint: endpoint.to_owned(),
            ready_timeout: Duration::from_secs(2),
            linger: Duration::from_secs(2),
            send_hwm: 100_000,
        }
    }

    /// Sends `data` to every connected session.
    pub fn notify_all<T: Serialize + ?Sized>(&self, data: &T) -> Result<(), PublishError> {
        let body = wire::encode_body(Target::All, data)?;
        self.send(&[(wire::BROADCAST_TOPIC.to_vec(), &body)])
    }

    /// Sends `data` to every session of each user in `users` (one bus message per user).
    pub fn notify<T, I, U>(&self, data: &T, users: I) -> Result<(), PublishError>
    where
        T: Serialize + ?Sized,
        I: IntoIterator<Item = U>,
        U: std::fmt::Display,
    {
        let topics = users
            .into_iter()
            .map(|u| wire::user_topic(&u.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let body = wire::encode_body(Target::User(""), data)?;
        let messages: Vec<_> = topics.into_iter().map(|t| (t, &body)).collect();
        self.send(&messages)
    }

    fn send(&self, messages: &[(Vec<u8>, &Vec<u8>)]) -> Result<(), PublishError> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.take_subscriptions()?;
        if !inner.ready {
            let wait = if inner.waited {
                Duration::ZERO
            } else {
                self.ready_timeout
            };
            inner.wait_ready(wait)?;
            inner.waited = true;
            if !inner.ready {
                return Err(PublishError::NotConnected(self.endpoint.clone()));
            }
        }
        for (topic, body) in messages {
            inner.socket.send(&topic[..], zmq::SNDMORE)?;
            inner.socket.send(&body[..], 0)?;
        }
        Ok(())
    }
}

impl Inner {
    /// Reads every subscription message waiting, without blocking. Reading them keeps the
    /// socket's inbound queue from growing on a long-lived publisher.
    fn take_subscriptions(&mut self) -> Result<(), zmq::Error> {
        loop {
            match self.socket.recv_bytes(zmq::DONTWAIT) {
                Ok(msg) => {
                    if msg.first() == Some(&1) {
                        self.ready = true;
                    }
                }
                Err(zmq::Error::EAGAIN) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), zmq::Error> {
        let deadline = Instant::now() + timeout;
        while !self.ready {
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
