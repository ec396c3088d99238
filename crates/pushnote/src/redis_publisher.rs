//! The publisher's side of the Redis engine: each publish is one call of pushnote's script
//! (`docs/PROTOCOL.md` §2c) on one connection, answered with the messages' positions once
//! Redis holds them and has handed them to the servers subscribed.
//!
//! The connection is opened when the publisher is made, or by the first call after it (Redis
//! was not reachable then), and again by the first call after it was lost: a call that finds
//! no Redis fails at once with [`PublishError::NotConnected`], having sent nothing, and a
//! later one reconnects by itself. A reply that does not come within the reply time-out is
//! [`PublishError::Unconfirmed`] and drops the connection, so that the late reply is never
//! read as the next call's.

use std::sync::Mutex;
use std::time::Duration;

use crate::publisher::{Outgoing, PublishError};
use crate::redis_connection::{Connection, RedisError};
use crate::redis_endpoint::RedisEndpoint;
use crate::redis_script::{self, Keys};
use crate::resp::{Limits, Value};
use crate::wire::{self, Position};

/// The reason [`PublishError::Refused`] gives when Redis answers a publish with an error.
pub const REFUSED_BY_REDIS: &str = "redis";

/// How the script's refusal of a message over the servers' `max_message_bytes` begins.
const TOO_LARGE: &str = "pushnote: too_large";

/// The longest string a reply to a publish may hold: a position is 8 bytes, and Redis'
/// error sentences are short.
const REPLY_STRING_BYTES: usize = 64 * 1024;

/// A publisher's connection to Redis.
pub(crate) struct RedisPublisher {
    endpoint: RedisEndpoint,
    /// The endpoint without its password, for errors and logs.
    name: String,
    keys: Keys,
    connect_timeout: Duration,
    reply_timeout: Duration,
    /// Replies hold one position per topic: at most this many.
    max_topics: usize,
    /// Replicas that must hold a publish before it returns (`WAIT`); 0: none.
    replicas: u32,
    /// The open connection, if any.
    connection: Mutex<Option<Connection>>,
}

impl RedisPublisher {
    /// A publisher of `endpoint` under `prefix`. Connects at once if Redis is there; fails only
    /// for an endpoint that cannot be used as it is (`rediss://` with a CA file that cannot be
    /// read).
    pub(crate) fn connect(
        endpoint: RedisEndpoint,
        prefix: &str,
        connect_timeout: Duration,
        reply_timeout: Duration,
        max_topics: usize,
        replicas: u32,
    ) -> Result<RedisPublisher, PublishError> {
        let publisher = RedisPublisher {
            name: endpoint.to_string(),
            endpoint,
            keys: Keys::new(prefix),
            connect_timeout,
            reply_timeout,
            max_topics,
            replicas,
            connection: Mutex::new(None),
        };
        match publisher.open() {
            Ok(c) => *publisher.lock() = Some(c),
            Err(RedisError::Endpoint(why)) => return Err(PublishError::Endpoint(why)),
            // Not there now: the first call tries again.
            Err(_) => {}
        }
        Ok(publisher)
    }

    /// The endpoint, without its password.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Connection>> {
        self.connection.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(&self) -> Result<Connection, RedisError> {
        let limits = Limits {
            string_bytes: REPLY_STRING_BYTES,
            elements: self.max_topics.max(16),
        };
        let mut c = Connection::open(&self.endpoint, self.connect_timeout, limits)?;
        c.set_timeout(self.reply_timeout)?;
        Ok(c)
    }

    /// Whether a connection to Redis is open now; without one, tries to open one (waiting at
    /// most the connect time-out).
    pub(crate) fn is_connected(&self) -> bool {
        let mut slot = self.lock();
        if slot.as_ref().is_some_and(Connection::is_open) {
            return true;
        }
        *slot = self.open().ok();
        slot.is_some()
    }

    fn not_connected(&self, e: &RedisError) -> PublishError {
        PublishError::NotConnected(format!("{} ({e})", self.name))
    }

    fn unconfirmed(&self, why: String) -> PublishError {
        PublishError::Unconfirmed {
            endpoint: self.name.clone(),
            why,
        }
    }

    /// Publishes `out` (checked) in one call of the script; its positions, in the order of its
    /// topics.
    pub(crate) fn publish(&self, out: &Outgoing) -> Result<Vec<Position>, PublishError> {
        if out.topics.is_empty() {
            return Ok(Vec::new());
        }
        let topics: Vec<&[u8]> = out
            .topics
            .iter()
            .map(|t| &t[..wire::topic_len(t).unwrap_or(t.len())])
            .collect();
        let args = redis_script::publish_args(&self.keys, &out.body, &topics);
        let mut slot = self.lock();
        // A connection Redis closed (it restarted) is replaced before anything is sent on it.
        if !slot.as_ref().is_some_and(Connection::is_open) {
            *slot = None;
            let c = self.open().map_err(|e| self.not_connected(&e))?;
            *slot = Some(c);
        }
        let Some(c) = slot.as_mut() else {
            return Err(PublishError::NotConnected(self.name.clone()));
        };
        // Loaded before the publish is sent, so that a failure here has sent nothing.
        if let Err(e) = c.load_script() {
            *slot = None;
            return Err(match e {
                RedisError::Refused { message, .. } => PublishError::Refused {
                    reason: REFUSED_BY_REDIS,
                    detail: format!("{} refused to load pushnote's script: {message}", self.name),
                },
                e => self.not_connected(&e),
            });
        }
        let reply = match c.script(&args) {
            Ok(reply) => reply,
            Err(e) => {
                // Sent, perhaps run: only Redis knows, and it did not say in time.
                *slot = None;
                return Err(self.unconfirmed(e.to_string()));
            }
        };
        match (redis_script::publish_reply(&reply, topics.len()), reply) {
            (Ok(positions), _) if self.replicas == 0 => Ok(positions),
            (Ok(positions), _) => {
                // Within the connection's reply time-out, so that WAIT answers first.
                let ms = (self.reply_timeout.as_millis() * 3 / 4).max(1).to_string();
                let wanted = self.replicas.to_string();
                match c.call(&[b"WAIT", wanted.as_bytes(), ms.as_bytes()]) {
                    Ok(Value::Int(held)) if held >= i64::from(self.replicas) => Ok(positions),
                    Ok(Value::Int(held)) => Err(self.unconfirmed(format!(
                        "published, and held by {held} of the {} replicas asked for within {ms}                          ms: a failover may lose it",
                        self.replicas
                    ))),
                    Ok(other) => Err(self.unconfirmed(format!(
                        "published; WAIT answered {other:?} instead of a count of replicas"
                    ))),
                    Err(e) => {
                        *slot = None;
                        Err(self.unconfirmed(format!("published; WAIT got no answer: {e}")))
                    }
                }
            }
            (Err(message), Value::Error(_)) => Err(PublishError::Refused {
                // The script's own refusal of a message over what the servers take.
                reason: if message.starts_with(TOO_LARGE) {
                    "too_large"
                } else {
                    REFUSED_BY_REDIS
                },
                detail: format!("{} answered: {message}", self.name),
            }),
            (Err(why), _) => {
                *slot = None;
                Err(self.unconfirmed(format!("a reply that is not positions: {why}")))
            }
        }
    }
}
