//! Close codes: every code this crate sends, each with its reason text, documented once.
//!
//! SockJS carries them in the close frame `c[code,"reason"]`; the raw WebSocket transport
//! carries them in the WebSocket close frame. Browsers see them as `CloseEvent.code` and
//! `CloseEvent.reason`.

/// A close code and the reason sent with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseCode {
    /// The numeric code (1000–4999).
    pub code: u16,
    /// The human-readable reason.
    pub reason: &'static str,
}

impl CloseCode {
    /// The application closed the session normally.
    pub const NORMAL: CloseCode = CloseCode {
        code: 3000,
        reason: "Go away!",
    };
    /// The server is shutting down: reconnect, to this server once it is back or to another.
    pub const GOING_AWAY: CloseCode = CloseCode {
        code: 3001,
        reason: "Server shutting down",
    };
    /// The client opened sessions faster than its address may, or more through one
    /// connection than one connection may hold: reconnect after a delay.
    pub const TOO_MANY_SESSIONS: CloseCode = CloseCode {
        code: 3004,
        reason: "Too many new sessions",
    };
    /// The client did not read fast enough: its queue reached its limit. Reconnect.
    pub const SLOW: CloseCode = CloseCode {
        code: 3008,
        reason: "Slow consumer",
    };
    /// The client sent a message larger than the server accepts.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode {
        code: 3009,
        reason: "Message too big",
    };
    /// The client sent a payload that is not a JSON string or array of strings.
    pub const BROKEN_JSON: CloseCode = CloseCode {
        code: 3010,
        reason: "Broken JSON encoding",
    };
    /// Another request is already receiving on this session (SockJS standard code).
    pub const ANOTHER_CONNECTION: CloseCode = CloseCode {
        code: 2010,
        reason: "Another connection still open",
    };
    /// The previous receiving request was cut off (SockJS standard code).
    pub const INTERRUPTED: CloseCode = CloseCode {
        code: 1002,
        reason: "Connection interrupted",
    };
}
