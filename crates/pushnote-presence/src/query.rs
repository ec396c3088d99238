//! `GET /presence?channel=C`: the key checked, the channel read from the query, and the
//! answer (PROTOCOL §2d). Pure; the servers' and the forwarder's HTTP code serve it.

use std::sync::Arc;

use crate::Info;

/// The status and JSON body of the answer to a request with `authorization` (the header's
/// value, if any) and `query`, for the API key `key`; `members` gives a channel's members, in
/// any order (taken under whatever lock holds them, put in order and written after it). A 401
/// is to carry `WWW-Authenticate: Bearer`.
pub fn respond(
    authorization: Option<&[u8]>,
    key: &str,
    query: &str,
    members: impl FnOnce(&str) -> Vec<(Arc<str>, Info)>,
) -> (u16, String) {
    if let Err(refused) = pushnote::http_publish::authorized(authorization, key) {
        return (401, error(&refused.error));
    }
    match channel_of(query) {
        Err(e) => (400, error(&e)),
        Ok(channel) => {
            let mut members = members(&channel);
            members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let members = members_json(members.iter().map(|(u, i)| (&**u, &**i)));
            (200, answer(&channel, &members))
        }
    }
}

/// The channel a query names, or the error of a 400 answer.
pub fn channel_of(query: &str) -> Result<String, String> {
    let mut channel = None;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == "channel" {
            if channel.is_some() {
                return Err("\"channel\" given twice".into());
            }
            channel =
                Some(percent_decode(value).ok_or("\"channel\" is not percent-encoded UTF-8")?);
        }
    }
    let channel = channel.ok_or("no \"channel\": ask /presence?channel=presence-…")?;
    if pushnote::wire::check_presence_channel(&channel).is_err() {
        return Err(format!(
            "{channel:?} is not a presence channel's name (presence-…, then letters, digits and \
             _-=@,.;)"
        ));
    }
    Ok(channel)
}

/// The body of a 200 answer: the channel and its members (a JSON array of members' objects).
pub fn answer(channel: &str, members: &str) -> String {
    let channel = serde_json::to_string(channel).unwrap_or_default();
    format!("{{\"channel\":{channel},\"members\":{members}}}")
}

/// Members as pages and apps read them: `[{"user":U,"info":I},…]`.
pub fn members_json<'a>(members: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = Vec::with_capacity(256);
    out.push(b'[');
    for (i, (user, info)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"user\":");
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, user);
        out.extend_from_slice(b",\"info\":");
        out.extend_from_slice(info.as_bytes());
        out.push(b'}');
    }
    out.push(b']');
    // JSON strings, and info that is JSON text: UTF-8 throughout.
    String::from_utf8(out).unwrap_or_default()
}

/// The body of an error answer.
pub fn error(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_channel_is_read_from_the_query_and_checked() {
        assert_eq!(
            channel_of("channel=presence-room-7").unwrap(),
            "presence-room-7"
        );
        assert_eq!(
            channel_of("x=1&channel=presence-a%40b").unwrap(),
            "presence-a@b"
        );
        assert!(channel_of("").is_err());
        assert!(channel_of("channel=private-x").is_err());
        assert!(channel_of("channel=presence-x&channel=presence-y").is_err());
        assert!(channel_of("channel=presence-%zz").is_err());
        assert_eq!(
            answer("presence-x", "[]"),
            r#"{"channel":"presence-x","members":[]}"#
        );
    }
}
