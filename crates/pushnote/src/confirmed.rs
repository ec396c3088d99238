//! The publisher's side of confirmed publishes: a DEALER socket connected to the forwarder's
//! `--confirm` socket, one request at a time, each answered with its messages' positions or a
//! refusal ([`crate::confirm`]), or given up after the confirm timeout.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::confirm::{self, Refusal};
use crate::publisher::{Outgoing, PublishError};
use crate::wire::Position;

/// How long a confirmed publish waits for its confirmation by default.
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// Requests a confirm socket holds for a forwarder that does not read them before sends fail.
const SEND_HWM: i32 = 1000;

/// A connection to a forwarder's `--confirm` socket.
pub(crate) struct Confirmer {
    endpoint: String,
    timeout: Duration,
    ready_timeout: Duration,
    inner: Mutex<Inner>,
}

struct Inner {
    socket: zmq::Socket,
    /// The id of the last request sent; replies to others are stale (given up on) and skipped.
    last_id: u64,
    /// A request has found the forwarder, or waited the full ready timeout for it.
    waited: bool,
}

impl Confirmer {
    /// Connects in the background; fails only for a malformed endpoint.
    pub(crate) fn connect(
        ctx: &zmq::Context,
        endpoint: &str,
        timeout: Duration,
        ready_timeout: Duration,
        max_message_bytes: usize,
    ) -> Result<Confirmer, zmq::Error> {
        let socket = ctx.socket(zmq::DEALER)?;
        // A request not yet sent when the publisher goes was never confirmed: drop it.
        socket.set_linger(0)?;
        socket.set_sndhwm(SEND_HWM)?;
        // No queueing for a forwarder not connected: a send then fails at once, nothing sent.
        socket.set_immediate(true)?;
        // A reply is small: its id, status, and a stamp for each topic of the request.
        socket.set_maxmsgsize(i64::try_from(max_message_bytes).unwrap_or(i64::MAX))?;
        socket.connect(endpoint)?;
        Ok(Confirmer {
            endpoint: endpoint.to_owned(),
            timeout,
            ready_timeout,
            inner: Mutex::new(Inner {
                socket,
                last_id: 0,
                waited: false,
            }),
        })
    }

    /// Publishes `out` and waits for its positions, in the order of its topics.
    pub(crate) fn publish(&self, out: &Outgoing) -> Result<Vec<Position>, PublishError> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let ready = if inner.waited {
            Duration::ZERO
        } else {
            self.ready_timeout
        };
        let writable = inner.socket.poll(zmq::POLLOUT, millis(ready))? > 0;
        inner.waited = true;
        if !writable {
            return Err(PublishError::NotConnected(self.endpoint.clone()));
        }
        inner.last_id += 1;
        let id = inner.last_id.to_be_bytes();
        let mut frames: Vec<&[u8]> = Vec::with_capacity(out.topics.len() + 2);
        frames.push(&id);
        frames.extend(out.topics.iter().map(Vec::as_slice));
        frames.push(&out.body);
        match inner.socket.send_multipart(frames, zmq::DONTWAIT) {
            Ok(()) => {}
            // Not connected after all (or full): nothing was sent.
            Err(zmq::Error::EAGAIN) => {
                return Err(PublishError::NotConnected(self.endpoint.clone()));
            }
            Err(e) => return Err(e.into()),
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || inner.socket.poll(zmq::POLLIN, millis(left))? == 0 {
                return Err(self.unconfirmed(format!("no reply within {:?}", self.timeout)));
            }
            let reply = match inner.socket.recv_multipart(zmq::DONTWAIT) {
                Ok(reply) => reply,
                Err(zmq::Error::EAGAIN) => continue,
                Err(e) => return Err(self.unconfirmed(format!("zeromq: {e}"))),
            };
            if reply.first().map(Vec::as_slice) != Some(&id[..]) {
                continue; // the reply to a request given up on
            }
            return match reply.as_slice() {
                [_, status, detail] if status == confirm::OK => {
                    match confirm::decode_positions(detail) {
                        Some(p) if p.len() == out.topics.len() => Ok(p),
                        _ => Err(self.unconfirmed("a reply of the wrong form".into())),
                    }
                }
                [_, status, detail] => match Refusal::from_status(status) {
                    Some(refusal) => Err(PublishError::Refused {
                        reason: refusal.as_str(),
                        detail: String::from_utf8_lossy(detail).into_owned(),
                    }),
                    None => Err(self.unconfirmed("a reply of the wrong form".into())),
                },
                _ => Err(self.unconfirmed("a reply of the wrong form".into())),
            };
        }
    }

    fn unconfirmed(&self, why: String) -> PublishError {
        PublishError::Unconfirmed {
            endpoint: self.endpoint.clone(),
            why,
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
