//! The JSONP transports: `GET …/jsonp?c=<callback>` (one frame per request, as a script
//! calling the page's callback) and `POST …/jsonp_send` (the client's messages, as a form
//! field `d` or a raw body; see `send.rs`). For the oldest browsers and the most restrictive
//! networks.

use super::HttpReceiver;
use crate::frame;

pub(crate) struct Jsonp {
    /// The page's callback, already checked to be a safe name.
    pub(crate) callback: String,
}

impl HttpReceiver for Jsonp {
    const STREAMING: bool = false;
    const CORS: bool = false;

    fn content_type(&self) -> &'static str {
        "application/javascript; charset=UTF-8"
    }

    fn wrap(&self, frame: &str, out: &mut String) {
        // The comment keeps a callback name from being read as the start of something else
        // (the Rosetta Flash attack on JSONP).
        out.push_str("/**/");
        out.push_str(&self.callback);
        out.push('(');
        frame::push_script_string(out, frame);
        out.push_str(");\r\n");
    }
}
