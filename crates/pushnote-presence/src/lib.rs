//! Presence: who is in each presence channel, across every server, with no central store
//! (docs/PROTOCOL.md §2d and §6, "Presence").
//!
//! Each server knows its own members ([`Local`]: which sessions hold which member) and tells
//! every other server over the bus ([`message`]: resets, members added and removed,
//! heartbeats, requests for a server's whole state). Every server, and the forwarder, keeps
//! the same [`View`]: each channel's members, with the servers that hold each of them, the
//! messages of each server applied in order, a server whose messages were lost asked again,
//! and a server gone silent forgotten. [`Pending`] puts changes together between the moments
//! they go out, to the bus and to pages.
//!
//! Pure: time is passed in, and what is to be sent is given back.

#![forbid(unsafe_code)]

mod local;
pub mod message;
mod pending;
pub mod query;
mod view;

pub use local::Local;
pub use message::{Message, ServerId, FORWARDER, TOPIC};
pub use pending::{Changes, Pending};
pub use view::{Action, View};

/// A member's info: JSON text, shared between the maps that hold it.
pub type Info = std::sync::Arc<str>;

use std::time::Duration;

/// Members one presence channel may have (`--presence-max-members`).
pub const DEFAULT_MAX_MEMBERS: usize = 1000;
/// Bytes of a member's info, as JSON text (`--presence-max-info`).
pub const DEFAULT_MAX_INFO_BYTES: usize = 1024;
/// Presence channels one session may be in (`--presence-max-channels`).
pub const DEFAULT_MAX_CHANNELS: usize = 10;
/// Members a server (or the forwarder) keeps of other servers, of every channel
/// (`--presence-max-known`).
pub const DEFAULT_MAX_KNOWN: usize = 1_000_000;
/// Milliseconds between the moments changes go out, to the bus and to pages
/// (`--presence-interval`).
pub const DEFAULT_INTERVAL_MS: u64 = 100;
/// Seconds without a server's heartbeat after which its members leave (`--presence-timeout`).
pub const DEFAULT_TIMEOUT_SECS: f64 = 5.0;

/// How often a server sends its heartbeat: every second, or a third of `timeout` if that is
/// shorter.
pub fn heartbeat_every(timeout: Duration) -> Duration {
    (timeout / 3).min(Duration::from_secs(1))
}
