//! The client protocol: what browsers send to pushnote-server and what it answers.
//!
//! Clients send JSON text `{"name": …, "data": …}` (pushnote's `emit(name, data)`):
//! - `{"name":"subscribe","data":{"token":"…"}}` ties the session to the token's user;
//!   answered `{"name":"pushnote:subscribed","data":{"user":"…"}}`.
//! - `{"name":"unsubscribe"}` unties it; answered `{"name":"pushnote:unsubscribed","data":{}}`.
//! - `{"name":"subscribe","data":{"channel":"…"}}` (with `"token"` for a private channel)
//!   joins a channel; answered `{"name":"pushnote:subscribed","data":{"channel":"…"}}`.
//! - `{"name":"unsubscribe","data":{"channel":"…"}}` leaves it; answered
//!   `{"name":"pushnote:unsubscribed","data":{"channel":"…"}}`.
//! - `{"name":"positions","data":{"since":{"epoch":…,"offset":…}}}` (`since` optional) makes
//!   every message arrive with its topic's position ([`positioned`]), after what the session
//!   missed of the broadcasts since `since`; answered `{"name":"pushnote:positions","data":
//!   {"position":…,"recovered":…}}`. A subscribe's `data` may then carry `"since"` too.
//!
//! Anything refused is answered `{"name":"pushnote:error","data":{"code":…,"message":…}}` with
//! one of the [`ErrorCode`]s (and `"channel"` when the request named one), and the session
//! stays open.
//!
//! Answers go only to a session that has turned replies on ([`read`]): with `"replies": true`
//! in a request's `data`, or with a request the original pushnote never had (`positions`, a
//! channel's, one with `since`). A page written for the original sends only its subscribe
//! with a token and takes every message for data, so it receives data only; the handler
//! counts and logs what it was not told. Pure: parsing and encoding only.

use pushnote_history::history::NotRecovered;
use pushnote_history::Position;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use sockjs::Message;

/// A request from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Receive the messages of the token's user too.
    Subscribe {
        /// The token, as the app minted it.
        token: String,
        /// The position of the user's last message the page saw, for what it missed since.
        since: Option<Position>,
    },
    /// Stop receiving a user's messages; broadcasts and channels only.
    Unsubscribe,
    /// Receive a channel's messages.
    Join {
        /// The channel, as the client named it (checked by the handler).
        channel: String,
        /// The channel token, for a private channel.
        token: Option<String>,
        /// The position of the channel's last message the page saw.
        since: Option<Position>,
    },
    /// Stop receiving a channel's messages.
    Leave {
        /// The channel, as the client named it.
        channel: String,
    },
    /// Receive every message with its position, after what was missed of the broadcasts.
    Positions {
        /// The position of the last broadcast the page saw.
        since: Option<Position>,
    },
}

/// The `code` of an error reply; each is documented in `docs/PROTOCOL.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The message is not a JSON object with a string `name`.
    BadMessage,
    /// `name` is not a request this server knows.
    UnknownRequest,
    /// A known request with missing or mistyped `data`.
    BadRequest,
    /// The server has no secret, so it cannot check tokens.
    NoSecret,
    /// The token is malformed, forged, or signed with another secret or salt.
    InvalidToken,
    /// The token is genuine but older than the server's maximum age.
    TokenExpired,
    /// The token's user already has the most sessions this server allows per user.
    TooManySessions,
    /// The session made more subscribe requests than the server allows; it is closed.
    TooManyAttempts,
    /// The channel name breaks its rule.
    InvalidChannel,
    /// A private channel without a token, or with a token for another channel or user.
    Forbidden,
    /// The session is in the most channels the server allows.
    TooManyChannels,
    /// The channel is new on this server, which holds the most channels it allows.
    ChannelsFull,
    /// The session sent channel requests faster than the server allows; try again later.
    TooManyRequests,
    /// Positions were asked of a server that keeps no history.
    NoHistory,
    /// A new member's join of a presence channel that has the most members allowed.
    PresenceFull,
}

impl ErrorCode {
    /// Every code, in the order they are declared (`code as usize` is its index here).
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::BadMessage,
        ErrorCode::UnknownRequest,
        ErrorCode::BadRequest,
        ErrorCode::NoSecret,
        ErrorCode::InvalidToken,
        ErrorCode::TokenExpired,
        ErrorCode::TooManySessions,
        ErrorCode::TooManyAttempts,
        ErrorCode::InvalidChannel,
        ErrorCode::Forbidden,
        ErrorCode::TooManyChannels,
        ErrorCode::ChannelsFull,
        ErrorCode::TooManyRequests,
        ErrorCode::NoHistory,
        ErrorCode::PresenceFull,
    ];

    /// The code as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::UnknownRequest => "unknown_request",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NoSecret => "no_secret",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TooManySessions => "too_many_sessions",
            ErrorCode::TooManyAttempts => "too_many_attempts",
            ErrorCode::InvalidChannel => "invalid_channel",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooManyChannels => "too_many_channels",
            ErrorCode::ChannelsFull => "channels_full",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::NoHistory => "no_history",
            ErrorCode::PresenceFull => "presence_full",
        }
    }
}

/// The close code of a session opened while the server holds its maximum of sessions.
pub const SERVER_FULL: sockjs::CloseCode = sockjs::CloseCode {
    code: 3003,
    reason: "Server full",
};

/// The close code of a session that made more subscribe requests than allowed.
pub const TOO_MANY_ATTEMPTS: sockjs::CloseCode = sockjs::CloseCode {
    code: 3011,
    reason: "Too many subscribe attempts",
};

/// A refused client message: the code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// The channel the refused request named, if any.
    pub channel: Option<String>,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            channel: None,
        }
    }

    /// The same refusal, naming `channel` (cut to the longest valid name, so that a client
    /// cannot make the reply large).
    pub fn on(mut self, channel: &str) -> Refusal {
        self.channel = Some(truncate(channel, pushnote::wire::MAX_CHANNEL_BYTES).to_owned());
        self
    }
}

/// The envelope of a request; its `data` is read apart, so that a value this server cannot
/// read there (a number out of range, say) is the request's fault, not the envelope's.
#[derive(Deserialize)]
struct Envelope<'a> {
    name: String,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// What a `since` must be, for the refusal of one that is not.
const SINCE_RULE: &str = "\"since\" must be a position as the server gave it: \
{\"epoch\": E, \"offset\": N}, two whole numbers from 0 to 4294967295";

/// Parses what a client sent.
pub fn parse(text: &str) -> Result<Request, Refusal> {
    read(text).0
}

/// Parses what a client sent, and tells whether it turns its session's replies on
/// ([`turns_replies_on`]), refused or not.
pub fn read(text: &str) -> (Result<Request, Refusal>, bool) {
    let mut replies = false;
    let request = parse_noting_replies(text, &mut replies);
    (request, replies)
}

/// Whether a client message turns its session's replies on: it asks for them (`"replies":
/// true` in its `data`), or it is a request the original pushnote never had, which only pages
/// written for this server send: `positions` (even with `data` this server cannot read), or
/// one whose `data` has `"channel"` or `"since"`. A page that sends only the original's
/// `subscribe` with a token receives nothing but its data.
fn turns_replies_on(name: &str, data: Option<&serde_json::Value>) -> bool {
    name == "positions"
        || data.is_some_and(|data| {
            data.get("replies") == Some(&serde_json::Value::Bool(true))
                || data.get("channel").is_some()
                || data.get("since").is_some()
        })
}

fn parse_noting_replies(text: &str, replies: &mut bool) -> Result<Request, Refusal> {
    let env: Envelope = serde_json::from_str(text).map_err(|e| {
        Refusal::new(
            ErrorCode::BadMessage,
            format!("expected JSON {{\"name\": …, \"data\": …}}: {e}"),
        )
    })?;
    *replies = turns_replies_on(&env.name, None);
    let data: serde_json::Value = match env.data {
        None => serde_json::Value::Null,
        Some(raw) => serde_json::from_str(raw.get()).map_err(|e| {
            Refusal::new(
                ErrorCode::BadRequest,
                format!("\"data\" holds a value this server cannot read ({e}); {SINCE_RULE}"),
            )
        })?,
    };
    let name = env.name;
    *replies = turns_replies_on(&name, Some(&data));
    let channel = string_field(&data, "channel", "the channel's name, a string")?;
    let token = string_field(&data, "token", "the token string")?;
    let since = match data.get("since") {
        None | Some(serde_json::Value::Null) => None,
        Some(p) => {
            Some(position(p).ok_or_else(|| Refusal::new(ErrorCode::BadRequest, SINCE_RULE))?)
        }
    };
    match (name.as_str(), channel) {
        ("subscribe", Some(channel)) => Ok(Request::Join {
            channel,
            token,
            since,
        }),
        ("subscribe", None) => match token {
            Some(token) => Ok(Request::Subscribe { token, since }),
            None => Err(Refusal::new(
                ErrorCode::BadRequest,
                "subscribe needs data {\"token\": \"…\"} with the user's token, or \
                 {\"channel\": \"…\"} with a channel's name",
            )),
        },
        ("unsubscribe", Some(channel)) => Ok(Request::Leave { channel }),
        ("unsubscribe", None) => Ok(Request::Unsubscribe),
        ("positions", _) => Ok(Request::Positions { since }),
        (other, _) => Err(Refusal::new(
            ErrorCode::UnknownRequest,
            format!(
                "unknown request {:?}: this server knows subscribe, unsubscribe and positions",
                truncate(other, 64)
            ),
        )),
    }
}

/// `data[key]` if it is a string, `None` if it is absent; refused otherwise (it must be
/// `what`).
fn string_field(
    data: &serde_json::Value,
    key: &str,
    what: &str,
) -> Result<Option<String>, Refusal> {
    match data.get(key) {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Refusal::new(
            ErrorCode::BadRequest,
            format!("\"{key}\" must be {what}"),
        )),
    }
}

/// A position as a page sends it back: `{"epoch": E, "offset": N}`.
fn position(value: &serde_json::Value) -> Option<Position> {
    let number = |key| {
        value
            .get(key)
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    let object = value.as_object()?;
    if object.len() != 2 {
        return None;
    }
    Some(Position {
        epoch: number("epoch")?,
        offset: number("offset")?,
    })
}

fn position_json(p: Position) -> serde_json::Value {
    json!({"epoch": p.epoch, "offset": p.offset})
}

/// What a reply says of a topic's position: nothing without positions; the position, and
/// whether what was missed since the one given was recovered (and why not), with them.
fn with_outcome(mut data: serde_json::Value, outcome: Option<Outcome>) -> serde_json::Value {
    let Some(outcome) = outcome else {
        return data;
    };
    data["position"] = position_json(outcome.position);
    if let Some(recovered) = outcome.recovered {
        data["recovered"] = json!(recovered.is_ok());
        if let Err(why) = recovered {
            data["reason"] = json!(match why {
                Why::Epoch => "epoch",
                Why::Future => "future",
                Why::Evicted => "evicted",
                Why::Unavailable => "unavailable",
                Why::Busy => "busy",
            });
        }
    }
    data
}

/// Where a session stands in a topic after a request, and whether it was brought up to date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The position of the topic's last message before the reply: every later one comes
    /// after the reply.
    pub position: Position,
    /// Whether what the session missed since the position it gave was given to it, or why
    /// not (`None` when it gave none).
    pub recovered: Option<Result<(), Why>>,
}

/// Why a session was not brought up to date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// The history of the position's epoch was lost (a restart).
    Epoch,
    /// The position is past the topic's last message.
    Future,
    /// The history no longer reaches back to the position.
    Evicted,
    /// The forwarder did not answer in time (it is down or restarting); the position is the
    /// last this server saw of the topic, or epoch 0 when it saw none.
    Unavailable,
    /// What the session missed would pass what recovery may take for now: this server's
    /// answers in flight (`--recovery-memory`) or what the forwarder may replay
    /// (`pushnote-mq --recovery-rate`). Nothing was given.
    Busy,
}

impl From<NotRecovered> for Why {
    fn from(why: NotRecovered) -> Why {
        match why {
            NotRecovered::Epoch => Why::Epoch,
            NotRecovered::Future => Why::Future,
            NotRecovered::Evicted => Why::Evicted,
        }
    }
}

/// The kind of topic a positioned message is of, as pages read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    Broadcast,
    User,
    Channel { channel: &'a str, event: &'a str },
}

/// A message with its position, as a session with positions receives it:
/// `{"kind":"broadcast"|"user","position":P,"data":DATA}`, or for a channel
/// `{"kind":"channel","channel":C,"event":E,"position":P,"data":DATA}`.
pub fn positioned(kind: Kind<'_>, position: Position, data: &RawValue) -> String {
    #[derive(Serialize)]
    struct At {
        epoch: u32,
        offset: u32,
    }
    #[derive(Serialize)]
    struct Positioned<'a> {
        kind: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        event: Option<&'a str>,
        position: At,
        data: &'a RawValue,
    }
    let (kind, channel, event) = match kind {
        Kind::Broadcast => ("broadcast", None, None),
        Kind::User => ("user", None, None),
        Kind::Channel { channel, event } => ("channel", Some(channel), Some(event)),
    };
    // Strings, numbers and a raw value always serialize.
    serde_json::to_string(&Positioned {
        kind,
        channel,
        event,
        position: At {
            epoch: position.epoch,
            offset: position.offset,
        },
        data,
    })
    .unwrap_or_default()
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn reply(value: serde_json::Value) -> Message {
    Message::json(&value.to_string())
}

/// The answer to a successful subscribe (with the user's position, with positions on).
pub fn subscribed(user: &str, outcome: Option<Outcome>) -> Message {
    let data = with_outcome(json!({"user": user}), outcome);
    reply(json!({"name": "pushnote:subscribed", "data": data}))
}

/// The answer to a `positions` request: the broadcasts' position.
pub fn positions(outcome: Outcome) -> Message {
    let data = with_outcome(json!({}), Some(outcome));
    reply(json!({"name": "pushnote:positions", "data": data}))
}

/// The answer to an unsubscribe.
pub fn unsubscribed() -> Message {
    reply(json!({"name": "pushnote:unsubscribed", "data": {}}))
}

/// The answer to a successful channel subscribe (with the channel's position, with
/// positions on).
pub fn joined(channel: &str, outcome: Option<Outcome>) -> Message {
    let data = with_outcome(json!({"channel": channel}), outcome);
    reply(json!({"name": "pushnote:subscribed", "data": data}))
}

/// The answer to a successful join of a presence channel: as [`joined`]'s, with the member
/// the session joined as (`me`, a member's JSON object) and the channel's members (`members`,
/// a JSON array of them).
pub fn joined_presence(
    channel: &str,
    outcome: Option<Outcome>,
    me: &str,
    members: &str,
) -> Message {
    let data = with_outcome(json!({"channel": channel}), outcome).to_string();
    let data = data.strip_suffix('}').unwrap_or(&data);
    Message::json(&format!(
        "{{\"name\":\"pushnote:subscribed\",\"data\":{data},\"me\":{me},\"members\":{members}}}}}"
    ))
}

/// What a presence channel's sessions are told of its members' comings and goings: `added`
/// a JSON array of members' objects, `removed` their user ids.
pub fn presence_changed(channel: &str, added: &str, removed: &[impl AsRef<str>]) -> Message {
    let removed: Vec<&str> = removed.iter().map(AsRef::as_ref).collect();
    let head = json!({"channel": channel}).to_string();
    let head = head.strip_suffix('}').unwrap_or(&head);
    Message::json(&format!(
        "{{\"name\":\"pushnote:presence\",\"data\":{head},\"added\":{added},\"removed\":{}}}}}",
        json!(removed)
    ))
}

/// The answer to a channel unsubscribe, and what a session is told when it leaves a channel
/// otherwise (its user-bound grant went with its user).
pub fn left(channel: &str) -> Message {
    reply(json!({"name": "pushnote:unsubscribed", "data": {"channel": channel}}))
}

/// The answer to a refused message.
pub fn error(refusal: &Refusal) -> Message {
    let mut data = json!({"code": refusal.code.as_str(), "message": refusal.message});
    if let Some(channel) = &refusal.channel {
        data["channel"] = json!(channel);
    }
    reply(json!({"name": "pushnote:error", "data": data}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_and_unsubscribe_parse() {
        assert_eq!(
            parse(r#"{"name":"subscribe","data":{"token":"t"}}"#),
            Ok(Request::Subscribe {
                token: "t".into(),
                since: None
            })
        );
        assert_eq!(parse(r#"{"name":"unsubscribe"}"#), Ok(Request::Unsubscribe));
    }

    #[test]
    fn channel_requests_parse_with_and_without_a_token() {
        assert_eq!(
            parse(r#"{"name":"subscribe","data":{"channel":"news"}}"#),
            Ok(Request::Join {
                channel: "news".into(),
                token: None,
                since: None
            })
        );
        assert_eq!(
            parse(r#"{"name":"subscribe","data":{"channel":"private-a","token":"t"}}"#),
            Ok(Request::Join {
                channel: "private-a".into(),
                token: Some("t".into()),
                since: None
            })
        );
        assert_eq!(
            parse(r#"{"name":"unsubscribe","data":{"channel":"news"}}"#),
            Ok(Request::Leave {
                channel: "news".into()
            })
        );
        for bad in [
            r#"{"name":"subscribe","data":{"channel":5}}"#,
            r#"{"name":"subscribe","data":{"channel":"c","token":[]}}"#,
            r#"{"name":"unsubscribe","data":{"channel":null}}"#,
        ] {
            assert_eq!(parse(bad).unwrap_err().code, ErrorCode::BadRequest, "{bad}");
        }
    }

    #[test]
    fn channel_replies_name_the_channel_and_refusals_cut_it() {
        assert_eq!(
            joined("news", None).as_json(),
            r#"{"data":{"channel":"news"},"name":"pushnote:subscribed"}"#
        );
        assert_eq!(
            left("news").as_json(),
            r#"{"data":{"channel":"news"},"name":"pushnote:unsubscribed"}"#
        );
        let long = "x".repeat(10_000);
        let e = error(&Refusal::new(ErrorCode::InvalidChannel, "bad").on(&long));
        let v: serde_json::Value = serde_json::from_str(e.as_json()).unwrap();
        assert_eq!(v["data"]["code"], "invalid_channel");
        assert_eq!(
            v["data"]["channel"].as_str().unwrap().len(),
            pushnote::wire::MAX_CHANNEL_BYTES
        );
    }

    #[test]
    fn every_malformed_message_gets_a_code() {
        let cases = [
            ("", ErrorCode::BadMessage),
            ("not json", ErrorCode::BadMessage),
            ("[1,2]", ErrorCode::BadMessage),
            (r#"{"data":{}}"#, ErrorCode::BadMessage),
            (r#"{"name":5}"#, ErrorCode::BadMessage),
            (r#"{"name":"subscribe"}"#, ErrorCode::BadRequest),
            (
                r#"{"name":"subscribe","data":{"token":7}}"#,
                ErrorCode::BadRequest,
            ),
            (r#"{"name":"subscribe","data":"t"}"#, ErrorCode::BadRequest),
            (r#"{"name":"publish","data":{}}"#, ErrorCode::UnknownRequest),
        ];
        for (text, code) in cases {
            assert_eq!(parse(text).unwrap_err().code, code, "{text:?}");
        }
    }

    #[test]
    fn replies_are_json_values() {
        assert_eq!(
            subscribed("42", None).as_json(),
            r#"{"data":{"user":"42"},"name":"pushnote:subscribed"}"#
        );
        let e = error(&Refusal::new(ErrorCode::InvalidToken, "bad"));
        let v: serde_json::Value = serde_json::from_str(e.as_json()).unwrap();
        assert_eq!(v["name"], "pushnote:error");
        assert_eq!(v["data"]["code"], "invalid_token");
    }

    #[test]
    fn all_lists_every_code_once_in_order() {
        use ErrorCode::*;
        // Exhaustive: a code added to the enum does not compile here until it is listed.
        let index = |code: ErrorCode| match code {
            BadMessage => 0,
            UnknownRequest => 1,
            BadRequest => 2,
            NoSecret => 3,
            InvalidToken => 4,
            TokenExpired => 5,
            TooManySessions => 6,
            TooManyAttempts => 7,
            InvalidChannel => 8,
            Forbidden => 9,
            TooManyChannels => 10,
            ChannelsFull => 11,
            TooManyRequests => 12,
            NoHistory => 13,
            PresenceFull => 14,
        };
        for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!((index(code), code as usize), (i, i), "{code:?}");
        }
    }

    #[test]
    fn the_originals_subscribe_alone_leaves_replies_off() {
        let on = |text: &str| read(text).1;
        assert!(!on(r#"{"name":"subscribe","data":{"token":"t"}}"#));
        assert!(!on(
            r#"{"name":"subscribe","data":{"token":"t","replies":false}}"#
        ));
        assert!(!on(r#"{"name":"subscribe","data":{"token":7}}"#));
        assert!(!on(r#"{"name":"unsubscribe"}"#));
        assert!(!on(r#"{"name":"publish","data":{}}"#));
        assert!(!on("not json"));
        // Asked for, even in a request refused; or a request the original never had.
        for text in [
            r#"{"name":"subscribe","data":{"token":"t","replies":true}}"#,
            r#"{"name":"subscribe","data":{"token":7,"replies":true}}"#,
            r#"{"name":"unsubscribe","data":{"replies":true}}"#,
            r#"{"name":"publish","data":{"replies":true}}"#,
            r#"{"name":"positions"}"#,
            r#"{"name":"positions","data":{"since":{"epoch":1e400,"offset":1}}}"#,
            r#"{"name":"subscribe","data":{"channel":"news"}}"#,
            r#"{"name":"subscribe","data":{"channel":5}}"#,
            r#"{"name":"unsubscribe","data":{"channel":"news"}}"#,
            r#"{"name":"subscribe","data":{"token":"t","since":null}}"#,
        ] {
            assert!(on(text), "{text}");
        }
    }

    #[test]
    fn unknown_names_are_truncated_in_replies() {
        let long = format!(r#"{{"name":"{}"}}"#, "x".repeat(10_000));
        assert!(parse(&long).unwrap_err().message.len() < 200);
    }

    #[test]
    fn positions_and_since_parse_and_bad_positions_are_refused() {
        let at = Position {
            epoch: 7,
            offset: 3,
        };
        assert_eq!(
            parse(r#"{"name":"positions"}"#),
            Ok(Request::Positions { since: None })
        );
        assert_eq!(
            parse(r#"{"name":"positions","data":{"since":{"epoch":7,"offset":3}}}"#),
            Ok(Request::Positions { since: Some(at) })
        );
        assert_eq!(
            parse(r#"{"name":"subscribe","data":{"token":"t","since":{"offset":3,"epoch":7}}}"#),
            Ok(Request::Subscribe {
                token: "t".into(),
                since: Some(at)
            })
        );
        for bad in [
            r#"{"epoch":7}"#,
            r#"{"epoch":7,"offset":-1}"#,
            r#"{"epoch":7,"offset":4294967296}"#,
            r#"{"epoch":7,"offset":1.5}"#,
            r#"{"epoch":"7","offset":1}"#,
            r#"{"epoch":7,"offset":1,"more":1}"#,
            r#"[7,1]"#,
            r#""7:1""#,
            format!(r#"{{"epoch":{},"offset":1}}"#, "9".repeat(400)).as_str(),
            r#"{"epoch":1e400,"offset":1}"#,
        ] {
            let text = format!(r#"{{"name":"positions","data":{{"since":{bad}}}}}"#);
            assert_eq!(
                parse(&text).map_err(|r| r.code),
                Err(ErrorCode::BadRequest),
                "{bad}"
            );
        }
    }

    #[test]
    fn positioned_messages_are_these_exact_bytes() {
        let at = Position {
            epoch: 4_294_967_295,
            offset: 12,
        };
        let data = RawValue::from_string(r#"{"a": [1, 2], "b":"\u00e9"}"#.into()).unwrap();
        assert_eq!(
            positioned(Kind::Broadcast, at, &data),
            r#"{"kind":"broadcast","position":{"epoch":4294967295,"offset":12},"data":{"a": [1, 2], "b":"\u00e9"}}"#
        );
        assert_eq!(
            positioned(Kind::User, at, &data),
            r#"{"kind":"user","position":{"epoch":4294967295,"offset":12},"data":{"a": [1, 2], "b":"\u00e9"}}"#
        );
        let channel = Kind::Channel {
            channel: "n\"e\\w/s\u{1}é\u{2028}",
            event: "say \"hi\"\n\t</script>",
        };
        let number = RawValue::from_string("3.50".into()).unwrap();
        assert_eq!(
            positioned(channel, at, &number),
            concat!(
                r#"{"kind":"channel","channel":"n\"e\\w/s\u0001é"#,
                "\u{2028}", // as it is: JSON needs no escape for it
                r#"","event":"say \"hi\"\n\t</script>","position":{"epoch":4294967295,"offset":12},"data":3.50}"#
            )
        );
    }

    #[test]
    fn positioned_messages_carry_kind_position_and_data() {
        let at = Position {
            epoch: 7,
            offset: 3,
        };
        let data = RawValue::from_string(r#"{"a":[1,2]}"#.into()).unwrap();
        let parsed = |s: String| serde_json::from_str::<serde_json::Value>(&s).unwrap();
        assert_eq!(
            parsed(positioned(Kind::Broadcast, at, &data)),
            json!({"kind": "broadcast", "position": {"epoch": 7, "offset": 3}, "data": {"a": [1, 2]}})
        );
        assert_eq!(parsed(positioned(Kind::User, at, &data))["kind"], "user");
        let channel = Kind::Channel {
            channel: "news",
            event: "say \"hi\"",
        };
        assert_eq!(
            parsed(positioned(channel, at, &data)),
            json!({"kind": "channel", "channel": "news", "event": "say \"hi\"",
                   "position": {"epoch": 7, "offset": 3}, "data": {"a": [1, 2]}})
        );
    }
}
