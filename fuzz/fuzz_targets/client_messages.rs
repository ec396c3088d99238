//! What a browser sends once a session is open: parsing never panics, accepts only requests it
//! can name (a user's subscribe, channel joins and leaves, positions, each with a well-formed
//! position where it has one), and refusals, even naming whatever channel the client sent,
//! stay small JSON.
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
        Ok(Request::Join { channel, .. }) => {
            assert!(
                text.contains("subscribe") && text.contains("channel"),
                "{channel:?}"
            )
        }
        Ok(Request::Positions { .. }) => assert!(text.contains("positions")),
        Ok(Request::Leave { channel }) => {
            assert!(
                text.contains("unsubscribe") && text.contains("channel"),
                "{channel:?}"
            )
        }
        Err(refusal) => {
            assert!(!refusal.message.is_empty());
            // What the refusal is sent back as stays a JSON object of bounded size.
            let reply = protocol::error(&refusal.on(text));
            let value: serde_json::Value = serde_json::from_str(reply.as_json()).unwrap();
            assert!(value["data"]["channel"].as_str().unwrap().len() <= 164);
        }
    }
});
