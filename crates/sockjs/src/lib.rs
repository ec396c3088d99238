//! A SockJS server for warp and tokio.
//!
//! SockJS gives browsers one message API over whatever their network allows (WebSocket,
//! streaming and polling HTTP). This crate serves it: the application implements [`Handler`]
//! (told when a session opens, sends a message, and closes) and mounts [`routes`] under a
//! prefix, served through [`with_upgrades`] so that WebSocket handshakes can upgrade; it sends
//! with [`Session::send`], which queues a shared [`Message`] and never blocks.
//!
//! How the files divide the work:
//! - `frame.rs` — frame encoding, the protocol's escaping, decoding client payloads (pure).
//! - `message.rs` — messages encoded once and shared between sessions.
//! - `session.rs` — a session's bounded queue and close state, independent of any transport.
//! - `registry.rs` — the sessions of the HTTP transports, which outlive single requests:
//!   one receiving request at a time, disconnect delay.
//! - `admission.rs` — who may open a session: the bounds per connection and per address, and
//!   the client's address behind trusted proxies.
//! - `close.rs` — every close code this crate sends.
//! - `origin.rs` — the allow-list of browser origins.
//! - `transport/` — one file per transport, the HTTP ones behind one trait.
//! - `http.rs` — the plain HTTP endpoints (greeting, `/info`, `/iframe.html`) and the headers
//!   every response shares.
//! - `ws/` — the WebSocket protocol, server side: handshake, wire format, connections that
//!   hold no buffers while idle.
//! - `routes.rs` — the route table.

#![forbid(unsafe_code)]

mod admission;
mod close;
pub mod frame;
mod http;
mod message;
mod origin;
mod registry;
mod routes;
mod session;
mod transport;
mod ws;

use std::time::Duration;

/// The stock client that `/iframe.html` loads unless [`Options::sockjs_url`] says otherwise.
pub const DEFAULT_SOCKJS_URL: &str =
    "https://cdn.jsdelivr.net/npm/sockjs-client@1.6.1/dist/sockjs.min.js";

pub use admission::{Peer, Proxies, Rate, Refused};
pub use close::CloseCode;
pub use message::{Burst, Form, Message};
pub use origin::Origins;
pub use routes::{routes, MAX_ID_BYTES};
pub use session::{QueueLimits, SendError, Session};
pub use ws::{with_upgrades, WithUpgrades};

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

    /// A new session was refused before it opened, for `why` (the client was sent
    /// [`CloseCode::TOO_MANY_SESSIONS`]): a place to count refusals. Never called for an
    /// opened session.
    fn on_refused(&self, why: Refused) {
        let _ = why;
    }
}

/// HTTP sessions one connection may have open (or closed and not yet forgotten) by default.
pub const DEFAULT_MAX_SESSIONS_PER_CONNECTION: usize = 100;
/// New sessions one client address may open each second by default, after a burst of
/// [`DEFAULT_SESSION_BURST_PER_ADDRESS`].
pub const DEFAULT_SESSION_RATE_PER_ADDRESS: u32 = 50;
/// New sessions one client address may open at once by default: ten seconds' worth.
pub const DEFAULT_SESSION_BURST_PER_ADDRESS: u32 = 10 * DEFAULT_SESSION_RATE_PER_ADDRESS;

/// Settings of a SockJS service. The defaults are sockjs-node's where it has one.
#[derive(Clone, Debug)]
pub struct Options {
    /// Send a heartbeat frame after this long without any other frame (default 25 s).
    pub heartbeat_interval: Duration,
    /// Offer the WebSocket transports (default true). Some proxies break WebSocket.
    pub websocket: bool,
    /// The largest message a client may send, in bytes once decoded from the JSON string it
    /// travels in (default 64 KiB), on every transport. Larger closes the session with
    /// [`CloseCode::MESSAGE_TOO_BIG`].
    pub max_message_bytes: usize,
    /// How much one session may have queued before it is closed as slow.
    pub queue: QueueLimits,
    /// How long one write to a client may take before the client counts as gone (default
    /// 10 s).
    pub write_timeout: Duration,
    /// How long the body of a send request (`xhr_send`, `jsonp_send`) may take to arrive
    /// before it is answered 408 (default 10 s): a client trickling a body holds a connection.
    pub body_timeout: Duration,
    /// Whether `/info` tells clients that a JSESSIONID cookie is needed, and session responses
    /// set one: load balancers that route by that cookie keep a session on one server.
    pub cookie_needed: bool,
    /// How long a session of an HTTP transport lives without a receiving request before it is
    /// closed (default 5 s). Polling clients come back within it; vanished ones are reaped.
    pub disconnect_delay: Duration,
    /// How many bytes one streaming response (xhr-streaming, eventsource, htmlfile) carries
    /// before the server ends it and the client opens the next (default 128 KiB), so browsers
    /// do not keep ever-growing responses in memory.
    pub response_limit: usize,
    /// The largest request body the send endpoints (`xhr_send`, `jsonp_send`) read, and the
    /// largest WebSocket message of the SockJS-framed transport, in bytes (default 256 KiB),
    /// unless [`Options::max_batch_bytes`] makes room for one message escaped. Larger answers
    /// 413 (a WebSocket is closed) and closes the session with
    /// [`CloseCode::MESSAGE_TOO_BIG`].
    pub max_request_bytes: usize,
    /// The SockJS client script that `/iframe.html` loads for the iframe-based transports.
    /// It must be the same version as the page's client.
    pub sockjs_url: String,
    /// Which browser origins may open sessions ([`Origins::any`] by default).
    pub origins: Origins,
    /// HTTP sessions opened through one connection that may be held at once (open, or
    /// closed and not yet forgotten); one more is refused with
    /// [`CloseCode::TOO_MANY_SESSIONS`]. Needs the server to give each request its [`Peer`];
    /// connections from [`Options::trusted_proxies`] that name their client are not bounded.
    pub max_sessions_per_connection: usize,
    /// How fast one client address may open sessions, of every transport; past it, new
    /// sessions are refused with [`CloseCode::TOO_MANY_SESSIONS`]. `None`: no bound.
    pub sessions_per_address: Option<Rate>,
    /// The reverse proxies whose forwarding headers name the client (loopback by default).
    pub trusted_proxies: Proxies,
}

/// How much larger than a message its JSON string may be: a control character is sent as a
/// six-byte `\u00XX` escape.
pub const ESCAPED_BYTES_PER_BYTE: usize = 6;

impl Options {
    /// The largest batch of messages a client may send at once (a send request's body, a
    /// SockJS-framed WebSocket message): [`Options::max_request_bytes`], or, if larger, room
    /// for one message of [`Options::max_message_bytes`] however it is escaped, in its array
    /// (`["…"]`), so that every message within the limit passes on every transport.
    pub fn max_batch_bytes(&self) -> usize {
        let one = self
            .max_message_bytes
            .saturating_mul(ESCAPED_BYTES_PER_BYTE)
            .saturating_add(4);
        self.max_request_bytes.max(one)
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            heartbeat_interval: Duration::from_secs(25),
            websocket: true,
            max_message_bytes: 64 * 1024,
            queue: QueueLimits::default(),
            write_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            cookie_needed: false,
            disconnect_delay: Duration::from_secs(5),
            response_limit: 128 * 1024,
            max_request_bytes: 256 * 1024,
            sockjs_url: DEFAULT_SOCKJS_URL.to_owned(),
            origins: Origins::any(),
            max_sessions_per_connection: DEFAULT_MAX_SESSIONS_PER_CONNECTION,
            sessions_per_address: Some(Rate {
                per_second: DEFAULT_SESSION_RATE_PER_ADDRESS,
                burst: DEFAULT_SESSION_BURST_PER_ADDRESS,
            }),
            trusted_proxies: Proxies::loopback(),
        }
    }
}
