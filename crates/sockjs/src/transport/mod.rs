//! The transports: each carries a session's frames over one kind of connection.

pub(crate) mod websocket;
