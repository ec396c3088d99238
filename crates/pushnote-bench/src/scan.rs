//! Reading the bench's messages out of a SockJS `a[...]` frame without a JSON parser.
//!
//! Every message the `fanout` load publishes is `{"b":SEQ,"t":MICROS}`. Servers put it in the
//! frame either as a JSON value (pushnote-server, sockjs-tornado: `a[{"b":1,"t":2}]`, maybe with
//! spaces) or as a JSON string (sockjs-node: `a["{\"b\":1,\"t\":2}"]`). Under load a frame
//! carries many messages, and decoding each one with serde would make the load generator the
//! bottleneck; this scan finds the two numbers of each message in one pass over the bytes.
//!
//! Published on a channel, the message arrives as the `data` of the channel's envelope,
//! `{"channel":C,"event":E,"data":{"b":SEQ,"t":MICROS}}` ([`Scan::envelope`]): the numbers are
//! read there only, so that nothing in a channel's or an event's name is taken for them.

/// What the load's messages look like in the frames it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scan {
    /// The one-letter key of the sequence numbers (`b` unless several loads share the
    /// servers).
    pub stream: u8,
    /// The messages are the `data` of channel envelopes.
    pub envelope: bool,
}

impl Scan {
    /// Messages as published, keyed `stream`.
    pub fn bare(stream: u8) -> Scan {
        Scan {
            stream,
            envelope: false,
        }
    }

    /// Messages keyed `stream`, each the `data` of a channel's envelope.
    pub fn envelope(stream: u8) -> Scan {
        Scan {
            stream,
            envelope: true,
        }
    }

    /// Calls `f(seq, micros)` for every bench message in `frame`; returns how many there were.
    pub fn messages(self, frame: &[u8], f: impl FnMut(u64, u64)) -> usize {
        if self.envelope {
            envelopes(frame, self.stream, f)
        } else {
            messages(frame, self.stream, f)
        }
    }
}

/// Calls `f(seq, micros)` for every bench message in `frame` whose sequence number is under
/// the one-letter key `stream` (`b` unless several loads share the servers); returns how many
/// there were.
pub fn messages(frame: &[u8], stream: u8, mut f: impl FnMut(u64, u64)) -> usize {
    let mut at = 0;
    let mut count = 0;
    while let Some(b) = key(frame, at, stream) {
        let Some((seq, micros, end)) = stamp(frame, b) else {
            break;
        };
        f(seq, micros);
        count += 1;
        at = end;
    }
    count
}

/// The sequence number at `seq_at` and the timestamp under the key `t` after it, and where the
/// timestamp ends; `None` without a timestamp.
fn stamp(frame: &[u8], seq_at: usize) -> Option<(u64, u64, usize)> {
    let (seq, end) = number(frame, seq_at);
    let t = key(frame, end, b't')?;
    let (micros, end) = number(frame, t);
    Some((seq, micros, end))
}

/// [`messages`] for messages that are each the `data` of a channel's envelope, as
/// pushnote-server sends them (JSON values): each is found by its `"data":`, whose object
/// must begin with the key `stream`. A `"data":` inside a name is escaped (`\"data\":`) and
/// not taken; an envelope whose `data` is not the load's (a reply to a subscribe) is skipped.
fn envelopes(frame: &[u8], stream: u8, mut f: impl FnMut(u64, u64)) -> usize {
    const DATA: &[u8] = b"\"data\":";
    let mut at = 0;
    let mut count = 0;
    while let Some(found) = find(&frame[at..], DATA) {
        let mut i = skip_spaces(frame, at + found + DATA.len());
        at = i;
        if frame.get(i) != Some(&b'{') {
            continue;
        }
        i = skip_spaces(frame, i + 1);
        if frame.get(i..i + 4) != Some(&[b'"', stream, b'"', b':'][..]) {
            continue;
        }
        let Some((seq, micros, end)) = stamp(frame, skip_spaces(frame, i + 4)) else {
            break;
        };
        f(seq, micros);
        count += 1;
        at = end;
    }
    count
}

/// Where `needle` (which starts with `"`) first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        let j = i + hay[i..].iter().position(|&c| c == needle[0])?;
        if hay[j..].starts_with(needle) {
            return Some(j);
        }
        i = j + 1;
    }
    None
}

fn skip_spaces(s: &[u8], from: usize) -> usize {
    from + s
        .get(from..)
        .map_or(0, |r| r.iter().take_while(|&&c| c == b' ').count())
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

    fn in_envelopes(frame: &str) -> Vec<(u64, u64)> {
        let mut v = Vec::new();
        let n = Scan::envelope(b'b').messages(frame.as_bytes(), |b, t| v.push((b, t)));
        assert_eq!(n, v.len());
        v
    }

    #[test]
    fn a_channels_messages_are_read_from_their_envelopes_data() {
        let one = r#"{"channel":"bench","event":"tick","data":{"b":4,"t":40}}"#;
        let two = r#"{"channel":"bench","event":"tick","data":{"b":5,"t":50}}"#;
        assert_eq!(in_envelopes(&format!("a[{one}]")), [(4, 40)]);
        assert_eq!(in_envelopes(&format!("a[{one},{two}]")), [(4, 40), (5, 50)]);
        assert_eq!(
            in_envelopes(r#"a[{"channel":"c", "event":"e", "data": { "b": 6, "t": 60}}]"#),
            [(6, 60)]
        );
        // The reply to the subscribe request, then a message, in one frame.
        let reply = r#"{"name":"pushnote:subscribed","data":{"channel":"bench"}}"#;
        assert_eq!(in_envelopes(&format!("a[{reply},{one}]")), [(4, 40)]);
        assert!(in_envelopes(&format!("a[{reply}]")).is_empty());
        assert!(in_envelopes("o").is_empty() && in_envelopes("h").is_empty());
    }

    #[test]
    fn names_that_look_like_the_loads_keys_are_not_read_as_messages() {
        // Channel names cannot hold quotes, events can: serialized, theirs are escaped.
        let tricky = r#"a[{"channel":"b","event":"\"b\":9,\"t\":9,\"data\":{\"b\":8","data":{"b":1,"t":2}}]"#;
        assert_eq!(in_envelopes(tricky), [(1, 2)]);
        // The bare scan would have read the event's.
        assert_ne!(all(tricky), [(1, 2)]);
        // Another stream's message in an envelope is not this stream's.
        let other = r#"a[{"channel":"c","event":"e","data":{"k":1,"t":2}}]"#;
        assert!(in_envelopes(other).is_empty());
        let mut v = Vec::new();
        Scan::envelope(b'k').messages(other.as_bytes(), |b, t| v.push((b, t)));
        assert_eq!(v, [(1, 2)]);
    }

    #[test]
    fn a_message_among_others_is_found() {
        let frame = r#"a[{"name":"pushnote:subscribed","data":{"user":"u1"}},{"b":3,"t":4}]"#;
        assert_eq!(all(frame), [(3, 4)]);
    }
}
