//! Waiting on several ZeroMQ sockets with one system call.
//!
//! `zmq_poll` costs the bus thread about seven system calls each time it sleeps: a first
//! `poll` that does not wait, then the one that does, and around each a `poll` of every
//! socket's command mailbox to read its events (`ZMQ_EVENTS`). At tens of thousands of
//! messages a second, coming a few at a time, those calls were a tenth of the thread's time.
//!
//! A [`Waiter`] waits on the sockets' notification descriptors (`ZMQ_FD`) in one `epoll`,
//! edge-triggered, and reports which sockets were signalled. That is only right if whoever is
//! told a socket is ready reads it until `EAGAIN`, for ZeroMQ signals a socket only when it
//! goes from having nothing to read to having something. Anything else that may take a
//! socket's signal without reading all it has (a send on it, asking its events, a read that
//! stopped early) must say so with [`Waiter::unsure`]: the next wait then reports that socket
//! ready at once, without sleeping.

use std::io;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

/// The most sockets one waiter waits on.
pub const MOST: usize = 3;

/// Which of the waiter's sockets (in the order given) may have something to read.
pub type Signalled = [bool; MOST];

pub struct Waiter {
    poll: Poll,
    events: Events,
    /// The sockets to report ready without waiting.
    unsure: Signalled,
    /// How many sockets it waits on.
    count: usize,
}

impl Waiter {
    /// A waiter on no socket yet.
    pub fn new() -> io::Result<Waiter> {
        Ok(Waiter {
            poll: Poll::new()?,
            events: Events::with_capacity(MOST),
            unsure: [false; MOST],
            count: 0,
        })
    }

    /// Waits on `socket` too, reported ready at the next wait; its index in [`Signalled`].
    pub fn add(&mut self, socket: &zmq::Socket) -> io::Result<usize> {
        let i = self.count;
        assert!(i < MOST, "a waiter waits on at most {MOST} sockets");
        let fd = socket.get_fd().map_err(io::Error::other)?;
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)?;
        self.unsure[i] = true;
        self.count += 1;
        Ok(i)
    }

    /// The next wait reports socket `i` ready without sleeping.
    pub fn unsure(&mut self, i: usize) {
        self.unsure[i] = true;
    }

    /// Socket `i` was read until `EAGAIN`: it is signalled when something comes.
    pub fn sure(&mut self, i: usize) {
        self.unsure[i] = false;
    }

    /// Waits until a socket is signalled or `timeout` passes (`None`: no limit), unless one is
    /// unsure already; which sockets to read. Each one reported must be read until `EAGAIN`,
    /// or marked [`Waiter::unsure`] again.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Signalled> {
        let mut ready = std::mem::take(&mut self.unsure);
        let timeout = if ready.contains(&true) {
            Some(Duration::ZERO)
        } else {
            timeout
        };
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        for event in &self.events {
            if let Some(r) = ready.get_mut(event.token().0) {
                *r = true;
            }
        }
        Ok(ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Option<Duration> = Some(Duration::from_millis(50));
    const LONG: Option<Duration> = Some(Duration::from_secs(10));

    /// Reads `socket` until EAGAIN; how many messages it had.
    fn drain(socket: &zmq::Socket) -> usize {
        std::iter::from_fn(|| socket.recv_bytes(zmq::DONTWAIT).ok()).count()
    }

    #[test]
    fn a_socket_is_reported_when_something_comes_and_when_unsure_only() {
        let ctx = zmq::Context::new();
        let (a, b) = (
            ctx.socket(zmq::PAIR).unwrap(),
            ctx.socket(zmq::PAIR).unwrap(),
        );
        a.bind("inproc://waiter-test").unwrap();
        b.connect("inproc://waiter-test").unwrap();
        let mut waiter = Waiter::new().unwrap();
        assert_eq!(waiter.add(&a).unwrap(), 0);
        // Added: ready at once, whatever it holds.
        assert_eq!(waiter.wait(LONG).unwrap(), [true, false, false]);
        assert_eq!(drain(&a), 0);
        assert_eq!(waiter.wait(SHORT).unwrap(), [false; MOST], "nothing came");
        for round in 0..3 {
            b.send("m", 0).unwrap();
            b.send("n", 0).unwrap();
            // What came is reported once it is signalled, with no sleep of this test's.
            let mut read = 0;
            while read < 2 {
                assert!(waiter.wait(LONG).unwrap()[0], "round {round}");
                read += drain(&a);
            }
            assert_eq!(read, 2);
            assert_eq!(waiter.wait(SHORT).unwrap(), [false; MOST]);
        }
        // Something that may take the socket's signal in (asking its events) leaves the
        // socket unsure: it is reported without sleeping.
        b.send("m", 0).unwrap();
        while !a.get_events().unwrap().contains(zmq::POLLIN) {
            std::thread::sleep(Duration::from_millis(1));
        }
        waiter.unsure(0);
        assert!(waiter.wait(LONG).unwrap()[0]);
        assert_eq!(drain(&a), 1);
        waiter.sure(0);
        assert_eq!(waiter.wait(SHORT).unwrap(), [false; MOST]);
    }
}
