//! What other servers send about presence (PROTOCOL §2d): any bodies (the input split at 0xff
//! bytes) decode or are refused, never panic; what decodes is written back to the same
//! message; and a server's view, fed every message in order with time passing, keeps only valid
//! members, each listed once, its counts agreeing with its lists.
#![no_main]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use pushnote::wire;
use pushnote_presence::{Message, View};

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut view = View::new(1, 64, true);
    let mut channels = BTreeSet::new();
    for (i, body) in data.split(|&b| b == 0xff).enumerate() {
        let Ok(message) = Message::decode(body) else {
            continue;
        };
        assert_eq!(Message::decode(&message.encode()), Ok(message.clone()));
        if let Message::Members { channel, .. } = &message {
            channels.insert(channel.clone());
        }
        let now = start + Duration::from_millis(100 * i as u64);
        view.receive(message, now);
        view.expire(now, Duration::from_secs(5));
        for changes in view.take_changes() {
            assert!(channels.contains(&*changes.channel));
            for (user, _) in &changes.added {
                assert!(wire::check_user_id(user).is_ok());
            }
        }
    }
    assert!(view.known() <= 64, "past the bound: {}", view.known());
    for channel in &channels {
        let members = view.members(channel);
        assert_eq!(members.len(), view.count(channel));
        let users: BTreeSet<_> = members.iter().map(|(u, _)| u.clone()).collect();
        assert_eq!(users.len(), members.len(), "each member once");
        for (user, info) in &members {
            assert!(wire::check_user_id(user).is_ok());
            assert_eq!(view.info(channel, user).as_ref(), Some(info));
        }
    }
});
