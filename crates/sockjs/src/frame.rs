//! SockJS frames: encoding what the server sends and decoding what clients send.
//!
//! Pure functions, no I/O. A SockJS server sends four kinds of frame: `o` (open), `h`
//! (heartbeat), `a[...]` (an array of messages) and `c[code,"reason"]` (close). Clients send a
//! JSON array of strings (or, on WebSocket, a single JSON string).
//!
//! Browsers and proxies mangle some characters, so the protocol has the server escape them as
//! `\uXXXX` (lowercase hex) inside JSON: U+0000–001F, U+200C–200F, U+2028–202F, U+2060–206F and
//! U+FFF0–FFFF. [`compact_json`] does that, and removes insignificant white space, in one pass
//! over already-valid JSON text, so a value published once is encoded once.

use std::fmt::Write as _;

/// The open frame, sent once when a session starts.
pub const OPEN: &str = "o";
/// The heartbeat frame, sent when a session has been idle for the heartbeat interval.
pub const HEARTBEAT: &str = "h";

/// Whether the protocol requires `c` to be sent as a `\uXXXX` escape inside JSON strings.
pub fn needs_escape(c: char) -> bool {
    matches!(c as u32,
        0x0000..=0x001f | 0x200c..=0x200f | 0x2028..=0x202f | 0x2060..=0x206f | 0xfff0..=0xffff)
}

fn push_escaped(out: &mut String, c: char) {
    // Writing to a String cannot fail.
    let _ = write!(out, "\\u{:04x}", c as u32);
}

/// Encodes `s` as a JSON string literal with the SockJS escaping.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_quoted(&mut out, s, false);
    out
}

/// Appends `s` as a JavaScript string literal that is also safe inside an HTML `<script>`
/// element: `<` and `>` are escaped too, so text such as `</script><script>` in a message can
/// never end the element and run as script (the htmlfile and jsonp transports).
pub fn push_script_string(out: &mut String, s: &str) {
    push_quoted(out, s, true);
}

fn push_quoted(out: &mut String, s: &str, for_script: bool) {
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' if for_script => push_escaped(out, c),
            c if needs_escape(c) => push_escaped(out, c),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Rewrites valid JSON text in the form SockJS frames need: no insignificant white space (so a
/// frame never holds a raw newline, which the streaming transports use as a delimiter) and the
/// SockJS escaping applied inside strings. Numbers, key order and string contents are kept
/// exactly as written.
///
/// The input must be valid JSON (for example a `serde_json::value::RawValue`); for other input
/// the output is unspecified but still free of raw newlines and escapable characters.
pub fn compact_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    // Bytes are copied in runs, from `run` up to the next one left out or escaped; every
    // character JSON gives a meaning to is ASCII, and a byte of a multi-byte character is never
    // taken for one.
    let mut run = 0;
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    while i < json.len() {
        let b = json.as_bytes()[i];
        if b >= 0x80 {
            let c = json[i..].chars().next().unwrap_or_default();
            if needs_escape(c) {
                out.push_str(&json[run..i]);
                push_escaped(&mut out, c);
                run = i + c.len_utf8();
            }
            escaped = false;
            i += c.len_utf8();
            continue;
        }
        let left_out = !in_string && matches!(b, b' ' | b'\n' | b'\r' | b'\t');
        if left_out || b < 0x20 {
            out.push_str(&json[run..i]);
            if !left_out {
                push_escaped(&mut out, char::from(b));
            }
            run = i + 1;
            escaped = false;
        } else if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        }
        i += 1;
    }
    out.push_str(&json[run..]);
    out
}

/// Encodes a close frame: `c[3000,"Go away!"]`.
pub fn close(code: u16, reason: &str) -> String {
    format!("c[{code},{}]", quote(reason))
}

/// Appends the array frame `a[m1,m2,…]` for messages that are already JSON-encoded.
pub fn push_array<'a>(out: &mut String, messages: impl IntoIterator<Item = &'a str>) {
    out.push_str("a[");
    for (i, m) in messages.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(m);
    }
    out.push(']');
}

/// Why a client's payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload is not JSON, or not a string or an array of strings.
    #[error("Broken JSON encoding.")]
    BrokenJson,
}

/// Decodes what a client sent: a JSON array of strings, or a single JSON string (WebSocket
/// clients may send either). Surrounding white space is allowed; an empty payload is the
/// caller's to handle, as transports differ.
pub fn decode_messages(payload: &str) -> Result<Vec<String>, DecodeError> {
    let trimmed = payload.trim_start();
    if trimmed.starts_with('"') {
        return serde_json::from_str::<String>(payload)
            .map(|m| vec![m])
            .map_err(|_| DecodeError::BrokenJson);
    }
    serde_json::from_str::<Vec<String>>(payload).map_err(|_| DecodeError::BrokenJson)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn close_frame_matches_the_protocol() {
        assert_eq!(close(3000, "Go away!"), r#"c[3000,"Go away!"]"#);
        assert_eq!(
            close(2010, "Another connection still open"),
            r#"c[2010,"Another connection still open"]"#
        );
    }

    #[test]
    fn quote_escapes_what_browsers_mangle_in_lowercase() {
        assert_eq!(
            quote("\u{2028}\u{2029}\u{fff0}\u{200c}"),
            r#""\u2028\u2029\ufff0\u200c""#
        );
        assert_eq!(quote("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
        assert_eq!(quote("é中😀</script>"), "\"é中😀</script>\"");
    }

    #[test]
    fn script_strings_cannot_end_a_script_element() {
        let mut out = String::new();
        push_script_string(&mut out, r#"a["</script><script>x()</script>"]"#);
        assert_eq!(
            out,
            r#""a[\"\u003c/script\u003e\u003cscript\u003ex()\u003c/script\u003e\"]""#
        );
    }

    #[test]
    fn compact_json_escapes_what_broken_json_holds_too() {
        // A backslash before a raw newline or an escapable character is no JSON, but the output
        // still holds neither.
        assert_eq!(
            compact_json("[\"a\\\n\", \"b\\\u{2028}\"]"),
            r#"["a\\u000a","b\\u2028"]"#
        );
        assert_eq!(
            compact_json("\"\u{e9}t\u{e9} \u{1f600}\""),
            "\"\u{e9}t\u{e9} \u{1f600}\""
        );
        assert_eq!(compact_json(" { } "), "{}");
    }

    #[test]
    fn compact_json_strips_white_space_outside_strings_only() {
        let raw = "{ \"a\" : [1, 2.50, \"x y\"],\n\t\"b\":\"\u{2028}\\\"\u{2029}\" }";
        assert_eq!(
            compact_json(raw),
            r#"{"a":[1,2.50,"x y"],"b":"\u2028\"\u2029"}"#
        );
    }

    #[test]
    fn compact_json_keeps_numbers_serde_would_round() {
        let raw = "[123456789012345678901234567890, 1e400, 0.1000]";
        assert_eq!(
            compact_json(raw),
            "[123456789012345678901234567890,1e400,0.1000]"
        );
    }

    #[test]
    fn array_frame_joins_encoded_messages() {
        let mut out = String::new();
        push_array(&mut out, ["\"a\"", "{\"k\":1}"]);
        assert_eq!(out, r#"a["a",{"k":1}]"#);
    }

    #[test]
    fn decode_accepts_arrays_and_single_strings() {
        assert_eq!(decode_messages(r#"["a","b"]"#).unwrap(), ["a", "b"]);
        assert_eq!(decode_messages(r#" "a" "#).unwrap(), ["a"]);
        assert!(decode_messages("[]").unwrap().is_empty());
        assert_eq!(decode_messages(r#"["a"#), Err(DecodeError::BrokenJson));
        assert_eq!(decode_messages("[1]"), Err(DecodeError::BrokenJson));
        assert_eq!(decode_messages("{}"), Err(DecodeError::BrokenJson));
    }

    proptest! {
        #[test]
        fn quote_round_trips_through_json(s in any::<String>()) {
            let quoted = quote(&s);
            prop_assert_eq!(serde_json::from_str::<String>(&quoted).unwrap(), s.clone());
            prop_assert!(!quoted.chars().any(needs_escape));
            let mut script = String::new();
            push_script_string(&mut script, &s);
            prop_assert!(!script.contains('<') && !script.contains('>'));
            prop_assert_eq!(serde_json::from_str::<String>(&script).unwrap(), s);
        }

        #[test]
        fn compact_json_keeps_the_value(v in json_value()) {
            let pretty = serde_json::to_string_pretty(&v).unwrap();
            let compact = compact_json(&pretty);
            prop_assert!(!compact.chars().any(needs_escape));
            prop_assert_eq!(serde_json::from_str::<serde_json::Value>(&compact).unwrap(), v);
        }

        #[test]
        fn decode_round_trips_client_arrays(v in proptest::collection::vec(any::<String>(), 0..5)) {
            let payload = serde_json::to_string(&v).unwrap();
            prop_assert_eq!(decode_messages(&payload).unwrap(), v);
        }
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
