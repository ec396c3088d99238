//! The bus wire format: what apps publish and servers receive, byte by byte.
//!
//! Every bus message is a ZeroMQ multipart message of exactly two frames, `[topic, body]`:
//!
//! - `topic` routes. Broadcasts use [`BROADCAST_TOPIC`] (`all` and a NUL byte); a message for
//!   one user uses `user:` + the user id in UTF-8 + a NUL byte. User ids never contain NUL, so
//!   ZeroMQ's prefix matching is exact: a subscription to `user:1\0` never matches
//!   `user:10\0` or `user:1:x\0`.
//! - `body` is UTF-8 JSON: `{"name":"notify_all","data":…}` on the broadcast topic,
//!   `{"name":"notify","data":…}` on a user topic. `data` is any JSON value and reaches the
//!   browser unchanged.
//!
//! Pure: no I/O. `docs/PROTOCOL.md` documents the same format for apps in other languages.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The topic of broadcasts (`notify_all`).
pub const BROADCAST_TOPIC: &[u8] = b"all\0";
/// What every user topic starts with.
pub const USER_TOPIC_PREFIX: &[u8] = b"user:";
/// The byte that ends every topic; user ids cannot contain it.
pub const TOPIC_END: u8 = 0;
/// The longest user id, in bytes.
pub const MAX_USER_ID_BYTES: usize = 256;

/// The body's `name` for a broadcast.
pub const NOTIFY_ALL: &str = "notify_all";
/// The body's `name` for a message to one user.
pub const NOTIFY: &str = "notify";

/// Who a bus message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// Every connected session.
    All,
    /// Every session subscribed as this user.
    User(&'a str),
}

/// Why a user id or a bus message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// User ids are 1 to 256 bytes of UTF-8 without control characters.
    #[error("invalid user id: must be 1 to {MAX_USER_ID_BYTES} bytes with no control characters")]
    InvalidUserId,
    /// A bus message has exactly two frames, topic and body.
    #[error("bus message has {0} frames, expected 2 (topic, body)")]
    FrameCount(usize),
    /// The topic is neither the broadcast topic nor a user topic.
    #[error("unknown topic")]
    UnknownTopic,
    /// The body is not the JSON object `{"name":…,"data":…}`.
    #[error("body is not {{\"name\":…,\"data\":…}} JSON: {0}")]
    BadBody(String),
    /// The body's name does not match its topic (`notify_all` goes with the broadcast topic,
    /// `notify` with a user topic).
    #[error("body name {0:?} does not match the topic")]
    NameMismatch(String),
}

/// Checks a user id: 1 to [`MAX_USER_ID_BYTES`] bytes, no control characters (so no NUL).
pub fn check_user_id(user: &str) -> Result<(), WireError> {
    if user.is_empty() || user.len() > MAX_USER_ID_BYTES || user.chars().any(char::is_control) {
        return Err(WireError::InvalidUserId);
    }
    Ok(())
}

/// The topic of messages for `user`.
pub fn user_topic(user: &str) -> Result<Vec<u8>, WireError> {
    check_user_id(user)?;
    let mut t = Vec::with_capacity(USER_TOPIC_PREFIX.len() + user.len() + 1);
    t.extend_from_slice(USER_TOPIC_PREFIX);
    t.extend_from_slice(user.as_bytes());
    t.push(TOPIC_END);
    Ok(t)
}

/// The topic of `target`'s messages.
pub fn topic(target: Target<'_>) -> Result<Vec<u8>, WireError> {
    match target {
        Target::All => Ok(BROADCAST_TOPIC.to_vec()),
        Target::User(u) => user_topic(u),
    }
}

/// Reads a topic back into its target.
pub fn parse_topic(topic: &[u8]) -> Result<Target<'_>, WireError> {
    if topic == BROADCAST_TOPIC {
        return Ok(Target::All);
    }
    let user = topic
        .strip_prefix(USER_TOPIC_PREFIX)
        .and_then(|t| t.strip_suffix(&[TOPIC_END]))
        .and_then(|u| std::str::from_utf8(u).ok())
        .ok_or(WireError::UnknownTopic)?;
    check_user_id(user).map_err(|_| WireError::UnknownTopic)?;
    Ok(Target::User(user))
}

#[derive(Serialize)]
struct BodyOut<'a, T: ?Sized> {
    name: &'a str,
    data: &'a T,
}

/// Encodes the body of a message for `target` carrying `data`.
pub fn encode_body<T: Serialize + ?Sized>(
    target: Target<'_>,
    data: &T,
) -> serde_json::Result<Vec<u8>> {
    let name = match target {
        Target::All => NOTIFY_ALL,
        Target::User(_) => NOTIFY,
    };
    serde_json::to_vec(&BodyOut { name, data })
}

#[derive(Deserialize)]
struct BodyIn<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// A bus message as a server reads it; `data` borrows the received bytes.
#[derive(Debug)]
pub struct BusMessage<'a> {
    /// Who it is for.
    pub target: Target<'a>,
    /// The published data, as the JSON text it was sent as.
    pub data: &'a RawValue,
}

/// Decodes a received multipart message, checking every rule of the format.
pub fn decode<'a>(frames: &'a [Vec<u8>]) -> Result<BusMessage<'a>, WireError> {
    let [topic, body] = frames else {
        return Err(WireError::FrameCount(frames.len()));
    };
    let target = parse_topic(topic)?;
    let body: BodyIn<'a> =
        serde_json::from_slice(body).map_err(|e| WireError::BadBody(e.to_string()))?;
    let expected = match target {
        Target::All => NOTIFY_ALL,
        Target::User(_) => NOTIFY,
    };
    if body.name != expected {
        return Err(WireError::NameMismatch(body.name.into_owned()));
    }
    Ok(BusMessage {
        target,
        data: body.data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_exact_under_prefix_matching() {
        let one = user_topic("1").unwrap();
        for other in ["10", "11", "1:x", "1 "] {
            assert!(!user_topic(other).unwrap().starts_with(&one), "{other}");
        }
        assert!(!BROADCAST_TOPIC.starts_with(USER_TOPIC_PREFIX));
        assert_eq!(one, b"user:1\0");
    }

    #[test]
    fn user_ids_are_checked() {
        assert!(check_user_id("42").is_ok());
        assert!(check_user_id("alice@example.com").is_ok());
        assert!(check_user_id("ünïcode").is_ok());
        for bad in ["", "a\0b", "a\nb", &"x".repeat(MAX_USER_ID_BYTES + 1)] {
            assert_eq!(check_user_id(bad), Err(WireError::InvalidUserId), "{bad:?}");
        }
    }

    #[test]
    fn bodies_round_trip() {
        let body = encode_body(Target::User("7"), &serde_json::json!({"msg": "hi"})).unwrap();
        assert_eq!(body, br#"{"name":"notify","data":{"msg":"hi"}}"#);
        let frames = vec![user_topic("7").unwrap(), body];
        let m = decode(&frames).unwrap();
        assert_eq!(m.target, Target::User("7"));
        assert_eq!(m.data.get(), r#"{"msg":"hi"}"#);
    }

    #[test]
    fn bad_messages_are_refused_with_reasons() {
        let all = BROADCAST_TOPIC.to_vec();
        let ok = br#"{"name":"notify_all","data":1}"#.to_vec();
        assert_eq!(
            decode(std::slice::from_ref(&all)).unwrap_err(),
            WireError::FrameCount(1)
        );
        assert_eq!(
            decode(&[all.clone(), ok.clone(), ok.clone()]).unwrap_err(),
            WireError::FrameCount(3)
        );
        assert_eq!(
            decode(&[b"user:1".to_vec(), ok.clone()]).unwrap_err(),
            WireError::UnknownTopic
        );
        assert!(matches!(
            decode(&[all.clone(), b"{\"name\":".to_vec()]),
            Err(WireError::BadBody(_))
        ));
        assert!(matches!(
            decode(&[all.clone(), br#"{"name":"notify_all"}"#.to_vec()]),
            Err(WireError::BadBody(_))
        ));
        assert_eq!(
            decode(&[user_topic("1").unwrap(), ok]).unwrap_err(),
            WireError::NameMismatch("notify_all".into())
        );
    }
}
