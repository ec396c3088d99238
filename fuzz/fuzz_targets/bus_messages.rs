//! What arrives on the bus: any frames (the input split at 0xff bytes) decode or are refused,
//! never panic; what decodes names a valid target (a channel's with a valid event, and an
//! envelope for the pages that is JSON naming both) (its topic, without the stamp, reads back to
//! the same target), and what the server makes of its data for the browsers is still valid
//! JSON (numbers beyond f64, which serde's Value refuses, included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushnote::wire::{self, Target};

fuzz_target!(|data: &[u8]| {
    let frames: Vec<Vec<u8>> = data.split(|&b| b == 0xff).map(<[u8]>::to_vec).collect();
    if let Ok(message) = wire::decode(&frames) {
        match message.target {
            Target::User(user) => assert!(wire::check_user_id(user).is_ok()),
            Target::Channel(channel) => {
                assert!(wire::check_channel(channel).is_ok());
                let event = message
                    .event
                    .as_deref()
                    .expect("a channel message has an event");
                assert!(wire::check_event(event).is_ok());
                let envelope = wire::channel_envelope(channel, event, message.data);
                let page: serde_json::Value =
                    serde_json::from_str(sockjs::Message::json(&envelope).as_json())
                        .expect("the envelope is JSON");
                assert_eq!(page["channel"], channel);
                assert_eq!(page["event"], event);
            }
            Target::All => {}
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
