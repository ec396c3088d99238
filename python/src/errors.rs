//! The crate's errors as the exceptions of `pushnote.exceptions`, which are Python classes so
//! that they can also be `ValueError`s, `TypeError`s or `ConnectionError`s.

use pushnote::member::MemberError;
use pushnote::presence::{HttpError, PresenceError};
use pushnote::wire::WireError;
use pushnote::{PublishError, TokenError};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// The Python module that defines the exception classes.
const EXCEPTIONS: &str = "pushnote.exceptions";

/// An exception of class `name` of `pushnote.exceptions` with `message`.
pub fn raise(py: Python<'_>, name: &str, message: String) -> PyErr {
    let class = py
        .import(EXCEPTIONS)
        .and_then(|module| module.getattr(name));
    match class.and_then(|class| class.call1((message.clone(),))) {
        Ok(exception) => PyErr::from_value(exception),
        // The package is broken (its exceptions module missing): say so with the message.
        Err(e) => PyRuntimeError::new_err(format!("{message} (and {EXCEPTIONS}.{name}: {e})")),
    }
}

/// A failed publish as the exception a Python app catches; `names` are the channel and event
/// (or user ids) it was for, named in messages about invalid names.
pub fn publish_error(py: Python<'_>, e: PublishError, names: &str) -> PyErr {
    let class = match &e {
        PublishError::NotConnected(_) => "NotConnectedError",
        PublishError::Serialize(_) => "SerializationError",
        PublishError::UserId(_) => "InvalidUserError",
        PublishError::Channel(WireError::InvalidEvent) => "InvalidEventError",
        PublishError::Channel(_) => "InvalidChannelError",
        PublishError::Zmq(_)
        | PublishError::TooLarge { .. }
        | PublishError::TooManyUsers { .. }
        | PublishError::Refused { .. } => "PushnoteError",
        PublishError::Unconfirmed { .. } => "UnconfirmedError",
        PublishError::NoConfirm | PublishError::Endpoint(_) => "ConfigurationError",
        PublishError::Token(_) => "TokenError",
    };
    let message = match e {
        PublishError::NotConnected(endpoint) if endpoint.starts_with("redis") => format!(
            "not connected: Redis cannot be reached at {endpoint}; start it, or set \
             PUSHNOTE_BROKER to where it listens (nothing was sent)"
        ),
        PublishError::NotConnected(endpoint) => format!(
            "not connected: no pushnote-mq forwarder (or pushnote-server --single) is \
             listening at {endpoint}; start it, or set PUSHNOTE_MQ_SOCKET to where it listens \
             (nothing was sent)"
        ),
        PublishError::NoConfirm => "confirm=True needs PUSHNOTE_MQ_CONFIRM_SOCKET: the \
             forwarder's --confirm endpoint"
            .to_owned(),
        PublishError::UserId(e) | PublishError::Channel(e) => format!("{e} ({names})"),
        other => other.to_string(),
    };
    raise(py, class, message)
}

/// A refused token request for `subject` (the user id or channel asked for) as the exception
/// a Python app catches.
pub fn token_error(py: Python<'_>, e: TokenError, subject: &str) -> PyErr {
    match e {
        TokenError::InvalidChannel => raise(
            py,
            "InvalidChannelError",
            format!("{subject:?}: {}", WireError::InvalidChannel),
        ),
        TokenError::InvalidUserId => raise(
            py,
            "InvalidUserError",
            format!("{subject:?}: {}", WireError::InvalidUserId),
        ),
        TokenError::Member(MemberError::InvalidUserId) => raise(
            py,
            "InvalidUserError",
            format!("{subject:?}: {}", WireError::InvalidUserId),
        ),
        TokenError::Member(MemberError::InvalidInfo) => raise(
            py,
            "SerializationError",
            format!("the presence member's info is not JSON text ({subject:?})"),
        ),
        TokenError::EmptySecret => raise(
            py,
            "ConfigurationError",
            "the secret is empty: set PUSHNOTE_SECRET (or Django's SECRET_KEY)".to_owned(),
        ),
        other => raise(py, "TokenError", other.to_string()),
    }
}

/// A failed question about a presence channel's members as the exception a Python app
/// catches: the URL or key refused by the server is a setting to fix, a server out of reach a
/// connection error.
pub fn presence_error(py: Python<'_>, e: PresenceError) -> PyErr {
    let class = match &e {
        PresenceError::InvalidChannel(_) => "InvalidChannelError",
        PresenceError::InvalidKey => "ConfigurationError",
        PresenceError::Http(HttpError::Url(_)) => "ConfigurationError",
        PresenceError::Http(HttpError::Io { .. } | HttpError::Timeout { .. }) => {
            "NotConnectedError"
        }
        PresenceError::Refused {
            status: 401 | 404, ..
        } => "ConfigurationError",
        PresenceError::Http(_) | PresenceError::Refused { .. } | PresenceError::Malformed(_) => {
            "PushnoteError"
        }
    };
    let message = match e {
        PresenceError::Http(HttpError::Url(reason)) => format!("PUSHNOTE_HTTP_URL: {reason}"),
        PresenceError::InvalidKey => {
            "PUSHNOTE_API_KEY has control characters, which a header cannot carry".to_owned()
        }
        other => other.to_string(),
    };
    raise(py, class, message)
}
