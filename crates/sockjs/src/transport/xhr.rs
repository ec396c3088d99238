//! The XHR transports: `POST …/xhr_streaming` (one response carries frames until the
//! response limit), `POST …/xhr` (one frame per request, long-polling) and `POST …/xhr_send`
//! (the client's messages, see `send.rs`). Each frame is followed by a newline.

use super::HttpReceiver;

const CONTENT_TYPE: &str = "application/javascript; charset=UTF-8";

/// Receiving on an XHR response that stays open.
pub(crate) struct XhrStreaming;

/// Receiving on one XHR request per frame.
pub(crate) struct XhrPolling;

impl HttpReceiver for XhrStreaming {
    const STREAMING: bool = true;
    const CORS: bool = true;

    fn content_type(&self) -> &'static str {
        CONTENT_TYPE
    }

    /// 2 KiB of `h` and a newline: some browsers deliver nothing of a streaming response
    /// until they have this much.
    fn prelude(&self) -> Option<String> {
        let mut p = "h".repeat(2048);
        p.push('\n');
        Some(p)
    }

    fn wrap(&self, frame: &str, out: &mut String) {
        out.push_str(frame);
        out.push('\n');
    }
}

impl HttpReceiver for XhrPolling {
    const STREAMING: bool = false;
    const CORS: bool = true;

    fn content_type(&self) -> &'static str {
        CONTENT_TYPE
    }

    fn wrap(&self, frame: &str, out: &mut String) {
        out.push_str(frame);
        out.push('\n');
    }
}
