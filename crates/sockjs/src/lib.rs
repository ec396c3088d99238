//! A SockJS server for warp and tokio.
//!
//! SockJS gives browsers one message API over whatever their network allows (WebSocket,
//! streaming and polling HTTP). This crate serves it: the application implements [`Handler`]
//! (told when a session opens, sends a message, and closes) and mounts [`routes`] under a
//! prefix; it sends with [`Session::send`], which queues a shared [`Message`] and never blocks.
//!
//! How the files divide the work:
//! - `frame.rs` — frame encoding, the protocol's escaping, decoding client payloads (pure).
//! - `message.rs` — messages encoded once and shared between sessions.
//! - `session.rs` — a session's bounded queue and close state, independent of any transport.
//! - `close.rs` — every close code this crate sends.
//! - `transport/` — one file per transport.
//! - `http.rs` — the plain HTTP endpoints (greeting, `/info`) and their headers.
//! - `routes.rs` — the route table.

#![forbid(unsafe_code)]

mod close;
pub mod frame;
mod http;
mod message;
mod routes;
mod session;
mod transport;

use std::time::Duration;

pub use close::CloseCode;
pub use message::Message;
pub use routes::routes;
pub use session::{QueueLimits, SendError, Session};

/// The application side of a SockJS server. Callbacks run on the connection's task and must
/// not block: queue work or send with [`Session::send`], which never waits.
pub trait Handler: Send + Sync + 'static {
    /// A session has opened (the client has been sent the open frame).
    fn on_open(&self, session: &Session) {
        let _ = session;
    }

    /// The client sent `message`.
    fn on_message(&self, session: &Session, message: String);

    /// The session has closed, for whatever reason. Called exactly once per opened session.
    fn on_close(&self, session: &Session) {
        let _ = session;
    }
}

/// Settings of a SockJS service. The defaults are sockjs-node's where it has one.
#[derive(Clone, Debug)]
pub struct Options {
    /// Send a heartbeat frame after this long without any other frame (default 25 s).
    pub heartbeat_interval: Duration,
    /// Offer the WebSocket transports (default true). Some proxies break WebSocket.
    pub websocket: bool,
    /// The largest message a client may send, in bytes (default 64 KiB). Larger closes the
    /// session with [`CloseCode::MESSAGE_TOO_BIG`].
    pub max_message_bytes: usize,
    /// How much one session may have queued before it is closed as slow.
    pub queue: QueueLimits,
    /// How long one write to a client may take before the client counts as gone (default 10 s).
    pub write_timeout: Duration,
    /// Whether `/info` tells clients that a JSESSIONID cookie is needed (sticky sessions).
    pub cookie_needed: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            heartbeat_interval: Duration::from_secs(25),
            websocket: true,
            max_message_bytes: 64 * 1024,
            queue: QueueLimits::default(),
            write_timeout: Duration::from_secs(10),
            cookie_needed: false,
        }
    }
}
