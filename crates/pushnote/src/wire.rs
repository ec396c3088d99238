//! The bus wire format: what apps publish and servers receive, byte by byte.
//!
//! Every bus message is a ZeroMQ multipart message of exactly two frames, `[topic, body]`:
//!
//! - `topic` routes. Broadcasts use [`BROADCAST_TOPIC`] (`all` and a NUL byte); a message for
//!   one user uses `user:` + the user id in UTF-8 + a NUL byte; a message on a channel uses
//!   `chan:` + the channel's name + a NUL byte. Neither ids nor names contain NUL, so ZeroMQ's
//!   prefix matching is exact: a subscription to `user:1\0` never matches `user:10\0` or
//!   `user:1:x\0`, nor `chan:a\0` `chan:ab\0`, and the prefixes keep users and channels apart.
//! - `body` is UTF-8 JSON: `{"name":"notify_all","data":…}` on the broadcast topic,
//!   `{"name":"notify","data":…}` on a user topic, `{"name":"publish","event":…,"data":…}` on
//!   a channel topic. `data` is any JSON value; it reaches the browser unchanged, and a
//!   channel's messages in a [`channel_envelope`] that names the channel and the event.
//!
//! After the NUL, publishers leave [`STAMP_ROOM`] and the forwarder writes a stamp ([`stamp_bytes`]) there,
//! numbering the messages of every topic so that a server can count the ones that never
//! reached it.
//!
//! Pure: no I/O. `docs/PROTOCOL.md` documents the same format for apps in other languages.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use pushnote_history::Position;

/// The topic of broadcasts (`notify_all`).
pub const BROADCAST_TOPIC: &[u8] = b"all\0";
/// What every user topic starts with.
pub const USER_TOPIC_PREFIX: &[u8] = b"user:";
/// The byte that ends every topic; user ids cannot contain it.
pub const TOPIC_END: u8 = 0;
/// The longest user id, in bytes.
pub const MAX_USER_ID_BYTES: usize = 256;
/// What every channel topic starts with.
pub const CHANNEL_TOPIC_PREFIX: &[u8] = b"chan:";
/// The longest channel name, in bytes.
pub const MAX_CHANNEL_BYTES: usize = 164;
/// The longest event name, in bytes.
pub const MAX_EVENT_BYTES: usize = 200;
/// What the names of private channels start with: subscribing needs a channel token.
pub const PRIVATE_CHANNEL_PREFIX: &str = "private-";

/// What starts the name of a presence channel: a private channel whose token also names the
/// member and the app's info about them (PROTOCOL §6, "Presence").
pub const PRESENCE_CHANNEL_PREFIX: &str = "presence-";
/// The bytes of a stamp ([`stamp_bytes`]) after a topic's NUL.
pub const STAMP_BYTES: usize = 8;

/// The body's `name` for a broadcast.
pub const NOTIFY_ALL: &str = "notify_all";
/// The body's `name` for a message to one user.
pub const NOTIFY: &str = "notify";
/// The body's `name` for a message on a channel.
pub const PUBLISH: &str = "publish";

/// Who a bus message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// Every connected session.
    All,
    /// Every session subscribed as this user.
    User(&'a str),
    /// Every session subscribed to this channel.
    Channel(&'a str),
}

/// Why a user id or a bus message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// User ids are 1 to 256 bytes of UTF-8 without control characters.
    #[error("invalid user id: must be 1 to {MAX_USER_ID_BYTES} bytes with no control characters")]
    InvalidUserId,
    /// Channel names are 1 to 164 bytes of ASCII letters, digits and `_-=@,.;`.
    #[error(
        "invalid channel name: must be 1 to {MAX_CHANNEL_BYTES} bytes of ASCII letters, digits \
         and _-=@,.;"
    )]
    InvalidChannel,
    /// Event names are 1 to 200 bytes of UTF-8 without control characters.
    #[error("invalid event name: must be 1 to {MAX_EVENT_BYTES} bytes with no control characters")]
    InvalidEvent,
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
    Ok(named_topic(USER_TOPIC_PREFIX, user))
}

/// `prefix`, `name` and the NUL that ends every topic.
fn named_topic(prefix: &[u8], name: &str) -> Vec<u8> {
    let mut t = Vec::with_capacity(prefix.len() + name.len() + 1);
    t.extend_from_slice(prefix);
    t.extend_from_slice(name.as_bytes());
    t.push(TOPIC_END);
    t
}

/// The name in a topic of `prefix` + name + NUL, if `topic` is one and the name is UTF-8.
fn topic_name<'t>(topic: &'t [u8], prefix: &[u8]) -> Option<&'t str> {
    topic
        .strip_prefix(prefix)?
        .strip_suffix(&[TOPIC_END])
        .and_then(|name| std::str::from_utf8(name).ok())
}

/// Checks a channel name: 1 to [`MAX_CHANNEL_BYTES`] bytes of ASCII letters, digits and
/// `_-=@,.;` (Pusher's rule, so names carry over), so never NUL nor `:`.
pub fn check_channel(channel: &str) -> Result<(), WireError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"_-=@,.;".contains(&b);
    if channel.is_empty() || channel.len() > MAX_CHANNEL_BYTES || !channel.bytes().all(allowed) {
        return Err(WireError::InvalidChannel);
    }
    Ok(())
}

/// Whether subscribing to `channel` needs a channel token (its name starts with
/// [`PRIVATE_CHANNEL_PREFIX`] or [`PRESENCE_CHANNEL_PREFIX`]).
pub fn is_private(channel: &str) -> bool {
    channel.starts_with(PRIVATE_CHANNEL_PREFIX) || is_presence(channel)
}

/// Whether `channel` is a presence channel (its name starts with [`PRESENCE_CHANNEL_PREFIX`]).
pub fn is_presence(channel: &str) -> bool {
    channel.starts_with(PRESENCE_CHANNEL_PREFIX)
}

/// Checks a presence channel's name: a valid channel name ([`check_channel`]) that starts with
/// [`PRESENCE_CHANNEL_PREFIX`].
pub fn check_presence_channel(channel: &str) -> Result<(), WireError> {
    check_channel(channel)?;
    if !is_presence(channel) {
        return Err(WireError::InvalidChannel);
    }
    Ok(())
}

/// Whether `channel` starts with [`PRIVATE_CHANNEL_PREFIX`] or [`PRESENCE_CHANNEL_PREFIX`] in
/// another case (`Private-x`, `PRESENCE-x`). Names are case sensitive, so such a channel would
/// be public; servers refuse to join it rather than let it be taken for a private one.
pub fn is_private_in_another_case(channel: &str) -> bool {
    [PRIVATE_CHANNEL_PREFIX, PRESENCE_CHANNEL_PREFIX]
        .iter()
        .any(|prefix| {
            let prefix = prefix.as_bytes();
            channel
                .as_bytes()
                .get(..prefix.len())
                .is_some_and(|start| start != prefix && start.eq_ignore_ascii_case(prefix))
        })
}

/// Checks an event name: 1 to [`MAX_EVENT_BYTES`] bytes, no control characters.
pub fn check_event(event: &str) -> Result<(), WireError> {
    if event.is_empty() || event.len() > MAX_EVENT_BYTES || event.chars().any(char::is_control) {
        return Err(WireError::InvalidEvent);
    }
    Ok(())
}

/// The topic of messages on `channel`.
pub fn channel_topic(channel: &str) -> Result<Vec<u8>, WireError> {
    check_channel(channel)?;
    Ok(named_topic(CHANNEL_TOPIC_PREFIX, channel))
}

/// The topic of `target`'s messages.
pub fn topic(target: Target<'_>) -> Result<Vec<u8>, WireError> {
    match target {
        Target::All => Ok(BROADCAST_TOPIC.to_vec()),
        Target::User(u) => user_topic(u),
        Target::Channel(c) => channel_topic(c),
    }
}

/// A message's stamp: its [`Position`], carried after its topic's NUL as 4 bytes of `epoch`
/// and 4 of `offset`, both big-endian.
///
/// A forwarder numbers the messages of each topic 1, 2, 3… within an epoch (after 2³² − 1
/// comes 0), so a server that sees an offset skip knows how many messages of that topic it
/// never received: ZeroMQ dropped them past a high-water mark, or while the connection was
/// down. A new epoch (a restarted forwarder, or one that started its numbering again) starts
/// every count again. ZeroMQ's prefix matching ignores the stamp: a subscription to `user:1\0`
/// matches `user:1\0` with any stamp after it.
///
/// Publishers send [`STAMP_ROOM`] where the stamp goes, and the forwarder writes its stamp
/// over it: then it sends on as many bytes as it receives. That matters under load, because
/// ZeroMQ's I/O thread reads and writes at most 8 KiB each per turn: a forwarder whose output
/// is larger than its input falls behind on its output, and past `--hwm` drops messages,
/// where one whose output is as large as its input slows its input instead. Epoch 0 is never a
/// forwarder's, so the room is no stamp.
pub fn stamp_bytes(position: Position) -> [u8; STAMP_BYTES] {
    (u64::from(position.epoch) << 32 | u64::from(position.offset)).to_be_bytes()
}

/// Reads the [`stamp_bytes`] that follow a topic's NUL.
pub fn read_stamp(bytes: [u8; STAMP_BYTES]) -> Position {
    let v = u64::from_be_bytes(bytes);
    Position {
        epoch: (v >> 32) as u32,
        offset: v as u32,
    }
}

/// What a publisher sends after a topic's NUL: room for the forwarder's stamp ([`stamp_bytes`]).
pub const STAMP_ROOM: [u8; STAMP_BYTES] = [0; STAMP_BYTES];

/// The topic of `target` as a publisher sends it: followed by [`STAMP_ROOM`].
pub fn topic_with_stamp_room(target: Target<'_>) -> Result<Vec<u8>, WireError> {
    let mut t = topic(target)?;
    t.extend_from_slice(&STAMP_ROOM);
    Ok(t)
}

/// The length of `topic` up to and including its NUL, without what follows; `None` without a
/// NUL.
pub fn topic_len(topic: &[u8]) -> Option<usize> {
    topic.iter().position(|&b| b == TOPIC_END).map(|i| i + 1)
}

/// Splits a topic as received into the topic itself (up to and including its NUL) and the
/// forwarder's stamp, if one follows (not [`STAMP_ROOM`]). Anything else after the NUL is an
/// unknown topic.
pub fn split_stamp(topic: &[u8]) -> Result<(&[u8], Option<Position>), WireError> {
    let len = topic_len(topic).ok_or(WireError::UnknownTopic)?;
    let (topic, rest) = topic.split_at(len);
    if rest.is_empty() {
        return Ok((topic, None));
    }
    let stamp = rest.try_into().map_err(|_| WireError::UnknownTopic)?;
    let stamp = read_stamp(stamp);
    Ok((topic, (stamp.epoch != 0).then_some(stamp)))
}

/// Reads a topic back into its target.
pub fn parse_topic(topic: &[u8]) -> Result<Target<'_>, WireError> {
    if topic == BROADCAST_TOPIC {
        return Ok(Target::All);
    }
    if topic.starts_with(CHANNEL_TOPIC_PREFIX) {
        let channel = topic_name(topic, CHANNEL_TOPIC_PREFIX).ok_or(WireError::UnknownTopic)?;
        check_channel(channel)?;
        return Ok(Target::Channel(channel));
    }
    let user = topic_name(topic, USER_TOPIC_PREFIX).ok_or(WireError::UnknownTopic)?;
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
        Target::Channel(_) => {
            return Err(serde::ser::Error::custom(
                "a channel's message carries an event: use encode_channel_body",
            ))
        }
    };
    serde_json::to_vec(&BodyOut { name, data })
}

#[derive(Serialize)]
struct ChannelBodyOut<'a, T: ?Sized> {
    name: &'a str,
    event: &'a str,
    data: &'a T,
}

/// Why a channel message's body could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The event name breaks its rule.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The data cannot be serialized as JSON.
    #[error("data cannot be serialized as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Encodes the body of a message on a channel: `event` (checked) and `data`.
pub fn encode_channel_body<T: Serialize + ?Sized>(
    event: &str,
    data: &T,
) -> Result<Vec<u8>, BodyError> {
    check_event(event)?;
    Ok(serde_json::to_vec(&ChannelBodyOut {
        name: PUBLISH,
        event,
        data,
    })?)
}

/// What a page receives for a message on a channel: `{"channel":…,"event":…,"data":…}`, with
/// `data` as it was published.
#[derive(Serialize, Deserialize)]
pub struct ChannelEnvelope<'a> {
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    #[serde(borrow)]
    pub event: Cow<'a, str>,
    #[serde(borrow)]
    pub data: &'a RawValue,
}

/// A channel message's envelope ([`ChannelEnvelope`]), as JSON text. Made once per message and
/// shared by its sessions.
pub fn channel_envelope(channel: &str, event: &str, data: &RawValue) -> String {
    // Strings and a raw value always serialize.
    serde_json::to_string(&ChannelEnvelope {
        channel: Cow::Borrowed(channel),
        event: Cow::Borrowed(event),
        data,
    })
    .unwrap_or_default()
}

/// The envelope [`channel_envelope`] made (as JSON text, white space or escapes apart); `None`
/// for any other text.
pub fn read_channel_envelope(text: &str) -> Option<ChannelEnvelope<'_>> {
    serde_json::from_str(text).ok()
}

#[derive(Deserialize)]
struct BodyIn<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    event: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// A bus message as a server reads it; `data` borrows the received bytes.
#[derive(Debug)]
pub struct BusMessage<'a> {
    /// Who it is for.
    pub target: Target<'a>,
    /// The topic without the stamp.
    pub topic: &'a [u8],
    /// The forwarder's number on it; `None` when an app published it to the server directly.
    pub stamp: Option<Position>,
    /// The event of a channel's message (`None` for the others).
    pub event: Option<std::borrow::Cow<'a, str>>,
    /// The published data, as the JSON text it was sent as.
    pub data: &'a RawValue,
}

/// Decodes a received multipart message, checking every rule of the format.
pub fn decode<'a>(frames: &'a [Vec<u8>]) -> Result<BusMessage<'a>, WireError> {
    let [topic, body] = frames else {
        return Err(WireError::FrameCount(frames.len()));
    };
    let (topic, stamp) = split_stamp(topic)?;
    let target = parse_topic(topic)?;
    let body: BodyIn<'a> =
        serde_json::from_slice(body).map_err(|e| WireError::BadBody(e.to_string()))?;
    let expected = match target {
        Target::All => NOTIFY_ALL,
        Target::User(_) => NOTIFY,
        Target::Channel(_) => PUBLISH,
    };
    if body.name != expected {
        return Err(WireError::NameMismatch(body.name.into_owned()));
    }
    let event = match target {
        Target::Channel(_) => {
            let event = body.event.ok_or(WireError::InvalidEvent)?;
            check_event(&event)?;
            Some(event)
        }
        _ => None,
    };
    Ok(BusMessage {
        target,
        topic,
        stamp,
        event,
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
    fn channels_have_a_namespace_of_their_own_and_exact_topics() {
        let a = channel_topic("a").unwrap();
        assert_eq!(a, b"chan:a\0");
        assert!(!channel_topic("ab").unwrap().starts_with(&a));
        assert!(!user_topic("a").unwrap().starts_with(&a));
        assert!(!a.starts_with(&user_topic("a").unwrap()));
        assert_ne!(channel_topic("all").unwrap(), BROADCAST_TOPIC);
        assert_eq!(parse_topic(&a).unwrap(), Target::Channel("a"));
        assert_eq!(parse_topic(b"chan:a\0").unwrap(), Target::Channel("a"));
        assert_eq!(parse_topic(b"chan:a b\0"), Err(WireError::InvalidChannel));
        assert_eq!(parse_topic(b"chan:a"), Err(WireError::UnknownTopic));
    }

    #[test]
    fn channel_and_event_names_are_checked() {
        for good in [
            "news",
            "private-team-7",
            "bucket-collection-record",
            "a_b=c@d,e.f;g",
            &"x".repeat(MAX_CHANNEL_BYTES),
        ] {
            assert!(check_channel(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "a b",
            "a:b",
            "a\0",
            "ünï",
            "a/b",
            &"x".repeat(MAX_CHANNEL_BYTES + 1),
        ] {
            assert_eq!(
                check_channel(bad),
                Err(WireError::InvalidChannel),
                "{bad:?}"
            );
        }
        assert!(is_private("private-x") && !is_private("x-private-"));
        assert!(!is_private("Private-x") && is_private_in_another_case("Private-x"));
        assert!(is_private("presence-x") && is_presence("presence-x"));
        assert!(!is_private("Presence-x") && is_private_in_another_case("PRESENCE-x"));
        assert!(is_private_in_another_case("PRIVATE-"));
        assert!(!is_private_in_another_case("private-x") && !is_private_in_another_case("priv"));
        assert!(check_event("live-page-update").is_ok());
        assert!(check_event("ünïcode event").is_ok());
        for bad in ["", "a\nb", &"e".repeat(MAX_EVENT_BYTES + 1)] {
            assert_eq!(check_event(bad), Err(WireError::InvalidEvent), "{bad:?}");
        }
    }

    #[test]
    fn channel_bodies_carry_their_event_and_pages_get_an_envelope() {
        let body = encode_channel_body("create", &serde_json::json!({"id": 1})).unwrap();
        assert_eq!(
            body,
            br#"{"name":"publish","event":"create","data":{"id":1}}"#
        );
        let frames = vec![channel_topic("records").unwrap(), body];
        let m = decode(&frames).unwrap();
        assert_eq!(m.target, Target::Channel("records"));
        assert_eq!(m.event.as_deref(), Some("create"));
        assert_eq!(
            channel_envelope("records", "create", m.data),
            r#"{"channel":"records","event":"create","data":{"id":1}}"#
        );
        assert_eq!(
            channel_envelope("c", "say \"hi\"\u{2028}", m.data),
            "{\"channel\":\"c\",\"event\":\"say \\\"hi\\\"\u{2028}\",\"data\":{\"id\":1}}"
        );
        let text = channel_envelope("c", "say \"hi\"\u{2028}", m.data);
        let read = read_channel_envelope(&text).unwrap();
        assert_eq!(
            (&*read.channel, &*read.event, read.data.get()),
            ("c", "say \"hi\"\u{2028}", r#"{"id":1}"#)
        );
        assert!(read_channel_envelope(r#"{"channel":"c"}"#).is_none());
        assert!(encode_channel_body("", &1).is_err());
        assert!(encode_body(Target::Channel("c"), &1).is_err());
        let topic = channel_topic("c").unwrap();
        for (body, error) in [
            (
                &br#"{"name":"publish","data":1}"#[..],
                WireError::InvalidEvent,
            ),
            (
                br#"{"name":"publish","event":"","data":1}"#,
                WireError::InvalidEvent,
            ),
            (
                br#"{"name":"notify","event":"e","data":1}"#,
                WireError::NameMismatch("notify".into()),
            ),
        ] {
            let frames = [topic.clone(), body.to_vec()];
            assert_eq!(decode(&frames).unwrap_err(), error);
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
    fn a_stamp_after_the_nul_is_read_and_anything_else_refused() {
        let stamp = Position {
            epoch: 0x0102_0304,
            offset: 9,
        };
        let bytes = stamp_bytes(stamp);
        assert_eq!(bytes, [1, 2, 3, 4, 0, 0, 0, 9]);
        assert_eq!(read_stamp(bytes), stamp);
        let high = Position {
            epoch: 0xfedc_ba98,
            offset: 0x8765_4321,
        };
        assert_eq!(
            stamp_bytes(high),
            [0xfe, 0xdc, 0xba, 0x98, 0x87, 0x65, 0x43, 0x21]
        );
        assert_eq!(read_stamp(stamp_bytes(high)), high);
        let body = br#"{"name":"notify","data":1}"#.to_vec();
        let stamped = [b"user:7\0".as_slice(), &bytes].concat();
        let frames = [stamped, body.clone()];
        let m = decode(&frames).unwrap();
        assert_eq!(
            (m.target, m.topic, m.stamp),
            (Target::User("7"), &b"user:7\0"[..], Some(stamp))
        );
        let plain = [user_topic("7").unwrap(), body.clone()];
        assert_eq!(decode(&plain).unwrap().stamp, None);
        let room = topic_with_stamp_room(Target::User("7")).unwrap();
        assert_eq!(room, b"user:7\0\0\0\0\0\0\0\0\0");
        let frames = [room, body.clone()];
        let m = decode(&frames).unwrap();
        assert_eq!((m.target, m.stamp), (Target::User("7"), None));
        for tail in [&bytes[..7], &[bytes.as_slice(), b"x"].concat()[..], b"x"] {
            let topic = [b"user:7\0".as_slice(), tail].concat();
            let frames = [topic, body.clone()];
            assert_eq!(decode(&frames).unwrap_err(), WireError::UnknownTopic);
        }
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
