//! What arrives on the bus: any frames (the input split at 0xff bytes) decode or are refused,
//! never panic; what decodes names a valid target (its topic, without the stamp, reads back to
//! the same target), and what the server makes of its data for the browsers is still valid
//! JSON (numbers beyond f64, which serde's Value refuses, included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushnote::wire::{self, Target};

fuzz_target!(|data: &[u8]| {
    let frames: Vec<Vec<u8>> = data.split(|&b| b == 0xff).map(<[u8]>::to_vec).collect();
    if let Ok(message) = wire::decode(&frames) {
        if let Target::User(user) = message.target {
            assert!(wire::check_user_id(user).is_ok());
        }
        assert_eq!(wire::parse_topic(message.topic), Ok(message.target));
        let sent = sockjs::Message::json(message.data.get());
        let reparsed = serde_json::from_str::<&serde_json::value::RawValue>(sent.as_json());
        assert!(
            reparsed.is_ok(),
            "{:?} became {:?}",
            message.data.get(),
            sent.as_json()
        );
    }
});
