//! The transports: each carries a session's frames over one kind of connection.
//!
//! WebSocket (`websocket.rs`) holds a session for the life of one connection. The HTTP
//! transports receive on responses and send on separate requests; they differ only in how a
//! response starts and how each frame is wrapped, which is what [`HttpReceiver`] describes.
//! `receive.rs` runs any of them against a session; `send.rs` takes what clients post.

pub(crate) mod eventsource;
pub(crate) mod htmlfile;
pub(crate) mod jsonp;
pub(crate) mod receive;
pub(crate) mod send;
pub(crate) mod websocket;
pub(crate) mod xhr;

/// An HTTP transport's receiving side: the response it writes a session's frames on.
pub(crate) trait HttpReceiver: Send + Sync + 'static {
    /// Whether one response carries frames until the response limit (streaming), or ends
    /// after one frame (polling).
    const STREAMING: bool;
    /// Whether the response carries CORS headers: XHR and EventSource responses are read by
    /// pages of another origin; htmlfile and jsonp load as a document and a script.
    const CORS: bool;

    /// The response's `Content-Type`.
    fn content_type(&self) -> &'static str;

    /// What starts every response, before any frame, if anything.
    fn prelude(&self) -> Option<String> {
        None
    }

    /// Appends `frame` wrapped the way this transport carries it.
    fn wrap(&self, frame: &str, out: &mut String);
}

/// Why the `c` (callback) query parameter of htmlfile and jsonp was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallbackError {
    Missing,
    Invalid,
}

/// The longest callback name accepted; the stock client's are about 30 characters.
const MAX_CALLBACK_LEN: usize = 256;

/// The JavaScript callback named by the `c` query parameter (URL-decoded). Only letters,
/// digits, `-`, `_` and `.` are allowed, so the name cannot inject script into the page.
pub(crate) fn callback(query: &str) -> Result<String, CallbackError> {
    let c = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "c")
        .map(|(_, v)| v.into_owned())
        .filter(|c| !c.is_empty())
        .ok_or(CallbackError::Missing)?;
    let valid = c.len() <= MAX_CALLBACK_LEN
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(c)
    } else {
        Err(CallbackError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_are_decoded_and_checked() {
        assert_eq!(callback("c=%63allback").unwrap(), "callback");
        assert_eq!(callback("t=1&c=_jp.a1-b").unwrap(), "_jp.a1-b");
        assert_eq!(callback(""), Err(CallbackError::Missing));
        assert_eq!(callback("c="), Err(CallbackError::Missing));
        for bad in [
            "c=%20",
            "c=*",
            "c=abc(",
            "c=abc%28",
            "c=a%3Cscript%3E",
            "c=a+b",
        ] {
            assert_eq!(callback(bad), Err(CallbackError::Invalid), "{bad}");
        }
        let long = format!("c={}", "a".repeat(MAX_CALLBACK_LEN + 1));
        assert_eq!(callback(&long), Err(CallbackError::Invalid));
    }
}
