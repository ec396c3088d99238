//! In-process ZeroMQ pairs: how other threads talk to a thread that waits in `zmq::poll`.

use std::sync::atomic::{AtomicU64, Ordering};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A connected pair of PAIR sockets with unlimited queues: `(receiver, sender)`. The receiver
/// goes in the polling thread's poll set; the sender stays with whoever commands it.
pub(crate) fn pair(
    ctx: &zmq::Context,
    name: &str,
) -> Result<(zmq::Socket, zmq::Socket), zmq::Error> {
    let address = format!(
        "inproc://pushnote-{name}-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let rx = ctx.socket(zmq::PAIR)?;
    rx.set_rcvhwm(0)?;
    rx.bind(&address)?;
    let tx = ctx.socket(zmq::PAIR)?;
    tx.set_sndhwm(0)?;
    tx.set_linger(0)?;
    tx.connect(&address)?;
    Ok((rx, tx))
}
