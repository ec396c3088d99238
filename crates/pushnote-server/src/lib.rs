//! The pushnote server library: everything behind `pushnote-server` (the forwarder behind
//! `pushnote-mq` is the `pushnote-mq` crate).
//!
//! How the files divide the work, folder by folder (each folder a layer; a module's path is
//! its file's name alone: `crate::hub`, `crate::bus`):
//! - `config.rs` — the flags, their defaults (each written once), the configuration's types
//!   (`BusMode`, `TokenPolicy`, `Limits`), and the checks that make a `ServerConfig` and the
//!   address to listen on. It imports no other module of the server: every other module may
//!   read it.
//! - `client.rs` — the SockJS handler: one client's requests, the token checks, channels,
//!   positions.
//! - `protocol.rs` — the client protocol's messages and replies (pure).
//! - `metrics.rs` — counters, served at `/metrics` when enabled.
//! - `log_every.rs` — log lines an outsider can trigger, at most once a second.
//! - `http/` — `server.rs`: `Server::run`, which wires the parts and serves a bound listener
//!   until a shutdown future completes, and `listen`, which binds it; `demo.rs`, the demo
//!   page; `library.rs`, pushnote.js, the browser library (`pushnote.js` beside it).
//! - `bus/` — `broker.rs`: the broker interface, the engine's handle (subscribe, unsubscribe,
//!   a session's request) and its side on the bus thread (what comes in, a topic's position
//!   and history asked); `control.rs`: the handle every engine shares, commands to the bus
//!   thread; `zeromq.rs`: the ZeroMQ forwarder's engine and the in-process one of `--single`;
//!   `redis.rs`: the Redis engine (Pub/Sub, and history kept in Redis); `bus.rs`: the bus thread,
//!   which takes in what the engine brings, decodes and checks bus messages, frames them as
//!   pages receive them, and hands them on; `inproc.rs`: in-process ZeroMQ pairs for
//!   commanding polling threads; `waiter.rs`: waiting on several ZeroMQ sockets with one
//!   system call.
//! - `hub/` — `hub.rs`: who is connected and which topics (their user's, channels) each
//!   session is in; `subscriptions.rs`: what the hub tells the bus, a topic's first session
//!   came, its last went; `room.rs`: giving back the room of maps that emptied out;
//!   `budget.rs`: an allowance that grows back over time, a session's channel requests.
//! - `delivery/` — `fanout.rs`: which thread delivers what, broadcasts and large topics'
//!   messages through a log per shard of the sessions, swept by a thread per core, a smaller
//!   topic's messages to its sessions after the broadcasts before them; `delivery.rs`: writing
//!   a message to sessions, pacing, counting, closing the slow; `overload.rs`: the bus messages
//!   read and not yet delivered, how far behind that puts the server, and shedding past
//!   `--max-lag`.
//! - `presence/` — `presence.rs`: presence channels on this server, its sessions' members and
//!   every other server's as the bus brings them (the `pushnote-presence` crate), pages told
//!   of comings and goings and the other servers of this server's, every
//!   `--presence-interval`.
//! - `positions/` — `recovery.rs`: positions and history where the server keeps it, every
//!   message numbered and kept under one lock with the requests that join topics, and what a
//!   session missed given back in order (the history itself is the `pushnote-history`
//!   crate); `remote.rs`: positions and recovery with a forwarder, requests that join topics
//!   handed to the bus thread, which asks the forwarder's history and gives their sessions
//!   its answer in order (`Recovering`, which feeds and carries out the state machine);
//!   `recovery_state.rs`: that bookkeeping as one state machine with no I/O, requests waiting
//!   and their allowances, the fill after a reconnection and the messages it holds back, each
//!   topic's last position and what never arrived.

#![forbid(unsafe_code)]

// The folders show the layers; the modules' paths stay flat (`crate::hub`, `crate::bus`).

// The hub: who is connected, and which topics each session is in.
#[path = "hub/budget.rs"]
mod budget;
#[path = "hub/hub.rs"]
pub mod hub;
#[path = "hub/room.rs"]
mod room;
#[path = "hub/subscriptions.rs"]
pub mod subscriptions;

// Delivery: which thread writes what to sessions, and how far behind the server is.
#[path = "delivery/delivery.rs"]
pub(crate) mod delivery;
#[path = "delivery/fanout.rs"]
pub(crate) mod fanout;
#[path = "delivery/overload.rs"]
mod overload;

// Positions: history, recovery with the server's own history or the forwarder's.
#[path = "positions/recovery.rs"]
pub(crate) mod recovery;
#[path = "positions/recovery_state.rs"]
pub(crate) mod recovery_state;
#[path = "positions/remote.rs"]
pub(crate) mod remote;

// Presence: who is in each presence channel, across servers.
#[path = "presence/presence.rs"]
pub mod presence;

// The bus: the broker interface, its engines, and the thread that reads them.
#[path = "bus/broker.rs"]
pub mod broker;
#[path = "bus/bus.rs"]
pub mod bus;
#[path = "bus/control.rs"]
pub mod control;
#[path = "bus/inproc.rs"]
mod inproc;
#[path = "bus/redis.rs"]
pub mod redis;
#[path = "bus/waiter.rs"]
mod waiter;
#[path = "bus/zeromq.rs"]
pub mod zeromq;

// HTTP: the server's routes, the demo page and the browser library.
#[path = "http/demo.rs"]
pub mod demo;
#[path = "http/library.rs"]
pub mod library;
#[path = "http/server.rs"]
pub mod server;

pub mod client;
pub mod config;
mod log_every;
pub mod metrics;
pub mod protocol;

pub use config::{BusMode, Flags, Limits, ServerConfig, TokenPolicy};
pub use server::Server;
