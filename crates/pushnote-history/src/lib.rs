//! pushnote's history: each topic's recent messages, numbered, in bounded memory, so that a
//! page that comes back can be given what it missed on each topic, or told that it cannot.
//!
//! Every message of a topic gets a [`Position`]: the topic's epoch and the message's offset
//! in it. Offsets go 1, 2, 3… within an epoch; a new epoch starts whenever what came before
//! may be lost (the topic was forgotten, or its offsets ran out), so a position from another
//! epoch cannot be compared and is answered "not recovered".
//!
//! How the files divide the work:
//! - `position.rs` — a message's place in its topic.
//! - `history.rs` — the topics, their kept messages, and their limits.
//! - `name.rs` — a topic's name as a map's key, kept in the key itself when short.

#![forbid(unsafe_code)]

pub mod history;
pub mod name;
pub mod position;

pub use history::{History, Limits, Weigh};
pub use name::Name;
pub use position::Position;
