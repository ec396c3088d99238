//! `pushnote._native`: the client crate (`crates/pushnote`) for Python, so that Python apps
//! publish with the same wire format, tokens, wait for the forwarder's subscription and linger
//! on exit as Rust apps.
//!
//! Thin on purpose: `Publisher` and `Signer` wrap the crate's; data arrives here already
//! encoded as JSON text (the Python side encodes it as Django does) and is published as it is,
//! checked but not re-encoded. Errors become the exceptions of `pushnote.exceptions`.
//!
//! How the files divide the work:
//! - `publisher.rs` — the `Publisher` class: connect, notify, notify_all, publish, close; fork
//!   safety of its ZeroMQ context.
//! - `signer.rs` — the `Signer` class: user, channel and presence tokens.
//! - `presence.rs` — `presence_members`: who is in a presence channel, asked over HTTP.
//! - `errors.rs` — the crate's errors as Python exceptions with clear messages.

use pyo3::prelude::*;

mod errors;
mod presence;
mod publisher;
mod signer;

/// The module maturin builds as `pushnote._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<publisher::Publisher>()?;
    m.add_class::<signer::Signer>()?;
    m.add_function(wrap_pyfunction!(presence::presence_members, m)?)?;
    m.add("DEFAULT_SALT", pushnote::DEFAULT_SALT)?;
    m.add(
        "DEFAULT_PUBLISH_ENDPOINT",
        pushnote::DEFAULT_PUBLISH_ENDPOINT,
    )?;
    Ok(())
}
