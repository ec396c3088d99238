//! The EventSource transport: `GET …/eventsource`, a `text/event-stream` response with one
//! `data:` event per frame. Frames never hold a raw newline (the frame encoding escapes it),
//! so each fits on one `data:` line.

use super::HttpReceiver;

pub(crate) struct EventSource;

impl HttpReceiver for EventSource {
    const STREAMING: bool = true;
    /// Browsers open a cross-origin EventSource in CORS mode.
    const CORS: bool = true;

    fn content_type(&self) -> &'static str {
        // Exactly this: some browsers refuse the stream with a charset parameter.
        "text/event-stream"
    }

    fn prelude(&self) -> Option<String> {
        Some("\r\n".to_owned())
    }

    fn wrap(&self, frame: &str, out: &mut String) {
        out.push_str("data: ");
        out.push_str(frame);
        out.push_str("\r\n\r\n");
    }
}
