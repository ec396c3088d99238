//! Tokens from anyone: verification never panics, and nothing verifies that the signer did not
//! make (the fuzzer cannot forge an HMAC, so an accepted input is a bug), as a user's token or
//! a channel's. And what the signer makes, for any user id or channel and timestamp it
//! accepts, verifies back to that user or channel.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushnote::Signer;

fuzz_target!(|data: &[u8]| {
    let signer = Signer::new("fuzzing-secret").unwrap();
    if let Ok(token) = std::str::from_utf8(data) {
        if let Ok(user) =
            signer.verify_at(token, None, pushnote::DEFAULT_MAX_CLOCK_SKEW, 1_700_000_000)
        {
            panic!("accepted a token for {user:?} that the signer never made: {token:?}");
        }
    }
    if let Ok(token) = std::str::from_utf8(data) {
        let skew = pushnote::DEFAULT_MAX_CLOCK_SKEW;
        if let Ok(grant) = signer.verify_channel_at(token, None, skew, 1_700_000_000) {
            panic!("accepted a channel token for {grant:?} that the signer never made: {token:?}");
        }
    }
    if data.len() >= 8 {
        let (ts, user) = data.split_at(8);
        let ts = u64::from_le_bytes(ts.try_into().unwrap());
        if let Ok(user) = std::str::from_utf8(user) {
            if let Ok(token) = signer.channel_token_at(user, None, ts) {
                let grant = signer
                    .verify_channel_at(&token, None, pushnote::DEFAULT_MAX_CLOCK_SKEW, ts)
                    .unwrap();
                assert_eq!(grant.channel, user);
            }
            if let Ok(token) = signer.tokenize_at(user, ts) {
                assert_eq!(
                    signer
                        .verify_at(&token, None, pushnote::DEFAULT_MAX_CLOCK_SKEW, ts)
                        .unwrap(),
                    user
                );
            }
        }
    }
});
