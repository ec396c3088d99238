//! The client protocol: what browsers send to pushnote-server and what it answers.
//!
//! Clients send JSON text `{"name": …, "data": …}` (pushnote's `emit(name, data)`):
//! - `{"name":"subscribe","data":{"token":"…"}}` ties the session to the token's user;
//!   answered `{"name":"pushnote:subscribed","data":{"user":"…"}}`.
//! - `{"name":"unsubscribe"}` unties it; answered `{"name":"pushnote:unsubscribed","data":{}}`.
//!
//! Anything refused is answered `{"name":"pushnote:error","data":{"code":…,"message":…}}` with
//! one of the [`ErrorCode`]s, and the session stays open. Pure: parsing and encoding only.

use serde::Deserialize;
use serde_json::json;
use sockjs::Message;

/// A request from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Receive the messages of the token's user too.
    Subscribe {
        /// The token, as the app minted it.
        token: String,
    },
    /// Stop receiving a user's messages; broadcasts only.
    Unsubscribe,
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
}

impl ErrorCode {
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
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    name: String,
    #[serde(default)]
    data: serde_json::Value,
}

/// Parses what a client sent.
pub fn parse(text: &str) -> Result<Request, Refusal> {
    let env: Envelope = serde_json::from_str(text).map_err(|e| {
        Refusal::new(
            ErrorCode::BadMessage,
            format!("expected JSON {{\"name\": …, \"data\": …}}: {e}"),
        )
    })?;
    match env.name.as_str() {
        "subscribe" => match env.data.get("token").and_then(|t| t.as_str()) {
            Some(token) => Ok(Request::Subscribe {
                token: token.to_owned(),
            }),
            None => Err(Refusal::new(
                ErrorCode::BadRequest,
                "subscribe needs data {\"token\": \"…\"} with the token string",
            )),
        },
        "unsubscribe" => Ok(Request::Unsubscribe),
        other => Err(Refusal::new(
            ErrorCode::UnknownRequest,
            format!(
                "unknown request {:?}: this server knows subscribe and unsubscribe",
                truncate(other, 64)
            ),
        )),
    }
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

/// The answer to a successful subscribe.
pub fn subscribed(user: &str) -> Message {
    reply(json!({"name": "pushnote:subscribed", "data": {"user": user}}))
}

/// The answer to an unsubscribe.
pub fn unsubscribed() -> Message {
    reply(json!({"name": "pushnote:unsubscribed", "data": {}}))
}

/// The answer to a refused message.
pub fn error(refusal: &Refusal) -> Message {
    reply(json!({
        "name": "pushnote:error",
        "data": {"code": refusal.code.as_str(), "message": refusal.message},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_and_unsubscribe_parse() {
        assert_eq!(
            parse(r#"{"name":"subscribe","data":{"token":"t"}}"#),
            Ok(Request::Subscribe { token: "t".into() })
        );
        assert_eq!(parse(r#"{"name":"unsubscribe"}"#), Ok(Request::Unsubscribe));
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
            subscribed("42").as_json(),
            r#"{"data":{"user":"42"},"name":"pushnote:subscribed"}"#
        );
        let e = error(&Refusal::new(ErrorCode::InvalidToken, "bad"));
        let v: serde_json::Value = serde_json::from_str(e.as_json()).unwrap();
        assert_eq!(v["name"], "pushnote:error");
        assert_eq!(v["data"]["code"], "invalid_token");
    }

    #[test]
    fn unknown_names_are_truncated_in_replies() {
        let long = format!(r#"{{"name":"{}"}}"#, "x".repeat(10_000));
        assert!(parse(&long).unwrap_err().message.len() < 200);
    }
}
