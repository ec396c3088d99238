//! A presence channel's member as the app names it in a presence token (PROTOCOL §3,
//! "Presence tokens"): the user id and the app's info about the user, a JSON value that pages
//! receive as written.
//!
//! In the token the member is compact JSON after the channel's name and a `:`:
//! `presence-room-7:{"user":"42","info":{"name":"Ann"}}`. `info` may be left out (it is then
//! `null`); other members of the object are ignored.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::wire;

/// A presence channel's member: who, and what the app tells other members of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's user id (PROTOCOL §2's rule).
    pub user: String,
    /// The app's info about the member: JSON text, without insignificant white space.
    pub info: String,
}

/// Why a member could not be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    /// Not a JSON object with a string `user`.
    #[error("the presence member is not a JSON object with a string \"user\"")]
    Malformed,
    /// `user` breaks the user id rule.
    #[error("the presence member's user id is invalid (1 to 256 bytes, no control characters)")]
    InvalidUserId,
    /// `info` is not JSON.
    #[error("the presence member's info is not JSON")]
    InvalidInfo,
}

/// A member's JSON object as read, before its user id and info are checked ([`Fields::member`]).
#[derive(Deserialize)]
pub(crate) struct Fields<'a> {
    #[serde(borrow)]
    user: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    info: Option<&'a RawValue>,
}

impl Fields<'_> {
    /// The member these fields name, checked.
    pub(crate) fn member(&self) -> Result<Member, MemberError> {
        Member::new(&self.user, self.info.map(RawValue::get))
    }
}

impl Member {
    /// The member `user` with `info` (JSON text; `None` is `null`).
    pub fn new(user: &str, info: Option<&str>) -> Result<Member, MemberError> {
        wire::check_user_id(user).map_err(|_| MemberError::InvalidUserId)?;
        let info = match info {
            None => "null".to_owned(),
            Some(text) => compact(text)?,
        };
        Ok(Member {
            user: user.to_owned(),
            info,
        })
    }

    /// Reads a member from its JSON object, as a presence token carries it.
    pub fn parse(text: &str) -> Result<Member, MemberError> {
        let fields: Fields<'_> = serde_json::from_str(text).map_err(|_| MemberError::Malformed)?;
        fields.member()
    }

    /// The member's JSON object, as a presence token carries it: `{"user":…,"info":…}`.
    pub fn to_json(&self) -> String {
        let user = serde_json::to_string(&self.user).expect("a string always serializes");
        format!("{{\"user\":{user},\"info\":{}}}", self.info)
    }
}

/// `text` as JSON without insignificant white space, numbers and key order kept as written.
fn compact(text: &str) -> Result<String, MemberError> {
    let raw: Box<RawValue> = serde_json::from_str(text).map_err(|_| MemberError::InvalidInfo)?;
    Ok(strip_white_space(raw.get()))
}

/// Removes the white space between the tokens of valid JSON `text`, keeping strings whole.
fn strip_white_space(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_reads_back_as_written_with_info_compacted_and_numbers_kept() {
        let m = Member::new("42", Some(r#"{ "name": "Ann B", "score": 1.50 }"#)).unwrap();
        assert_eq!(m.info, r#"{"name":"Ann B","score":1.50}"#);
        assert_eq!(
            m.to_json(),
            r#"{"user":"42","info":{"name":"Ann B","score":1.50}}"#
        );
        assert_eq!(Member::parse(&m.to_json()).unwrap(), m);
        let plain = Member::parse(r#"{"user":"a:\"b\"","extra":1}"#).unwrap();
        assert_eq!(
            (plain.user.as_str(), plain.info.as_str()),
            ("a:\"b\"", "null")
        );
    }

    #[test]
    fn bad_members_are_refused() {
        assert_eq!(Member::parse("42"), Err(MemberError::Malformed));
        assert_eq!(Member::parse(r#"{"user":7}"#), Err(MemberError::Malformed));
        assert_eq!(
            Member::parse(r#"{"user":""}"#),
            Err(MemberError::InvalidUserId)
        );
        assert_eq!(Member::new("7", Some("{")), Err(MemberError::InvalidInfo));
    }
}
