//! pushnote's client crate and shared protocol.
//!
//! Apps use it to push notifications to browsers connected to pushnote-server:
//!
//! ```no_run
//! use pushnote::{Publisher, Signer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = Publisher::connect("tcp://127.0.0.1:8002")?;
//! bus.notify_all(&serde_json::json!({"msg": "Hi all!"}))?;
//! bus.notify(&serde_json::json!({"msg": "Hi you"}), ["42"])?;
//!
//! // The token a page hands to its browser, which subscribes with it.
//! let signer = Signer::new(std::env::var("PUSHNOTE_SECRET")?)?;
//! let token = signer.tokenize(42)?;
//! # let _ = token; Ok(()) }
//! ```
//!
//! How the files divide the work:
//! - `wire.rs` — the bus format: topics and bodies (pure).
//! - `token.rs` — tokens in Django's `TimestampSigner` format (pure).
//! - `opaque.rs` — tokens the app makes itself: which they are, their bounds, the user a
//!   server gives them (pure).
//! - `secret.rs` — what a token secret or API key must be to be used (pure).
//! - `publisher.rs` — the ZeroMQ publisher apps call.
//! - `confirm.rs` — confirmed publishes: the request and its reply (pure).
//! - `confirmed.rs` — the publisher's side of confirmed publishes.
//! - `recover.rs` — recovery on the bus: servers' requests and the forwarder's answers (pure).
//! - `resp.rs` — Redis' wire protocol: commands encoded, replies parsed within bounds (pure).
//! - `redis_endpoint.rs` — `redis://` endpoints (pure).
//! - `redis_script.rs` — pushnote's keys in Redis and the script that publishes and answers
//!   history there (pure; the script is `redis_script.lua`).
//! - `redis_tls.rs` — the bytes to Redis: plain TCP, or TLS for `rediss://`.
//! - `redis_connection.rs` — a blocking connection to Redis, through Sentinel if asked.
//! - `redis_publisher.rs` — the publisher's side of the Redis engine: publishes through the
//!   script, each one confirmed.
//! - `http_publish.rs` — what apps send to publish over HTTP, checked, and published through a
//!   publisher (the forwarder's and a single server's `POST /publish`).
//! - `member.rs` — a presence channel's member: user id and the app's info (pure).
//! - `http_get.rs` — a bounded, blocking HTTP/1.1 `GET` on a plain `TcpStream`: the request
//!   and the answer's parsing (pure), and the exchange within a deadline.
//! - `presence.rs` — a presence channel's members, asked of a server or forwarder over HTTP
//!   (`GET /presence`).
//!
//! Light by design: no async runtime is needed to publish.

#![forbid(unsafe_code)]

pub mod confirm;
mod confirmed;
mod http_get;
pub mod http_publish;
pub mod member;
pub mod opaque;
pub mod presence;
mod publisher;
pub mod recover;
pub mod redis_connection;
pub mod redis_endpoint;
pub mod redis_publisher;
pub mod redis_script;
pub mod redis_tls;
pub mod resp;
pub mod secret;
pub mod token;
pub mod wire;

pub use confirmed::DEFAULT_CONFIRM_TIMEOUT;
pub use publisher::{
    PublishError, Publisher, PublisherBuilder, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_SEND_HWM,
};
pub use token::{ChannelGrant, Signer, TokenError, DEFAULT_MAX_CLOCK_SKEW, DEFAULT_SALT};
pub use wire::Position;

/// The forwarder's app-facing endpoint by default: where apps publish.
pub const DEFAULT_PUBLISH_ENDPOINT: &str = "tcp://127.0.0.1:8002";
/// The forwarder's server-facing endpoint by default: where servers subscribe.
pub const DEFAULT_SUBSCRIBE_ENDPOINT: &str = "tcp://127.0.0.1:8001";
