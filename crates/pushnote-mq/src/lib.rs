//! The pushnote forwarder, behind `pushnote-mq`: takes every message apps publish and sends
//! each to the servers subscribed to its topic, numbering each topic's messages on the way. It
//! shares only the bus's wire format (the `pushnote` crate) with the servers.
//!
//! How the files divide the work:
//! - `config.rs` — the flags, their defaults, and the checks that make a [`ForwarderConfig`].
//! - `forwarder.rs` — the sockets and the thread that moves messages, with their limits.
//! - `numbering.rs` — each topic's last number, in bounded memory.
//! - `metrics.rs` — the forwarder's counters as Prometheus text.
//! - `http.rs` — `/metrics` over HTTP (`--metrics ADDR`).

#![forbid(unsafe_code)]

pub mod config;
pub mod forwarder;
pub mod http;
pub mod metrics;
pub mod numbering;

pub use config::{Flags, ForwarderConfig};
pub use forwarder::{Forwarder, ForwarderError};
pub use metrics::Metrics;
