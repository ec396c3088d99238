//! The engines' handle ([`BusControl`]) and the bus thread's end of it ([`Commands`]): one-line
//! commands over an in-process ZeroMQ pair, which the bus thread waits on beside its engine's
//! connection, so that a subscription takes effect without polling delays.

use std::sync::Mutex;

use crate::broker::{Broker, Command};
use crate::inproc;
use crate::subscriptions::Subscriptions;

const CMD_SUBSCRIBE: u8 = b'+';
const CMD_UNSUBSCRIBE: u8 = b'-';
const CMD_STOP: u8 = b'.';
const CMD_ASKED: u8 = b'?';
const CMD_SHARE: u8 = b'!';

/// The engines' handle: sends commands to the bus thread. Cheap to call from any thread.
pub struct BusControl {
    socket: Mutex<zmq::Socket>,
}

/// The bus thread's end of the handle.
pub struct Commands {
    socket: zmq::Socket,
}

/// A connected handle and bus thread's end, in `ctx`.
pub fn pair(ctx: &zmq::Context) -> Result<(Commands, BusControl), zmq::Error> {
    let (rx, tx) = inproc::pair(ctx, "bus")?;
    Ok((
        Commands { socket: rx },
        BusControl {
            socket: Mutex::new(tx),
        },
    ))
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
}

impl Subscriptions for BusControl {
    fn subscribe(&self, topic: &[u8]) {
        self.command(CMD_SUBSCRIBE, topic);
    }

    fn unsubscribe(&self, topic: &[u8]) {
        self.command(CMD_UNSUBSCRIBE, topic);
    }
}

impl Broker for BusControl {
    fn asked(&self, ticket: u64) {
        self.command(CMD_ASKED, &ticket.to_be_bytes());
    }

    fn share(&self, body: &[u8]) {
        self.command(CMD_SHARE, body);
    }

    fn stop(&self) {
        self.command(CMD_STOP, b"");
    }
}

impl Commands {
    /// The socket to poll for commands.
    pub fn socket(&self) -> &zmq::Socket {
        &self.socket
    }

    /// Hands every waiting command to `on`, in order; false when told to stop.
    pub fn take(&self, mut on: impl FnMut(Command<'_>)) -> bool {
        while let Ok(cmd) = self.socket.recv_bytes(zmq::DONTWAIT) {
            let Some((&op, topic)) = cmd.split_first() else {
                continue;
            };
            match op {
                CMD_SUBSCRIBE => on(Command::Subscribed(topic)),
                CMD_UNSUBSCRIBE => on(Command::Unsubscribed(topic)),
                CMD_ASKED => {
                    if let Ok(ticket) = <[u8; 8]>::try_from(topic) {
                        on(Command::Asked(u64::from_be_bytes(ticket)));
                    }
                }
                CMD_SHARE => on(Command::Share(topic)),
                CMD_STOP => return false,
                _ => {}
            }
        }
        true
    }
}
