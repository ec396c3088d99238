//! Reading the bench's messages out of a SockJS `a[...]` frame without a JSON parser.
//!
//! Every message the `fanout` load publishes is `{"b":SEQ,"t":MICROS}`. Servers put it in the
//! frame either as a JSON value (pushnote-server, sockjs-tornado: `a[{"b":1,"t":2}]`, maybe with
//! spaces) or as a JSON string (sockjs-node: `a["{\"b\":1,\"t\":2}"]`). Under load a frame
//! carries many messages, and decoding each one with serde would make the load generator the
//! bottleneck; this scan finds the two numbers of each message in one pass over the bytes.

/// Calls `f(seq, micros)` for every bench message in `frame` whose sequence number is under
/// the one-letter key `stream` (`b` unless several loads share the servers); returns how many
/// there were.
pub fn messages(frame: &[u8], stream: u8, mut f: impl FnMut(u64, u64)) -> usize {
    let mut at = 0;
    let mut count = 0;
    while let Some(b) = key(frame, at, stream) {
        let (seq, end) = number(frame, b);
        let Some(t) = key(frame, end, b't') else {
            break;
        };
        let (micros, end) = number(frame, t);
        f(seq, micros);
        count += 1;
        at = end;
    }
    count
}

/// The position of the value of the one-letter key `name` at or after `from`: the key is
/// `"name":` or, inside a JSON string, `\"name\":`, and spaces may follow the colon.
fn key(s: &[u8], from: usize, name: u8) -> Option<usize> {
    let mut i = from;
    while i < s.len() {
        let j = i + s[i..].iter().position(|&c| c == name)?;
        i = j + 1;
        if j == 0 || s[j - 1] != b'"' {
            continue;
        }
        let rest = &s[j + 1..];
        let after = if rest.starts_with(b"\":") {
            j + 3
        } else if rest.starts_with(b"\\\":") {
            j + 4
        } else {
            continue;
        };
        let skip = s[after..].iter().take_while(|&&c| c == b' ').count();
        return Some(after + skip);
    }
    None
}

/// The decimal number starting at `at`, and where it ends.
fn number(s: &[u8], at: usize) -> (u64, usize) {
    let mut n = 0u64;
    let mut i = at;
    while let Some(d) = s.get(i).filter(|c| c.is_ascii_digit()) {
        n = n.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
        i += 1;
    }
    (n, i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(frame: &str) -> Vec<(u64, u64)> {
        let mut v = Vec::new();
        let n = messages(frame.as_bytes(), b'b', |b, t| v.push((b, t)));
        assert_eq!(n, v.len());
        v
    }

    #[test]
    fn values_strings_and_spaces_all_read_the_same() {
        assert_eq!(all(r#"a[{"b":1,"t":20}]"#), [(1, 20)]);
        assert_eq!(
            all(r#"a[{"b": 1, "t": 20},{"b": 2, "t": 30}]"#),
            [(1, 20), (2, 30)]
        );
        assert_eq!(
            all(r#"a["{\"b\":7,\"t\":123456}","{\"b\":8,\"t\":123457}"]"#),
            [(7, 123456), (8, 123457)]
        );
    }

    #[test]
    fn other_frames_and_other_keys_hold_no_messages() {
        assert!(all("o").is_empty());
        assert!(all("h").is_empty());
        assert!(all(r#"c[3000,"Go away!"]"#).is_empty());
        assert!(all(r#"a[{"name":"pushnote:subscribed","data":{"user":"b"}}]"#).is_empty());
        // Keys that merely end in b or t are not the bench's.
        assert_eq!(all(r#"a[{"ab":5,"b":1,"xt":9,"t":2}]"#), [(1, 2)]);
    }

    #[test]
    fn another_streams_messages_are_skipped() {
        let frame = br#"a[{"k":1,"t":10},{"b":2,"t":20},{"k":3,"t":30}]"#;
        let mut v = Vec::new();
        messages(frame, b'k', |b, t| v.push((b, t)));
        assert_eq!(v, [(1, 10), (3, 30)]);
    }

    #[test]
    fn a_message_among_others_is_found() {
        let frame = r#"a[{"name":"pushnote:subscribed","data":{"user":"u1"}},{"b":3,"t":4}]"#;
        assert_eq!(all(frame), [(3, 4)]);
    }
}
