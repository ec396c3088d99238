//! The pushnote server library: everything behind `pushnote-server` (the forwarder behind
//! `pushnote-mq` is the `pushnote-mq` crate).
//!
//! How the files divide the work:
//! - `config.rs` — the flags, their defaults (each written once), the configuration's types
//!   (`BusMode`, `TokenPolicy`, `Limits`), and the checks that make a `ServerConfig` and the
//!   address to listen on. It imports no other module of the server: every other module may
//!   read it.
//! - `server.rs` — `Server::run`, which wires the parts and serves a bound listener until a
//!   shutdown future completes; `listen`, which binds it.
//! - `broker.rs` — the broker interface: the engine's handle (subscribe, unsubscribe, a topic's
//!   position and history) and its side on the bus thread (what comes in).
//! - `zeromq.rs` — today's two engines: the ZeroMQ forwarder, and the in-process one of
//!   `--single`; their handle's commands.
//! - `bus.rs` — the bus thread: takes in what the engine brings, decodes and checks bus
//!   messages, frames them as pages receive them, and hands them on.
//! - `subscriptions.rs` — what the hub tells the bus: a topic's first session came, its last
//!   went.
//! - `hub.rs` — who is connected and which topics (their user's, channels) each session is in.
//! - `fanout.rs` — which thread delivers what: broadcasts, and large topics' messages, through
//!   a log per shard of the sessions, swept by a thread per core; a smaller topic's messages
//!   to its sessions, after the broadcasts before them.
//! - `delivery.rs` — writing a message to sessions: pacing, counting, closing the slow.
//! - `overload.rs` — the bus messages read and not yet delivered, how far behind that puts
//!   the server, and shedding past `--max-lag`.
//! - `recovery.rs` — positions and history: every message numbered and kept under one lock
//!   with the requests that join topics, and what a session missed given back in order
//!   (the history itself is the `pushnote-history` crate).
//! - `remote.rs` — positions and recovery with a forwarder: requests that join topics are
//!   handed to the bus thread, which asks the forwarder's history and gives their sessions its
//!   answer in order (`Recovering`, which feeds and carries out the state machine).
//! - `recovery_state.rs` — the bus thread's recovery bookkeeping with a forwarder as one state
//!   machine with no I/O: requests waiting and their allowances, the fill after a reconnection
//!   and the messages it holds back, each topic's last position and what never arrived.
//! - `client.rs` — the SockJS handler: one client's requests, the token checks, channels,
//!   positions.
//! - `log_every.rs` — log lines an outsider can trigger, at most once a second.
//! - `room.rs` — giving back the room of maps that emptied out.
//! - `budget.rs` — an allowance that grows back over time: a session's channel requests.
//! - `protocol.rs` — the client protocol's messages and replies (pure).
//! - `metrics.rs` — counters, served at `/metrics` when enabled.
//! - `demo.rs` — the demo page.
//! - `library.rs` — pushnote.js, the browser library (`pushnote.js` beside it).
//! - `inproc.rs` — in-process ZeroMQ pairs for commanding polling threads.

#![forbid(unsafe_code)]

pub mod broker;
mod budget;
pub mod bus;
pub mod client;
pub mod config;
pub(crate) mod delivery;
pub mod demo;
pub(crate) mod fanout;
pub mod hub;
mod inproc;
pub mod library;
mod log_every;
pub mod metrics;
mod overload;
pub mod protocol;
pub(crate) mod recovery;
pub(crate) mod recovery_state;
pub(crate) mod remote;
mod room;
pub mod server;
pub mod subscriptions;
pub mod zeromq;

pub use config::{BusMode, Flags, Limits, ServerConfig, TokenPolicy};
pub use server::Server;
