//! What SockJS clients send (decode), and what the server writes back (encode): decoding
//! never panics, and every decoded message survives encoding and decoding again unchanged,
//! with nothing left that the protocol says must be escaped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockjs::frame;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(messages) = frame::decode_messages(text) else {
        return;
    };
    for m in &messages {
        let quoted = frame::quote(m);
        assert!(!quoted.chars().any(frame::needs_escape));
        assert_eq!(&serde_json::from_str::<String>(&quoted).unwrap(), m);
        let mut script = String::new();
        frame::push_script_string(&mut script, m);
        assert!(!script.contains('<'));
        assert_eq!(&serde_json::from_str::<String>(&script).unwrap(), m);
    }
    let encoded = serde_json::to_string(&messages).unwrap();
    let compact = frame::compact_json(&encoded);
    assert_eq!(frame::decode_messages(&compact).unwrap(), messages);
});
