//! The pushnote forwarder, behind `pushnote-mq`: takes every message apps publish and sends
//! each to the servers subscribed to its topic, giving each message its topic's position and
//! keeping each topic's last messages for servers that ask (the `pushnote-history` crate). It
//! shares only the bus's wire format (the `pushnote` crate) with the servers.
//!
//! How the files divide the work:
//! - `config.rs` — the flags, their defaults, and the checks that make a [`ForwarderConfig`].
//! - `forwarder.rs` — the sockets and the thread that moves messages, with their limits, and
//!   answers servers' recovery requests.
//! - `replay.rs` — what recovery answers may replay a second.
//! - `bridge.rs` — with `--broker redis://…`, what apps publish is published into Redis
//!   instead, pipelined, on a thread of its own.
//! - `metrics.rs` — the forwarder's counters as Prometheus text.
//! - `http.rs` — `/metrics` and `/health` over HTTP (`--metrics ADDR`), `POST /publish`
//!   (`--http ADDR`), served within the HTTP side's bounds (`config::HttpLimits`).

#![forbid(unsafe_code)]

pub mod bridge;
pub mod config;
pub mod forwarder;
pub mod http;
pub mod metrics;
pub mod replay;

pub use config::{Flags, ForwarderConfig};
pub use forwarder::{Forwarder, ForwarderError};
pub use metrics::Metrics;
