//! What a browser sends once a session is open: parsing never panics, and accepts only
//! requests it can name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushnote_server::protocol::{self, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match protocol::parse(text) {
        Ok(Request::Subscribe { .. }) => assert!(text.contains("subscribe")),
        Ok(Request::Unsubscribe) => assert!(text.contains("unsubscribe")),
        Err(refusal) => assert!(!refusal.message.is_empty()),
    }
});
