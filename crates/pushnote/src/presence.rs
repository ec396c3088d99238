//! A presence channel's members, asked of a server or forwarder over HTTP (PROTOCOL §2d, at
//! its end): `GET /presence?channel=C` with the API key, answered
//! `{"channel":C,"members":[{"user":U,"info":I},…]}`.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = std::env::var("PUSHNOTE_API_KEY")?;
//! for m in pushnote::presence::members("http://127.0.0.1:8003", &key, "presence-room-7")? {
//!     println!("{} {}", m.user, m.info); // 42 {"name":"Ann"}
//! }
//! # Ok(()) }
//! ```
//!
//! The forwarder (`--http`), a `--single` server and each server of a Redis deployment (with
//! `--api-key`, on their own port) answer it. Blocking, bounded in time
//! ([`DEFAULT_TIMEOUT`]) and in memory ([`MAX_ANSWER_BYTES`]).

use std::time::Duration;

use serde::Deserialize;

pub use crate::http_get::HttpError;
use crate::http_get::{self, HttpUrl};
use crate::member::{Fields, Member};
use crate::wire;

/// How long [`members`] waits for the whole answer, connecting included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most bytes of an answer read: far over a full channel's (1,000 members of 1 KiB of info
/// by default, PROTOCOL §6), so that only a peer that is not pushnote reaches it.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// The most characters of a refusal's `error` text kept.
const MAX_ERROR_CHARS: usize = 500;

/// Why the members could not be had.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// The channel's name breaks its rule, or is not a presence channel's (`presence-…`).
    #[error("{0:?} is not a presence channel's name (presence-…, then ASCII letters, digits and _-=@,.;, 164 bytes at most)")]
    InvalidChannel(String),
    /// The API key could not be sent in a header (it has control characters); the key itself
    /// is never shown.
    #[error("the API key has control characters, which a header cannot carry")]
    InvalidKey,
    /// The URL is not an `http://` one, the port could not be reached or did not answer in
    /// time, or its answer was not HTTP.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The server answered with another status than 200: `message` is its `error` text.
    #[error("{}", refusal(*.status, .message))]
    Refused { status: u16, message: String },
    /// A 200 answer that is not the documented JSON.
    #[error("the answer is not a presence channel's members: {0}")]
    Malformed(String),
}

/// What a refusal says, with a hint for the statuses a setting causes.
fn refusal(status: u16, message: &str) -> String {
    let hint = match status {
        401 => " (give the API key the server or forwarder was started with)",
        404 => " (is the URL a forwarder's --http port, or the port of a server started with --api-key?)",
        _ => "",
    };
    format!("the server answered {status}: {message}{hint}")
}

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    channel: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    members: Vec<Fields<'a>>,
}

#[derive(Deserialize)]
struct Refusal {
    error: String,
}

/// The members of presence channel `channel` as the HTTP port at `url` (`http://host:port`,
/// optionally with a path prefix) knows them, asked with `api_key`, within [`DEFAULT_TIMEOUT`].
pub fn members(url: &str, api_key: &str, channel: &str) -> Result<Vec<Member>, PresenceError> {
    members_within(url, api_key, channel, DEFAULT_TIMEOUT)
}

/// [`members`], waiting at most `timeout` for the whole answer.
pub fn members_within(
    url: &str,
    api_key: &str,
    channel: &str,
    timeout: Duration,
) -> Result<Vec<Member>, PresenceError> {
    let url = HttpUrl::parse(url)?;
    let target = target(channel)?;
    if api_key.chars().any(char::is_control) {
        return Err(PresenceError::InvalidKey);
    }
    let response = http_get::get(&url, &target, api_key, timeout, MAX_ANSWER_BYTES)?;
    parse_answer(channel, response.status, &response.body)
}

/// The path and query that ask for `channel`'s members, once the name is checked.
pub fn target(channel: &str) -> Result<String, PresenceError> {
    if wire::check_presence_channel(channel).is_err() {
        return Err(PresenceError::InvalidChannel(channel.to_owned()));
    }
    Ok(format!(
        "/presence?channel={}",
        http_get::percent_encode(channel)
    ))
}

/// The members in an answer of `status` with `body` to the question about `channel`; a
/// refusal with its `error` text for another status than 200.
pub fn parse_answer(channel: &str, status: u16, body: &[u8]) -> Result<Vec<Member>, PresenceError> {
    if status != 200 {
        let message = match serde_json::from_slice::<Refusal>(body) {
            Ok(r) => r.error.chars().take(MAX_ERROR_CHARS).collect(),
            Err(_) => "no error text".to_owned(),
        };
        return Err(PresenceError::Refused { status, message });
    }
    let malformed = |e: &dyn std::fmt::Display| PresenceError::Malformed(e.to_string());
    let answer: Answer<'_> = serde_json::from_slice(body).map_err(|e| malformed(&e))?;
    if answer.channel != channel {
        return Err(malformed(&format_args!(
            "it is about channel {:?}",
            answer.channel
        )));
    }
    answer
        .members
        .iter()
        .map(|f| f.member().map_err(|e| malformed(&e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_question_names_the_channel_encoded_and_only_a_presence_channel() {
        assert_eq!(
            target("presence-room=7@a").unwrap(),
            "/presence?channel=presence-room%3D7%40a"
        );
        for bad in ["room-7", "private-x", "presence-a b", "", "Presence-x"] {
            assert!(
                matches!(target(bad), Err(PresenceError::InvalidChannel(c)) if c == bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_answer_gives_the_members_with_their_info_as_written() {
        let body = br#"{"channel":"presence-r","members":[{"user":"42","info":{"name":"Ann","n":1.50}},{"user":"7","info":null},{"user":"9"}]}"#;
        let members = parse_answer("presence-r", 200, body).unwrap();
        let got: Vec<(&str, &str)> = members
            .iter()
            .map(|m| (m.user.as_str(), m.info.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("42", r#"{"name":"Ann","n":1.50}"#),
                ("7", "null"),
                ("9", "null")
            ]
        );
        let empty = br#"{"channel":"presence-r","members":[]}"#;
        assert!(parse_answer("presence-r", 200, empty).unwrap().is_empty());
    }

    #[test]
    fn refusals_carry_the_servers_error_and_bad_answers_are_malformed() {
        let e = parse_answer("presence-r", 401, br#"{"error":"no API key"}"#).unwrap_err();
        assert!(
            matches!(&e, PresenceError::Refused { status: 401, message } if message == "no API key"),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("the server answered 401: no API key ("),
            "{e}"
        );
        let e = parse_answer("presence-r", 404, b"").unwrap_err();
        assert!(e.to_string().contains("404: no error text"), "{e}");
        let long = format!(r#"{{"error":"{}"}}"#, "x".repeat(10_000));
        let e = parse_answer("presence-r", 400, long.as_bytes()).unwrap_err();
        assert!(e.to_string().len() < 1000);
        for bad in [
            &b"not json"[..],
            br#"{"members":[]}"#,
            br#"{"channel":"presence-other","members":[]}"#,
            br#"{"channel":"presence-r","members":[{"user":""}]}"#,
            br#"{"channel":"presence-r","members":[{"info":1}]}"#,
        ] {
            assert!(
                matches!(
                    parse_answer("presence-r", 200, bad),
                    Err(PresenceError::Malformed(_))
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_key_that_cannot_be_a_header_is_refused_without_showing_it() {
        let e = members("http://127.0.0.1:9", "sec\r\nret", "presence-r").unwrap_err();
        assert!(matches!(e, PresenceError::InvalidKey));
        assert!(!e.to_string().contains("sec"));
    }
}
