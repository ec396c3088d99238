//! The pushnote server library: everything behind `pushnote-server` and `pushnote-mq`.
//!
//! How the files divide the work:
//! - `server.rs` — configuration, and `Server::run`, which wires the parts and serves a bound
//!   listener until a shutdown future completes.
//! - `bus.rs` — the ZeroMQ subscriber thread and its subscription commands.
//! - `hub.rs` — who is connected and which user each session is; targeted messages.
//! - `fanout.rs` — broadcasts: a log per shard of the sessions, swept by a thread per core.
//! - `client.rs` — the SockJS handler: one client's requests and the token check.
//! - `protocol.rs` — the client protocol's messages and replies (pure).
//! - `forwarder.rs` — the forwarder behind `pushnote-mq`.
//! - `metrics.rs` — counters, served at `/metrics` when enabled.
//! - `demo.rs` — the demo page.
//! - `cli.rs` — logging and signal handling shared by the binaries.
//! - `inproc.rs` — in-process ZeroMQ pairs for commanding polling threads.

#![forbid(unsafe_code)]

pub mod bus;
pub mod cli;
pub mod client;
pub mod demo;
pub(crate) mod fanout;
pub mod forwarder;
pub mod hub;
mod inproc;
pub mod metrics;
pub mod protocol;
pub mod server;

pub use bus::BusMode;
pub use client::{Limits, TokenPolicy};
pub use forwarder::{Forwarder, ForwarderConfig};
pub use server::{Server, ServerConfig};
